"""Exceptions raised by the index layer."""

from __future__ import annotations

__all__ = ["IndexStoreError", "IndexCorruptError", "IndexManifestError", "IndexMismatchError", "IndexStateError"]


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
