"""Factories shared by the `Index` facade: structure configs/instances per (kind, index_type) and
validation of documents, encoder outputs and queries."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .dense import DenseConfig, DenseIndex
from .exact import ExactTokenIndex
from .plaid import PlaidConfig, PlaidIndex
from .vectors import VectorStore

__all__ = ["make_config", "make_structure", "doc_row", "flatten_vectors", "query_vectors"]


def make_config(kind: str, index_type: str, quantization: str | None, params: Mapping[str, Any]) -> DenseConfig | PlaidConfig | None:
    """Config dataclass of a structure; unknown parameters raise TypeError."""
    if kind == "dense":
        return DenseConfig(index_type=index_type, quantization=quantization, **params)
    if quantization is not None:
        raise ValueError("quantization applies to dense indexes only (PLAID compresses residuals with nbits)")
    if index_type == "plaid":
        return PlaidConfig(**params)
    if params:
        raise TypeError(f"colbert 'flat' index takes no parameters, got {sorted(params)}")
    return None


def doc_row(doc: Mapping[str, Any]) -> tuple[str, str, str | None, dict | None]:
    """Validate one input document -> (doc_id, text, title, metadata)."""
    if not isinstance(doc, Mapping) or "id" not in doc or "text" not in doc:
        raise ValueError(f"documents must be dicts with 'id' and 'text', got {doc!r:.200}")
    metadata = doc.get("metadata") or None
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata of document {doc['id']!r} must be a dict")
    title = doc.get("title") or None
    return str(doc["id"]), str(doc["text"]), None if title is None else str(title), None if metadata is None else dict(metadata)


def make_structure(kind: str, index_type: str, quantization: str | None, dim: int, params: Mapping[str, Any], store: VectorStore) -> Any:
    """The search structure of an index: DenseIndex, PlaidIndex or ExactTokenIndex."""
    config = make_config(kind, index_type, quantization, params)
    if kind == "dense":
        return DenseIndex(dim, config, store)
    if index_type == "plaid":
        return PlaidIndex(dim, config, store)
    return ExactTokenIndex(dim, store)


def flatten_vectors(kind: str, dim: int, vectors: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate encoder output for `n` documents -> (vectors, token offsets or None)."""
    if kind == "dense":
        arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if arr.shape != (n, dim):
            raise ValueError(f"expected dense vectors of shape {(n, dim)}, got {arr.shape}")
        return arr, None
    mats = [np.asarray(v, dtype=np.float32).reshape(-1, dim) if np.size(v) else np.zeros((0, dim), np.float32) for v in vectors]
    if len(mats) != n:
        raise ValueError(f"expected {n} token matrices, got {len(mats)}")
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in mats])]).astype(np.int64)
    return (np.concatenate(mats) if mats else np.zeros((0, dim), np.float32)), offsets


def query_vectors(kind: str, queries: Any, model: Any) -> tuple[Any, int]:
    """Search input as vectors: text(s) encoded with `model`; dense vectors as a float32 (n, dim) array;
    ColBERT token matrices as a list of float32 (n_tokens, dim) arrays. Returns (vectors, number of queries)."""
    from .errors import IndexStateError

    if isinstance(queries, (list, tuple)) and len(queries) == 0:
        return [], 0
    if isinstance(queries, str) or (isinstance(queries, (list, tuple)) and all(isinstance(q, str) for q in queries)):
        texts = [queries] if isinstance(queries, str) else list(queries)
        if model is None:
            raise IndexStateError("text queries need a model: Index.open(path, model=...)")
        queries = model.encode_queries(texts, show_progress=False)
    if hasattr(queries, "detach"):  # torch tensor
        queries = queries.detach().cpu().numpy()
    if kind == "dense":
        arr = np.asarray(queries, dtype=np.float32)
        arr = arr[None] if arr.ndim == 1 else arr
        return arr, len(arr)
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        queries = [queries]
    mats = [np.asarray(q.detach().cpu().numpy() if hasattr(q, "detach") else q, dtype=np.float32) for q in queries]
    return mats, len(mats)
