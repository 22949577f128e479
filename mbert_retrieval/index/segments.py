"""`SegmentSet`: an index structure made of immutable segments, like Lucene's, Elasticsearch's and Qdrant's.

A segment holds the rows of one commit (or of one merge): its own structure (a FAISS index of its rows, or
the compressed PLAID codes of its rows) in one file, written once and never changed. What segments share
is trained once and written once: the *template* (the trained IVF-PQ quantizer and codebooks, the int8
scalar quantizer, PLAID's codec: centroids and residual buckets), in its own file. The manifest is the
commit point: it lists the live segments and the template (`manifest.files`, sha256 per file, and
`params.state.segments`), so a write adds one segment file and rewrites the small manifest; the cost of an
`add` is proportional to the rows added, not to the index.

Deletes are tombstones: the document store (its `deleted` flag, committed in the same SQLite transaction
as the write) is the tombstone set; on load every segment drops the rows the store no longer has live
(`sync.reconcile`), and rows the store has but no segment lists (a crash after the store's commit and
before the manifest's, or `autosave` off) are added from the chunk files to a new in-memory segment that
the next checkpoint writes. Search fans out over the segments and merges their top-k by score (scores of
every segment are comparable: same quantizer, same codec, or exact). A tiered merge policy
(`merge_policy.py`) keeps the number of segments logarithmic in the index size; a merge writes a new
segment from the live rows of its sources (dense: from the float vectors; PLAID: from the compressed codes,
nothing is re-encoded) and the next manifest lists it instead of them. `compact` merges everything into one.

Structures that write nothing (FAISS flat over floats / binary codes, exact ColBERT) rebuild from the chunk
files on open and are not wrapped: their writes are already O(new data).
Folders written before segments (one whole structure file per generation) open as one segment.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dense import topk
from .errors import IndexCorruptError
from .merge_policy import TieredMergePolicy
from .storage import FileRecord, sha256_file, verify_file

__all__ = ["Segment", "SegmentSet", "segment_file", "template_file"]


def segment_file(segment_id: int, prefix: str, suffix: str) -> str:
    return f"seg.{segment_id:06d}.{prefix}{suffix}"


def template_file(generation: int, prefix: str, suffix: str) -> str:
    return f"codec.{generation:06d}.{prefix}{suffix}"


@dataclass
class Segment:
    """One segment: its id, its structure (rows + tombstones in memory), its file once written (None: not yet)."""

    id: int
    structure: Any
    file: str | None = None
    record: FileRecord | None = None
    rows: int = 0  # rows when written (live rows: len(structure))
    sealed: bool = False  # a merge result: takes no new rows

    @property
    def written(self) -> bool:
        return self.file is not None


class SegmentSet:
    """The structure protocol of `Index` (train/add/remove/ids/search/save/load/compact/info) over segments
    of one structure class. `template` is an empty structure of that class: it holds the configuration and,
    once trained, the shared trained state; `template.empty_like()` makes a new segment."""

    def __init__(self, template: Any, policy: TieredMergePolicy | None = None) -> None:
        self.template = template
        self.policy = policy or TieredMergePolicy()
        self.segments: list[Segment] = []
        self.next_id = 1
        self.template_name: str | None = None
        self.template_record: FileRecord | None = None
        self._ids_cache: dict[int, np.ndarray] = {}

    # ----------------------------------------------------------------- the template's attributes
    @property
    def config(self) -> Any:
        return self.template.config

    @property
    def store(self) -> Any:
        return self.template.store

    @property
    def dim(self) -> int:
        return int(self.template.dim)

    @property
    def file_prefix(self) -> str:
        return str(self.template.file_prefix)

    @property
    def needs_training(self) -> bool:
        return bool(self.template.needs_training)

    @property
    def is_trained(self) -> bool:
        return bool(self.template.is_trained)

    def __getattr__(self, name: str) -> Any:  # effective_type, trained_params, ...: the template's
        if name in ("template", "segments", "policy"):
            raise AttributeError(name)
        return getattr(self.template, name)

    def train_sample_size(self, n_total: int) -> int:
        return int(self.template.train_sample_size(n_total))

    def train(self, sample: np.ndarray, n_total: int | None = None, progress: Any = None) -> None:
        """Train the shared state (written as a new template file at the next checkpoint)."""
        self.template.train(sample, n_total, progress=progress)
        self.template_name = self.template_record = None

    # ----------------------------------------------------------------- rows
    def _tail(self) -> Segment:
        """The open segment (not yet written) that takes new rows."""
        if self.segments and not self.segments[-1].written and not self.segments[-1].sealed:
            return self.segments[-1]
        seg = Segment(self.next_id, self.template.empty_like())
        self.next_id += 1
        self.segments.append(seg)
        return seg

    def add(self, iids: np.ndarray, vectors: Any = None, offsets: Any = None) -> None:
        if len(iids):
            seg = self._tail()
            seg.structure.add(iids, vectors, offsets)
            self._ids_cache.pop(seg.id, None)

    def remove(self, iids: np.ndarray) -> int:
        """Tombstone rows in whichever segments hold them (in memory: the document store is the record)."""
        iids = np.asarray(iids, dtype=np.int64)
        n = 0
        for seg in self.segments:
            if len(iids) and (removed := seg.structure.remove(iids)):
                n += removed
                self._ids_cache.pop(seg.id, None)
        return n

    def _seg_ids(self, seg: Segment) -> np.ndarray:
        if (ids := self._ids_cache.get(seg.id)) is None:
            ids = self._ids_cache[seg.id] = np.sort(seg.structure.ids())
        return ids

    def ids(self) -> np.ndarray:
        parts = [self._seg_ids(s) for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return sum(len(s.structure) for s in self.segments)

    # ----------------------------------------------------------------- search
    def search(self, queries: Any, k: int, allowed: np.ndarray | None = None, **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query: every segment's top-k, merged by score."""
        live = [s for s in self.segments if len(s.structure)]
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
        results = []
        for seg in live:
            part = allowed
            if allowed is not None:
                ids = self._seg_ids(seg)
                part = allowed[np.isin(allowed, ids, assume_unique=False)]
                if not len(part):
                    continue
            results.append(seg.structure.search(queries, k, allowed=part, **overrides))
        if len(results) == 1:
            return results[0]
        if not results:  # an empty index, or a filter matching no row: still validates the options and queries
            return self.template_search(queries, k, overrides)
        scores = np.concatenate([r[0] for r in results], axis=1)
        ids = np.concatenate([r[1] for r in results], axis=1)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return topk(scores, ids, k)

    def template_search(self, queries: Any, k: int, overrides: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Search an empty segment: checks the options and queries like a non-empty one, finds nothing."""
        return self.template.empty_like().search(queries, k, **overrides)  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- merges
    def _merge(self, sources: Sequence[Segment]) -> Segment:
        """A new (unwritten) segment with the live rows of `sources` (tombstones purged)."""
        merged = Segment(self.next_id, self.template.empty_like(), sealed=True)  # new rows go to a tail of their own
        self.next_id += 1
        merged.structure.absorb([s.structure for s in sources])
        return merged

    def _apply_policy(self, force_all: bool = False) -> None:
        self.segments = [s for s in self.segments if len(s.structure) or not s.written]  # wholly deleted: dropped
        written = [s for s in self.segments if s.written]
        if force_all:
            groups = [self.segments] if len(self.segments) > 1 or any(len(s.structure) < s.rows for s in self.segments) else []
        else:
            stats = [(s.id, s.rows, len(s.structure)) for s in written]
            by_id = {s.id: s for s in written}
            groups = [[by_id[i] for i in g] for g in self.policy.find_merges(stats)]
        for group in groups:
            merged = self._merge(group)
            gone = {s.id for s in group}
            for i in gone:
                self._ids_cache.pop(i, None)
            self.segments = [s for s in self.segments if s.id not in gone] + [merged]

    def compact(self) -> None:
        """Merge every segment into one, without tombstones (written by the next checkpoint)."""
        if self.template.is_trained or not self.template.needs_training:
            self._apply_policy(force_all=True)

    def retrain(self, sample: np.ndarray, n_total: int | None = None, progress: Any = None) -> None:
        """Train the shared state again (data drifted: new centroids / quantizer) and re-encode every live row
        into one new segment with it, from the float vectors (dense; PLAID with `keep_full_vectors`)."""
        old = [s.structure for s in self.segments]
        self.template.train(sample, n_total, progress=progress)
        self.template_name = self.template_record = None
        merged = Segment(self.next_id, self.template.empty_like(), sealed=True)
        self.next_id += 1
        merged.structure.absorb(old)
        self.segments, self._ids_cache = [merged], {}

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        out = dict(self.template.state())
        out["segments"] = [{"id": s.id, "file": s.file, "rows": s.rows} for s in self.segments if s.written]
        out["next_segment"] = self.next_id
        out["template"] = self.template_name
        return out

    def save(self, directory: str | Path, generation: int) -> dict[str, FileRecord]:
        """Write what is new (the template once trained, unwritten segments: the tail and merge results),
        then merges chosen by the policy; returns the records of every file the manifest must list."""
        directory = Path(directory)
        if not self.template.is_trained:
            return {}
        if not self.template.persists_rows:  # flat float / binary after an IVF-PQ fallback: rebuilt from chunks
            return {}
        prefix, suffix = self.file_prefix, self.template.segment_suffix
        self.write_template(directory, generation)
        self._write_pending(directory, prefix, suffix)
        self._apply_policy()
        self._write_pending(directory, prefix, suffix)
        files = {s.file: s.record for s in self.segments if s.file is not None and s.record is not None}
        if self.template_name is not None and self.template_record is not None:
            files[self.template_name] = self.template_record
        return files

    def write_template(self, directory: str | Path, generation: int) -> None:
        """Write the trained shared state once (a new name after each training; listed by the next manifest)."""
        if self.template_name is None and self.template.is_trained:
            name = template_file(generation, self.file_prefix, self.template.template_suffix)
            if (record := self.template.save_template(Path(directory) / name)) is not None:
                self.template_name, self.template_record = name, record

    def reserve_id(self) -> int:
        """A new segment id (for a segment built elsewhere: `parallel_build`)."""
        self.next_id += 1
        return self.next_id - 1

    def adopt(self, segment_id: int, name: str, record: FileRecord, rows: int, directory: str | Path) -> None:
        """Take in a segment file built by another process from this set's template (listed by the next manifest)."""
        verify_file(Path(directory) / name, record, check_hash=True)
        seg = Segment(segment_id, self.template.empty_like(), name, record, rows, sealed=True)
        seg.structure.load_segment(Path(directory) / name)
        self.segments.insert(len([s for s in self.segments if s.written]), seg)
        self._ids_cache.pop(segment_id, None)

    def _write_pending(self, directory: Path, prefix: str, suffix: str) -> None:
        keep = []
        for seg in self.segments:
            if not seg.written:
                if not len(seg.structure):
                    continue  # nothing live: no file
                seg.structure.consolidate()
                seg.rows = len(seg.structure)
                name = segment_file(seg.id, prefix, suffix)
                seg.record = seg.structure.save_segment(directory / name)
                seg.file = name
            keep.append(seg)
        self.segments = keep

    def loaded_records(self) -> dict[str, FileRecord]:
        """The files this set was loaded from or wrote (name -> record): immutable, reusable by a reload."""
        out = {s.file: s.record for s in self.segments if s.file is not None and s.record is not None}
        if self.template_name is not None and self.template_record is not None:
            out[self.template_name] = self.template_record
        return out

    def load(self, directory: str | Path, generation: int, state: dict[str, Any], records: Mapping[str, FileRecord] | None = None,
             previous: SegmentSet | None = None) -> None:  # fmt: skip
        """Load the template and every segment the manifest lists (files already checked against it). With
        `previous` (a reload), the template and segments it holds under the same file and checksum are reused."""
        directory, records = Path(directory), dict(records or {})
        self.segments, self._ids_cache = [], {}
        if not state.get("trained"):
            return
        if "segments" not in state:  # a folder written before segments: its whole structure is one segment
            self._load_legacy(directory, generation, state, records)
            return
        self.template_name = state.get("template")
        self.template_record = records.get(self.template_name) if self.template_name else None
        reuse: dict[str, Segment] = {}
        if previous is not None and previous.template_name == self.template_name and previous.template.is_trained \
                and (self.template_name is None or previous.template_record == self.template_record):  # fmt: skip
            self.template = _rebind(previous.template, self.template.store)  # same trained state (PLAID: same codec object)
            reuse = {s.file: s for s in previous.segments if s.file is not None and s.record is not None and records.get(s.file) == s.record}
        else:
            self.template.load_template(directory / self.template_name if self.template_name else None, state)
        self.next_id = int(state.get("next_segment", 1))
        for entry in state["segments"]:
            name = entry["file"]
            if (old := reuse.get(name)) is not None and old.id == int(entry["id"]):
                self.segments.append(Segment(old.id, _rebind(old.structure, self.template.store), name, old.record, old.rows))
                continue
            seg = Segment(int(entry["id"]), self.template.empty_like(), name, records.get(name), int(entry.get("rows", 0)))
            seg.structure.load_segment(directory / name)
            self.segments.append(seg)

    def _load_legacy(self, directory: Path, generation: int, state: dict[str, Any], records: dict[str, FileRecord]) -> None:
        whole = self.template.empty_like() if self.template.is_trained else self.template
        whole.load(directory, generation, state)
        self.template = whole.empty_like() if whole.is_trained else whole
        self.template_name = self.template_record = None  # written by the next checkpoint
        names = [n for n in records if n.startswith(f"{self.file_prefix}.{generation:06d}.")]
        if names and len(whole):
            name = names[0]
            record = records.get(name) or FileRecord(sha256_file(directory / name), (directory / name).stat().st_size)
            self.segments = [Segment(0, whole, name, record, len(whole))]
        elif len(whole):
            self.segments = [Segment(0, whole)]

    def info(self) -> dict[str, Any]:
        parts = [s.structure.info() for s in self.segments] or [self.template.info()]
        out = dict(parts[0])
        for key in ("ntotal", "tombstones", "n_tokens", "live_documents"):
            if key in out:
                out[key] = int(sum(p.get(key, 0) for p in parts))
        if "bytes_per_token" in out:
            tokens = sum(p.get("n_tokens", 0) for p in parts)
            out["bytes_per_token"] = round(sum(p["bytes_per_token"] * p.get("n_tokens", 0) for p in parts) / tokens, 3) if tokens else 0.0
        out["segments"] = len([s for s in self.segments if len(s.structure) or s.written])
        out["segment_rows"] = [len(s.structure) for s in self.segments]
        return out

    def bytes_per_token(self) -> float:
        """PLAID: bytes per stored token over all segments."""
        info = self.info()
        return float(info.get("bytes_per_token", 0.0))


def _rebind(structure: Any, store: Any) -> Any:
    """A shallow copy of a loaded structure that reads full vectors from `store` (the new snapshot's chunk
    registry); the arrays / FAISS index are shared, the in-memory tombstones copied, so the previous
    snapshot is left as it was."""
    out = copy.copy(structure)
    out.store = store
    if isinstance(getattr(out, "_tombstones", None), set):
        out._tombstones = set(out._tombstones)
    return out


def check_segment_state(state: Mapping[str, Any]) -> None:
    """The segment entries of a manifest's state: ids and file names (a damaged manifest names the field)."""
    for entry in state.get("segments", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not isinstance(entry.get("file"), str):
            raise IndexCorruptError(f"manifest field 'params.state.segments' has an invalid entry: {entry!r}")
