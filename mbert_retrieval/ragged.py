"""Ragged token arrays: documents stored as one (n_tokens, dim) array and offsets (n_docs + 1), as the exact
token index, the PLAID codes and the float chunk files all keep them (numpy only: imported by model-free code)."""

from __future__ import annotations

import numpy as np

__all__ = ["offsets_of", "token_rows"]


def token_rows(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the token rows of documents `docs`, concatenated in that order; their lengths): one gather with them
    takes those documents' tokens out of the ragged array."""
    docs = np.asarray(docs, dtype=np.int64)
    lengths = offsets[docs + 1] - offsets[docs]
    starts = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.repeat(offsets[docs] - starts, lengths) + np.arange(int(lengths.sum())), lengths


def offsets_of(lengths: np.ndarray | list[int]) -> np.ndarray:
    """int64 offsets (n + 1,) of consecutive runs of these lengths: [2, 0, 3] -> [0, 2, 2, 5]."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out
