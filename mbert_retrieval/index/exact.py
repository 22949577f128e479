"""`ExactTokenIndex`: brute-force ColBERT search (exact MaxSim over every stored token matrix).

The baseline for PLAID and the right choice for small collections. It keeps no structure of its own:
the token vectors are read (memory-mapped) from the `VectorStore` chunk files at query time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..maxsim import maxsim, pad_token_vectors
from .dense import topk
from .storage import FileRecord
from .vectors import VectorStore, take_docs

__all__ = ["ExactTokenIndex"]


class ExactTokenIndex:
    """Exact late-interaction search over the chunk files; tracks which internal ids are searchable."""

    file_prefix = "exact"
    needs_training = False
    needs_vectors = False  # `add` only records ids: vectors are read from the store at search time
    is_trained = True

    def __init__(self, dim: int, store: VectorStore, doc_batch: int = 256) -> None:
        self.dim = dim
        self.store = store
        self.doc_batch = doc_batch
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
        searchable = self._ids if allowed is None else np.intersect1d(self._ids, np.asarray(allowed, dtype=np.int64))
        qpad, qmask = pad_token_vectors([np.asarray(q, dtype=np.float32) for q in queries])
        best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(queries), k), -1, dtype=np.int64)
        for chunk in self.store:
            rows = np.flatnonzero(np.isin(chunk.iids, searchable))
            for s in range(0, len(rows), self.doc_batch):
                part = rows[s : s + self.doc_batch]
                vecs, offs = take_docs(chunk.vectors, chunk.offsets, part)
                docs = np.split(vecs, offs[1:-1])
                dpad, dmask = pad_token_vectors([torch.from_numpy(d) for d in docs])
                with torch.no_grad():
                    scores = maxsim(qpad, dpad, qmask, dmask).numpy()
                ids = np.hstack([best_i, np.tile(chunk.iids[part], (len(queries), 1))])
                best_s, best_i = topk(np.hstack([best_s, scores]), ids, k)
        return best_s, best_i

    def state(self) -> dict[str, Any]:
        return {"trained": True}

    def save(self, directory: str | Path, generation: int) -> dict[str, FileRecord]:
        return {}

    def load(self, directory: str | Path, generation: int, state: dict[str, Any]) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {"structure": "exact", "live_documents": len(self._ids)}
