"""`DocStore`: documents, their internal integer ids and the chunk registry of an index, in SQLite.

Each document row has an internal id (`iid`, the id the vector structures use), the caller's `doc_id`,
text, title, JSON metadata and a `deleted` flag (tombstone, purged by compaction). A `doc_id` is unique
among live rows; an update gives the new version a new iid, so the vector structures never see an iid
change meaning. The `chunks` table registers the vector chunk files, and `meta` holds the iid/chunk
counters: both are committed in the same transaction as the documents they belong to.

Long documents: a document split into windows (see `mbert_retrieval.windows`) keeps one `docs` row (its text
stored once) and gets one `windows` row per window: its own iid (from the same counter, right after the
document's), the document's iid and the character span. The vector structures then hold the window iids
instead of the document's (`live_row_ids`, `row_ids`); a document without windows is its own row, as in stores
written before windows existed (those get the table from the next writer: `migrate`).

Integrity: each row carries a sha256 `checksum` of (iid, doc_id, text, title, metadata), written with it and
recomputed by `verify_rows` (`mbret info --verify`). `meta` also records the index id and checkpoint
generation of the manifest the store belongs to (`bind` / `check_binding`, checked on every open), and
chunk names read from the registry must be plain file names. Metadata is refused when it holds NaN,
Infinity or numbers beyond float range; filters compare values of like JSON type only (`compile_filter`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import IndexCorruptError
from .filters import _json_path, _required_fields, compile_filter
from .records import (ChunkInfo, DocRow, FieldChange, StoreAheadError, StoreBinding, WindowRow, encode_metadata, row_checksum,
                      window_checksum)
from .storage import plain_file_name

__all__ = ["DocStore", "DocRow", "ChunkInfo", "FieldChange", "StoreBinding", "StoreAheadError", "WindowRow", "compile_filter",
           "encode_metadata", "row_checksum", "window_checksum"]  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    iid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    text TEXT NOT NULL,
    title TEXT,
    metadata TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    chunk INTEGER,
    checksum TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS docs_live_doc_id ON docs(doc_id) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    n_docs INTEGER NOT NULL,
    n_vectors INTEGER NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_WINDOWS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS windows (iid INTEGER PRIMARY KEY, doc_iid INTEGER NOT NULL, start_char INTEGER NOT NULL, "
    "end_char INTEGER NOT NULL, checksum TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS windows_doc ON windows(doc_iid)",
)
# window rows of the live documents / of the documents that have windows
_LIVE_WINDOWS = "SELECT w.iid FROM windows w JOIN docs d ON d.iid = w.doc_iid WHERE d.deleted = 0"
_UNSPLIT = "NOT EXISTS (SELECT 1 FROM windows w WHERE w.doc_iid = docs.iid)"
_BATCH = 500  # ids per `IN (...)` query, below SQLite's variable limit


class DocStore:
    """SQLite document store (WAL mode, one transaction per batch). Thread-safe through one lock."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if readonly:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.executescript(_SCHEMA)
            self._has_checksums = self._checksum_column()
            self._has_windows = self._windows_table()
            self._conn.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"document store {self.path.name!r} is corrupt or unreadable: {exc}") from exc

    def _checksum_column(self) -> bool:
        return "checksum" in {r[1] for r in self._query("PRAGMA table_info(docs)")}

    def _windows_table(self) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'windows'"))

    def has_windows(self) -> bool:
        """Whether the store has the windows table (a writer of another process may have added it since)."""
        if not self._has_windows:
            self._has_windows = self._windows_table()
        return self._has_windows

    def migrate(self) -> None:
        """Writer: bring a store of an older version up to date (add the row checksum column, rows written
        before get theirs from `fill_checksums`; add the windows table). An empty store is marked as fully
        checksummed. Opening never migrates: a read does not change the index."""
        with self.transaction() as conn:
            if not self._checksum_column():
                conn.execute("ALTER TABLE docs ADD COLUMN checksum TEXT")
            for sql in _WINDOWS_SCHEMA:
                conn.execute(sql)
            if self._meta_value("row_checksums") is None and not conn.execute("SELECT 1 FROM docs LIMIT 1").fetchone():
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('row_checksums', 1)")
        self._has_checksums = self._has_windows = True

    # ----------------------------------------------------------------- plumbing
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def shrink(self) -> None:
        """Give back the space of purged rows (`compact`): VACUUM, then fold the write-ahead log into the file
        and truncate it. Best effort: a reader holding an old snapshot keeps the log until it is done."""
        with self._lock:
            try:
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:  # busy: another connection reads; the space comes back later
                pass

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... `COMMIT` (rolled back on any exception)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees the store as of its first read (WAL snapshot), whatever
        other processes commit meanwhile, so the chunk registry and the live rows read for one load agree."""
        with self._lock:
            self._conn.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _in_batches(self, sql: str, values: Sequence[Any], extra: Sequence[Any] = ()) -> list[tuple]:
        """Run `sql` (with one `{marks}` placeholder) over `values` in batches."""
        out: list[tuple] = []
        for start in range(0, len(values), _BATCH):
            part = list(values[start : start + _BATCH])
            out += self._query(sql.format(marks=",".join("?" * len(part))), [*part, *extra])
        return out

    def quick_check(self) -> None:
        """Raise `IndexCorruptError` when SQLite finds the database damaged."""
        try:
            result = self._query("PRAGMA quick_check")
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"document store {self.path.name!r} is corrupt: {exc}") from exc
        if result[0][0] != "ok":
            raise IndexCorruptError(f"document store {self.path.name!r} is corrupt: {result[0][0]}")

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version`: changes when another connection (another process) commits."""
        return int(self._query("PRAGMA data_version")[0][0])

    def _meta_value(self, key: str) -> Any:
        row = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0][0] if row else None

    def counters(self) -> tuple[int, int]:
        """(next internal id, next chunk number): never reused, even after compaction."""
        meta = dict(self._query("SELECT key, value FROM meta"))
        return int(meta.get("next_iid", 0)), int(meta.get("next_chunk", 0))

    # ----------------------------------------------------------------- writes
    def commit(self, rows: Sequence[DocRow], chunk: ChunkInfo | None = None, replace: bool = False,
               windows: Sequence[WindowRow] = (), fields: Sequence[FieldChange] = ()) -> list[int]:  # fmt: skip
        """Insert `rows` and their `windows` (and register `chunk`) in one transaction. With `replace`, live
        rows with the same doc_id are tombstoned first; their (document) iids are returned. Without it a live
        duplicate raises. `fields`: title/metadata changes of other live documents (an update that needs no
        re-encoding), committed in the same transaction, so an update batch is applied whole or not at all."""
        replaced: list[int] = []
        stored = [encode_metadata(r.doc_id, r.metadata) for r in rows]
        changes = [(c.doc_id, c.title, encode_metadata(c.doc_id, c.metadata)) for c in fields]
        if not (self._has_checksums and self._has_windows):
            self.migrate()
        with self.transaction() as conn:
            for doc_id, title, metadata in changes:
                self._set_fields(conn, doc_id, title, metadata)
            next_iid, next_chunk = self.counters()
            if chunk is not None:
                conn.execute(
                    "INSERT INTO chunks (seq, name, sha256, bytes, n_docs, n_vectors, dropped) VALUES (?,?,?,?,?,?,0)",
                    (chunk.seq, chunk.name, chunk.sha256, chunk.bytes, chunk.n_docs, chunk.n_vectors),
                )
                next_chunk = max(next_chunk, chunk.seq + 1)
            if replace and rows:
                live = "SELECT iid FROM docs WHERE deleted = 0 AND doc_id IN ({marks})"
                replaced = [r[0] for r in self._in_batches(live, [r.doc_id for r in rows])]
                conn.executemany("UPDATE docs SET deleted = 1 WHERE iid = ?", [(i,) for i in replaced])
            conn.executemany(
                "INSERT INTO docs (iid, doc_id, text, title, metadata, deleted, chunk, checksum) VALUES (?,?,?,?,?,0,?,?)",
                [(r.iid, r.doc_id, r.text, r.title, m, chunk.seq if chunk else None, row_checksum(r.iid, r.doc_id, r.text, r.title, m))
                 for r, m in zip(rows, stored)],
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO windows (iid, doc_iid, start_char, end_char, checksum) VALUES (?,?,?,?,?)",
                [(w.iid, w.doc_iid, w.start, w.end, window_checksum(w.iid, w.doc_iid, w.start, w.end)) for w in windows],
            )
            if rows or windows:
                next_iid = max(next_iid, max([r.iid for r in rows] + [w.iid for w in windows]) + 1)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [("next_iid", next_iid), ("next_chunk", next_chunk)])
        return replaced

    def upsert(self, rows: Sequence[DocRow], chunk: ChunkInfo | None = None) -> list[int]:
        """Insert or replace documents by doc_id; returns the iids of the replaced versions."""
        return self.commit(rows, chunk, replace=True)

    def set_fields(self, doc_id: str, title: str | None, metadata: dict | None) -> None:
        """Change title/metadata of a live document in place (no re-encoding needed for metadata); one
        transaction. `commit(..., fields=...)` does it together with a batch of new rows."""
        self.commit([], fields=[FieldChange(doc_id, title, metadata)])

    @staticmethod
    def _set_fields(conn: sqlite3.Connection, doc_id: str, title: str | None, stored: str | None) -> None:
        """Inside a transaction: new title and stored metadata JSON (and row checksum) of a live document."""
        for iid, text in conn.execute("SELECT iid, text FROM docs WHERE doc_id = ? AND deleted = 0", (doc_id,)).fetchall():
            conn.execute(
                "UPDATE docs SET title = ?, metadata = ?, checksum = ? WHERE iid = ?",
                (title, stored, row_checksum(iid, doc_id, text, title, stored), iid),
            )

    def delete(self, doc_ids: Sequence[str]) -> list[int]:
        """Tombstone live documents; returns their iids (unknown ids are ignored)."""
        with self.transaction() as conn:
            iids = [r[0] for r in self._in_batches("SELECT iid FROM docs WHERE deleted = 0 AND doc_id IN ({marks})", list(doc_ids))]
            conn.executemany("UPDATE docs SET deleted = 1 WHERE iid = ?", [(i,) for i in iids])
        return iids

    def mark_chunks_dropped(self, seqs: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("UPDATE chunks SET dropped = 1 WHERE seq = ?", [(int(s),) for s in seqs])

    def replace_chunks(self, new_chunks: Sequence[ChunkInfo], assignment: Mapping[int, int], purge: bool = True) -> None:
        """Compaction commit: the non-dropped chunks become `new_chunks`, live docs point to their new chunk
        (`assignment`: iid -> seq) and, with `purge`, tombstoned rows are deleted for good."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM chunks WHERE dropped = 0")
            conn.executemany(
                "INSERT INTO chunks (seq, name, sha256, bytes, n_docs, n_vectors, dropped) VALUES (?,?,?,?,?,?,0)",
                [(c.seq, c.name, c.sha256, c.bytes, c.n_docs, c.n_vectors) for c in new_chunks],
            )
            conn.executemany("UPDATE docs SET chunk = ? WHERE iid = ?", [(int(s), int(i)) for i, s in assignment.items()])
            if purge:
                self._purge(conn)
            if new_chunks:
                nxt = max(self.counters()[1], max(c.seq for c in new_chunks) + 1)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_chunk', ?)", (nxt,))

    def purge_deleted(self) -> int:
        with self.transaction() as conn:
            return self._purge(conn)

    def _purge(self, conn: sqlite3.Connection) -> int:
        """Delete tombstoned documents and their windows for good (inside a transaction); returns the documents."""
        if self.has_windows():
            conn.execute("DELETE FROM windows WHERE doc_iid IN (SELECT iid FROM docs WHERE deleted = 1)")
        return conn.execute("DELETE FROM docs WHERE deleted = 1").rowcount

    # ----------------------------------------------------------------- reads
    @staticmethod
    def _row(r: tuple) -> DocRow:
        return DocRow(int(r[0]), r[1], r[2], r[3], json.loads(r[4]) if r[4] else None)

    def count(self, include_deleted: bool = False) -> int:
        return self._query("SELECT count(*) FROM docs" + ("" if include_deleted else " WHERE deleted = 0"))[0][0]

    def get(self, doc_ids: Sequence[str]) -> list[DocRow | None]:
        """Live documents by doc_id, in the order asked (None for unknown/deleted ids)."""
        found = {r[1]: self._row(r) for r in self._in_batches(
            "SELECT iid, doc_id, text, title, metadata FROM docs WHERE deleted = 0 AND doc_id IN ({marks})", list(doc_ids))}  # fmt: skip
        return [found.get(d) for d in doc_ids]

    def get_by_iids(self, iids: Sequence[int], include_deleted: bool = False) -> dict[int, DocRow]:
        sql = "SELECT iid, doc_id, text, title, metadata FROM docs WHERE iid IN ({marks})" + ("" if include_deleted else " AND deleted = 0")
        return {int(r[0]): self._row(r) for r in self._in_batches(sql, [int(i) for i in iids])}

    def live_doc_ids(self, doc_ids: Sequence[str]) -> set[str]:
        return {r[0] for r in self._in_batches("SELECT doc_id FROM docs WHERE deleted = 0 AND doc_id IN ({marks})", list(doc_ids))}

    def iter_documents(self, batch_size: int = 1000, include_deleted: bool = False) -> Iterator[DocRow]:
        """All (live) documents in iid order, read in batches."""
        last = -1
        where = "" if include_deleted else " AND deleted = 0"
        while True:
            rows = self._query(
                f"SELECT iid, doc_id, text, title, metadata FROM docs WHERE iid > ?{where} ORDER BY iid LIMIT ?", (last, batch_size)
            )
            if not rows:
                return
            yield from (self._row(r) for r in rows)
            last = rows[-1][0]

    def live_iids(self) -> tuple[np.ndarray, np.ndarray]:
        """(iids, chunk seqs) of all live documents, sorted by iid."""
        rows = self._query("SELECT iid, coalesce(chunk, -1) FROM docs WHERE deleted = 0 ORDER BY iid")
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    # ----------------------------------------------------------------- windows: rows of the vector structures
    def live_row_ids(self) -> np.ndarray:
        """Sorted ids of the rows the vector structures hold for the live documents: a document's own iid
        when it has no windows, else its window iids."""
        if not self.has_windows():
            return self.live_iids()[0]
        rows = self._query(f"SELECT iid FROM docs WHERE deleted = 0 AND {_UNSPLIT} UNION ALL {_LIVE_WINDOWS} ORDER BY 1")
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def row_ids(self, doc_iids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Structure rows of documents (deleted ones included): their window iids, or their own iid for a
        document without windows. Sorted."""
        doc_iids = [int(i) for i in np.asarray(doc_iids, dtype=np.int64).reshape(-1)]
        if not doc_iids or not self.has_windows():
            return np.unique(np.asarray(doc_iids, dtype=np.int64))
        found = self._in_batches("SELECT doc_iid, iid FROM windows WHERE doc_iid IN ({marks})", doc_iids)
        split = {r[0] for r in found}
        rows = [r[1] for r in found] + [i for i in doc_iids if i not in split]
        return np.unique(np.asarray(rows, dtype=np.int64))

    def window_map(self, after: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(window iids sorted, their documents' iids) of the stored windows with an iid above `after` (the
        search-time row -> document map; iids only grow, so a map is brought up to date with what is new)."""
        if not self.has_windows():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = self._query("SELECT iid, doc_iid FROM windows WHERE iid > ? ORDER BY iid", (int(after),))
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def windows_by_iids(self, iids: Sequence[int]) -> dict[int, WindowRow]:
        """Stored windows by their iid (iids that are not windows are left out)."""
        if not self.has_windows() or not len(iids):
            return {}
        sql = "SELECT iid, doc_iid, start_char, end_char FROM windows WHERE iid IN ({marks})"
        return {int(r[0]): WindowRow(*(int(v) for v in r)) for r in self._in_batches(sql, [int(i) for i in iids])}

    def windows_of(self, doc_iids: Sequence[int]) -> dict[int, list[WindowRow]]:
        """Windows of documents by document iid, in text order (documents without windows are left out)."""
        if not self.has_windows() or not len(doc_iids):
            return {}
        out: dict[int, list[WindowRow]] = {}
        sql = "SELECT iid, doc_iid, start_char, end_char FROM windows WHERE doc_iid IN ({marks}) ORDER BY doc_iid, iid"
        for r in self._in_batches(sql, [int(i) for i in doc_iids]):
            out.setdefault(int(r[1]), []).append(WindowRow(*(int(v) for v in r)))
        return out

    def window_counts(self) -> tuple[int, int]:
        """(windows of the live documents, live documents that have windows)."""
        if not self.has_windows():
            return 0, 0
        row = self._query("SELECT count(*), count(DISTINCT w.doc_iid) FROM windows w JOIN docs d ON d.iid = w.doc_iid WHERE d.deleted = 0")
        return int(row[0][0]), int(row[0][1])

    def filter_iids(self, flt: Mapping[str, Any]) -> np.ndarray:
        """Sorted iids of the live documents that match a metadata filter (see `compile_filter`)."""
        where, params = compile_filter(flt)
        try:
            rows = self._query(f"SELECT iid FROM docs WHERE deleted = 0 AND ({where}) ORDER BY iid", params)
        except sqlite3.OperationalError as exc:
            raise ValueError(f"invalid filter {dict(flt)!r}: {exc}") from exc
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def chunks(self, include_dropped: bool = False) -> list[ChunkInfo]:
        rows = self._query(
            "SELECT seq, name, sha256, bytes, n_docs, n_vectors, dropped FROM chunks"
            + ("" if include_dropped else " WHERE dropped = 0")
            + " ORDER BY seq"
        )
        where = f"document store {self.path.name!r}"
        return [ChunkInfo(int(r[0]), plain_file_name(r[1], where), r[2], int(r[3]), int(r[4]), int(r[5]), bool(r[6])) for r in rows]

    # ----------------------------------------------------------------- binding to the manifest / integrity
    def binding(self) -> StoreBinding:
        """The index id and checkpoint generation this store was last bound to (None in stores of old indexes)."""
        meta = dict(self._query("SELECT key, value FROM meta WHERE key IN ('index_id', 'generation', 'bound_chunk')"))
        as_int = lambda v: None if v is None else int(v)  # noqa: E731
        index_id = meta.get("index_id")
        return StoreBinding(None if index_id is None else str(index_id), as_int(meta.get("generation")), as_int(meta.get("bound_chunk")))

    def bind(self, index_id: str, generation: int) -> None:
        """Record the index this store belongs to and the checkpoint generation it reaches. Written before the
        manifest of that generation, so the store is at the manifest's generation or one ahead (a crash in
        between). Chunks numbered from the first binding on carry the index id (`StoreBinding.first_chunk`)."""
        self.migrate()
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('bound_chunk', ?)", (self.counters()[1],))
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [("index_id", str(index_id)), ("generation", int(generation))]
            )

    def check_binding(self, index_id: str | None, generation: int) -> StoreBinding:
        """Raise `IndexCorruptError` naming the file when this store belongs to another index than the
        manifest's or to another checkpoint generation (an older or newer copy swapped in). A manifest
        without an index id (an index of an older version) is not checked."""
        found = self.binding()
        if index_id is None:
            return found
        name = self.path.name
        if found.index_id != index_id:
            raise IndexCorruptError(
                f"index file {name!r} belongs to another index (index id {found.index_id}, manifest.json says {index_id}): "
                "it was replaced or copied in from elsewhere"
            )
        if found.generation is None or not generation <= found.generation <= generation + 1:
            error = StoreAheadError if found.generation is not None and found.generation > generation else IndexCorruptError
            raise error(
                f"index file {name!r} is at checkpoint generation {found.generation}, manifest.json at {generation}: "
                "one of them was replaced by another copy of the index"
            )
        return found

    def fill_checksums(self, batch_size: int = 2000) -> None:
        """Checksum the rows written before row checksums existed (once, by a writer of an older index)."""
        self.migrate()
        if self._meta_value("row_checksums") is not None:
            return
        last = -1
        sql = "SELECT iid, doc_id, text, title, metadata FROM docs WHERE iid > ? AND checksum IS NULL ORDER BY iid LIMIT ?"
        while rows := self._query(sql, (last, batch_size)):
            with self.transaction() as conn:
                conn.executemany("UPDATE docs SET checksum = ? WHERE iid = ?", [(row_checksum(*r), r[0]) for r in rows])
            last = rows[-1][0]
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('row_checksums', 1)")

    def verify_rows(self, batch_size: int = 2000) -> None:
        """Recompute every row's checksum: `IndexCorruptError` names the first document whose stored text,
        title, metadata or id changed outside this library (rows of old stores not checksummed yet are skipped)."""
        if not self._has_checksums:
            return
        complete = self._meta_value("row_checksums") is not None
        name, last = self.path.name, -1
        sql = "SELECT iid, doc_id, text, title, metadata, checksum FROM docs WHERE iid > ? ORDER BY iid LIMIT ?"
        while True:
            try:
                rows = self._query(sql, (last, batch_size))
            except sqlite3.DatabaseError as exc:  # e.g. a text that is no longer valid UTF-8
                raise IndexCorruptError(f"index file {name!r} is corrupt: {exc} (after internal id {last})") from exc
            if not rows:
                break
            for iid, doc_id, text, title, metadata, checksum in rows:
                if (checksum is not None or complete) and checksum != row_checksum(iid, doc_id, text, title, metadata):
                    raise IndexCorruptError(
                        f"index file {name!r} is corrupt: the stored row of document {doc_id!r} (internal id {iid}) "
                        "does not match its checksum"
                    )
            last = rows[-1][0]
        self._verify_windows(batch_size)

    def _verify_windows(self, batch_size: int) -> None:
        """Every window row matches its checksum and belongs to a stored document."""
        if not self.has_windows():
            return
        name, last = self.path.name, -1
        sql = ("SELECT w.iid, w.doc_iid, w.start_char, w.end_char, w.checksum, d.iid FROM windows w "
               "LEFT JOIN docs d ON d.iid = w.doc_iid WHERE w.iid > ? ORDER BY w.iid LIMIT ?")  # fmt: skip
        while rows := self._query(sql, (last, batch_size)):
            for iid, doc_iid, start, end, checksum, doc in rows:
                if checksum != window_checksum(iid, doc_iid, start, end) or doc is None or not 0 <= start < end:
                    raise IndexCorruptError(
                        f"index file {name!r} is corrupt: window {iid} of internal document {doc_iid} does not match "
                        "its checksum or its document"
                    )
            last = rows[-1][0]

    # ----------------------------------------------------------------- filter diagnostics
    def missing_fields(self, flt: Mapping[str, Any]) -> list[str]:
        """Fields a filter needs present (every operator but $exists: false, $ne, $nin and equality with None)
        that no live document has: a filter on them can never match (usually a typo)."""
        out: list[str] = []
        for key in dict.fromkeys(_required_fields(flt)):
            found = self._query("SELECT 1 FROM docs WHERE deleted = 0 AND json_type(metadata, ?) IS NOT NULL LIMIT 1", (_json_path(key),))
            if not found:
                out.append(key)
        return out

    def metadata_fields(self, limit: int = 30) -> list[str]:
        """Sorted top-level metadata field names of the live documents (at most `limit`; a full scan)."""
        rows = self._query(
            "SELECT DISTINCT je.key FROM docs, json_each(docs.metadata) AS je "
            "WHERE docs.deleted = 0 AND docs.metadata IS NOT NULL ORDER BY je.key LIMIT ?",
            (int(limit),),
        )
        return [str(r[0]) for r in rows]
