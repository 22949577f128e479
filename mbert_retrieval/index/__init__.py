"""Index layer: dense (FAISS flat / HNSW / IVF-PQ, int8 / binary codes) and ColBERT (exact or PLAID)
indexes on disk, with a SQLite document store, resumable crash-safe builds and checksummed files.

    from mbert_retrieval.index import Index
    index = Index.build("indexes/scifact", docs, kind="dense", index_type="hnsw", model=model)
    hits = index.search("what is late interaction?", k=10, filter={"year": {"$gte": 2020}})
"""

from .base import Hit, Index
from .dense import DenseConfig, DenseIndex
from .docstore import ChunkInfo, DocRow, DocStore, compile_filter
from .errors import IndexCorruptError, IndexManifestError, IndexMismatchError, IndexStateError, IndexStoreError
from .exact import ExactTokenIndex
from .manifest import FORMAT_VERSION, IndexManifest
from .plaid import PlaidConfig, PlaidIndex, ResidualCodec
from .storage import FileRecord, atomic_write_bytes, load_arrays, load_faiss, save_arrays, save_faiss, sha256_file, verify_file
from .vectors import VectorStore

__all__ = [
    "Index", "Hit", "IndexManifest", "FORMAT_VERSION", "DocStore", "DocRow", "ChunkInfo", "compile_filter",
    "DenseIndex", "DenseConfig", "PlaidIndex", "PlaidConfig", "ResidualCodec", "ExactTokenIndex", "VectorStore",
    "IndexStoreError", "IndexCorruptError", "IndexManifestError", "IndexMismatchError", "IndexStateError",
    "FileRecord", "atomic_write_bytes", "save_arrays", "load_arrays", "save_faiss", "load_faiss", "sha256_file", "verify_file",
]  # fmt: skip
