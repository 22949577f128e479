"""Index layer: dense (FAISS flat / HNSW / IVF-PQ, int8 / binary codes) and ColBERT (exact or PLAID)
indexes on disk, with a SQLite document store, resumable crash-safe builds and checksummed files.

    from mbert_retrieval.index import Index
    index = Index.build("indexes/scifact", docs, kind="dense", index_type="hnsw", model=model)
    hits = index.search("what is late interaction?", k=10, filter={"year": {"$gte": 2020}})
"""

from .base import Index
from .result import Hit, Result
from .dense import DenseConfig, DenseIndex
from .docstore import ChunkInfo, DocRow, DocStore, compile_filter
from .errors import FilterFieldError, IndexCorruptError, IndexManifestError, IndexMismatchError, IndexStateError, IndexStoreError
from .manifest import FORMAT_VERSION, IndexManifest
from .storage import FileRecord, atomic_write_bytes, load_arrays, load_faiss, save_arrays, save_faiss, sha256_file, verify_file
from .vectors import VectorStore

__all__ = [
    "Index", "Hit", "Result", "IndexManifest", "FORMAT_VERSION", "DocStore", "DocRow", "ChunkInfo", "compile_filter",
    "DenseIndex", "DenseConfig", "PlaidIndex", "PlaidConfig", "ResidualCodec", "ExactTokenIndex", "VectorStore",
    "IndexStoreError", "IndexCorruptError", "IndexManifestError", "IndexMismatchError", "IndexStateError", "FilterFieldError",
    "FileRecord", "atomic_write_bytes", "save_arrays", "load_arrays", "save_faiss", "load_faiss", "sha256_file", "verify_file",
]  # fmt: skip

# ColBERT structures import torch (MaxSim): loaded on first use, so that opening a dense index, `mbret info`
# and `mbret delete` stay free of it (PEP 562).
_LAZY = {"ExactTokenIndex": "exact", "PlaidConfig": "plaid", "PlaidIndex": "plaid", "ResidualCodec": "plaid"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
