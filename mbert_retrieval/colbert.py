"""ColBERT late-interaction model on any Hugging Face encoder, in PyLate's format and with PyLate's behaviour.

Text -> token ids exactly as pylate 1.6 builds them: the text is stripped (and lower-cased when the
checkpoint's sentence_bert_config.json says so), tokenized with truncation to `length - 1`, and the
marker token ("[Q] " / "[D] ", added to the vocabulary as whole tokens) is inserted right after the first
token ([CLS]). Queries are then padded with the mask token to `query_length` (query expansion).

Expansion tokens and attention (`attend_to_expansion_tokens`):
- True: the [MASK] tokens are ordinary tokens; the batch goes through `Encoder.forward_ids`.
- False (PyLate's and the original ColBERT's default): PyLate feeds the [MASK] tokens with attention_mask 0,
  so no token attends *to* them, yet their own outputs are computed (each attends to the real tokens) and
  kept in the query matrix. `Encoder` has no way to express "a token that is not a key", so this path runs
  the Encoder's transformer on a padded (B, query_length) batch with exactly PyLate's 2-D attention mask
  (no padding cost: every expanded query has the same length). The outputs therefore match PyLate on the
  same attention backend. Note: with flash_attention_2, transformers drops masked *query* positions too,
  so the expansion outputs differ from SDPA/eager there - for PyLate as well.

Documents keep every token in the input; punctuation (skiplist) tokens are dropped from the output.
Every token vector goes through the Dense projection(s) and is L2-normalised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import string
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import token_budget_batches
from .chunking import (ChunkingConfig, concat_chunk_vectors, max_pool_chunk_scores, special_token_layout,
                       split_into_chunks, tokenize_untruncated)
from .colbert_dense import DENSE_TYPE, DenseLayer
from .encoder import EncodedBatch, Encoder, EncoderConfig
from .files import read_json as _read_json, weight_files, weights_fingerprint, write_json as _write_json
from .maxsim import maxsim, pad_token_vectors
from .pooling import normalize

logger = logging.getLogger(__name__)

__all__ = ["ColBERTConfig", "ColBERT", "DenseLayer"]  # DenseLayer: from .colbert_dense

# settings PyLate stores in config_sentence_transformers.json
_PYLATE_KEYS = ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
                "attend_to_expansion_tokens", "skiplist_words")


@dataclass
class ColBERTConfig:
    """Model settings; defaults are PyLate's."""

    dim: int = 128
    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: list[str] = field(default_factory=lambda: list(string.punctuation))
    normalize: bool = True
    seed: int = 42  # for new (random) projection layers and marker-token embeddings
    chunking: ChunkingConfig | None = None  # long documents: overlapping windows instead of truncation
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        for name in ("dim", "query_length", "document_length"):  # caught here, not as a TypeError mid-encode
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ColBERT {name} must be a positive integer, got {value!r}")


class ColBERT(nn.Module):
    """Token-level (multi-vector) retrieval model: encoder -> Dense projection(s) -> normalised token vectors."""

    kind = "colbert"

    def __init__(self, encoder: Encoder, layers: Sequence[DenseLayer], config: ColBERTConfig,
                 do_lower_case: bool = False, model_id: str = "", add_new_rows: bool = False):
        super().__init__()
        if not layers:
            raise ValueError("ColBERT needs at least one projection layer")
        self.encoder = encoder
        self.projection = nn.Sequential(*layers).to(encoder.device)
        self.config = replace(config, dim=int(layers[-1].linear.out_features))
        self.do_lower_case = do_lower_case
        self.model_id = model_id or encoder.model_id
        self.revision = config.encoder.revision
        # weights created here (a random projection, marker-token embeddings) that no file holds yet:
        # `Retriever.build` saves such a model with the index, so the index never depends on torch's RNG
        self.new_weights = False
        self._weight_files: list[tuple[str, Path]] = []  # (role, file) the weights were loaded from
        self._fingerprint: str | None = None
        self._setup_tokens(add_new_rows)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path_or_id: str, config: ColBERTConfig | None = None, **overrides) -> ColBERT:
        """Load a PyLate checkpoint (modules.json with Transformer + Dense modules), or build a new ColBERT
        on any plain encoder (adds the marker tokens and a random, untrained hidden->dim projection).

        Settings: without `config`, the checkpoint's (config_sentence_transformers.json, else defaults);
        an explicit `config` wins over the checkpoint. `overrides` set single fields of ColBERTConfig or
        EncoderConfig (e.g. `query_length=64, device="cpu"`). A `dim` different from the checkpoint's adds a
        new random projection layer, as PyLate's `embedding_size` does.
        """
        col_fields = {f.name for f in dataclasses.fields(ColBERTConfig)} - {"encoder"}
        enc_fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        unknown = set(overrides) - col_fields - enc_fields
        if unknown:
            raise TypeError(f"unknown ColBERT/Encoder settings: {sorted(unknown)}")
        base = config or ColBERTConfig()
        enc_cfg = replace(base.encoder, **{k: v for k, v in overrides.items() if k in enc_fields})
        col_over = {k: v for k, v in overrides.items() if k in col_fields}
        root = _resolve_dir(path_or_id, enc_cfg)
        modules = _read_json(root / "modules.json") or []
        transformer = next((m for m in modules if str(m.get("type", "")).endswith("Transformer")), None)
        hf_dir = root / (transformer.get("path", "") if transformer else "")
        dense = [m for m in modules if str(m.get("type", "")).endswith("Dense")]
        hf_cfg = _read_json(hf_dir / "config.json") or {}
        if "HF_ColBERT" in (hf_cfg.get("architectures") or []):
            raise NotImplementedError("Stanford ColBERT (HF_ColBERT) checkpoints are not supported; use a PyLate one")
        do_lower_case = bool((_read_json(hf_dir / "sentence_bert_config.json") or {}).get("do_lower_case", False))

        layers = [DenseLayer.load(root / m["path"]) for m in dense]
        if config is None and layers:
            stored = _read_json(root / "config_sentence_transformers.json") or {}
            settings = {k: stored[k] for k in _PYLATE_KEYS if stored.get(k) is not None}
            base = replace(base, **settings, dim=int(layers[-1].linear.out_features))
        cfg = replace(base, **col_over, encoder=enc_cfg)
        if not cfg.do_query_expansion:
            cfg = replace(cfg, attend_to_expansion_tokens=False)  # as PyLate

        encoder = Encoder.from_pretrained(str(hf_dir), enc_cfg)
        n_loaded = len(layers)
        if not layers or layers[-1].linear.out_features != cfg.dim:
            in_features = layers[-1].linear.out_features if layers else encoder.hidden_size
            with _seeded(cfg.seed):
                layers.append(DenseLayer(in_features, cfg.dim, bias=False))
            logger.warning("%s: new projection %d -> %d is random (seed %d) and untrained; fine-tune before use",
                           path_or_id, in_features, cfg.dim, cfg.seed)
        n_embeddings = _vocab_rows(encoder)
        model = cls(encoder, layers, cfg, do_lower_case=do_lower_case, model_id=str(path_or_id),
                    add_new_rows=not dense)
        grown = _vocab_rows(model.encoder) > n_embeddings
        model.new_weights = len(layers) > n_loaded or grown
        model._bind_weights(hf_dir, [root / m["path"] for m in dense])
        return model

    def _setup_tokens(self, building: bool) -> None:
        """Marker tokens, expansion (pad) token and skiplist ids, as PyLate sets them up."""
        model: Any = self.encoder.model
        tok, cfg = self.encoder.tokenizer, self.config
        markers = [p for p in (cfg.query_prefix, cfg.document_prefix) if p]
        if markers:
            with _seeded(cfg.seed):
                if building:  # PyLate: resize to the tokenizer, add the markers, resize again
                    model.resize_token_embeddings(len(tok))
                tok.add_tokens(markers)
                if building or len(tok) > model.get_input_embeddings().num_embeddings:
                    if not building:
                        logger.warning("marker tokens %s were missing from the checkpoint; their embeddings are new",
                                       markers)
                    model.resize_token_embeddings(len(tok))
        self.query_prefix_id = tok.convert_tokens_to_ids(cfg.query_prefix) if cfg.query_prefix else None
        self.document_prefix_id = tok.convert_tokens_to_ids(cfg.document_prefix) if cfg.document_prefix else None
        # PyLate pads (expands) queries with the mask token, else EOS, else the pad token
        if tok.mask_token_id is not None:
            tok.pad_token_id = tok.mask_token_id
        elif tok.eos_token_id is not None:
            tok.pad_token_id = tok.eos_token_id
        elif tok.pad_token_id is None:
            raise ValueError("the tokenizer has no mask, eos or pad token to expand queries with")
        self.expansion_token_id = int(tok.pad_token_id)
        ids = [tok.convert_tokens_to_ids(w) for w in cfg.skiplist_words]
        self.skiplist_ids = torch.tensor(sorted({i for i in ids if i is not None}), dtype=torch.long)

    def _bind_weights(self, hf_dir: Path, dense_dirs: Sequence[Path]) -> None:
        """Remember the files that hold this model's weights (for `fingerprint`)."""
        self._weight_files = [("transformer", f) for f in weight_files(hf_dir)]
        self._weight_files += [(f"dense{i}", f) for i, d in enumerate(dense_dirs) for f in weight_files(d)]
        self._fingerprint = None

    # ------------------------------------------------------------------ properties
    @property
    def fingerprint(self) -> str | None:
        """A stable hash of the weights: the files this model was loaded from (or last saved to) plus, while
        `new_weights`, the projection and marker-token embeddings made at load (so a change of torch's
        initialisation changes it). None without weight files. See `files.weights_fingerprint`."""
        if self._fingerprint is None and self._weight_files:
            extra: list[bytes] = []
            if self.new_weights:
                tensors = [t for layer in self.projection for t in layer.state_dict().values()]
                marker_ids = [i for i in (self.query_prefix_id, self.document_prefix_id) if i is not None]
                encoder_model: Any = self.encoder.model
                tensors.append(encoder_model.get_input_embeddings().weight[marker_ids])
                extra = [t.detach().float().cpu().contiguous().numpy().tobytes() for t in tensors]
            self._fingerprint = weights_fingerprint(self._weight_files, extra)
        return self._fingerprint

    @property
    def cache_key(self) -> dict:
        """Everything besides the weights that changes the token vectors (embedding caches key on it)."""
        from dataclasses import asdict

        cfg = asdict(self.config)
        enc = cfg.pop("encoder")
        return {**cfg, "max_length": enc["max_length"]}

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    # ------------------------------------------------------------------ tokenization
    def _prepare(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, not a single string")
        texts = [str(t).strip() for t in texts]  # as sentence-transformers' Transformer.tokenize
        return [t.lower() for t in texts] if self.do_lower_case else texts

    def _tokenize(self, texts: Sequence[str], is_query: bool, truncate: bool = True) -> list[list[int]]:
        prefix_id = self.query_prefix_id if is_query else self.document_prefix_id
        length = self.config.query_length if is_query else self.config.document_length
        texts = self._prepare(texts)
        if not texts:
            return []
        if truncate:
            ids = self.encoder.tokenize(texts, max_length=length - (prefix_id is not None))
        else:
            ids = tokenize_untruncated(self.encoder.tokenizer, texts)
        if prefix_id is not None:
            ids = [s[:1] + [prefix_id] + s[1:] for s in ids]
        return ids

    def tokenize_queries(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int] | None]:
        """Query token ids (expanded to query_length with the mask token when do_query_expansion) and,
        when expansion tokens must not be attended to, the number of real tokens per query (else None)."""
        ids = self._tokenize(texts, is_query=True)
        if not self.config.do_query_expansion:
            return ids, None
        real = [len(s) for s in ids]
        ids = [s + [self.expansion_token_id] * (self.config.query_length - len(s)) for s in ids]
        return ids, None if self.config.attend_to_expansion_tokens else real

    def tokenize_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """Document token ids: [CLS] [D] text [SEP], truncated to document_length."""
        return self._tokenize(texts, is_query=False)

    # ------------------------------------------------------------------ forward
    def _states(self, ids: Sequence[Sequence[int]], attend: Sequence[int] | None) -> EncodedBatch:
        """Token states of one batch; `attend[i]`: only the first attend[i] tokens are attended to (PyLate's mask)."""
        if attend is None:
            return self.encoder.forward_ids(ids)
        device, lengths = self.encoder.device, [len(s) for s in ids]
        width = max(lengths)
        input_ids = torch.full((len(ids), width), self.expansion_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(ids), width), dtype=torch.long, device=device)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.as_tensor(seq, device=device)
            mask[i, : attend[i]] = 1
        hidden = self.encoder.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        valid = torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        cu = torch.zeros(len(ids) + 1, dtype=torch.long, device=device)
        cu[1:] = torch.cumsum(torch.tensor(lengths, device=device), 0)
        return EncodedBatch(hidden=hidden[valid], input_ids=input_ids[valid], cu_seqlens=cu)

    def embed_batch(self, batch: EncodedBatch, is_query: bool) -> list[torch.Tensor]:
        """Token states -> per-sequence token vectors (projected, skiplist-filtered for documents,
        normalised). Differentiable."""
        first: Any = self.projection[0]
        weight = first.linear.weight
        x = self.projection(batch.hidden.to(weight.dtype))
        if self.config.normalize:
            x = normalize(x)
        parts = batch.split(x)
        if is_query or self.skiplist_ids.numel() == 0:
            return parts
        keep = ~torch.isin(batch.input_ids, self.skiplist_ids.to(batch.input_ids.device))
        return [p[k] for p, k in zip(parts, batch.split(keep))]

    def forward_queries(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, dim) padded query vectors with gradients, and their bool mask (B, L)."""
        ids, attend = self.tokenize_queries(texts)
        return pad_token_vectors(self.embed_batch(self._states(ids, attend), is_query=True))

    def forward_documents(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, dim) padded document vectors (skiplist tokens removed) with gradients, and their mask."""
        ids = self.tokenize_documents(texts)
        return pad_token_vectors(self.embed_batch(self._states(ids, None), is_query=False))

    # ------------------------------------------------------------------ inference
    def _encode_ids(self, ids: Sequence[Sequence[int]], attend: Sequence[int] | None, is_query: bool,
                    show_progress: bool, desc: str) -> list[np.ndarray]:
        """Token-budget batches (longest first), eval mode, no gradients; results in input order."""
        cfg = self.encoder.config
        results: list = [None] * len(ids)
        plans = token_budget_batches([len(s) for s in ids], cfg.max_tokens_per_batch, cfg.max_batch_size)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), tqdm(total=len(ids), desc=desc, unit="text",
                                              disable=not show_progress) as bar:
                for plan in plans:
                    batch = self._states([ids[i] for i in plan.indices],
                                         None if attend is None else [attend[i] for i in plan.indices])
                    for i, v in zip(plan.indices, self.embed_batch(batch, is_query)):
                        results[i] = v.float().cpu().numpy()
                    bar.update(len(plan.indices))
        finally:
            self.train(was_training)
        return results

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> list[np.ndarray]:
        """One float32 (Lq, dim) matrix per query (Lq = query_length with query expansion)."""
        ids, attend = self.tokenize_queries(texts)
        return self._encode_ids(ids, attend, True, show_progress, "encode queries")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False,
                         chunking: ChunkingConfig | None = None) -> list[np.ndarray]:
        """One float32 (n_i, dim) matrix per document (skiplist tokens removed).

        With `chunking` (default: the config's), a document longer than `chunking.max_tokens` is not truncated:
        it is cut into overlapping windows ([CLS] [D] ... [SEP] each), and its matrix is the union of all
        windows' vectors (what an index stores: MaxSim over the whole document). `score` and `rerank` instead
        max-pool the chunks' own MaxSim scores.
        """
        chunking = chunking or self.config.chunking
        if chunking is None:
            return self._encode_ids(self.tokenize_documents(texts), None, False, show_progress, "encode documents")
        chunks, owners = self.encode_document_chunks(texts, chunking, show_progress)
        return concat_chunk_vectors(chunks, owners.tolist(), len(texts))

    def encode_document_chunks(self, texts: Sequence[str], chunking: ChunkingConfig | None = None,
                               show_progress: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
        """Long documents as overlapping windows: (one token matrix per chunk, owning document per chunk)."""
        chunking = chunking or self.config.chunking or ChunkingConfig()
        if chunking.max_tokens > self.encoder.config.max_length:
            raise ValueError(f"chunk size {chunking.max_tokens} exceeds the encoder's max_length "
                             f"{self.encoder.config.max_length}")
        lead, trail = special_token_layout(self.encoder.tokenizer)
        keep_prefix = 2 if self.document_prefix_id is not None else lead  # first token + marker, as inserted
        ids = self._tokenize(texts, is_query=False, truncate=False)
        chunks, owners = split_into_chunks(ids, chunking.max_tokens, chunking.overlap, keep_prefix, trail)
        vectors = self._encode_ids(chunks, None, False, show_progress, "encode document chunks")
        return vectors, np.asarray(owners, dtype=np.int64)

    def score(self, queries: Sequence, documents: Sequence, chunking: ChunkingConfig | None = None) -> np.ndarray:
        """(n_queries, n_documents) MaxSim scores; texts or precomputed token matrices for either side.
        With chunking (argument or config) and document texts, a document scores as its best chunk."""
        q = self.encode_queries(queries) if len(queries) and isinstance(queries[0], str) else list(queries)
        chunking = chunking or self.config.chunking
        owners = None
        if len(documents) and isinstance(documents[0], str):
            if chunking is not None:
                d, owners = self.encode_document_chunks(documents, chunking)
            else:
                d = self.encode_documents(documents)
        else:
            d = list(documents)
        if not q or not d:
            return np.zeros((len(q), len(documents)), dtype=np.float32)
        qp, qm = pad_token_vectors(q, dtype=torch.float32)
        dp, dm = pad_token_vectors(d, dtype=torch.float32)
        with torch.no_grad():
            scores = maxsim(qp, dp, qm, dm).numpy()
        return scores if owners is None else max_pool_chunk_scores(scores, owners, len(documents))

    def rerank(self, query, documents: Sequence, k: int | None = None,
               chunking: ChunkingConfig | None = None) -> list[tuple[int, float]]:
        """Candidates sorted by MaxSim (with chunking: best chunk), best first: [(index into documents,
        score)], top `k` when given."""
        scores = self.score([query] if isinstance(query, str) else [np.asarray(query)], documents, chunking)[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in order]

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a PyLate directory (safetensors only) that pylate.models.ColBERT and `from_pretrained` load."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(root))
        _write_json(root / "sentence_bert_config.json",
                    {"max_seq_length": self.encoder.config.max_length, "do_lower_case": self.do_lower_case})
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        for i, layer in enumerate(self.projection, start=1):
            folder = root / f"{i}_Dense"
            folder.mkdir(exist_ok=True)
            _write_json(folder / "config.json", _dense(layer).config_dict())
            save_file({k: v.detach().cpu().contiguous() for k, v in layer.state_dict().items()},
                      str(folder / "model.safetensors"))
            modules.append({"idx": i, "name": str(i), "path": folder.name, "type": DENSE_TYPE})
        _write_json(root / "modules.json", modules)
        cfg = self.config
        _write_json(root / "config_sentence_transformers.json", {
            "__version__": {"transformers": _version("transformers"), "pytorch": torch.__version__},
            "prompts": {"query": "", "document": ""}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
            **{k: getattr(cfg, k) for k in _PYLATE_KEYS},
        })
        self.new_weights = False  # every weight is in these files now
        self._bind_weights(root, [root / f"{i}_Dense" for i in range(1, len(self.projection) + 1)])


# ---------------------------------------------------------------------- helpers
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Fork the RNGs and seed them: new weights are reproducible and the caller's RNG state is untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _resolve_dir(path_or_id: str, cfg: EncoderConfig) -> Path:
    """A local directory as is; a hub id as a local snapshot (safetensors and configs; .bin only if needed)."""
    if os.path.isdir(path_or_id):
        return Path(path_or_id)
    from huggingface_hub import snapshot_download

    def download(patterns: list[str]) -> Path:
        return Path(str(snapshot_download(path_or_id, allow_patterns=patterns, revision=cfg.revision,
                                          local_files_only=cfg.local_files_only)))

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    root = download(patterns)
    if not any(root.glob("*.safetensors")) or any(
            (d / "config.json").is_file() and not (d / "model.safetensors").is_file() for d in root.glob("*_Dense")):
        root = download([*patterns, "*.bin"])
    return root


def _vocab_rows(encoder: Encoder) -> int:
    """Rows of the encoder's input embedding matrix."""
    model: Any = encoder.model
    return int(model.get_input_embeddings().num_embeddings)


def _dense(layer: nn.Module) -> DenseLayer:
    if not isinstance(layer, DenseLayer):
        raise TypeError(f"ColBERT projection layers must be DenseLayer, got {type(layer).__name__}")
    return layer
