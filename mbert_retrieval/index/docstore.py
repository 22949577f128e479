"""`DocStore`: documents, their internal integer ids and the chunk registry of an index, in SQLite.

Each document row has an internal id (`iid`, the id the vector structures use), the caller's `doc_id`,
text, title, JSON metadata and a `deleted` flag (tombstone, purged by compaction). A `doc_id` is unique
among live rows; an update gives the new version a new iid, so the vector structures never see an iid
change meaning. The `chunks` table registers the vector chunk files, and `meta` holds the iid/chunk
counters: both are committed in the same transaction as the documents they belong to.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import IndexCorruptError

__all__ = ["DocStore", "DocRow", "ChunkInfo", "compile_filter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    iid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    text TEXT NOT NULL,
    title TEXT,
    metadata TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    chunk INTEGER
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
_BATCH = 500  # ids per `IN (...)` query, below SQLite's variable limit
_KEY_RE = re.compile(r"^[^\"\\]+$")
_CMP = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass(frozen=True)
class DocRow:
    """One document as stored."""

    iid: int
    doc_id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.doc_id, "text": self.text, "title": self.title, "metadata": self.metadata or {}}


@dataclass(frozen=True)
class ChunkInfo:
    """A registered vector chunk file (`dropped`: the file was folded into a compressed structure and removed)."""

    seq: int
    name: str
    sha256: str
    bytes: int
    n_docs: int
    n_vectors: int
    dropped: bool = False


def _json_path(key: str) -> str:
    parts = key.split(".")
    if not key or not all(p and _KEY_RE.match(p) for p in parts):
        raise ValueError(f"invalid metadata field name in filter: {key!r}")
    return "$" + "".join(f'."{p}"' for p in parts)


def _sql_value(value: Any) -> Any:
    if isinstance(value, (str, int, float)) or value is None:
        return value
    raise ValueError(f"filter values must be str, int, float, bool or None, got {type(value).__name__}")


def compile_filter(flt: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Metadata filter -> SQL WHERE clause over `docs.metadata`.

    `{"lang": "en"}` equality, `{"lang": ["en", "de"]}` membership, `{"year": {"$gte": 2020, "$lt": 2024}}`
    comparisons ($eq $ne $gt $gte $lt $lte $in $nin $exists $contains), `{"$or": [{...}, {...}]}`,
    `{"$and": [...]}`; nested fields with dots (`"source.name"`). Top-level keys are ANDed.
    """
    if not isinstance(flt, Mapping):
        raise ValueError(f"a filter must be a dict, got {type(flt).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond:
                raise ValueError(f"{key} needs a non-empty list of filters")
            subs = [compile_filter(c) for c in cond]
            clauses.append("(" + f" {key[1:].upper()} ".join(f"({s})" for s, _ in subs) + ")")
            params += [p for _, ps in subs for p in ps]
            continue
        path = _json_path(key)
        expr = "json_extract(metadata, ?)"
        ops = cond if isinstance(cond, Mapping) else ({"$in": cond} if isinstance(cond, (list, tuple)) else {"$eq": cond})
        if not ops:
            raise ValueError(f"empty condition for field {key!r}")
        for op, val in ops.items():
            if op in ("$eq", "$ne") and val is None:
                clauses.append(f"{expr} IS {'NOT ' if op == '$ne' else ''}NULL")
                params.append(path)
            elif op in _CMP:
                sql = f"{expr} {_CMP[op]} ?"
                clauses.append(f"({expr} IS NULL OR {sql})" if op == "$ne" else sql)
                params += [path, path, _sql_value(val)] if op == "$ne" else [path, _sql_value(val)]
            elif op in ("$in", "$nin"):
                if not isinstance(val, (list, tuple)):
                    raise ValueError(f"{op} for field {key!r} needs a list")
                if not val:
                    clauses.append("0" if op == "$in" else "1")
                    continue
                marks = ",".join("?" * len(val))
                if op == "$in":
                    clauses.append(f"{expr} IN ({marks})")
                    params += [path, *map(_sql_value, val)]
                else:
                    clauses.append(f"({expr} IS NULL OR {expr} NOT IN ({marks}))")
                    params += [path, path, *map(_sql_value, val)]
            elif op == "$exists":
                clauses.append(f"json_type(metadata, ?) IS {'NOT ' if val else ''}NULL")
                params.append(path)
            elif op == "$contains":
                clauses.append("EXISTS (SELECT 1 FROM json_each(metadata, ?) WHERE json_each.value = ?)")
                params += [path, _sql_value(val)]
            else:
                raise ValueError(f"unknown filter operator {op!r} for field {key!r}")
    return (" AND ".join(clauses) or "1"), params


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
            self._conn.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"document store {self.path.name!r} is corrupt or unreadable: {exc}") from exc

    # ----------------------------------------------------------------- plumbing
    def close(self) -> None:
        with self._lock:
            self._conn.close()

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

    def counters(self) -> tuple[int, int]:
        """(next internal id, next chunk number): never reused, even after compaction."""
        meta = dict(self._query("SELECT key, value FROM meta"))
        return int(meta.get("next_iid", 0)), int(meta.get("next_chunk", 0))

    # ----------------------------------------------------------------- writes
    def commit(self, rows: Sequence[DocRow], chunk: ChunkInfo | None = None, replace: bool = False) -> list[int]:
        """Insert `rows` (and register `chunk`) in one transaction. With `replace`, live rows with the same
        doc_id are tombstoned first; their iids are returned. Without it a live duplicate raises."""
        replaced: list[int] = []
        with self.transaction() as conn:
            next_iid, next_chunk = self.counters()
            if chunk is not None:
                conn.execute(
                    "INSERT INTO chunks (seq, name, sha256, bytes, n_docs, n_vectors, dropped) VALUES (?,?,?,?,?,?,0)",
                    (chunk.seq, chunk.name, chunk.sha256, chunk.bytes, chunk.n_docs, chunk.n_vectors),
                )
                next_chunk = max(next_chunk, chunk.seq + 1)
            if replace and rows:
                replaced = [r[0] for r in self._in_batches("SELECT iid FROM docs WHERE deleted = 0 AND doc_id IN ({marks})", [r.doc_id for r in rows])]
                conn.executemany("UPDATE docs SET deleted = 1 WHERE iid = ?", [(i,) for i in replaced])
            conn.executemany(
                "INSERT INTO docs (iid, doc_id, text, title, metadata, deleted, chunk) VALUES (?,?,?,?,?,0,?)",
                [
                    (r.iid, r.doc_id, r.text, r.title, json.dumps(r.metadata) if r.metadata else None, chunk.seq if chunk else None)
                    for r in rows
                ],
            )
            if rows:
                next_iid = max(next_iid, max(r.iid for r in rows) + 1)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [("next_iid", next_iid), ("next_chunk", next_chunk)])
        return replaced

    def upsert(self, rows: Sequence[DocRow], chunk: ChunkInfo | None = None) -> list[int]:
        """Insert or replace documents by doc_id; returns the iids of the replaced versions."""
        return self.commit(rows, chunk, replace=True)

    def set_fields(self, doc_id: str, title: str | None, metadata: dict | None) -> None:
        """Change title/metadata of a live document in place (no re-encoding needed for metadata)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE docs SET title = ?, metadata = ? WHERE doc_id = ? AND deleted = 0",
                (title, json.dumps(metadata) if metadata else None, doc_id),
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
                conn.execute("DELETE FROM docs WHERE deleted = 1")
            if new_chunks:
                nxt = max(self.counters()[1], max(c.seq for c in new_chunks) + 1)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_chunk', ?)", (nxt,))

    def purge_deleted(self) -> int:
        with self.transaction() as conn:
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
        return [ChunkInfo(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), bool(r[6])) for r in rows]
