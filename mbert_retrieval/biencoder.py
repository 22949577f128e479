"""Single-vector bi-encoder on the encoder core: pooling, normalisation, Matryoshka dims, prompts.

Reads and writes sentence-transformers model directories (modules.json + Transformer + Pooling
[+ Dense] [+ Normalize]), so `SentenceTransformer(path)` loads what we save and we load what it saves.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .chunking import (ChunkingConfig, max_pool_chunk_scores, special_token_layout, split_into_chunks,
                       tokenize_untruncated)
from .encoder import EncodedBatch, Encoder, EncoderConfig
from .files import load_state, weight_files, weights_fingerprint, write_json as _write_json
from .pooling import POOLING_MODES, normalize, pool, truncate_dim

logger = logging.getLogger(__name__)

__all__ = ["BiEncoderConfig", "BiEncoder"]

EXTRA_CONFIG = "mbert_retrieval.json"
_ST_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                    "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken"}
_ACTIVATIONS = {"torch.nn.modules.linear.Identity": nn.Identity, "torch.nn.modules.activation.Tanh": nn.Tanh,
                "torch.nn.modules.activation.ReLU": nn.ReLU, "torch.nn.modules.activation.GELU": nn.GELU}


@dataclass
class BiEncoderConfig:
    """Everything that defines how texts become one vector each."""

    pooling: str = "mean"
    normalize: bool = True
    truncate_dim: int | None = None  # Matryoshka: keep the first N dimensions
    query_prompt: str = ""
    document_prompt: str = ""
    include_prompt: bool = True  # False: prompt tokens are left out of mean/max pooling
    do_lower_case: bool = False  # lowercase texts before tokenizing (sentence_bert_config.json)
    chunking: ChunkingConfig | None = None  # long documents: overlapping windows, max of chunk scores
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")


class BiEncoder(nn.Module):
    """Texts -> one float32 vector each (L2-normalised unless configured otherwise)."""

    kind = "dense"

    def __init__(self, encoder: Encoder, config: BiEncoderConfig | None = None,
                 dense_layers: Sequence[nn.Module] = (), revision: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.config = config or BiEncoderConfig()
        self.dense = nn.Sequential(*dense_layers)
        self.model_id = encoder.model_id
        self.revision = revision
        self._weight_files: list[tuple[str, Path]] = []  # (role, file) the weights were loaded from
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, name_or_path: str, config: BiEncoderConfig | None = None,
                        **overrides) -> BiEncoder:
        """Load a sentence-transformers directory or hub id, or wrap a plain transformers encoder
        (mean pooling, normalised) when no sentence-transformers files are present.

        `overrides` set single fields of BiEncoderConfig or EncoderConfig (e.g. `truncate_dim=256,
        device="cpu"`); they win over the directory's settings."""
        model_fields = {f.name for f in fields(BiEncoderConfig)} - {"encoder"}
        enc_fields = {f.name for f in fields(EncoderConfig)}
        unknown = set(overrides) - model_fields - enc_fields
        if unknown:
            raise TypeError(f"unknown BiEncoder/Encoder settings: {sorted(unknown)}")
        model_over = {k: v for k, v in overrides.items() if k in model_fields}
        config = replace(config or BiEncoderConfig(), **model_over)
        enc_cfg = replace(config.encoder, **{k: v for k, v in overrides.items() if k in enc_fields})
        root = _resolve_dir(str(name_or_path), enc_cfg)
        dense_layers: list[nn.Module] = []
        transformer_dir, dense_dirs = root, []
        if (root / "modules.json").is_file():
            config, enc_cfg, transformer_dir, dense_dirs = _read_st_dir(root, config, enc_cfg)
            config = replace(config, **model_over)
            dense_layers = [_load_st_dense(d) for d in dense_dirs]
        encoder = Encoder.from_pretrained(str(transformer_dir), enc_cfg)
        encoder.model_id = str(name_or_path)
        model = cls(encoder, replace(config, encoder=encoder.config), dense_layers, revision=enc_cfg.revision)
        model.dense.to(encoder.device)
        model._bind_weights(transformer_dir, dense_dirs)
        return model

    def _bind_weights(self, transformer_dir: Path, dense_dirs: Sequence[Path]) -> None:
        """Remember the files that hold this model's weights (for `fingerprint`)."""
        self._weight_files = [("transformer", f) for f in weight_files(transformer_dir)]
        self._weight_files += [(f"dense{i}", f) for i, d in enumerate(dense_dirs) for f in weight_files(d)]
        self._fingerprint = None

    @property
    def fingerprint(self) -> str | None:
        """A stable hash of the weights this model was loaded from (or last saved to); None when it has no
        weight files. Indexes record it and compare it on open (see `files.weights_fingerprint`: sampled,
        a few MB read for a large checkpoint, computed once per model object)."""
        if self._fingerprint is None and self._weight_files:
            self._fingerprint = weights_fingerprint(self._weight_files)
        return self._fingerprint

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a sentence-transformers directory (safetensors weights, no pickle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(path))
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        pooling = {"word_embedding_dimension": self.encoder.hidden_size, "pooling_mode_mean_sqrt_len_tokens": False,
                   "pooling_mode_weightedmean_tokens": False, "include_prompt": self.config.include_prompt}
        pooling.update({key: mode == self.config.pooling for mode, key in _ST_POOLING_KEYS.items()})
        _write_json(path / "1_Pooling" / "config.json", pooling)
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        for layer in self.dense:
            idx = len(modules)
            _save_st_dense(layer, path / f"{idx}_Dense")
            modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Dense",
                            "type": "sentence_transformers.models.Dense"})
        if self.config.normalize:
            idx = len(modules)
            modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        _write_json(path / "modules.json", modules)
        _write_json(path / "sentence_bert_config.json",
                    {"max_seq_length": self.encoder.config.max_length,
                     "do_lower_case": self.config.do_lower_case})
        import sentence_transformers
        import transformers

        _write_json(path / "config_sentence_transformers.json", {
            "__version__": {"sentence_transformers": sentence_transformers.__version__,
                            "transformers": transformers.__version__, "pytorch": torch.__version__},
            "model_type": "SentenceTransformer",
            "prompts": {"query": self.config.query_prompt, "document": self.config.document_prompt},
            "default_prompt_name": None, "similarity_fn_name": "cosine"})
        _write_json(path / EXTRA_CONFIG, {"kind": "dense", "truncate_dim": self.config.truncate_dim,
                                          "source_model_id": self.model_id})
        self._bind_weights(path, [path / f"{i + 2}_Dense" for i in range(len(self.dense))])

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        last: Any = self.dense[-1] if len(self.dense) else None
        full = int(last.out_features) if last is not None else int(self.encoder.hidden_size)
        return min(self.config.truncate_dim or full, full)

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def cache_key(self) -> dict:
        """Everything besides the weights that changes the vectors (embedding caches key on it)."""
        cfg = asdict(self.config)
        enc = cfg.pop("encoder")
        return {**cfg, "max_length": enc["max_length"], "dense": len(self.dense)}

    # ------------------------------------------------------------------ encoding
    def embed_batch(self, batch: EncodedBatch, prompt_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Token states -> vectors (pool, dense layers, normalise, truncate). Differentiable."""
        skip = None if self.config.include_prompt else prompt_lengths
        x = pool(batch, self.config.pooling, skip_first=skip)
        if len(self.dense):  # Dense layers stay float32 when the transformer runs in bf16/fp16
            x = self.dense(x.to(next(self.dense.parameters()).dtype))
        if self.config.normalize:
            x = normalize(x)
        return truncate_dim(x, self.config.truncate_dim, renormalize=self.config.normalize)

    def forward(self, texts: Sequence[str], is_query: bool = False) -> torch.Tensor:
        """Vectors with gradients, for training (one batch, no chunking)."""
        ids, prompt_len = self._tokenize(texts, is_query)
        return self.embed_batch(self.encoder.forward_ids(ids), prompt_len)

    def encode(self, texts: Sequence[str], is_query: bool = False, show_progress: bool = False) -> np.ndarray:
        """float32 array (n, dim), rows in input order."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunking = None if is_query else self.config.chunking
        if chunking is not None:
            ids, owners, prompt_len = self._chunk(texts, chunking)
        else:
            (ids, prompt_len), owners = self._tokenize(texts, is_query), None

        def fn(batch: EncodedBatch, idx: Sequence[int]) -> torch.Tensor:
            lens = None if prompt_len is None else prompt_len[list(idx)]
            return self.embed_batch(batch, lens).float().cpu()

        rows = self._map(ids, fn, show_progress, "encode queries" if is_query else "encode documents")
        out = torch.stack(rows).numpy().astype(np.float32, copy=False)
        if owners is None:
            return out
        # one vector per document: the chunk vectors are kept as separate rows by `encode_chunks`;
        # here (single-vector API) a document is represented by the mean of its chunk vectors.
        return _merge_chunk_vectors(out, owners, len(texts), self.config.normalize)

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts, is_query=True, show_progress=show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts, is_query=False, show_progress=show_progress)

    def encode_chunks(self, texts: Sequence[str], show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Long documents as overlapping chunks: (chunk vectors, owning document index per chunk)."""
        ids, owners, _ = self._chunk(texts, self.config.chunking or ChunkingConfig())
        rows = self._map(ids, lambda b, idx: self.embed_batch(b).float().cpu(), show_progress, "encode chunks")
        return torch.stack(rows).numpy(), np.asarray(owners, dtype=np.int64)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """(n_queries, n_documents) similarity; with chunking, a document scores as its best chunk."""
        q = self.encode_queries(queries)
        if self.config.chunking is None:
            return q @ self.encode_documents(documents).T
        chunks, owners = self.encode_chunks(documents)
        return max_pool_chunk_scores(q @ chunks.T, owners, len(documents))

    # ------------------------------------------------------------------ helpers
    def _prepare(self, texts: Sequence[str], prompt: str) -> list[str]:
        """prompt + text, stripped (and lowercased when configured), as sentence-transformers < 6 and PyLate
        tokenize: with byte-level BPE tokenizers (ModernBERT) leading/trailing whitespace would change the
        tokens. Deliberately independent of the installed sentence-transformers: 6.x no longer strips, so
        there a text with surrounding whitespace matches our vector once stripped (an index's vectors must
        not depend on which sentence-transformers happens to be installed)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        out = [(prompt + t).strip() for t in texts]
        return [t.lower() for t in out] if self.config.do_lower_case else out

    def _tokenize(self, texts: Sequence[str], is_query: bool,
                  max_length: int | None = None) -> tuple[list[list[int]], torch.Tensor | None]:
        """Token ids (truncated) and, when prompt tokens are left out of pooling, the prompt length per text."""
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, not a single string")
        prompt = self.config.query_prompt if is_query else self.config.document_prompt
        ids = self.encoder.tokenize(self._prepare(texts, prompt), max_length=max_length)
        if not prompt or self.config.include_prompt:
            return ids, None
        # prompt tokens (after the leading special token) are excluded from pooling, as in sentence-transformers
        n = len(self.encoder.tokenize(self._prepare([""], prompt))[0]) - 1
        return ids, torch.full((len(ids),), n, dtype=torch.long)

    def _chunk(self, texts: Sequence[str], chunking: ChunkingConfig):
        """Untruncated token ids cut into overlapping windows (special tokens repeated on each)."""
        tok = self.encoder.tokenizer
        ids = tokenize_untruncated(tok, self._prepare(texts, self.config.document_prompt))
        lead, trail = special_token_layout(tok)
        prompt = self._prepare([""], self.config.document_prompt)[0]
        if prompt:  # the prompt is repeated on every chunk, like the leading special tokens
            lead += len(tok(prompt, add_special_tokens=False)["input_ids"])
        max_len = min(chunking.max_tokens, self.encoder.config.max_length)
        chunks, owners = split_into_chunks(ids, max_len, chunking.overlap, keep_prefix=lead, keep_suffix=trail)
        prompt_len = self._tokenize(texts[:1], False)[1]
        if prompt_len is not None:
            prompt_len = prompt_len[:1].expand(len(chunks))
        return chunks, owners, prompt_len

    def _map(self, ids, fn, show_progress: bool, desc: str) -> list[torch.Tensor]:
        results: list = [None] * len(ids)
        for indices, batch in self.encoder.iter_batches(ids, show_progress=show_progress, desc=desc):
            for i, row in zip(indices, fn(batch, indices)):
                results[i] = row
        return results


def _merge_chunk_vectors(vectors: np.ndarray, owners: Sequence[int], n: int, renorm: bool) -> np.ndarray:
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, np.asarray(owners), vectors)
    if renorm:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def _resolve_dir(name_or_path: str, cfg: EncoderConfig) -> Path:
    """Local directory for a path or hub id (downloaded when needed)."""
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    from .hub import snapshot

    return snapshot(name_or_path, cfg.revision, local_files_only=cfg.local_files_only)


def _read_st_dir(root: Path, config: BiEncoderConfig, enc_cfg: EncoderConfig):
    """Parse modules.json and friends into our config; return the transformer and dense dirs."""
    modules = json.loads((root / "modules.json").read_text())
    transformer_dir, dense_dirs, has_normalize, pooling_cfg = root, [], False, None
    pooling_file = root / "1_Pooling" / "config.json"
    for m in modules:
        kind = m.get("type", "").rsplit(".", 1)[-1]
        sub = root / m.get("path", "")
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            pooling_file = sub / "config.json"
            pooling_cfg = json.loads(pooling_file.read_text())
        elif kind == "Dense":
            dense_dirs.append(sub)
        elif kind == "Normalize":
            has_normalize = True
        else:
            raise ValueError(f"{root / 'modules.json'}: module type {m.get('type')!r} is not supported")
    updates: dict = {"normalize": has_normalize}
    if pooling_cfg is not None:
        updates["pooling"] = _st_pooling_mode(pooling_cfg, pooling_file)
        updates["include_prompt"] = bool(pooling_cfg.get("include_prompt", True))
    f = transformer_dir / "sentence_bert_config.json"
    f = f if f.is_file() else root / "sentence_bert_config.json"
    sbert = json.loads(f.read_text()) if f.is_file() else {}
    # sentence-transformers < 6 writes max_seq_length here; 6.x keeps it as the tokenizer's model_max_length
    # (and do_lower_case as a Lowercase normalizer in tokenizer.json, which our tokenizer applies by itself)
    max_len = sbert.get("max_seq_length") or _tokenizer_max_length(transformer_dir)
    if max_len and enc_cfg.max_length == EncoderConfig.max_length:
        enc_cfg = replace(enc_cfg, max_length=int(max_len))
    if not config.do_lower_case:
        updates["do_lower_case"] = bool(sbert.get("do_lower_case", False))
    st_cfg = root / "config_sentence_transformers.json"
    if st_cfg.is_file():
        prompts = json.loads(st_cfg.read_text()).get("prompts") or {}
        if not config.query_prompt and prompts.get("query"):
            updates["query_prompt"] = prompts["query"]
        if not config.document_prompt:
            updates["document_prompt"] = prompts.get("document") or prompts.get("passage") or ""
    extra = root / EXTRA_CONFIG
    if extra.is_file() and config.truncate_dim is None:
        updates["truncate_dim"] = json.loads(extra.read_text()).get("truncate_dim")
    return replace(config, **updates), enc_cfg, transformer_dir, dense_dirs


def _st_pooling_mode(cfg: dict, where: Path) -> str:
    """The pooling mode of a sentence-transformers Pooling config: 6.x writes `pooling_mode` (a name or a
    list of names), earlier versions one `pooling_mode_*` flag per mode. Exactly one supported mode."""
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
    else:
        legacy = {**{key: mode for mode, key in _ST_POOLING_KEYS.items()},
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean"}
        modes = [mode for key, mode in legacy.items() if cfg.get(key)]
    if len(modes) != 1 or modes[0] not in _ST_POOLING_KEYS:
        raise ValueError(f"{where}: pooling {modes!r} is not supported (exactly one of "
                         f"{', '.join(_ST_POOLING_KEYS)})")
    return modes[0]


def _tokenizer_max_length(folder: Path) -> int | None:
    """`model_max_length` of a saved tokenizer when it is a real limit (transformers writes 1e30 for none)."""
    f = folder / "tokenizer_config.json"
    value = json.loads(f.read_text()).get("model_max_length") if f.is_file() else None
    return int(value) if isinstance(value, (int, float)) and 0 < value < 1_000_000 else None


def _load_st_dense(path: Path) -> nn.Module:

    cfg = json.loads((path / "config.json").read_text())
    linear = nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    state = load_state(path)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    act_name = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if act_name not in _ACTIVATIONS:
        raise ValueError(f"{path}/config.json: activation {act_name!r} is not supported")
    return _DenseBlock(linear, _ACTIVATIONS[act_name]())


class _DenseBlock(nn.Sequential):
    """A linear layer (+ activation) with `out_features` exposed, saved like sentence-transformers' Dense."""

    def __init__(self, linear: nn.Linear, activation: nn.Module | None = None):
        super().__init__(linear, activation or nn.Identity())

    @property
    def out_features(self) -> int:
        linear: Any = self[0]
        return int(linear.out_features)


def _save_st_dense(layer: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    linear, act = (layer[0], layer[1]) if isinstance(layer, nn.Sequential) else (layer, nn.Identity())
    act_name = next((k for k, v in _ACTIVATIONS.items() if isinstance(act, v)), "torch.nn.modules.linear.Identity")
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "config.json", {"in_features": linear.in_features, "out_features": linear.out_features,
                                        "bias": linear.bias is not None, "activation_function": act_name})
    save_file({f"linear.{k}": v.detach().contiguous().cpu() for k, v in linear.state_dict().items()},
              str(path / "model.safetensors"))
