"""Search over structure rows that may be windows of documents: the row -> document map and the max-pooling
of rows per document (a document indexed as windows scores as its best window and comes back once)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .docstore import DocStore

__all__ = ["WindowMap", "search_documents", "max_pool"]

MAX_FANOUT = 8  # search: rows fetched per wanted document at first, at most (then deeper while documents are missing)
DEPTH_RETRIES = 4

Found = list[tuple[int, float, int, bool]]  # per query: (document iid, score, best row, row is a window), best first


class WindowMap:
    """(window iids sorted, their documents' iids, most windows of one document) of a document store. Read
    once, then only the windows committed since (`mark_stale` after a write or a reload): windows are only
    ever added, under new iids (all of a document's in one commit), or purged with their deleted documents,
    which search drops anyway; so the map is always a superset of what the structure holds."""

    def __init__(self, docstore: DocStore) -> None:
        self.docstore = docstore
        self._map = (np.zeros(0, np.int64), np.zeros(0, np.int64), 1)
        self._stale = True  # windows may have been committed since `_map` was read

    def mark_stale(self) -> None:
        self._stale = True

    def current(self) -> tuple[np.ndarray, np.ndarray, int]:
        if self._stale:
            iids, docs, fanout = self._map
            new_iids, new_docs = self.docstore.window_map(after=int(iids[-1]) if len(iids) else -1)
            if len(new_iids):
                fanout = max(fanout, int(np.unique(new_docs, return_counts=True)[1].max()))
                self._map = (np.concatenate([iids, new_iids]), np.concatenate([docs, new_docs]), fanout)
            self._stale = False
        return self._map

    def row_documents(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(document iids, is-a-window mask) of structure rows: a window's document, else the row itself."""
        iids, docs, _ = self.current()
        rows = np.asarray(rows, dtype=np.int64)
        if not len(iids):
            return rows, np.zeros(rows.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(iids, rows), len(iids) - 1)
        is_window = iids[pos] == rows
        return np.where(is_window, docs[pos], rows), is_window

    def allowed_rows(self, doc_iids: np.ndarray) -> np.ndarray:
        """Structure rows of the documents a filter allows: their windows, or their own row."""
        iids, docs, _ = self.current()
        if not len(iids):
            return doc_iids
        return np.union1d(doc_iids[~np.isin(doc_iids, docs)], iids[np.isin(docs, doc_iids)])


def search_documents(structure: Any, windows: WindowMap, vectors: Any, n: int, k: int, allowed: np.ndarray | None,
                     params: Mapping[str, Any]) -> list[Found]:  # fmt: skip
    """Per query, up to `k` (document iid, score, best row, row is a window) best first: the structure's
    rows max-pooled per document (a document scores as its best window). Asks for k x (windows per
    document, at most `MAX_FANOUT`) rows, and deeper for the queries that still have fewer than `k`
    distinct documents while the structure has more rows."""
    _, _, fanout = windows.current()
    total = len(structure) if allowed is None else len(allowed)
    depth = k if fanout == 1 else min(k * min(fanout, MAX_FANOUT), max(total, k))
    found: list[Found] = [[] for _ in range(n)]
    todo = np.arange(n)
    for _ in range(DEPTH_RETRIES + 1):
        queries = vectors[todo] if isinstance(vectors, np.ndarray) else [vectors[i] for i in todo]
        scores, rows = structure.search(queries, depth, allowed=allowed, **params)
        docs, is_window = windows.row_documents(rows)
        again = []
        for j, q in enumerate(todo.tolist()):
            found[q] = max_pool(scores[j], rows[j], docs[j], is_window[j], k)
            if len(found[q]) < k and depth < total:
                again.append(q)
        if not again or fanout == 1:
            break
        todo, depth = np.asarray(again), min(depth * 4, total)
    return found


def max_pool(scores: np.ndarray, rows: np.ndarray, docs: np.ndarray, is_window: np.ndarray, k: int) -> Found:
    """The first `k` distinct documents of one query's rows, best score first: each document scores as its
    best row (max-pooling over its windows)."""
    out: Found = []
    seen: set[int] = set()
    for j in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist():
        row, doc = int(rows[j]), int(docs[j])
        if row < 0 or doc in seen:
            continue
        seen.add(doc)
        out.append((doc, float(scores[j]), row, bool(is_window[j])))
        if len(out) == k:
            break
    return out
