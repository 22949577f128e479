"""`PlaidIndex`: a compressed PLAID-style token index for ColBERT (late interaction) search.

Each token is stored as the id of its nearest centroid (k-means over token vectors) plus its residual
compressed to `nbits` (2 or 4) per dimension: per-dimension bucket cutoffs are residual quantiles and
each bucket decodes to the mean residual falling in it. An inverted list maps centroid -> documents.

Search (per query): top-`nprobe` centroids per query token -> candidate documents (capped at
`ncandidates` by a cheap probe score) -> approximate centroid-interaction scores -> the best `ndocs`
are decompressed and scored with exact MaxSim (`mbert_retrieval.maxsim`) -> optional rerank with the
full-precision vectors when `keep_full_vectors` is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..maxsim import maxsim_rank
from .errors import IndexStateError
from .storage import FileRecord, load_arrays, save_arrays
from .vectors import VectorStore

__all__ = ["PlaidConfig", "ResidualCodec", "PlaidIndex", "default_n_centroids"]

_BLOCK = 65536


@dataclass
class PlaidConfig:
    """Build and search settings of a PLAID index (search settings can be overridden per query)."""

    nbits: int = 2  # bits per residual dimension: 2 or 4
    n_centroids: int | None = None  # None: 2^floor(log2(16 * sqrt(n_tokens))), bounded
    kmeans_niter: int = 8  # ColBERTv2 uses 4: centroids only route, residuals carry the detail
    max_train_tokens: int = 262_144  # k-means sample: at least this, and at least 64 tokens per centroid
    nprobe: int = 4  # centroids probed per query token
    ncandidates: int = 4096  # documents given an approximate (centroid) score
    ndocs: int = 256  # documents decompressed and scored with MaxSim
    centroid_score_threshold: float | None = None  # ignore centroids scoring below this in approximate scores
    keep_full_vectors: bool = False  # keep float chunk files for exact rerank
    rerank: bool = True  # exact rerank (only when full vectors are kept)
    rerank_factor: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nbits not in (2, 4):
            raise ValueError(f"PLAID nbits must be 2 or 4, got {self.nbits}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PlaidConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


def default_n_centroids(n_tokens: int, n_train: int, max_centroids: int = 2**18) -> int:
    """2^floor(log2(16 * sqrt(n_tokens))), within [1, min(max_centroids, n_train)]."""
    c = 2 ** int(math.floor(math.log2(max(16 * math.sqrt(max(n_tokens, 1)), 1))))
    return int(max(1, min(c, max_centroids, n_train)))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class ResidualCodec:
    """Centroids + per-dimension residual buckets (cutoffs (dim, B-1), weights (dim, B), B = 2^nbits)."""

    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    nbits: int
    _table: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def train(cls, sample: np.ndarray, n_centroids: int, nbits: int, niter: int = 20, seed: int = 0) -> "ResidualCodec":
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        dim = sample.shape[1]
        if dim % (8 // nbits):
            raise ValueError(f"dim {dim} must be divisible by {8 // nbits} to pack {nbits}-bit residuals")
        km = faiss.Kmeans(dim, n_centroids, niter=niter, seed=seed, spherical=True, verbose=False)
        km.train(sample)
        codec = cls(_normalize(km.centroids.astype(np.float32)), np.zeros((dim, 0), np.float32), np.zeros((dim, 0), np.float32), nbits)
        residuals = sample - codec.centroids[codec.assign(sample)]
        n_buckets = 2**nbits
        codec.cutoffs = np.quantile(residuals, np.arange(1, n_buckets) / n_buckets, axis=0).T.astype(np.float32)
        buckets = codec._bucketize(residuals)
        flat = (np.arange(dim)[None, :] * n_buckets + buckets).ravel()
        sums = np.bincount(flat, weights=residuals.ravel(), minlength=dim * n_buckets)
        counts = np.bincount(flat, minlength=dim * n_buckets)
        fallback = np.quantile(residuals, (np.arange(n_buckets) + 0.5) / n_buckets, axis=0).T.ravel()
        codec.weights = np.where(counts > 0, sums / np.maximum(counts, 1), fallback).reshape(dim, n_buckets).astype(np.float32)
        return codec

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """Nearest centroid (inner product) of each vector."""
        out = np.empty(len(vectors), dtype=np.int64)
        for s in range(0, len(vectors), _BLOCK):
            scores = np.ascontiguousarray(vectors[s : s + _BLOCK], dtype=np.float32) @ self.centroids.T
            out[s : s + _BLOCK] = scores.argmax(axis=1)
        return out

    def _bucketize(self, residuals: np.ndarray) -> np.ndarray:
        buckets = np.zeros(residuals.shape, dtype=np.uint8)
        for j in range(self.cutoffs.shape[1]):
            buckets += residuals > self.cutoffs[:, j]
        return buckets

    def pack(self, buckets: np.ndarray) -> np.ndarray:
        per = 8 // self.nbits
        shifts = (self.nbits * np.arange(per - 1, -1, -1)).astype(np.uint8)
        grouped = buckets.reshape(len(buckets), -1, per).astype(np.uint8)
        return np.bitwise_or.reduce(grouped << shifts, axis=2).astype(np.uint8)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        per = 8 // self.nbits
        shifts = (self.nbits * np.arange(per - 1, -1, -1)).astype(np.uint8)
        return ((packed[:, :, None] >> shifts) & (2**self.nbits - 1)).reshape(len(packed), -1)

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid codes (n,), packed residual buckets (n, dim * nbits / 8) uint8)."""
        codes = self.assign(vectors)
        packed = np.empty((len(vectors), self.dim * self.nbits // 8), dtype=np.uint8)
        for s in range(0, len(vectors), _BLOCK):
            part = np.asarray(vectors[s : s + _BLOCK], dtype=np.float32)
            packed[s : s + _BLOCK] = self.pack(self._bucketize(part - self.centroids[codes[s : s + _BLOCK]]))
        return codes, packed

    def _byte_table(self) -> np.ndarray:
        """(n_bytes, 256, 8 // nbits) residual values decoded by each packed byte at each byte position."""
        if self._table is None:
            per = 8 // self.nbits
            buckets = self.unpack(np.arange(256, dtype=np.uint8)[:, None])  # (256, per)
            weights = self.weights.reshape(-1, per, self.weights.shape[1])  # (n_bytes, per, B)
            self._table = np.stack([w[np.arange(per)[None, :], buckets] for w in weights]).astype(np.float32)
        return self._table

    def decompress(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Approximate (L2-normalised) token vectors."""
        packed = np.asarray(packed)
        residual = self._byte_table()[np.arange(packed.shape[1])[None, :], packed].reshape(len(packed), self.dim)
        return _normalize(self.centroids[np.asarray(codes, dtype=np.int64)] + residual).astype(np.float32)


def _token_index(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token positions of `docs` concatenated, their lengths)."""
    lengths = offsets[docs + 1] - offsets[docs]
    starts = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.repeat(offsets[docs] - starts, lengths) + np.arange(int(lengths.sum())), lengths


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

    @property
    def is_trained(self) -> bool:
        return self.codec is not None

    def train_sample_size(self, n_total: int) -> int:
        """How many token vectors to sample for k-means and bucket statistics."""
        n_c = self.config.n_centroids or default_n_centroids(n_total, n_total)
        return int(min(n_total, max(self.config.max_train_tokens, 64 * n_c)))

    def train(self, sample: np.ndarray, n_total: int | None = None) -> None:
        if len(sample) == 0:
            raise IndexStateError("cannot train a PLAID index on zero token vectors")
        c = self.config
        n = c.n_centroids or default_n_centroids(n_total or len(sample), len(sample))
        self.codec = ResidualCodec.train(sample, min(n, len(sample)), c.nbits, c.kmeans_niter, c.seed)
        self._ivf_offsets = np.zeros(len(self.codec.centroids) + 1, np.int64)
        if len(self.codec.centroids) > 65535:
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
        n_c = len(self.codec.centroids)
        self._ivf_docs = docs[order].astype(np.int32 if len(self._doc_iids) < 2**31 else np.int64)
        self._ivf_offsets = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=n_c))]).astype(np.int64)

    def _ivf_cells(self) -> np.ndarray:
        return np.repeat(np.arange(len(self._ivf_offsets) - 1), np.diff(self._ivf_offsets))

    def _consolidate(self) -> None:
        """Fold queued additions into the arrays / inverted lists; drop deleted docs from the lists."""
        if self._pending:
            iids, codes, packed, lengths = (np.concatenate(x) for x in zip(*self._pending))
            self._pending = []
            first = len(self._doc_iids)
            self._codes = np.concatenate([self._codes, codes])
            self._residuals = np.concatenate([self._residuals, packed])
            self._doc_offsets = np.concatenate([self._doc_offsets, self._doc_offsets[-1] + np.cumsum(lengths)])
            self._doc_iids = np.concatenate([self._doc_iids, iids])
            self._alive = np.concatenate([self._alive, np.ones(len(iids), bool)])
            new_cells, new_docs = self._pairs(codes, lengths, first, len(self._doc_iids))
            self._set_ivf(np.concatenate([self._ivf_cells(), new_cells]), np.concatenate([self._ivf_docs.astype(np.int64), new_docs]))
            self._order = None
        if self._prune:
            keep = self._alive[self._ivf_docs]
            self._set_ivf(self._ivf_cells()[keep], self._ivf_docs[keep].astype(np.int64))
            self._prune = False

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
        tok, lengths = _token_index(self._doc_offsets, keep)
        self._codes, self._residuals = self._codes[tok], self._residuals[tok]
        self._doc_iids, self._alive = self._doc_iids[keep], np.ones(len(keep), bool)
        self._doc_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._set_ivf(*self._pairs(self._codes, lengths, 0, max(len(keep), 1)))
        self._order = None

    # ----------------------------------------------------------------- search
    def search(self, queries: Sequence[np.ndarray], k: int, allowed: np.ndarray | None = None, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, internal ids) per query token matrix, (-inf, -1) padded."""
        names = {"nprobe", "ncandidates", "ndocs", "centroid_score_threshold", "rerank", "rerank_factor"}
        if unknown := set(overrides) - names:
            raise TypeError(f"unknown PLAID search options {sorted(unknown)}")
        if self.codec is None:
            raise IndexStateError("PLAID index is not trained yet: call finalize() before searching")
        opt = {n: getattr(self.config, n) for n in names} | overrides
        self._consolidate()
        mask = self._alive.copy()
        if allowed is not None:
            pos = self._positions(allowed)
            mask[:] = False
            mask[pos[pos >= 0]] = True
            mask &= self._alive
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, q in enumerate(queries):
            s, i = self._search_one(np.ascontiguousarray(q, dtype=np.float32), k, mask, allowed is not None, opt)
            out_s[qi, : len(s)], out_i[qi, : len(i)] = s, i
        return out_s, out_i

    def _search_one(self, q: np.ndarray, k: int, mask: np.ndarray, filtered: bool, opt: dict) -> tuple[np.ndarray, np.ndarray]:
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"a ColBERT query must be (n_tokens, {self.dim}), got {q.shape}")
        lengths = np.diff(self._doc_offsets)
        scores = q @ self.codec.centroids.T  # (Lq, C)
        n_c = scores.shape[1]
        nprobe = max(1, min(int(opt["nprobe"]), n_c))
        cells = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe] if nprobe < n_c else np.tile(np.arange(n_c), (len(q), 1))
        direct = np.flatnonzero(mask & (lengths > 0))
        if filtered and len(direct) <= opt["ncandidates"]:
            cand = direct  # small filter: score every allowed document
        else:
            lists = [self._ivf_docs[self._ivf_offsets[c] : self._ivf_offsets[c + 1]] for c in np.unique(cells)]
            cand = np.unique(np.concatenate(lists)) if lists else np.zeros(0, np.int64)
            cand = cand[mask[cand]]
            if len(cand) > opt["ncandidates"]:
                cand = cand[self._top(self._probe_scores(scores, cells, cand), int(opt["ncandidates"]))]
        if len(cand) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        thr = opt["centroid_score_threshold"]
        approx_scores = scores if thr is None else np.where(scores.max(axis=0, keepdims=True) >= thr, scores, 0.0)
        exact = bool(opt["rerank"]) and self.config.keep_full_vectors and self.store is not None
        n_out = k * max(1, int(opt["rerank_factor"])) if exact else k
        cand = cand[self._top(self._approx(approx_scores, cand), max(int(opt["ndocs"]), n_out))]
        tok, lens = _token_index(self._doc_offsets, cand)
        vecs = self.codec.decompress(self._codes[tok], self._residuals[tok])
        docs = np.split(vecs, np.cumsum(lens)[:-1])
        order, best = maxsim_rank(q, docs, k=n_out)
        iids = self._doc_iids[cand[order]]
        if exact:
            order, best = maxsim_rank(q, self.store.get_tokens(iids), k=k)
            iids = iids[order]
        return best.astype(np.float32), iids

    @staticmethod
    def _top(values: np.ndarray, n: int) -> np.ndarray:
        if len(values) <= n:
            return np.argsort(-values, kind="stable")
        part = np.argpartition(-values, n - 1)[:n]
        return part[np.argsort(-values[part], kind="stable")]

    def _probe_scores(self, scores: np.ndarray, cells: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Cheap pre-score: sum over query tokens of the best probed-centroid score that reached each doc."""
        best = np.zeros((len(scores), len(cand)), dtype=np.float32)
        for i, row in enumerate(cells):
            for c in row:
                docs = self._ivf_docs[self._ivf_offsets[c] : self._ivf_offsets[c + 1]]
                idx = np.searchsorted(cand, docs)
                hit = idx < len(cand)
                hit[hit] = cand[idx[hit]] == docs[hit]
                best[i, idx[hit]] = np.maximum(best[i, idx[hit]], scores[i, c])
        return best.sum(axis=0)

    def _approx(self, scores: np.ndarray, cand: np.ndarray, block: int = 1024) -> np.ndarray:
        """Centroid-interaction score: sum_i max_j scores[i, code(token j of doc)]."""
        by_code = np.ascontiguousarray(scores.T)  # (C, Lq): gathering rows is cache friendly
        out = np.empty(len(cand), dtype=np.float32)
        for s in range(0, len(cand), block):
            docs = cand[s : s + block]
            tok, lens = _token_index(self._doc_offsets, docs)
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            per_doc = np.maximum.reduceat(by_code[np.asarray(self._codes[tok], dtype=np.int64)], starts, axis=0)
            out[s : s + block] = np.where(lens > 0, per_doc.sum(axis=1), -np.inf)
        return out

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
        codec = {"centroids": self.codec.centroids, "cutoffs": self.codec.cutoffs, "weights": self.codec.weights}
        return {name: save_arrays(Path(directory) / name, {**codec, **self._arrays()}, metadata={"nbits": str(self.codec.nbits)})}

    def load(self, directory: str | Path, generation: int, state: dict[str, Any]) -> None:
        path = Path(directory) / f"{self.file_prefix}.{generation:06d}.safetensors"
        if not state.get("trained") or not path.exists():
            return
        a = load_arrays(path, mmap=True)
        self.codec = ResidualCodec(np.array(a["centroids"]), np.array(a["cutoffs"]), np.array(a["weights"]), self.config.nbits)
        self._codes, self._residuals, self._doc_iids = a["codes"], a["residuals"], np.array(a["doc_iids"])
        self._doc_offsets, self._alive = np.array(a["doc_offsets"]), np.array(a["alive"])
        self._ivf_offsets, self._ivf_docs = np.array(a["ivf_offsets"]), a["ivf_docs"]
        self._pending, self._prune, self._order = [], False, None

    def info(self) -> dict[str, Any]:
        self._consolidate()
        return {
            "structure": "plaid",
            "n_centroids": 0 if self.codec is None else len(self.codec.centroids),
            "nbits": self.config.nbits,
            "n_tokens": int(len(self._codes)),
            "live_documents": int(self._alive.sum()),
            "bytes_per_token": round(self.bytes_per_token(), 3),
        }
