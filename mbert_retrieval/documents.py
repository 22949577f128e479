"""Corpus input for the `Retriever`: a path (any format `data.load_corpus` reads) or Python objects (dicts,
strings, `Document`s), turned into index documents `{"id", "text", "title", "metadata"}` with the same
checks the file readers make (lone surrogates, non-finite numbers, duplicate ids)."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from .data import DataError, Document, check_metadata, check_string, load_corpus

__all__ = ["CorpusLike", "normalize_documents"]

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


def normalize_documents(corpus: CorpusLike, kind: str = "auto") -> list[dict[str, Any]]:
    """A path (BEIR folder, JSONL, text file, folder of text or code files; see `data.load_corpus`) or an
    iterable of dicts (`id`/`_id`, `text`, `title`, `metadata`), `Document`s or strings (ids "0", "1", ...)
    -> index documents `{"id", "text", "title", "metadata"}`. Duplicate ids raise `DataError`."""
    if isinstance(corpus, (str, os.PathLike)):
        return [_one_document(d, i, str(corpus)) for i, d in enumerate(load_corpus(corpus, kind).values())]
    if isinstance(corpus, Mapping):
        raise DataError("corpus must be a path or a list of documents, not a single dict", "<input>")
    docs, seen = [], set()
    for i, item in enumerate(corpus):
        doc = _one_document(item, i, "<input>")
        if doc["id"] in seen:
            raise DataError(f"document {i}: duplicate id {doc['id']!r}", "<input>", field="id")
        seen.add(doc["id"])
        docs.append(doc)
    return docs
