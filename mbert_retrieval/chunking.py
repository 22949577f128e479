"""Long documents: overlapping token windows and max-pooling of chunk scores, shared by both models.

Chunks are cut on token ids (after tokenisation), so every chunk is exactly as long as the model
reads; leading/trailing special tokens ([CLS] ... [SEP], markers) are kept on every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["ChunkingConfig", "split_into_chunks", "max_pool_chunk_scores"]


@dataclass
class ChunkingConfig:
    """Window size and overlap in tokens (special tokens included)."""

    max_tokens: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 4:
            raise ValueError("chunking max_tokens must be at least 4")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError("chunking overlap must be >= 0 and less than half of max_tokens")


def split_into_chunks(
    ids: Sequence[Sequence[int]],
    max_len: int,
    overlap: int,
    keep_prefix: int = 1,
    keep_suffix: int = 1,
) -> tuple[list[list[int]], list[int]]:
    """Split each token id list into windows of at most `max_len` tokens overlapping by `overlap`.

    The first `keep_prefix` and last `keep_suffix` ids (special tokens, markers) are repeated on every
    window. Returns (chunks, owner) where owner[j] is the input index chunk j came from; sequences that
    already fit give exactly one chunk, identical to the input.
    """
    body_len = max_len - keep_prefix - keep_suffix
    if body_len <= overlap:
        raise ValueError(f"max_len {max_len} leaves no room for overlap {overlap} after special tokens")
    chunks: list[list[int]] = []
    owners: list[int] = []
    for n, seq in enumerate(ids):
        seq = list(seq)
        if len(seq) <= max_len:
            chunks.append(seq)
            owners.append(n)
            continue
        prefix, suffix = seq[:keep_prefix], seq[len(seq) - keep_suffix :] if keep_suffix else []
        body = seq[keep_prefix : len(seq) - keep_suffix]
        step = body_len - overlap
        for start in range(0, len(body), step):
            chunks.append(prefix + body[start : start + body_len] + suffix)
            owners.append(n)
            if start + body_len >= len(body):
                break
    return chunks, owners


def max_pool_chunk_scores(scores: np.ndarray, owners: Sequence[int], n_documents: int) -> np.ndarray:
    """(n_queries, n_chunks) chunk scores -> (n_queries, n_documents): a document scores as its best chunk."""
    scores = np.asarray(scores, dtype=np.float32)
    owners = np.asarray(owners, dtype=np.int64)
    out = np.full((scores.shape[0], n_documents), -np.inf, dtype=np.float32)
    for q in range(scores.shape[0]):
        np.maximum.at(out[q], owners, scores[q])
    return out
