"""`TieredMergePolicy`: which segments to merge after a commit, so that their number stays logarithmic in
the index size while each row is rewritten only a logarithmic number of times (Lucene's tiered policy,
simplified).

Segments are put in tiers by their live rows: tier 0 holds every segment of at most `floor_rows` rows,
tier t those of up to floor_rows * segments_per_tier^t rows. When a tier holds `segments_per_tier`
segments, its smallest ones are merged into one (which lands in the next tier), and so on until no tier
is full. A segment with more than `max_deleted_share` of its rows deleted is rewritten alone (expunged).
With N live rows that leaves at most (segments_per_tier - 1) x (1 + log_spt(N / floor_rows)) segments.

`max_segment_rows` (Lucene's maxMergedSegmentMB, in rows) caps what a merge writes: a full tier merges its
smallest segments only while their rows add up to at most the cap, and a segment no other fits with stays as
it is. One commit's cost then stays bounded however large the index grows, at the price of about N / cap
segments beyond the cap (each searched in turn).
"""

from __future__ import annotations

import math
from itertools import accumulate
from dataclasses import dataclass
from typing import Sequence

__all__ = ["TieredMergePolicy"]


@dataclass(frozen=True)
class TieredMergePolicy:
    """Merge settings (index settings `segments_per_tier`, `merge_floor_rows`, `max_segment_rows`)."""

    segments_per_tier: int = 8
    floor_rows: int = 2048
    max_deleted_share: float = 0.5
    max_rows: int | None = None  # merges write segments of at most this many live rows (None: no cap)

    def __post_init__(self) -> None:
        if self.segments_per_tier < 2:
            raise ValueError(f"segments_per_tier must be at least 2, got {self.segments_per_tier}")
        if self.floor_rows < 1:
            raise ValueError(f"merge_floor_rows must be at least 1, got {self.floor_rows}")
        if self.max_rows is not None and (isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"max_segment_rows must be a positive integer or None, got {self.max_rows!r}")

    def tier(self, live: int) -> int:
        if live <= self.floor_rows:
            return 0
        return 1 + int(math.floor(math.log(live / self.floor_rows, self.segments_per_tier) + 1e-9))

    def find_merges(self, segments: Sequence[tuple[int, int, int]]) -> list[list[int]]:
        """Groups of segment ids to merge, from (id, rows when written, live rows) of the written segments."""
        merges: list[list[int]] = []
        pool = {sid: live for sid, _, live in segments}
        for sid, rows, live in segments:
            if rows and (rows - live) / rows > self.max_deleted_share and live:
                merges.append([sid])
                del pool[sid]
        virtual = -1  # merge results are put back in the pool under negative ids, to cascade into higher tiers
        members: dict[int, list[int]] = {}
        while True:
            tiers: dict[int, list[int]] = {}
            for sid, live in pool.items():
                tiers.setdefault(self.tier(live), []).append(sid)
            full = sorted(t for t, ids in tiers.items() if len(ids) >= self.segments_per_tier)
            if not full:
                break
            group = sorted(tiers[full[0]], key=lambda i: (pool[i], i))[: self.segments_per_tier]
            if self.max_rows is not None:
                fits = [i for i, total in zip(group, accumulate(pool[i] for i in group)) if total <= self.max_rows]
                if len(fits) < 2:  # the smallest of the tier fits with no other: the largest of it is final
                    del pool[max(tiers[full[0]], key=lambda i: (pool[i], i))]
                    continue
                group = fits
            merged = [m for i in group for m in members.pop(i, [i])]
            pool[virtual] = sum(pool.pop(i) for i in group)
            members[virtual] = merged
            virtual -= 1
        merges += [sorted(ids) for ids in members.values()]
        return merges
