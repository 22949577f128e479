"""The records of the document store (document, window and chunk rows, metadata changes, the binding to a
manifest) and how a row is stored: metadata as JSON (refused when SQLite could not compare it) and the
sha256 checksums `verify_rows` recomputes."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import IndexCorruptError

__all__ = ["DocRow", "FieldChange", "WindowRow", "StoreAheadError", "StoreBinding", "ChunkInfo", "encode_metadata",
           "row_checksum", "window_checksum"]

_MAX_FLOAT_INT = int(sys.float_info.max)


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
class FieldChange:
    """New title and metadata of a live document whose text is unchanged (an update without re-encoding)."""

    doc_id: str
    title: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class WindowRow:
    """One window of a long document: its own internal id (its row in the vector structures), the
    document's internal id and the character span `text[start:end]` of the document it covers."""

    iid: int
    doc_iid: int
    start: int
    end: int


class StoreAheadError(IndexCorruptError):
    """The document store is more than one checkpoint ahead of the manifest just read (another process
    checkpointed in between: read the manifest again)."""


@dataclass(frozen=True)
class StoreBinding:
    """What `DocStore.binding` reads from the store's meta table."""

    index_id: str | None
    generation: int | None
    first_chunk: int | None  # chunk files numbered from here on carry the index id in their metadata


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


def _bad_number(value: Any, path: str) -> tuple[str, Any] | None:
    """(field path, value) of the first NaN, infinite or beyond-float number in a JSON-like value."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return p, v
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_FLOAT_INT:
            return p, v
        if isinstance(v, Mapping):
            stack += [(x, f"{p}.{k}" if p else str(k)) for k, x in v.items()]
        elif isinstance(v, (list, tuple)):
            stack += [(x, f"{p}[{i}]") for i, x in enumerate(v)]
    return None


def encode_metadata(doc_id: str, metadata: Mapping[str, Any] | None) -> str | None:
    """Metadata as stored (JSON text, None when empty). NaN, infinities and integers beyond float range
    are refused (ValueError naming the document and field): SQLite could not compare them, so filters on
    the field would silently go wrong."""
    if not metadata:
        return None
    if (bad := _bad_number(metadata, "")) is not None:
        field, value = bad
        shown = "an integer beyond the float range" if isinstance(value, int) else repr(value)
        raise ValueError(
            f"metadata of document {doc_id!r}: field {field!r} is {shown}; NaN, Infinity and numbers beyond "
            "the float range cannot be stored (filters could not compare them)"
        )
    try:
        return json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"metadata of document {doc_id!r} cannot be stored as JSON: {exc}") from None


def row_checksum(iid: int, doc_id: str, text: str, title: str | None, metadata: str | None) -> str:
    """sha256 of a stored document row (`metadata` as stored JSON text): `verify` recomputes it."""
    return hashlib.sha256(json.dumps([int(iid), doc_id, text, title, metadata]).encode("ascii")).hexdigest()


def window_checksum(iid: int, doc_iid: int, start: int, end: int) -> str:
    """sha256 of a stored window row: `verify_rows` recomputes it."""
    return hashlib.sha256(json.dumps(["window", int(iid), int(doc_iid), int(start), int(end)]).encode("ascii")).hexdigest()
