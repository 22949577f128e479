"""`ExactTokenIndex`: brute-force ColBERT search (exact MaxSim over every stored token matrix).

The baseline for PLAID and the right choice for small collections. It keeps no structure of its own:
the token vectors are read (memory-mapped) from the `VectorStore` chunk files at query time. All queries
of a call are scored together, block by block of document tokens, with `maxsim_packed` (one matmul per
block, no padding) on the CPU or a CUDA device, in float32 unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..maxsim import maxsim_packed
from .dense import topk
from .late_interaction import as_tensor, resolve_device, resolve_dtype
from .storage import FileRecord
from .vectors import VectorStore, take_docs

__all__ = ["ExactTokenIndex"]

_SIM_BUDGET = 1 << 24  # similarity entries (document tokens x query tokens) per block: 64 MB in float32


class ExactTokenIndex:
    """Exact late-interaction search over the chunk files; tracks which internal ids are searchable."""

    file_prefix = "exact"
    needs_training = False
    needs_vectors = False  # `add` only records ids: vectors are read from the store at search time
    is_trained = True

    def __init__(self, dim: int, store: VectorStore, doc_batch: int = 4096, device: str | None = "auto", dtype: str = "float32") -> None:
        self.dim = dim
        self.store = store
        self.doc_batch = doc_batch  # at most this many documents per block (and about _SIM_BUDGET entries)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._ids = np.zeros(0, np.int64)

    def train(self, sample: np.ndarray, n_total: int | None = None) -> None:  # nothing to train
        return None

    def add(self, iids: np.ndarray, vectors: Any = None, offsets: Any = None) -> None:
        self._ids = np.union1d(self._ids, np.asarray(iids, dtype=np.int64))

    def remove(self, iids: np.ndarray) -> int:
        before = len(self._ids)
        self._ids = np.setdiff1d(self._ids, np.asarray(iids, dtype=np.int64))
        return before - len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def __len__(self) -> int:
        return len(self._ids)

    def compact(self) -> None:
        return None

    def search(self, queries: Sequence[np.ndarray], k: int, allowed: np.ndarray | None = None, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        if overrides:
            raise TypeError(f"exact ColBERT search takes no options, got {sorted(overrides)}")
        for q in queries:
            if np.ndim(q) != 2 or np.shape(q)[1] != self.dim:
                raise ValueError(f"a ColBERT query must be (n_tokens, {self.dim}), got {np.shape(q)}")
        best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(queries), k), -1, dtype=np.int64)
        if not len(queries):
            return best_s, best_i
        searchable = self._ids if allowed is None else np.intersect1d(self._ids, np.asarray(allowed, dtype=np.int64))
        q_tokens = as_tensor(np.concatenate([np.asarray(q, dtype=np.float32) for q in queries]), self.device)
        q_lengths = torch.tensor([len(q) for q in queries], device=self.device)
        budget = max(1, _SIM_BUDGET // max(1, len(q_tokens)))  # document tokens per block
        for chunk in self.store:
            rows = np.flatnonzero(np.isin(chunk.iids, searchable))
            assert chunk.offsets is not None  # token-level chunks always carry offsets
            lengths = chunk.offsets[rows + 1] - chunk.offsets[rows]
            start = 0
            while start < len(rows):  # blocks of whole documents, about `budget` tokens each
                fit = int(np.searchsorted(np.cumsum(lengths[start : start + self.doc_batch]), budget, side="right"))
                stop = start + max(1, fit)
                part = rows[start:stop]
                vecs, offs = take_docs(chunk.vectors, chunk.offsets, part)
                assert offs is not None  # offsets given: token ranges come back with their offsets
                with torch.no_grad():
                    scores = maxsim_packed(q_tokens, q_lengths, as_tensor(vecs, self.device), as_tensor(np.diff(offs), self.device),
                                           dtype=self.dtype).cpu().numpy()  # fmt: skip
                ids = np.hstack([best_i, np.tile(chunk.iids[part], (len(queries), 1))])
                best_s, best_i = topk(np.hstack([best_s, scores]), ids, k)
                start = stop
        return best_s, best_i

    def state(self) -> dict[str, Any]:
        return {"trained": True}

    def save(self, directory: str | Path, generation: int) -> dict[str, FileRecord]:
        return {}

    def load(self, directory: str | Path, generation: int, state: dict[str, Any]) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {"structure": "exact", "live_documents": len(self._ids)}
