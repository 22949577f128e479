"""`DenseIndex`: single-vector search over FAISS (flat / HNSW / IVF-PQ, optional int8 or binary codes).

All FAISS indexes are wrapped in `IndexIDMap2`, so their ids are the document store's internal ids.
Full-precision vectors live in the `VectorStore` (chunk files), which gives exact rerank of lossy codes
(IVF-PQ, int8, binary hamming candidates), exact search inside small filters and rebuilds. A flat index
of float or binary codes is not written to disk at all: it holds nothing the chunk files do not, and it is
rebuilt from them on open (a copy, no training), so its vectors are stored once.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import IndexStateError
from .ivf_entries import IVF_SEGMENT_SUFFIX, load_ivf_entries, save_ivf_entries
from .storage import FileRecord, load_faiss, save_faiss
from .vectors import VectorStore

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["DenseConfig", "DenseIndex", "topk"]
_GPU_MAX_K = 2048  # faiss GPU search: k and nprobe limits


@dataclass
class DenseConfig:
    """Build and search settings of a dense index (search settings can be overridden per query)."""

    index_type: str = "flat"  # flat | hnsw | ivfpq
    quantization: str | None = None  # None | "int8" (flat, hnsw) | "binary" (flat)
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int | None = None  # IVF cells; None: ~4 * sqrt(n), at least 39 training points per cell
    pq_m: int | None = None  # PQ sub-quantizers; None: largest divisor of dim <= dim // 4
    pq_nbits: int = 8
    nprobe: int = 16
    max_train_points: int = 200_000
    min_train_points: int = 1000  # below this IVF-PQ falls back to flat (with a warning)
    rerank: bool | None = None  # None: rerank lossy codes (ivfpq, int8, binary) with the float vectors
    rerank_factor: int = 4  # candidates fetched per result when reranking
    exact_filter_threshold: int = 4096  # filters matching at most this many docs are scored exactly
    backend: str = "auto"  # auto | faiss | faiss-gpu | torch (exact matmul, flat only; cuda when available)
    seed: int = 0
    segments_per_tier: int = 8  # merge policy (HNSW, IVF-PQ, int8: indexes written as segments)
    merge_floor_rows: int = 2048  # segments up to this many rows are one tier
    max_segment_rows: int | None = None  # merges write segments of at most this many rows (None: no cap)

    def __post_init__(self) -> None:
        if self.index_type not in ("flat", "hnsw", "ivfpq"):
            raise ValueError(f"dense index_type must be flat, hnsw or ivfpq, got {self.index_type!r}")
        allowed = {"flat": (None, "int8", "binary"), "hnsw": (None, "int8"), "ivfpq": (None,)}[self.index_type]
        if self.quantization not in allowed:
            raise ValueError(f"quantization {self.quantization!r} is not available with index_type {self.index_type!r} (allowed: {allowed})")
        if self.backend not in ("auto", "faiss", "faiss-gpu", "torch"):
            raise ValueError(f"unknown backend {self.backend!r}")
        if self.backend == "torch" and (self.index_type != "flat" or self.quantization):
            raise ValueError("backend 'torch' is exact search: only for index_type 'flat' without quantization")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DenseConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


def topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of (nq, n) scores with ids (n,) or (nq, n); pads with (-inf, -1) when n < k."""
    nq, n = scores.shape
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if n == 0:
        return out_s, out_i
    kk = min(k, n)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (nq, 1))
    part_s = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_s, axis=1, kind="stable")
    out_s[:, :kk] = np.take_along_axis(part_s, order, axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    ids = np.asarray(ids)
    out_i[:, :kk] = np.take_along_axis(ids, idx, axis=1) if ids.ndim == 2 else ids[idx]
    return out_s, out_i


class DenseIndex:
    """FAISS structure over internal ids, with exact helpers on the `VectorStore`."""

    file_prefix = "dense"

    def __init__(self, dim: int, config: DenseConfig | None = None, store: VectorStore | None = None) -> None:
        self.dim = dim
        self.config = config or DenseConfig()
        self.store = store
        if self.config.quantization == "binary" and dim % 8:
            raise ValueError(f"binary quantization needs dim divisible by 8, got {dim}")
        self.index: Any = None  # a faiss index once built / trained
        self.effective_type = self.config.index_type
        self.trained_params: dict[str, Any] = {}
        self._tombstones: set[int] = set()
        self._gpu: tuple[Any, Any] | None = None  # (resources, gpu index) once cloned
        self._torch_cache: tuple[np.ndarray, torch.Tensor] | None = None
        if not self.needs_training:
            self.index = self._new_index()

    # ----------------------------------------------------------------- construction / training
    @property
    def needs_training(self) -> bool:
        return self.config.index_type == "ivfpq" or self.config.quantization == "int8"

    @property
    def is_trained(self) -> bool:
        return self.index is not None

    @property
    def lossy(self) -> bool:
        return self.effective_type == "ivfpq" or self.config.quantization is not None

    @property
    def from_chunks(self) -> bool:
        """Flat float / binary codes: rebuilt from the chunk files on open instead of saved (nothing to train)."""
        return self.effective_type == "flat" and self.config.quantization in (None, "binary") and self.store is not None

    def _new_index(self, nlist: int | None = None, pq_m: int | None = None):
        import faiss

        c, d, ip = self.config, self.dim, faiss.METRIC_INNER_PRODUCT
        if c.quantization == "binary":
            return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(d))
        if self.effective_type == "ivfpq":
            inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_m, c.pq_nbits, ip)
        elif self.effective_type == "hnsw":
            if c.quantization == "int8":
                inner = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, c.hnsw_m, ip)
            else:
                inner = faiss.IndexHNSWFlat(d, c.hnsw_m, ip)
            inner.hnsw.efConstruction = c.ef_construction
        elif c.quantization == "int8":
            inner = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip)
        else:
            inner = faiss.IndexFlatIP(d)
        return faiss.IndexIDMap2(inner)

    def default_pq_m(self) -> int:
        return max(m for m in range(1, max(self.dim // 4, 1) + 1) if self.dim % m == 0)

    def train_sample_size(self, n_total: int) -> int:
        """How many vectors to sample for training (IVF: at least 39 per cell)."""
        nlist = self.config.nlist or int(4 * math.sqrt(max(n_total, 1)))
        return int(min(n_total, max(self.config.max_train_points, 39 * nlist if self.config.index_type == "ivfpq" else 0)))

    def train(self, sample: np.ndarray, n_total: int | None = None, progress: Any = None) -> None:
        """Train on `sample` (IVF-PQ: nlist from `n_total`; too few vectors -> flat, with a warning)."""
        c = self.config
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        n_total = n_total or len(sample)
        if c.index_type == "ivfpq":
            if len(sample) < max(c.min_train_points, 2**c.pq_nbits):
                warnings.warn(f"only {len(sample)} vectors to train IVF-PQ: falling back to a flat index", stacklevel=2)
                self.effective_type = "flat"
                self.index = self._new_index()
                self.trained_params = {"effective_index_type": "flat"}
                return
            nlist = c.nlist or max(1, min(int(4 * math.sqrt(n_total)), len(sample) // 39))
            pq_m = c.pq_m or self.default_pq_m()
            if self.dim % pq_m:
                raise ValueError(f"pq_m={pq_m} must divide dim={self.dim}")
            self.index = self._new_index(nlist, pq_m)
            self.trained_params = {"effective_index_type": "ivfpq", "nlist": nlist, "pq_m": pq_m}
        else:
            self.index = self._new_index()
            self.trained_params = {"effective_index_type": self.effective_type}
        if len(sample) == 0:
            raise IndexStateError("cannot train an index on zero vectors")
        self.index.train(sample)

    # ----------------------------------------------------------------- updates
    def _invalidate(self) -> None:
        self._gpu = None
        self._torch_cache = None

    def add(self, iids: np.ndarray, vectors: np.ndarray, offsets: np.ndarray | None = None) -> None:
        if self.index is None:
            raise IndexStateError("the index must be trained (finalize) before vectors are added to it")
        iids = np.ascontiguousarray(iids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(iids) == 0:
            return
        if self.config.quantization == "binary":
            self.index.add_with_ids(np.packbits(vectors > 0, axis=1), iids)
        else:
            self.index.add_with_ids(vectors, iids)
        self._invalidate()

    def _raw_ids(self) -> np.ndarray:
        import faiss

        if self.index is None:
            return np.zeros(0, np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def ids(self) -> np.ndarray:
        """Internal ids currently searchable."""
        raw = self._raw_ids()
        return raw[~np.isin(raw, list(self._tombstones))] if self._tombstones else raw

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal) - len(self._tombstones)

    def remove(self, iids: np.ndarray) -> int:
        """Remove ids. HNSW cannot delete, and FAISS's id map over an IVF index loses track of its inner labels
        after one removal (a second one aborts the process): both keep tombstones, excluded at search and
        dropped by `compact`; flat indexes delete in place."""
        import faiss

        iids = np.asarray(iids, dtype=np.int64)
        if self.index is None or len(iids) == 0:
            return 0
        self._invalidate()
        if self.effective_type in ("hnsw", "ivfpq"):
            present = set(iids[np.isin(iids, self._raw_ids())].tolist()) - self._tombstones
            self._tombstones |= present
            return len(present)
        return int(self.index.remove_ids(faiss.IDSelectorBatch(iids)))

    def compact(self) -> None:
        """Rebuild HNSW / IVF-PQ without their tombstones (IVF-PQ keeps its trained quantizer and codebooks)."""
        import faiss

        if not self._tombstones or self.store is None:
            return
        live = self.ids()
        if self.effective_type == "ivfpq":
            trained = faiss.clone_index(self.index)
            trained.reset()
            self.index = trained
        else:
            self.index = self._new_index()
        self._tombstones = set()
        for start in range(0, len(live), 65536):
            part = live[start : start + 65536]
            self.add(part, self.store.get_vectors(part))

    # ----------------------------------------------------------------- search
    def _backend(self) -> str:
        import faiss
        import torch

        b = self.config.backend
        if b != "auto":
            return b
        if torch.cuda.is_available():
            if hasattr(faiss, "StandardGpuResources") and self.config.quantization != "binary" and self.effective_type != "hnsw":
                return "faiss-gpu"
            if self.effective_type == "flat" and self.config.quantization is None and self.store is not None:
                return "torch"
        return "faiss"

    def _exact(self, queries: np.ndarray, k: int, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.store is None:
            raise IndexStateError("exact scoring needs the stored float vectors")
        candidates = np.asarray(candidates, dtype=np.int64)
        return topk(queries @ self.store.get_vectors(candidates).T, candidates, k)

    def _torch_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._torch_cache is None:
            assert self.store is not None, "the torch backend needs the stored float vectors"
            device = "cuda" if torch.cuda.is_available() else "cpu"
            ids = self.ids()
            self._torch_cache = (ids, torch.from_numpy(self.store.get_vectors(ids)).to(device))
        ids, matrix = self._torch_cache
        if len(ids) == 0:
            return topk(np.zeros((len(queries), 0), np.float32), ids, k)
        with torch.no_grad():
            scores = torch.from_numpy(queries).to(matrix.device) @ matrix.T
            top = torch.topk(scores, min(k, len(ids)), dim=1)
        s, i = top.values.cpu().numpy(), ids[top.indices.cpu().numpy()]
        pad = k - s.shape[1]
        return np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf), np.pad(i, ((0, 0), (0, pad)), constant_values=-1)

    def _faiss_index_for(self, backend: str, filtered: bool, k: int, nprobe: int):
        """The GPU copy of the index (made once) when the GPU can run this search, else the CPU index:
        faiss on GPU takes no ID selectors and at most 2048 results / probes per query."""
        if backend != "faiss-gpu" or filtered or k > _GPU_MAX_K or nprobe > _GPU_MAX_K:
            return self.index
        if self._gpu is None:
            import faiss

            try:
                res = faiss.StandardGpuResources()
                self._gpu = (res, faiss.index_cpu_to_gpu(res, 0, self.index))
            except Exception as exc:  # noqa: BLE001 - any GPU failure falls back to the CPU index
                logger.warning("could not move the index to the GPU (%s): searching on CPU", exc)
                self._gpu = (None, self.index)
        return self._gpu[1]

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, internal ids) per query, (-inf, -1) padded. `allowed`: restrict to these ids."""
        import faiss

        unknown = set(overrides) - {"nprobe", "ef_search", "rerank", "rerank_factor", "exact_filter_threshold"}
        if unknown:
            raise TypeError(f"unknown dense search options {sorted(unknown)}")
        opt = {f.name: getattr(self.config, f.name) for f in fields(self.config)} | overrides
        if self.index is None:
            raise IndexStateError("index is not trained yet: call finalize() before searching")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dim {queries.shape[1]} != index dim {self.dim}")
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if len(allowed) <= opt["exact_filter_threshold"] and self.store is not None:
                return self._exact(queries, k, allowed)
        backend = self._backend()
        if backend == "torch" and allowed is None and not self._tombstones:
            return self._torch_search(queries, k)
        rerank = (self.lossy if opt["rerank"] is None else opt["rerank"]) and self.store is not None
        binary = self.config.quantization == "binary"
        fetch = k * max(1, opt["rerank_factor"]) if (rerank or binary) else k
        batch = None
        if allowed is not None:
            batch = faiss.IDSelectorBatch(allowed)
            sel = batch
        elif self._tombstones:
            batch = faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))
            sel = faiss.IDSelectorNot(batch)
        else:
            sel = None
        if self.effective_type == "ivfpq":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=int(opt["nprobe"])) if sel else faiss.SearchParametersIVF(nprobe=int(opt["nprobe"]))
        elif self.effective_type == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=int(opt["ef_search"])) if sel else faiss.SearchParametersHNSW(efSearch=int(opt["ef_search"]))
        else:
            params = faiss.SearchParameters(sel=sel) if sel else None
        index = self._faiss_index_for(backend, sel is not None, fetch, int(opt["nprobe"]))
        if index is not self.index and self.effective_type == "ivfpq":
            params = None  # GPU IVF takes nprobe from the index, not per-call params
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(opt["nprobe"]))
        x = np.packbits(queries > 0, axis=1) if binary else queries
        scores, ids = index.search(x, fetch, params=params)
        ids = ids.astype(np.int64)
        if binary and not rerank:
            scores = -scores.astype(np.float32)  # negated hamming distance
        if rerank:
            return self._rerank(queries, ids, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores[:, :k], ids[:, :k]

    def _rerank(self, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.store is not None  # search() reranks only when the float vectors are stored
        uniq = np.unique(cand[cand >= 0])
        vecs = self.store.get_vectors(uniq) if len(uniq) else np.zeros((0, self.dim), np.float32)
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, row in enumerate(cand):
            row = row[row >= 0]
            if len(row):
                s, i = topk((queries[qi] @ vecs[np.searchsorted(uniq, row)].T)[None], row, k)
                out_s[qi], out_i[qi] = s[0], i[0]
        return out_s, out_i

    # ----------------------------------------------------------------- segments (`segments.SegmentSet`)
    template_suffix = ".faiss"

    @property
    def segment_suffix(self) -> str:
        """IVF-PQ segments hold only their inverted-list entries (`save_segment`); the others a FAISS index."""
        return IVF_SEGMENT_SUFFIX if self.effective_type == "ivfpq" else ".faiss"

    @property
    def persists_rows(self) -> bool:
        """Whether a segment of this structure is written to disk (flat float / binary: rebuilt from chunks)."""
        return not self.from_chunks

    def empty_like(self) -> DenseIndex:
        """An empty structure sharing this one's trained state (same quantizer and codebooks): a new segment."""
        import faiss

        other = DenseIndex(self.dim, self.config, self.store)
        other.effective_type, other.trained_params = self.effective_type, dict(self.trained_params)
        if self.index is None:
            other.index = None
        elif self.effective_type == self.config.index_type and not self.needs_training:
            other.index = other._new_index()
        else:  # trained: a copy of the trained index without its rows
            binary = isinstance(self.index, faiss.IndexBinary)
            data = faiss.serialize_index_binary(self.index) if binary else faiss.serialize_index(self.index)
            other.index = faiss.deserialize_index_binary(data) if binary else faiss.deserialize_index(data)
            other.index.reset()
        return other

    def consolidate(self) -> None:
        """Nothing queued (FAISS adds in place)."""

    def absorb(self, parts: Sequence[DenseIndex]) -> None:
        """Add the live rows of `parts` (a merge): from the stored float vectors, with this trained state."""
        if self.store is None:
            raise IndexStateError("merging dense segments needs the stored float vectors")
        ids = np.concatenate([p.ids() for p in parts]) if parts else np.zeros(0, np.int64)
        for start in range(0, len(ids), 65536):
            part = ids[start : start + 65536]
            self.add(part, self.store.get_vectors(part))

    def save_template(self, path: Path) -> FileRecord | None:
        """The trained, empty index shared by every segment (IVF-PQ, int8), or None when there is nothing trained."""
        if self.index is None or not self.needs_training or self.effective_type == "flat" and self.config.quantization is None:
            return None
        return save_faiss(path, self.empty_like().index)

    def load_template(self, path: Path | None, state: dict[str, Any]) -> None:
        trained = {k: v for k, v in state.items() if k not in ("trained", "segments", "next_segment", "template")}
        self.trained_params = trained
        self.effective_type = trained.get("effective_index_type", self.config.index_type)
        self.index = load_faiss(path, binary=self.config.quantization == "binary") if path is not None else self._new_index()
        self._tombstones = set()
        self._invalidate()

    def save_segment(self, path: Path) -> FileRecord:
        """This segment's rows (tombstoned rows are dropped by merges, not here): a FAISS index, or for IVF-PQ
        only its inverted-list entries (`ivf_entries`: the quantizer and codebooks are the template's)."""
        if str(path).endswith(IVF_SEGMENT_SUFFIX):
            return save_ivf_entries(self.index, path)
        return save_faiss(path, self.index)

    def load_segment(self, path: Path) -> None:
        """Read a segment `save_segment` wrote (IVF-PQ entries go into this empty copy of the template)."""
        if str(path).endswith(IVF_SEGMENT_SUFFIX):
            load_ivf_entries(self.index, path)
        else:
            self.index = load_faiss(path, binary=self.config.quantization == "binary")
        self._tombstones = set()
        self._invalidate()

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        return {"trained": self.is_trained, **self.trained_params}

    def save(self, directory: str | Path, generation: int) -> dict[str, FileRecord]:
        if self.index is None or self.from_chunks:
            return {}
        name = f"{self.file_prefix}.{generation:06d}.faiss"
        return {name: save_faiss(Path(directory) / name, self.index)}

    def load(self, directory: str | Path, generation: int, state: dict[str, Any]) -> None:
        name = f"{self.file_prefix}.{generation:06d}.faiss"
        path = Path(directory) / name
        if not state.get("trained"):
            return
        trained = {k: v for k, v in state.items() if k != "trained"}
        effective = trained.get("effective_index_type", self.config.index_type)
        self.trained_params, self.effective_type = trained, effective
        if self.from_chunks:
            self.index = self._new_index()  # empty: the index's reconcile adds every live vector from the chunks
        elif path.exists():
            self.index = load_faiss(path, binary=self.config.quantization == "binary")
        else:
            return
        self._tombstones = set()
        self._invalidate()

    def info(self) -> dict[str, Any]:
        return {
            "structure": "faiss",
            "effective_index_type": self.effective_type,
            "ntotal": len(self),
            "tombstones": len(self._tombstones),
            # resolving "auto" asks torch for a GPU: not worth importing torch to describe an index (`mbret info`)
            "backend": self._backend() if self.config.backend != "auto" or "torch" in sys.modules else "auto",
            **self.trained_params,
        }
