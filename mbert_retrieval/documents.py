"""Corpus input for the `Retriever`: a path (any format `data.iter_corpus` reads) or Python objects (dicts,
strings, `Document`s), turned into index documents `{"id", "text", "title", "metadata"}` with the same
checks the file readers make (lone surrogates, non-finite numbers, duplicate ids).

`iter_documents` streams: a path is read as the index asks for documents (`DocumentStream`), so indexing a
corpus of any size holds one slice of documents at a time plus the set of ids seen (duplicates are refused
when reached). Bad input is raised when it is reached, except in the first document, which is read at once
(a wrong format or an empty corpus is refused before anything is written). `normalize_documents` is the
same read whole into a list."""

from __future__ import annotations

import os
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .data import DataError, Document, LoadReport, ReadOptions, check_metadata, check_string, estimate_documents, iter_corpus

__all__ = ["CorpusLike", "CheckedDocuments", "DocumentStream", "iter_documents", "normalize_documents"]

CorpusLike = str | os.PathLike | Iterable[Mapping[str, Any] | str | Document]

_ID_KEYS = ("id", "_id", "doc_id", "docid")
_TEXT_KEYS = ("text", "contents", "content")


def _one_document(item: Any, n: int, where: str) -> dict[str, Any]:
    if isinstance(item, Document):
        return {"id": item.id, "text": item.text, "title": item.title or None, "metadata": dict(item.metadata or {})}
    if isinstance(item, str):
        return {"id": str(n), "text": item, "title": None, "metadata": {}}
    if not isinstance(item, Mapping):
        raise DataError(f"document {n}: expected a dict or a string, got {type(item).__name__}", where)
    doc_id = next((item[k] for k in _ID_KEYS if k in item), None)
    if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or not str(doc_id).strip():
        raise DataError(f"document {n}: missing or invalid id (one of {', '.join(_ID_KEYS)})", where, field="id")
    text = next((item[k] for k in _TEXT_KEYS if k in item), None)
    if not isinstance(text, str):
        raise DataError(f"document {n} ({doc_id!r}): missing or non-string 'text'", where, field="text")
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise DataError(f"document {n} ({doc_id!r}): 'title' must be a string", where, field="title")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DataError(f"document {n} ({doc_id!r}): 'metadata' must be an object", where, field="metadata")
    label = f"document {n} ({doc_id!r})"
    check_string(text, where, None, f"{label} text")
    if title:
        check_string(title, where, None, f"{label} title")
    return {"id": str(doc_id), "text": text, "title": title or None,
            "metadata": check_metadata(metadata, where, None, f"{label} metadata")}


class CheckedDocuments:
    """Index documents that were already normalized and checked (ids unique): `iter_documents` passes them
    through instead of checking each one again."""

    def __init__(self, docs: Iterable[dict[str, Any]]):
        self._docs = docs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._docs)


class DocumentStream(CheckedDocuments):
    """The index documents of a corpus path, read lazily. Each iteration reads the corpus again from the start
    (one iteration at a time: `report`, the `LoadReport`, is reset and refilled by each). The path, the format
    and the first document are checked when the stream is made; the rest when reached.

    `len()` is exact: known once an iteration has finished, else it costs a reading pass (nothing is kept).
    `estimate()` is a cheap upper bound for a progress bar (lines of a JSONL file; None for other formats)."""

    def __init__(self, path: str | os.PathLike, kind: str = "auto", options: ReadOptions | None = None,
                 report: LoadReport | None = None):
        self.path, self.kind, self.options = Path(path), kind, options
        self.report = report if report is not None else LoadReport()
        self._count: int | None = None
        docs = self._read()
        first = next(docs)  # bad format, bad first document, empty corpus: raised here
        self._pending: Iterator[dict[str, Any]] | None = chain((first,), docs)

    def _read(self) -> Iterator[dict[str, Any]]:
        self._pending = None  # an unfinished earlier pass must not fill the report any more
        self.report.reset()
        return self._normalized(iter_corpus(self.path, self.kind, self.options, report=self.report))

    def _normalized(self, docs: Iterator[Document]) -> Iterator[dict[str, Any]]:
        n = 0
        for doc in docs:
            yield {"id": doc.id, "text": doc.text, "title": doc.title or None, "metadata": doc.metadata}
            n += 1
        self._count = n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending, self._pending = self._pending, None
        return pending if pending is not None else self._read()

    def __len__(self) -> int:
        if self._count is None:
            for _ in self._read():
                pass
        assert self._count is not None
        return self._count

    def ids(self) -> Iterator[str]:
        """The document ids, read lazily (one pass)."""
        return (d["id"] for d in self)

    def estimate(self) -> int | None:
        """The exact count when a pass has finished, else `data.estimate_documents` (None: unknown)."""
        return self._count if self._count is not None else estimate_documents(self.path, self.kind)


def _checked(items: Iterable[Any]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        doc = _one_document(item, i, "<input>")
        if doc["id"] in seen:
            raise DataError(f"document {i}: duplicate id {doc['id']!r}", "<input>", field="id")
        seen.add(doc["id"])
        yield doc


def iter_documents(corpus: CorpusLike, kind: str = "auto", options: ReadOptions | None = None,
                   report: LoadReport | None = None) -> Iterator[dict[str, Any]]:
    """Index documents `{"id", "text", "title", "metadata"}`, one at a time, from a path (BEIR folder, JSONL,
    CSV/TSV, JSON, text file, folder of text or code files; see `data.iter_corpus`; `kind`, `options` and
    `report` go to it) or an iterable of dicts (`id`/`_id`, `text`, `title`, `metadata`), `Document`s or
    strings (ids "0", "1", ...). The first document is checked at once, the others as they are reached:
    bad input or a duplicate id raises `DataError` then."""
    if isinstance(corpus, (str, os.PathLike)):
        return iter(DocumentStream(corpus, kind, options, report))
    if isinstance(corpus, CheckedDocuments):
        return iter(corpus)
    if isinstance(corpus, Mapping):
        raise DataError("corpus must be a path or a list of documents, not a single dict", "<input>")
    docs = _checked(corpus)
    first = next(docs, None)
    return docs if first is None else chain((first,), docs)


def normalize_documents(corpus: CorpusLike, kind: str = "auto") -> list[dict[str, Any]]:
    """`iter_documents` read whole into a list (every document checked before it returns)."""
    return list(iter_documents(corpus, kind))
