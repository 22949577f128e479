"""The write path of `Index` (a mixin): documents in slices -> vectors and window spans (given, or from the
caller's `DocumentEncoder`: the index holds no model) -> chunk file -> one SQLite transaction (the commit
point of the documents) -> the in-memory structure.

Documents are committed every `chunk_size` documents or `commit_seconds` of encoding, whichever comes
first, so an interrupted build keeps nearly all the work done however slow the encoder; an update's
metadata-only changes are committed in the same transaction as the next chunk (old-or-new). Memory stays
flat as the corpus grows: one slice of documents and one pending chunk at a time, plus the ids seen in
this call (to refuse duplicates: ~100 bytes per document).
"""

from __future__ import annotations

import time
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..windows import WindowConfig, check_spans
from .docstore import DocRow, DocStore, FieldChange, WindowRow, encode_metadata
from .manifest import IndexManifest
from .structures import doc_row, flatten_vectors
from .vectors import VectorStore
from .windows_search import WindowMap

__all__ = ["IngestMixin", "COMMIT_SECONDS", "ProgressFn"]

_PROGRESS_SLICE = 256  # documents encoded per model call (between two progress reports and commit-time checks)
COMMIT_SECONDS = 30.0  # default: commit what is encoded at least this often (Ctrl-C loses at most that much work)
ProgressFn = Callable[[int], None]


class IngestMixin:
    """Encoding and committing documents; `Index` provides the state below."""

    path: Path
    manifest: IndexManifest
    docstore: DocStore
    store: VectorStore
    structure: Any
    _windows: WindowMap
    _chunk_size: int
    _defer_structure: bool = False  # committed rows wait for `finalize` (parallel segment builds), not added one by one

    def _can_add(self) -> bool:
        return not self.structure.needs_training or self.structure.is_trained

    _clock = staticmethod(time.monotonic)  # seconds; tests replace it to simulate slow encoding

    @property
    def commit_seconds(self) -> float:
        """Encoding time after which the documents encoded so far are committed even if the chunk is not full."""
        return float(self.manifest.params.get("commit_seconds", COMMIT_SECONDS))

    @property
    def window(self) -> WindowConfig | None:
        """How this index splits long documents it encodes (None: one row per document, truncated)."""
        return WindowConfig.from_value(self.manifest.params.get("window"))

    def _window_vectors(self, doc_id: str, vectors: Any, n: int) -> list[Any]:
        """The n per-window vectors of a windowed document: an (n, dim) array (dense) or n token matrices."""
        if self.manifest.kind == "dense":
            arr = np.asarray(vectors, dtype=np.float32)
            if arr.shape != (n, self.manifest.dim):
                raise ValueError(f"document {doc_id!r} has {n} windows: expected vectors of shape {(n, self.manifest.dim)}, got {arr.shape}")
            return list(arr)
        mats = list(vectors)
        if len(mats) != n:
            raise ValueError(f"document {doc_id!r} has {n} windows: expected {n} token matrices, got {len(mats)}")
        return mats

    def _commit_chunk(self, rows: list[tuple], vectors: Any, spans: list[list[tuple[int, int]] | None], replace: bool,
                      fields: Sequence[FieldChange] = ()) -> None:  # fmt: skip
        """Write one chunk file with the rows of `rows` (a document's own row, or one per window), then commit
        documents, windows and the metadata-only changes `fields` in one transaction, then update the structure.
        With no rows, only `fields` are committed (no chunk file)."""
        if not rows:
            self.docstore.commit([], fields=fields)
            return
        next_iid, next_chunk = self.docstore.counters()
        doc_rows, windows, row_iids, row_vectors = [], [], [], []
        iid = next_iid
        for row, vecs, doc_spans in zip(rows, vectors, spans):
            doc_rows.append(DocRow(iid, *row))
            doc_iid, iid = iid, iid + 1
            if doc_spans is None:
                row_iids.append(doc_iid)
                row_vectors.append(vecs)
                continue
            for (start, end), vec in zip(doc_spans, self._window_vectors(row[0], vecs, len(doc_spans))):
                windows.append(WindowRow(iid, doc_iid, start, end))
                row_iids.append(iid)
                row_vectors.append(vec)
                iid += 1
        flat, offsets = flatten_vectors(self.manifest.kind, self.manifest.dim, row_vectors, len(row_vectors))
        iids = np.asarray(row_iids, dtype=np.int64)
        info = self.store.write_chunk(next_chunk, iids, flat, offsets)  # 1. chunk file, atomically
        replaced = self.docstore.commit(doc_rows, info, replace=replace, windows=windows, fields=fields)  # 2. commit point
        self.store.register(info)
        self._windows.mark_stale()
        if replaced:
            self.structure.remove(self.docstore.row_ids(replaced))
        if self._can_add() and not self._defer_structure:
            self.structure.add(iids, flat, offsets)

    def _ingest(self, docs: Iterable[Mapping[str, Any]], vectors: Iterable[Any] | None, encoder: Any, replace: bool,
                show_progress: bool, progress: ProgressFn | None = None) -> int:  # fmt: skip
        """Read documents in slices of `_PROGRESS_SLICE`, encode the new/changed ones, and commit a chunk when
        `chunk_size` documents are pending or `commit_seconds` have passed since the last commit (so an
        interrupted build keeps nearly all the work done, however slow the encoder)."""
        total = len(docs) if hasattr(docs, "__len__") else None  # type: ignore[arg-type]
        pairs: Iterator = zip(docs, vectors if vectors is not None else repeat(None))
        seen: set[str] = set()
        pending_rows: list[tuple] = []
        pending_vecs: list[Any] = []
        pending_spans: list[list[tuple[int, int]] | None] = []
        pending_fields: list[FieldChange] = []  # metadata-only changes: committed with the next chunk (old-or-new)
        written = 0
        last_commit = self._clock()
        with tqdm(total=total, desc="indexing", unit="doc", disable=not show_progress) as bar:
            while batch := list(islice(pairs, max(1, min(_PROGRESS_SLICE, self._chunk_size - len(pending_rows) - len(pending_fields))))):
                rows = [doc_row(d) for d, _ in batch]
                ids = [r[0] for r in rows]
                if len(set(ids)) != len(ids) or seen.intersection(ids):
                    raise ValueError("duplicate document ids in one call")
                seen.update(ids)
                for r in rows:
                    encode_metadata(r[0], r[3])  # refuse unstorable metadata before spending time encoding
                keep, changed = self._select(rows, replace)
                pending_fields += changed
                todo = [rows[i] for i in keep]
                if todo:
                    given = [self._given_spans(batch[i][0], rows[i]) for i in keep]
                    if vectors is None:
                        vecs, spans = encoder.encode_documents(todo, given, self.window, show_progress)
                    else:
                        vecs, spans = [batch[i][1] for i in keep], given
                    pending_vecs += vecs
                    pending_spans += spans
                    pending_rows += todo
                if progress is not None:
                    progress(len(rows))  # encoded, or skipped: already indexed (a resumed build) or unchanged
                bar.update(len(batch))
                pending = len(pending_rows) + len(pending_fields)
                due = pending >= self._chunk_size or self._clock() - last_commit >= self.commit_seconds
                if pending and due:
                    self._commit_chunk(pending_rows, pending_vecs, pending_spans, replace, pending_fields)
                    written += len(pending_rows)
                    pending_rows, pending_vecs, pending_spans, pending_fields = [], [], [], []
                    last_commit = self._clock()
            if pending_rows or pending_fields:
                self._commit_chunk(pending_rows, pending_vecs, pending_spans, replace, pending_fields)
                written += len(pending_rows)
        return written

    @staticmethod
    def _given_spans(doc: Mapping[str, Any], row: tuple) -> list[tuple[int, int]] | None:
        """Window spans a caller gives with precomputed vectors (`doc["windows"]`), validated; None: one row."""
        spans = doc.get("windows")
        return None if spans is None else check_spans(row[0], spans, len(row[1]))

    def _select(self, rows: list[tuple], replace: bool) -> tuple[list[int], list[FieldChange]]:
        """(positions of `rows` that need encoding: new ids for add, new or changed text/title for update;
        metadata-only changes of an update, committed with the batch's encoded documents, not re-encoded)."""
        if not replace:
            live = self.docstore.live_doc_ids([r[0] for r in rows])
            return [i for i, r in enumerate(rows) if r[0] not in live], []
        keep, changed = [], []
        for i, (row, old) in enumerate(zip(rows, self.docstore.get([r[0] for r in rows]))):
            if old is not None and (old.text, old.title) == (row[1], row[2]):
                if (old.metadata or None) != row[3]:
                    changed.append(FieldChange(row[0], row[2], row[3]))
                continue
            keep.append(i)
        return keep, changed

