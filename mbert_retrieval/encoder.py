"""Encoder core: any Hugging Face encoder (ModernBERT first-class) with token-budget batching,
unpadded (packed) batches and automatic attention backend / dtype selection.

Every model in this package (bi-encoder, ColBERT) sits on `Encoder`: it turns texts into token
ids, runs the transformer in batches sorted by length, and hands back *unpadded* token states
(`EncodedBatch`: all tokens of a batch concatenated, with offsets), always in input order.

Three execution paths, all giving the same token states:
- "varlen": flash-attn on CUDA; all sequences of a batch are one row, `cu_seq_lens` tell the kernel
  where each sequence starts; no padding at all.
- "packed": SDPA/eager; several short sequences share a row and a block-diagonal mask keeps them apart
  (positions restart per sequence), so rows carry little padding.
- "padded": classic padded batches (sorted by length, so padding stays small).
Defaults per device (measured, see `eval/bench_encode.py`): varlen with flash-attn on CUDA; padded elsewhere
(on CPU, packing rows behind an SDPA block mask was no faster than sorted padded batches).

Precision (`EncoderConfig.dtype`): "auto" runs bf16 weights on a CUDA GPU with bf16 (fp16 otherwise); on a
CPU with native bf16 (AVX512-BF16 / AMX) it keeps float32 weights and runs the matmuls in bf16 under
autocast (about 1.5-2x the fp32 tokens/s, min cosine >= 0.9999 to fp32 vectors: norms and softmax stay in
fp32); elsewhere float32. Token states always come back as float32, so pooling and normalisation are fp32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import pack_rows, token_budget_batches

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["EncoderConfig", "Encoder", "EncodedBatch", "Precision", "resolve_device", "resolve_precision",
           "pick_attn_implementation"]

DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float16": torch.float16, "fp16": torch.float16}


@dataclass
class EncoderConfig:
    """How the transformer is loaded and run. `None` means "choose automatically"."""

    max_length: int = 512
    max_tokens_per_batch: int = 16384
    max_batch_size: int = 256
    attn_implementation: str | None = None  # "flash_attention_2" | "sdpa" | "eager" | None (auto)
    dtype: str = "auto"  # "auto" (bf16 on GPU; bf16 autocast on CPUs with native bf16; else fp32) | "float32" |
    #                      "bfloat16" | "float16" (weights in that dtype)
    device: str | None = None  # None: cuda when available, else cpu
    packing: bool | None = None  # None: packed varlen rows with flash-attn, padded otherwise
    revision: str | None = None
    trust_remote_code: bool = False  # off unless the user asks: remote code runs arbitrary Python
    local_files_only: bool = False
    model_kwargs: dict = field(default_factory=dict)


@dataclass
class EncodedBatch:
    """Unpadded token states of one batch: the tokens of all sequences concatenated, in batch order."""

    hidden: torch.Tensor  # (total_tokens, hidden_size)
    input_ids: torch.Tensor  # (total_tokens,)
    cu_seqlens: torch.Tensor  # (batch + 1,) offsets into `hidden`

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def __len__(self) -> int:
        return self.cu_seqlens.numel() - 1

    def split(self, tensor: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-sequence views of `tensor` (default: the hidden states)."""
        tensor = self.hidden if tensor is None else tensor
        return list(torch.split(tensor, self.lengths.tolist(), dim=0))

    def segment_ids(self) -> torch.Tensor:
        """Sequence index of every token, (total_tokens,)."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.hidden.device), self.lengths)


def resolve_device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_attn_implementation(device: torch.device, requested: str | None = None,
                             dtype: torch.dtype | None = None) -> str:
    """flash_attention_2 when flash-attn is installed, we run on CUDA and in half precision (flash-attn has no
    float32 kernels), else sdpa (eager as last resort)."""
    if requested:
        return requested
    half = dtype is None or dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


@dataclass(frozen=True)
class Precision:
    """Weights dtype and compute dtype; they differ when matmuls run under autocast (bf16 on a CPU)."""

    weights: torch.dtype
    compute: torch.dtype

    @property
    def autocast(self) -> bool:
        return self.compute != self.weights

    def __str__(self) -> str:
        name = lambda d: str(d).replace("torch.", "")
        return f"{name(self.weights)} weights" + (f", {name(self.compute)} autocast" if self.autocast else "")


def _native_bf16_cpu() -> bool:
    from .index.late_interaction import cpu_has_native_bf16  # one detection for encoder and indexes

    return cpu_has_native_bf16()


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Weights and compute dtype for a dtype setting. 'auto': bf16 (else fp16) weights on CUDA; fp32 weights and
    bf16 autocast on a CPU with native bf16 (bf16 weights also round norms and residual sums: min cosine to the
    fp32 vectors 0.99992 vs 0.99997, MiniLM on 100 scifact texts); fp32 elsewhere. A dtype name puts the weights
    (and the compute) in that dtype."""
    if name == "auto":
        if device.type == "cuda":
            half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return Precision(half, half)
        if device.type == "cpu" and _native_bf16_cpu():
            return Precision(torch.float32, torch.bfloat16)
        return Precision(torch.float32, torch.float32)
    try:
        dtype = DTYPE_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16") from None
    return Precision(dtype, dtype)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights dtype of `resolve_precision`."""
    return resolve_precision(name, device).weights


class Encoder(nn.Module):
    """A transformer encoder plus its tokenizer, run with token-budget batching."""

    def __init__(self, model: nn.Module, tokenizer, config: EncoderConfig | None = None, model_id: str = ""):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EncoderConfig()
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or ""
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and self.config.max_length > limit:
            logger.warning("max_length %d exceeds the model's %d positions; using %d", self.config.max_length, limit, limit)
            self.config = replace(self.config, max_length=int(limit))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, config: EncoderConfig | None = None, **overrides) -> Encoder:
        """Load tokenizer and encoder weights by hub id or local path."""
        from transformers import AutoModel, AutoTokenizer

        config = replace(config or EncoderConfig(), **overrides)
        device = resolve_device(config.device)
        dtype = resolve_precision(config.dtype, device).weights
        attn = pick_attn_implementation(device, config.attn_implementation, dtype)
        common = dict(revision=config.revision, trust_remote_code=config.trust_remote_code,
                      local_files_only=config.local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
        try:
            model = AutoModel.from_pretrained(name_or_path, attn_implementation=attn, dtype=dtype, **common,
                                              **config.model_kwargs)
        except (ValueError, ImportError) as err:
            if config.attn_implementation:  # the user asked for this backend: say why it failed
                raise
            fallback = "eager" if attn == "sdpa" else "sdpa"
            logger.info("attention %s unavailable for %s (%s); using %s", attn, name_or_path, err, fallback)
            model = AutoModel.from_pretrained(name_or_path, attn_implementation=fallback, dtype=dtype, **common,
                                              **config.model_kwargs)
        model.to(device).eval()
        return cls(model, tokenizer, replace(config, device=str(device)), model_id=str(name_or_path))

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        config: Any = self.model.config
        return int(config.hidden_size)

    @property
    def attn_implementation(self) -> str:
        return str(getattr(self.model.config, "_attn_implementation", "eager"))

    @property
    def precision(self) -> Precision:
        """Weights and compute dtype on the current device (autocast only for "auto" on fp32 weights)."""
        weights = next(self.model.parameters()).dtype
        wanted = resolve_precision(self.config.dtype, self.device)
        return Precision(weights, wanted.compute if wanted.weights == weights else weights)

    @property
    def packing(self) -> bool:
        if self.config.packing is None:
            return self.attn_implementation == "flash_attention_2"
        return self.config.packing

    # ------------------------------------------------------------------ tokenization
    def tokenize(self, texts: Sequence[str], prompt: str = "", max_length: int | None = None,
                 add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids per text (prompt prepended), truncated to `max_length`, unpadded."""
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of texts, not a single string")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        max_length = min(max_length or self.config.max_length, self.config.max_length)
        enc = self.tokenizer([prompt + t for t in texts], truncation=True, max_length=max_length,
                             add_special_tokens=add_special_tokens, return_attention_mask=False,
                             return_token_type_ids=False)
        return [list(ids) for ids in enc["input_ids"]]

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        config: Any = self.model.config
        return int(pad if pad is not None else (config.pad_token_id or 0))

    # ------------------------------------------------------------------ forward
    def forward_ids(self, ids: Sequence[Sequence[int]]) -> EncodedBatch:
        """Run the transformer on one batch of token id lists; keeps gradients (training uses it)."""
        if len(ids) == 0:
            raise ValueError("forward_ids needs at least one sequence")
        lengths = [len(x) for x in ids]
        if min(lengths) == 0:
            raise ValueError("cannot encode an empty token sequence")
        device = self.device
        flat_ids = torch.tensor([t for seq in ids for t in seq], dtype=torch.long, device=device)
        cu = torch.zeros(len(ids) + 1, dtype=torch.long, device=device)
        cu[1:] = torch.cumsum(torch.tensor(lengths, device=device), 0)
        with self.compute_context():
            if self.packing and self.attn_implementation == "flash_attention_2":
                hidden = self._forward_varlen(flat_ids, lengths, cu)
            elif self.packing:
                hidden = self._forward_packed_rows(ids, lengths)
            else:
                hidden = self._forward_padded(ids, lengths)
        # float32 token states: pooling, projection and normalisation are never rounded to bf16
        return EncodedBatch(hidden=hidden.float(), input_ids=flat_ids, cu_seqlens=cu)

    def compute_context(self):
        """bf16 autocast around a forward pass when the precision says so (CPU "auto"), else a no-op."""
        precision = self.precision
        if not precision.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=precision.compute)

    def _positions(self, lengths: Sequence[int], device) -> torch.Tensor:
        return torch.cat([torch.arange(n, device=device) for n in lengths])

    def _forward_padded(self, ids: Sequence[Sequence[int]], lengths: list[int]) -> torch.Tensor:
        device, width = self.device, max(lengths)
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(ids), width), dtype=torch.long, device=device)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.as_tensor(seq, device=device)
            mask[i, : len(seq)] = 1
        out = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return out[mask.bool()]

    def _forward_varlen(self, flat_ids: torch.Tensor, lengths: list[int], cu: torch.Tensor) -> torch.Tensor:
        cu32 = cu.to(torch.int32)
        longest = max(lengths)
        out = self.model(input_ids=flat_ids[None], position_ids=self._positions(lengths, flat_ids.device)[None],
                         cu_seq_lens_q=cu32, cu_seq_lens_k=cu32, max_length_q=longest, max_length_k=longest)
        return out.last_hidden_state[0]

    def _forward_packed_rows(self, ids: Sequence[Sequence[int]], lengths: list[int]) -> torch.Tensor:
        device = self.device
        rows = pack_rows(lengths, capacity=max(lengths))
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long, device=device)
        positions = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        segments = torch.full((len(rows), width), -1, dtype=torch.long, device=device)
        where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(ids)  # (row, start, length) per sequence
        for r, row in enumerate(rows):
            start = 0
            for s, i in enumerate(row):
                n = lengths[i]
                input_ids[r, start : start + n] = torch.as_tensor(ids[i], device=device)
                positions[r, start : start + n] = torch.arange(n, device=device)
                segments[r, start : start + n] = s
                where[i] = (r, start, n)
                start += n
        masks = self._segment_masks(segments)
        out = self.model(input_ids=input_ids, position_ids=positions, attention_mask=masks).last_hidden_state
        return torch.cat([out[r, s : s + n] for r, s, n in where], dim=0)

    def _segment_masks(self, segments: torch.Tensor):
        """Block-diagonal masks (one block per packed sequence; padding is a block of its own, so no
        row is fully masked) built by transformers' own mask functions for this model's backend."""
        from transformers.masking_utils import (create_bidirectional_mask,
                                                create_bidirectional_sliding_window_mask,
                                                packed_sequence_mask_function)

        config = self.model.config
        dtype = next(self.model.parameters()).dtype
        dummy = torch.zeros((*segments.shape, 1), dtype=dtype, device=segments.device)
        same_segment = packed_sequence_mask_function(segments)
        kwargs = dict(config=config, inputs_embeds=dummy, attention_mask=None, and_mask_function=same_segment)
        layer_types = getattr(config, "layer_types", None)
        if layer_types and "sliding_attention" in layer_types:
            return {"full_attention": create_bidirectional_mask(**kwargs),
                    "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs)}
        return create_bidirectional_mask(**kwargs)

    # ------------------------------------------------------------------ batched mapping
    def iter_batches(self, ids: Sequence[Sequence[int]], show_progress: bool = False, desc: str = "encode",
                     ) -> Iterator[tuple[tuple[int, ...], EncodedBatch]]:
        """Yield (input indices, token states) per token-budget batch, longest batches first, no gradients."""
        plans = token_budget_batches([len(x) for x in ids], self.config.max_tokens_per_batch,
                                     self.config.max_batch_size)
        bar = tqdm(total=len(ids), desc=desc, unit="text", disable=not show_progress)
        try:
            with torch.inference_mode():
                for plan in plans:
                    yield plan.indices, self.forward_ids([ids[i] for i in plan.indices])
                    bar.update(len(plan.indices))
        finally:
            bar.close()

    def map(self, ids: Sequence[Sequence[int]], fn: Callable[[EncodedBatch], Sequence[T]],
            show_progress: bool = False, desc: str = "encode") -> list[T]:
        """Apply `fn` (token states -> one result per sequence) to every batch; results in input order."""
        results: list = [None] * len(ids)
        for indices, batch in self.iter_batches(ids, show_progress=show_progress, desc=desc):
            for i, r in zip(indices, fn(batch)):
                results[i] = r
        return results

    def save_pretrained(self, path: str) -> None:
        """Save weights (safetensors) and tokenizer in the standard transformers layout."""
        model: Any = self.model
        model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
