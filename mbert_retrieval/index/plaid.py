"""`PlaidIndex`: a compressed PLAID-style token index for ColBERT (late interaction) search.

Each token is stored as the id of its nearest centroid (k-means over token vectors) plus its residual
compressed to `nbits` (2 or 4) per dimension: one byte per `8 // nbits` dimensions, naming one of 256 codewords
of those dimensions (a product quantizer; `residual_quantizer="scalar"`: per-dimension Lloyd-Max buckets), over
the residual's direction, with a float16 scale per token (`residual_scale`).
An inverted list maps centroid -> documents.

Search (torch, batched over queries, on the CPU or a CUDA device: `plaid_search`): top-`nprobe`
centroids per query token -> candidate documents (capped at `ncandidates` by their probe score) ->
centroid-interaction scores -> the best `ndocs` scored with MaxSim over their decompressed tokens ->
optional exact rerank with the full-precision vectors when `keep_full_vectors` is on.

The file format is unchanged by the torch search: the per-token inverse norms it needs are computed
in memory (once per load, and for added tokens as they come).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..ragged import offsets_of, token_rows
from .codec import ResidualCodec
from .errors import IndexStateError
from .storage import FileRecord, load_arrays, read_metadata, save_arrays
from .vectors import VectorStore

__all__ = ["PlaidConfig", "ResidualCodec", "PlaidIndex", "default_n_centroids"]

_TRAIN_TOKENS_PER_CENTROID = 32  # k-means sample per centroid (at 16,384 centroids on scifact: overlap 0.931 vs 0.933 at 64, build 124 vs 168 s)


@dataclass
class PlaidConfig:
    """Build and search settings of a PLAID index (search settings can be overridden per query)."""

    nbits: int = 2  # bits per residual dimension: 2 or 4
    n_centroids: int | None = None  # None: 2^floor(log2(32 * sqrt(n_tokens))), bounded (twice ColBERTv2's count)
    kmeans_niter: int = 4  # as ColBERTv2: with twice the centroids, 4 iterations cost what 8 did at its count
    residual_scale: bool = True  # a float16 scale per token (+2 bytes): see codec.ResidualCodec; new codecs only
    residual_quantizer: str = "product"  # product (256 codewords per 8 // nbits dims) | scalar (per-dimension buckets)
    max_train_tokens: int = 262_144  # k-means sample: at least this, and at least 32 tokens per centroid
    # defaults measured on scifact / nfcorpus (2-bit, the tuned MiniLM ColBERT head of eval/train_proof): with the
    # product quantizer and 32 * sqrt(n) centroids (16,384 there), nprobe 4 / 768 / 192 found 0.932 / 0.835 of exact
    # MaxSim's top 10 at the QPS that 3 / 768 / 192 had (0.931 / 0.822); at 16 * sqrt(n) centroids and per-dimension
    # buckets (the previous defaults, 8,192 centroids, 8 k-means iterations) 3 / 768 / 192 found 0.912 / 0.794
    nprobe: int = 4  # centroids probed per query token
    ncandidates: int = 768  # probed documents given the centroid-interaction score over all their tokens
    ndocs: int = 192  # documents scored with MaxSim over their decompressed tokens
    centroid_score_threshold: float | None = None  # ignore centroids scoring below this in approximate scores
    keep_full_vectors: bool = False  # keep float chunk files for exact rerank
    rerank: bool = True  # exact rerank (only when full vectors are kept)
    rerank_factor: int = 4
    seed: int = 0
    device: str = "auto"  # search device: auto (CUDA when torch sees one) | cpu | cuda | cuda:N
    dtype: str = "auto"  # search matmul inputs: auto (bf16 on CUDA / CPUs with native bf16) | float32 | bfloat16
    segments_per_tier: int = 8  # merge policy: see merge_policy.TieredMergePolicy
    merge_floor_rows: int = 2048  # segments up to this many documents are one tier
    max_segment_rows: int | None = None  # merges write segments of at most this many documents (None: no cap)

    def __post_init__(self) -> None:
        from .late_interaction import DTYPES, check_device_name

        if self.nbits not in (2, 4):
            raise ValueError(f"PLAID nbits must be 2 or 4, got {self.nbits}")
        check_device_name(self.device)
        if self.residual_quantizer not in ("product", "scalar"):
            raise ValueError(f"PLAID residual_quantizer must be 'product' or 'scalar', got {self.residual_quantizer!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"PLAID dtype must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PlaidConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


def default_n_centroids(n_tokens: int, n_train: int, max_centroids: int = 2**18) -> int:
    """2^floor(log2(32 * sqrt(n_tokens))), within [1, min(max_centroids, n_train)]: twice ColBERTv2's count.
    Smaller cells leave smaller residuals for the 2-bit code (on nfcorpus 16,384 centroids found 0.822 of exact
    MaxSim's top 10 where 8,192 found 0.798) and shorter inverted lists to probe."""
    c = 2 ** int(math.floor(math.log2(max(32 * math.sqrt(max(n_tokens, 1)), 1))))
    return int(max(1, min(c, max_centroids, n_train)))


class PlaidIndex:
    """Compressed token index over internal document ids."""

    file_prefix = "plaid"
    needs_training = True

    def __init__(self, dim: int, config: PlaidConfig | None = None, store: VectorStore | None = None) -> None:
        self.dim = dim
        self.config = config or PlaidConfig()
        self.store = store
        self.codec: ResidualCodec | None = None
        self._codes = np.zeros(0, np.uint16)
        self._residuals = np.zeros((0, dim * self.config.nbits // 8), np.uint8)
        self._doc_iids = np.zeros(0, np.int64)
        self._doc_offsets = np.zeros(1, np.int64)
        self._alive = np.zeros(0, bool)
        self._ivf_offsets = np.zeros(1, np.int64)
        self._ivf_docs = np.zeros(0, np.int32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._prune = False
        self._order: np.ndarray | None = None  # argsort of doc iids
        self._inv_norms: np.ndarray | None = None  # 1 / |decompressed token| (in memory only), None: not computed
        self._tensors: Any = None  # plaid_search.PlaidTensors of the current arrays, made by the first search

    @property
    def is_trained(self) -> bool:
        return self.codec is not None

    def train_sample_size(self, n_total: int) -> int:
        """How many token vectors to sample for k-means and bucket statistics."""
        n_c = self.config.n_centroids or default_n_centroids(n_total, n_total)
        return int(min(n_total, max(self.config.max_train_tokens, _TRAIN_TOKENS_PER_CENTROID * n_c)))

    def train(self, sample: np.ndarray, n_total: int | None = None, progress: Any = None) -> None:
        """k-means centroids + residual codec (`progress(1)` after each k-means iteration)."""
        if len(sample) == 0:
            raise IndexStateError("cannot train a PLAID index on zero token vectors")
        c = self.config
        n = c.n_centroids or default_n_centroids(n_total or len(sample), len(sample))
        self._set_codec(ResidualCodec.train(sample, min(n, len(sample)), c.nbits, c.kmeans_niter, c.seed, progress, c.residual_scale,
                                            c.residual_quantizer))  # fmt: skip

    def _set_codec(self, codec: ResidualCodec) -> None:
        """Use `codec` (trained: centroids + residual buckets) for an index holding no documents yet."""
        self.codec = codec
        self._residuals = np.zeros((0, codec.row_bytes), np.uint8)
        self._inv_norms, self._tensors = np.zeros(0, np.float32), None
        self._ivf_offsets = np.zeros(len(codec.centroids) + 1, np.int64)
        if len(codec.centroids) > 65536:  # ids up to 65535 fit uint16
            self._codes = self._codes.astype(np.int32)

    # ----------------------------------------------------------------- updates
    def add(self, iids: np.ndarray, vectors: np.ndarray, offsets: np.ndarray | None = None) -> None:
        """Assign new tokens to the existing centroids, compress them and queue them for the inverted lists."""
        if self.codec is None:
            raise IndexStateError("the PLAID index must be trained (finalize) before documents are added")
        if offsets is None or len(offsets) != len(iids) + 1:
            raise ValueError("PLAID add needs token offsets of length n_docs + 1")
        if len(iids):
            codes, packed = self.codec.compress(vectors)
            self._pending.append((np.asarray(iids, np.int64), codes.astype(self._codes.dtype), packed, np.diff(offsets)))

    def _pairs(self, codes: np.ndarray, lengths: np.ndarray, first_doc: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        docs = np.repeat(np.arange(first_doc, first_doc + len(lengths), dtype=np.int64), lengths)
        keys = np.unique(codes.astype(np.int64) * n_docs + docs)
        return keys // n_docs, keys % n_docs

    def _set_ivf(self, cells: np.ndarray, docs: np.ndarray) -> None:
        order = np.lexsort((docs, cells))
        assert self.codec is not None  # lists exist only once trained
        n_c = len(self.codec.centroids)
        self._ivf_docs = docs[order].astype(np.int32 if len(self._doc_iids) < 2**31 else np.int64)
        self._ivf_offsets = offsets_of(np.bincount(cells, minlength=n_c))

    def _ivf_cells(self) -> np.ndarray:
        return np.repeat(np.arange(len(self._ivf_offsets) - 1), np.diff(self._ivf_offsets))

    def _consolidate(self) -> None:
        """Fold queued additions into the arrays / inverted lists; drop deleted docs from the lists."""
        if self._pending:
            iids, codes, packed, lengths = (np.concatenate(x) for x in zip(*self._pending))
            self._pending = []
            first = len(self._doc_iids)
            assert self.codec is not None  # add() queues documents only once trained
            if self._inv_norms is not None:
                self._inv_norms = np.concatenate([self._inv_norms, self.codec.inverse_norms(codes, packed)])
            self._codes = np.concatenate([self._codes, codes])
            self._residuals = np.concatenate([self._residuals, packed])
            self._doc_offsets = np.concatenate([self._doc_offsets, self._doc_offsets[-1] + np.cumsum(lengths)])
            self._doc_iids = np.concatenate([self._doc_iids, iids])
            self._alive = np.concatenate([self._alive, np.ones(len(iids), bool)])
            new_cells, new_docs = self._pairs(codes, lengths, first, len(self._doc_iids))
            self._set_ivf(np.concatenate([self._ivf_cells(), new_cells]), np.concatenate([self._ivf_docs.astype(np.int64), new_docs]))
            self._order, self._tensors = None, None
        if self._prune:
            keep = self._alive[self._ivf_docs]
            self._set_ivf(self._ivf_cells()[keep], self._ivf_docs[keep].astype(np.int64))
            self._prune, self._tensors = False, None

    def _positions(self, iids: np.ndarray) -> np.ndarray:
        """Doc positions of `iids` (-1 when absent)."""
        if self._order is None:
            self._order = np.argsort(self._doc_iids, kind="stable")
        keys = self._doc_iids[self._order]
        iids = np.asarray(iids, dtype=np.int64)
        if len(keys) == 0:
            return np.full(len(iids), -1, np.int64)
        pos = np.minimum(np.searchsorted(keys, iids), len(keys) - 1)
        return np.where(keys[pos] == iids, self._order[pos], -1)

    def remove(self, iids: np.ndarray) -> int:
        """Tombstone documents and drop them from the inverted lists."""
        self._consolidate()
        pos = self._positions(iids)
        pos = pos[pos >= 0]
        pos = pos[self._alive[pos]]
        if len(pos):
            self._alive = np.array(self._alive)  # may be a read-only map
            self._alive[pos] = False
            self._prune = True
        return len(pos)

    def ids(self) -> np.ndarray:
        self._consolidate()
        return self._doc_iids[self._alive].copy()

    def __len__(self) -> int:
        return int(self._alive.sum()) + sum(len(p[0]) for p in self._pending)

    def compact(self) -> None:
        """Rewrite the arrays without deleted documents."""
        self._consolidate()
        if self._alive.all() or self.codec is None:
            return
        keep = np.flatnonzero(self._alive)
        tok, lengths = token_rows(self._doc_offsets, keep)
        self._codes, self._residuals = self._codes[tok], self._residuals[tok]
        self._inv_norms = None if self._inv_norms is None else self._inv_norms[tok]
        self._doc_iids, self._alive = self._doc_iids[keep], np.ones(len(keep), bool)
        self._doc_offsets = offsets_of(lengths)
        self._set_ivf(*self._pairs(self._codes, lengths, 0, max(len(keep), 1)))
        self._order, self._tensors = None, None

    # ----------------------------------------------------------------- search
    def search(self, queries: Sequence[np.ndarray], k: int, allowed: np.ndarray | None = None, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, internal ids) per query token matrix, (-inf, -1) padded."""
        from .plaid_search import SearchOptions, search_batch

        names = {"nprobe", "ncandidates", "ndocs", "centroid_score_threshold", "rerank", "rerank_factor"}
        if unknown := set(overrides) - names:
            raise TypeError(f"unknown PLAID search options {sorted(unknown)}")
        if self.codec is None:
            raise IndexStateError("PLAID index is not trained yet: call finalize() before searching")
        queries = [np.ascontiguousarray(q, dtype=np.float32) for q in queries]
        for q in queries:
            if q.ndim != 2 or q.shape[1] != self.dim:
                raise ValueError(f"a ColBERT query must be (n_tokens, {self.dim}), got {q.shape}")
        opt = {n: getattr(self.config, n) for n in names} | overrides
        self._consolidate()
        mask = self._alive & (np.diff(self._doc_offsets) > 0)
        direct = None
        if allowed is not None:
            pos = self._positions(allowed)
            keep = np.zeros_like(mask)
            keep[pos[pos >= 0]] = True
            mask &= keep
            if mask.sum() <= opt["ncandidates"]:
                direct = np.flatnonzero(mask)  # small filter: score every allowed document
        exact = bool(opt["rerank"]) and self.config.keep_full_vectors and self.store is not None
        n_out = k * max(1, int(opt["rerank_factor"])) if exact else k
        options = SearchOptions(max(1, int(opt["nprobe"])), int(opt["ncandidates"]), int(opt["ndocs"]), opt["centroid_score_threshold"], n_out)
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        if not queries:
            return out_s, out_i
        results = search_batch(self._search_tensors(), queries, mask, direct, options)
        if exact:  # every query's candidates reranked with exact MaxSim; their float vectors read once for the batch
            from ..maxsim import maxsim_rerank  # torch: imported by the first search, not by `mbret info` / `delete`

            assert self.store is not None  # `exact` requires the stored full vectors
            unique, inverse = np.unique(np.concatenate([docs for _, docs in results]), return_inverse=True)
            bounds = np.cumsum([0] + [len(docs) for _, docs in results])
            ranked = maxsim_rerank(queries, [inverse[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                                   self.store.get_tokens(self._doc_iids[unique]), k=k)  # fmt: skip
            results = [(best, docs[order]) for (order, best), (_, docs) in zip(ranked, results)]
        for qi, (best, docs) in enumerate(results):
            out_s[qi, : min(k, len(best))], out_i[qi, : min(k, len(docs))] = best[:k], self._doc_iids[docs[:k]]
        return out_s, out_i

    def _search_tensors(self, resident: bool | None = None) -> Any:
        """The arrays as torch tensors on the search device (made once per change of the arrays; `resident`:
        see `PlaidTensors.build`, given: made again with that choice)."""
        from .late_interaction import resolve_device, resolve_dtype
        from .plaid_search import PlaidTensors

        assert self.codec is not None  # search() checks the index is trained
        if self._tensors is None or resident is not None:
            if self._inv_norms is None:
                self._inv_norms = self.codec.inverse_norms(self._codes, self._residuals)
            device = resolve_device(self.config.device)
            self._tensors = PlaidTensors.build(self.codec, device, resolve_dtype(self.config.dtype, device), self._codes, self._residuals,
                                               self._inv_norms, self._doc_offsets, self._ivf_offsets, self._ivf_docs, resident)  # fmt: skip
        return self._tensors

    # ----------------------------------------------------------------- segments (`segments.SegmentSet`)
    segment_suffix = template_suffix = ".safetensors"
    persists_rows = True

    def empty_like(self) -> PlaidIndex:
        """An empty index sharing this one's codec: a new segment."""
        other = PlaidIndex(self.dim, self.config, self.store)
        if self.codec is not None:
            other._set_codec(self.codec)
        return other

    def consolidate(self) -> None:
        """Fold queued additions into the arrays (before writing a segment)."""
        self._consolidate()

    def absorb(self, parts: Sequence[PlaidIndex]) -> None:
        """Add the live documents of `parts` (a merge): codes and residuals as they are when `parts` share this
        index's codec (nothing is re-encoded); after a retrain (another codec), compressed again from the full
        vectors (`keep_full_vectors`): re-compressing decompressed tokens would compound the quantization error."""
        assert self.codec is not None  # segments are made from a trained template
        for part in parts:
            part._consolidate()
            keep = np.flatnonzero(part._alive)
            if not len(keep):
                continue
            tok, lengths = token_rows(part._doc_offsets, keep)
            if part.codec is self.codec:
                codes, packed = np.asarray(part._codes[tok], self._codes.dtype), np.asarray(part._residuals[tok])
            else:
                if self.store is None or not self.config.keep_full_vectors:
                    raise IndexStateError("re-encoding a PLAID index with a new codec needs its full vectors (keep_full_vectors)")
                vectors = self.store.get_tokens(part._doc_iids[keep])
                codes, packed = self.codec.compress(np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32))
                codes = codes.astype(self._codes.dtype)
                lengths = np.array([len(v) for v in vectors], dtype=np.int64)
            self._pending.append((part._doc_iids[keep], codes, packed, lengths))
        self._consolidate()

    def save_template(self, path: Path) -> FileRecord | None:
        """The codec every segment shares (centroids and the residual code)."""
        if self.codec is None:
            return None
        return save_arrays(path, self.codec.arrays(), metadata=self.codec.metadata())

    def load_template(self, path: Path | None, state: dict[str, Any]) -> None:
        if path is None:
            raise IndexStateError("a trained PLAID index needs its codec file (manifest params.state.template)")
        self._set_codec(self._read_codec(path))

    def _read_codec(self, path: Path) -> ResidualCodec:
        """The codec in a template (or a previous format's whole-index) file (see `ResidualCodec.from_arrays`)."""
        return ResidualCodec.from_arrays(lambda names: load_arrays(path, names), read_metadata(path), self.config.nbits)

    def save_segment(self, path: Path) -> FileRecord:
        """This segment's documents: codes, residuals, doc ids/offsets, deleted flags and inverted lists."""
        self._consolidate()
        return save_arrays(path, self._arrays())

    def load_segment(self, path: Path) -> None:
        a = load_arrays(path, mmap=True)
        self._codes, self._residuals, self._doc_iids = a["codes"], a["residuals"], np.array(a["doc_iids"])
        self._doc_offsets, self._alive = np.array(a["doc_offsets"]), np.array(a["alive"])
        self._ivf_offsets, self._ivf_docs = np.array(a["ivf_offsets"]), a["ivf_docs"]
        self._pending, self._prune, self._order = [], False, None
        self._inv_norms, self._tensors = None, None

    # ----------------------------------------------------------------- size / persistence
    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "codes": self._codes, "residuals": self._residuals, "doc_iids": self._doc_iids,
            "doc_offsets": self._doc_offsets, "alive": self._alive, "ivf_offsets": self._ivf_offsets, "ivf_docs": self._ivf_docs,
        }  # fmt: skip

    def bytes_per_token(self) -> float:
        """Bytes per stored token: centroid codes + packed residuals + inverted lists + doc ids/offsets."""
        self._consolidate()
        if len(self._codes) == 0:
            return 0.0
        return sum(a.nbytes for a in self._arrays().values()) / len(self._codes)

    def state(self) -> dict[str, Any]:
        return {"trained": self.is_trained, "n_centroids": 0 if self.codec is None else len(self.codec.centroids)}

    def save(self, directory: str | Path, generation: int) -> dict[str, FileRecord]:
        if self.codec is None:
            return {}
        self._consolidate()
        name = f"{self.file_prefix}.{generation:06d}.safetensors"
        return {name: save_arrays(Path(directory) / name, {**self.codec.arrays(), **self._arrays()}, metadata=self.codec.metadata())}

    def load(self, directory: str | Path, generation: int, state: dict[str, Any]) -> None:
        path = Path(directory) / f"{self.file_prefix}.{generation:06d}.safetensors"
        if not state.get("trained") or not path.exists():
            return
        a = load_arrays(path, mmap=True)
        self.codec = self._read_codec(path)
        self._codes, self._residuals, self._doc_iids = a["codes"], a["residuals"], np.array(a["doc_iids"])
        self._doc_offsets, self._alive = np.array(a["doc_offsets"]), np.array(a["alive"])
        self._ivf_offsets, self._ivf_docs = np.array(a["ivf_offsets"]), a["ivf_docs"]
        self._pending, self._prune, self._order = [], False, None
        self._inv_norms, self._tensors = None, None

    def info(self) -> dict[str, Any]:
        self._consolidate()
        return {
            "structure": "plaid",
            "n_centroids": 0 if self.codec is None else len(self.codec.centroids),
            "nbits": self.config.nbits,
            "residual_quantizer": None if self.codec is None else self.codec.quantizer,
            "n_tokens": int(len(self._codes)),
            "live_documents": int(self._alive.sum()),
            "bytes_per_token": round(self.bytes_per_token(), 3),
        }
