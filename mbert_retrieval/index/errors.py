"""Exceptions raised by the index layer."""

from __future__ import annotations

__all__ = [
    "IndexStoreError", "IndexCorruptError", "IndexManifestError", "IndexMismatchError", "IndexStateError", "FilterFieldError",
]  # fmt: skip


class IndexStoreError(Exception):
    """Base class of every error raised by `mbert_retrieval.index`."""


class IndexCorruptError(IndexStoreError):
    """A file of the index is missing, truncated or does not match its recorded checksum."""


class IndexManifestError(IndexCorruptError):
    """manifest.json is unreadable or one of its fields is invalid (the message names the field)."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another model (model_id / dim / kind) or a newer format."""


class IndexStateError(IndexStoreError):
    """The operation is not possible in the index's current state (e.g. searching an untrained IVF-PQ index)."""


class FilterFieldError(ValueError):
    """A metadata filter matched nothing because a field it needs is in no live document (a typo, usually).
    `fields`: the missing field names; `present`: (some of) the top-level fields the documents do have."""

    def __init__(self, fields: list[str], present: list[str]) -> None:
        self.fields, self.present = list(fields), list(present)
        names = ", ".join(repr(f) for f in self.fields)
        verb = "is" if len(self.fields) == 1 else "are"
        super().__init__(
            f"filter field{'s' if len(self.fields) > 1 else ''} {names} {verb} in no document; "
            f"fields present: {', '.join(self.present) or 'none'}"
        )
