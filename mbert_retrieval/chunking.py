"""Long documents: overlapping token windows, shared by both models.

Chunks are cut on token ids (after tokenisation), so every chunk is exactly as long as the model
reads; leading/trailing special tokens ([CLS] ... [SEP], markers) are kept on every chunk.
Two ways to turn chunks back into documents:

- bi-encoder: a document scores as its best chunk (`max_pool_chunk_scores`);
- ColBERT: a document is the union of its chunks' token vectors (`concat_chunk_vectors`), and MaxSim
  runs over that union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar, cast

import numpy as np
import torch

__all__ = [
    "ChunkingConfig",
    "chunk_token_ids",
    "split_into_chunks",
    "max_pool_chunk_scores",
    "concat_chunk_vectors",
    "special_token_layout",
    "tokenize_untruncated",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass
class ChunkingConfig:
    """Window size and overlap in tokens (special tokens and markers included)."""

    max_tokens: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 4:
            raise ValueError("chunking max_tokens must be at least 4")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError("chunking overlap must be >= 0 and less than half of max_tokens")


def chunk_token_ids(
    ids: Sequence[int], max_len: int, overlap: int, keep_prefix: int = 1, keep_suffix: int = 1
) -> list[list[int]]:
    """Windows of at most `max_len` ids over one sequence, consecutive windows sharing `overlap` body ids.

    The first `keep_prefix` and last `keep_suffix` ids (special tokens, markers) are repeated on every
    window; a sequence that already fits gives one window identical to it. The first window is what
    plain truncation to `max_len` would give (when the suffix is the trailing [SEP]).
    """
    if keep_prefix < 0 or keep_suffix < 0 or overlap < 0:
        raise ValueError("keep_prefix, keep_suffix and overlap must be >= 0")
    body_len = max_len - keep_prefix - keep_suffix
    if body_len <= overlap:
        raise ValueError(f"max_len {max_len} leaves no room for overlap {overlap} after special tokens")
    seq = list(ids)
    if len(seq) <= max_len:
        return [seq]
    prefix = seq[:keep_prefix]
    suffix = seq[len(seq) - keep_suffix :] if keep_suffix else []
    body = seq[keep_prefix : len(seq) - keep_suffix]
    step = body_len - overlap
    windows = []
    for start in range(0, len(body), step):
        windows.append(prefix + body[start : start + body_len] + suffix)
        if start + body_len >= len(body):
            break
    return windows


def split_into_chunks(
    ids: Sequence[Sequence[int]],
    max_len: int,
    overlap: int,
    keep_prefix: int = 1,
    keep_suffix: int = 1,
) -> tuple[list[list[int]], list[int]]:
    """`chunk_token_ids` over many sequences: returns (chunks, owners), owners[j] being the input index
    chunk j came from (chunks of one sequence are consecutive, in text order)."""
    chunks: list[list[int]] = []
    owners: list[int] = []
    for n, seq in enumerate(ids):
        windows = chunk_token_ids(seq, max_len, overlap, keep_prefix, keep_suffix)
        chunks.extend(windows)
        owners.extend([n] * len(windows))
    return chunks, owners


def max_pool_chunk_scores(scores: ArrayT, owners: Sequence[int] | np.ndarray | torch.Tensor,
                          n_documents: int | None = None) -> ArrayT:
    """Chunk scores (..., n_chunks) -> document scores (..., n_documents): a document scores as its best chunk.

    numpy in, numpy (float32) out; torch in, torch out (differentiable). Documents without any chunk
    score -inf. `n_documents` defaults to max(owners) + 1.
    """
    as_numpy = not isinstance(scores, torch.Tensor)
    s: torch.Tensor = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores, dtype=np.float32))
    own = torch.as_tensor(np.asarray(owners) if not isinstance(owners, torch.Tensor) else owners,
                          dtype=torch.long, device=s.device)
    if own.numel() != s.shape[-1]:
        raise ValueError(f"{s.shape[-1]} chunk scores but {own.numel()} owners")
    if n_documents is None:
        n_documents = int(own.max()) + 1 if own.numel() else 0
    out = torch.full((*s.shape[:-1], n_documents), float("-inf"), dtype=s.dtype, device=s.device)
    out = out.scatter_reduce(-1, own.expand_as(s), s, reduce="amax", include_self=True)
    return cast(ArrayT, out.numpy() if as_numpy else out)


def concat_chunk_vectors(vectors: Sequence[ArrayT], owners: Sequence[int], n_documents: int | None = None,
                         ) -> list[ArrayT]:
    """Per-chunk token matrices (n_j, dim) -> per-document matrices: each document's chunks stacked in
    chunk order (ColBERT: MaxSim over the union of a long document's chunk tokens)."""
    if len(vectors) != len(owners):
        raise ValueError(f"{len(vectors)} chunk matrices but {len(owners)} owners")
    if n_documents is None:
        n_documents = max(owners) + 1 if len(owners) else 0
    groups: list[list] = [[] for _ in range(n_documents)]
    for v, o in zip(vectors, owners):
        groups[int(o)].append(v)
    if any(not g for g in groups):
        raise ValueError("every document needs at least one chunk")
    cat: Callable[[list[Any]], Any] = torch.cat if vectors and isinstance(vectors[0], torch.Tensor) else np.concatenate
    return [g[0] if len(g) == 1 else cast(ArrayT, cat(g)) for g in groups]


def special_token_layout(tokenizer) -> tuple[int, int]:
    """(leading, trailing) number of special tokens the tokenizer adds to one sequence, e.g. (1, 1) for
    [CLS] ... [SEP]; these are what `keep_prefix`/`keep_suffix` must repeat on every chunk."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for lead in range(len(full) - len(body) + 1):
        if full[lead : lead + len(body)] == body:
            return lead, len(full) - lead - len(body)
    raise ValueError("cannot locate the text tokens among the tokenizer's special tokens")


def tokenize_untruncated(tokenizer, texts: Sequence[str], prompt: str = "") -> list[list[int]]:
    """Token ids with special tokens and no truncation at all (the input of `split_into_chunks`;
    `Encoder.tokenize` truncates to the model's max length, which would drop a long document's tail)."""
    enc = tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False, verbose=False,
                    return_attention_mask=False, return_token_type_ids=False)
    return [list(x) for x in enc["input_ids"]]
