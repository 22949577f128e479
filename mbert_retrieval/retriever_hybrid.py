"""BM25 and hybrid search of a `Retriever` (a mixin): the FTS5 table kept in the document store, the bm25s
fallback (an older index's `bm25/`, or sqlite3 without FTS5; built in memory when out of date, never written
by a read), switching the stored default on and off, and reciprocal rank fusion of the two result lists.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data import document_text
from .doc_encoder import DocumentEncoder
from .hybrid import BM25_DIRNAME, BM25Index, rrf
from .index.lexical import LexicalIndex, fts5_available
from .index.result import Result

logger = logging.getLogger("mbert_retrieval.retriever")

__all__ = ["HybridMixin"]


class HybridMixin:
    """BM25 upkeep and hybrid search; `Retriever` provides the state below."""

    index: Any
    hybrid: bool
    rrf_k: int
    _bm25: BM25Index | None
    _bm25_seen: tuple[int, int] | None

    @property
    def path(self) -> Path:
        raise NotImplementedError

    @property
    def hybrid_default(self) -> bool:
        raise NotImplementedError

    @property
    def encoder(self) -> DocumentEncoder:
        raise NotImplementedError

    def _write_sidecar(self, **changes: Any) -> None:
        raise NotImplementedError

    def _finish_build(self) -> None:
        """Once every document is in: the bm25s index on disk when the index is hybrid without FTS5."""
        if self.hybrid_default and self.lexical_index() is None:
            self._save_bm25()

    def enable_hybrid(self) -> None:
        """Make hybrid search (BM25 fused by RRF) the index's stored default and keep BM25 with the documents:
        a write command (what `mbret index --hybrid` does). Creates the FTS5 table and indexes the current
        documents in one transaction (an older index's `bm25/` is removed); without FTS5 in sqlite3, a
        bm25s index in `bm25/`. This retriever then searches hybrid too."""
        self._write_sidecar(hybrid=True)
        self.hybrid = True
        if not self._ensure_fts():
            self._save_bm25()

    def disable_hybrid(self) -> None:
        """Make dense / ColBERT-only search the index's stored default and remove its BM25 index."""
        with self._writer_lock():
            self._write_sidecar(hybrid=False)
            if self._fts_capable():
                LexicalIndex(self.index.docstore).drop()
            shutil.rmtree(self.path / BM25_DIRNAME, ignore_errors=True)
        self._bm25, self._bm25_seen = None, None
        self.hybrid = False

    def _fts_capable(self) -> bool:
        """Whether this index can keep BM25 in its document store (sqlite3 with FTS5)."""
        from .index.docstore import DocStore

        return isinstance(getattr(self.index, "docstore", None), DocStore) and fts5_available()

    def lexical_index(self) -> LexicalIndex | None:
        """The FTS5 BM25 index of the document store when this index keeps one (None: hybrid searches use
        bm25s: `bm25()`)."""
        if not self._fts_capable():
            return None
        lexical = LexicalIndex(self.index.docstore)
        return lexical if lexical.exists() else None

    def _ensure_fts(self) -> bool:
        """Writer: make sure the document store has its FTS5 table (created and filled in one transaction
        when missing; an older version's `bm25/` is then removed). False when FTS5 cannot be used here."""
        if not self._fts_capable():
            return False
        lexical = LexicalIndex(self.index.docstore)
        if lexical.exists() and not (self.path / BM25_DIRNAME).exists():
            return True  # the usual case: nothing to do, no lock taken
        with self._writer_lock():
            if not lexical.exists():
                n = lexical.install()
                logger.info("%s: full-text BM25 index created over %d documents", self.path, n)
            shutil.rmtree(self.path / BM25_DIRNAME, ignore_errors=True)
        self._bm25, self._bm25_seen = None, None
        return True

    def _writer_lock(self):
        from .index.storage import writer_lock

        return writer_lock(self.path)

    def _binding(self) -> dict[str, Any]:
        """Which index, and which state of its documents, a BM25 index is built from: the index's identity
        (its id, else its creation time) and a hash of the live documents' internal ids (every added or
        re-encoded document gets a new one)."""
        manifest = self.index.manifest
        ident = getattr(manifest, "index_id", None) or manifest.params.get("index_id") or manifest.created_at
        iids, _ = self.index.docstore.live_iids()
        digest = hashlib.sha256(np.ascontiguousarray(iids, dtype=np.int64).tobytes()).hexdigest()
        return {"index": str(ident), "documents": int(len(iids)), "live_sha256": digest}

    def _docs_state(self) -> tuple[int, int]:
        """Cheap change detector: SQLite's data_version (another process committed) and the live count."""
        data_version = getattr(self.index.docstore, "data_version", None)
        return (data_version() if data_version is not None else 0), len(self.index)

    def _build_bm25(self, binding: Mapping[str, Any]) -> BM25Index:
        ids, texts = [], []
        for row in self.index.docstore.iter_documents():
            ids.append(row.doc_id)
            texts.append(document_text({"title": row.title, "text": row.text}))
        return BM25Index.build(ids, texts, binding=binding)

    def _load_bm25(self, binding: Mapping[str, Any]) -> BM25Index | None:
        """The BM25 index on disk, when it was built from exactly the current documents of this index."""
        folder = self.path / BM25_DIRNAME
        if not BM25Index.exists(folder):
            return None
        try:
            found = BM25Index.read_config(folder).get("binding")
            if found == binding:
                bm25 = BM25Index.load(folder)
                if bm25.binding == binding:  # replaced in between: checked again
                    return bm25
                found = bm25.binding
        except (ValueError, OSError) as err:
            logger.warning("%s: %s; searching with a BM25 index built in memory", folder, err)
            return None
        if isinstance(found, dict) and found.get("index") != binding.get("index"):
            logger.warning("%s belongs to another index: ignored (searching with a BM25 index built in memory)",
                           folder)
        else:  # out of date (a write without BM25 upkeep, or an older version's file)
            logger.info("%s is out of date with the documents: searching with a BM25 index built in memory", folder)
        return None

    def bm25(self) -> BM25Index:
        """The bm25s index of the current documents (the fallback when the index has no FTS5 table, see
        `lexical_search`). Kept in memory; after a change of the documents (here or by another process) the
        one in `bm25/` is used when it was built from exactly these documents of this index, else one is
        built in memory. Never writes into the index folder."""
        state: tuple[int, int] | None = self._docs_state()
        if self._bm25 is not None and state == self._bm25_seen:
            return self._bm25
        binding = self._binding()
        if self._bm25 is None or self._bm25.binding != binding:
            bm25 = self._load_bm25(binding)
            if bm25 is None:
                bm25 = self._build_bm25(binding)
                if self._binding() != binding:  # documents changed while being read: check again next time
                    state = None
            self._bm25 = bm25
        self._bm25_seen = state
        return self._bm25

    def _save_bm25(self) -> None:
        """(Re)build the BM25 index on disk from the current documents (hybrid indexes, after every write),
        holding the writer lock so that no other writer changes the documents meanwhile. When another
        process holds the lock, the BM25 upkeep is left to it (readers build in memory until then)."""
        from .index import IndexStateError

        try:
            with self._writer_lock():
                bm25 = self._build_bm25(self._binding())
                bm25.save(self.path / BM25_DIRNAME)
        except IndexStateError as err:
            logger.warning("BM25 index not saved (%s): searches build it in memory until the next write", err)
            return
        self._bm25, self._bm25_seen = bm25, None

    def lexical_search(self, queries: str | Sequence[str], k: int = 10, filter: Mapping[str, Any] | None = None,
                       ) -> list[list[tuple[str, float]]]:
        """BM25 alone: top-k (doc id, score) per query, from the FTS5 table when the index keeps one, else
        from bm25s (`bm25()`). Scores of the two differ in scale (and slightly in tokenisation)."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        lexical = self.lexical_index()
        if lexical is not None:
            return lexical.search(queries, k=k, filter=filter or None)
        allowed = self._allowed_ids(filter) if filter else None
        return self.bm25().search(queries, k=k, allowed=allowed)

    def _allowed_ids(self, filter: Mapping[str, Any]) -> list[str]:
        iids = self.index.docstore.filter_iids(filter)
        return [row.doc_id for row in self.index.docstore.get_by_iids(iids.tolist()).values()]

    def _hybrid_search(self, queries: list[str], k: int, filter: Mapping[str, Any] | None, depth: int,
                       params: Mapping[str, Any]) -> list[list[Result]]:
        dense = self.index.search(queries, k=depth, filter=filter or None, encoder=self.encoder, **params)
        lexical = self.lexical_search(queries, k=depth, filter=filter)
        out: list[list[Result]] = []
        for hits, bm25_hits in zip(dense, lexical):
            known = {h.doc_id: h for h in hits}
            fused = rrf([[h.doc_id for h in hits], [d for d, _ in bm25_hits]], k=self.rrf_k, limit=k)
            missing = [d for d, _ in fused if d not in known]
            docs = dict(zip(missing, self.index.get(missing))) if missing else {}
            row = []
            for doc_id, score in fused:
                if doc_id in known:
                    h = known[doc_id]
                    row.append(Result(doc_id, score, h.text, h.title, dict(h.metadata or {}), h.window))
                elif docs.get(doc_id) is not None:
                    d = docs[doc_id]
                    row.append(Result(doc_id, score, d["text"], d.get("title"), dict(d.get("metadata") or {})))
            out.append(row)
        return out
