"""Token-budget batching: one implementation, used for encoding, indexing and evaluation.

Texts are sorted by token length so that each batch holds texts of similar length (little padding),
batches are cut when the padded size (batch size x longest sequence) would exceed a token budget or when
padding would outweigh the real tokens (so one 8192-token input never drags short ones up to its length),
and results are always returned in the caller's input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["BatchPlan", "token_budget_batches", "pack_rows"]


@dataclass(frozen=True)
class BatchPlan:
    """Indices (into the caller's input) of one batch, in the order they are fed to the model."""

    indices: tuple[int, ...]
    max_length: int

    @property
    def padded_tokens(self) -> int:
        return len(self.indices) * self.max_length


def token_budget_batches(
    lengths: Sequence[int],
    max_tokens: int = 16384,
    max_batch_size: int = 512,
    sort: bool = True,
    max_padding_ratio: float = 0.5,
) -> list[BatchPlan]:
    """Group item indices into batches whose padded size stays within `max_tokens`.

    Longest first, so that an out-of-memory error (if any) shows on the first batch, not after an hour.
    A single item longer than the budget gets a batch of its own. Once a batch pads to more than an
    eighth of the budget, an item that would make padding exceed `max_padding_ratio` x its real tokens
    starts a new batch: padded tokens cost full compute (attention on them grows with the square of the
    length), so a long input is not padded-with short ones; batches of short items are not split by this.
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_tokens and max_batch_size must be positive")
    if max_padding_ratio < 0:
        raise ValueError("max_padding_ratio must be >= 0")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if sort else list(range(len(lengths)))
    batches: list[BatchPlan] = []
    current: list[int] = []
    current_max = real = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        new_max = max(current_max, n)
        padded = new_max * (len(current) + 1)
        wasteful = padded > max_tokens // 8 and padded - (real + n) > max_padding_ratio * (real + n)
        if current and (padded > max_tokens or len(current) >= max_batch_size or wasteful):
            batches.append(BatchPlan(tuple(current), current_max))
            current, new_max, real = [], n, 0
        current.append(i)
        current_max = new_max
        real += n
    if current:
        batches.append(BatchPlan(tuple(current), current_max))
    return batches


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing packing of sequences (by position in `lengths`) into rows of `capacity` tokens.

    Used by the packed (unpadded) path: several short sequences share one row and attend only to
    themselves through a block-diagonal mask or flash-attn's varlen kernel.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n > capacity:
            raise ValueError(f"sequence {i} has {n} tokens, more than the row capacity {capacity}")
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


def iter_chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
