"""Factories shared by the `Index` facade: structure configs/instances per (kind, index_type), validation of
index settings (names, types, bounds: before anything is written), documents, encoder outputs and queries."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Mapping

import numpy as np

from ..ragged import offsets_of
from .dense import DenseConfig, DenseIndex
from .vectors import VectorStore

__all__ = ["SettingError", "config_class", "make_config", "make_structure", "check_settings", "check_search_params",
           "setting_names", "doc_row", "flatten_vectors", "query_vectors"]

# Settings of the config dataclasses that are not `-p` settings (they have their own arguments).
_NOT_SETTINGS = ("index_type", "quantization")
# Integer settings that may be 0 (every other integer setting must be >= 1).
_ZERO_OK = {"seed", "exact_filter_threshold", "min_train_points"}
# Per-query search settings of each structure (the rest are build settings).
_SEARCH_SETTINGS = {
    ("dense", "flat"): ("nprobe", "ef_search", "rerank", "rerank_factor", "exact_filter_threshold"),
    ("colbert", "plaid"): ("nprobe", "ncandidates", "ndocs", "centroid_score_threshold", "rerank", "rerank_factor"),
    ("colbert", "flat"): (),
}


class SettingError(TypeError, ValueError):
    """A bad index setting: unknown name or wrong type/value. `setting` is its name, `reason` what is wrong;
    str() is "name: reason". A TypeError for unknown names (as an unexpected keyword would be) and a
    ValueError for bad values, so callers may catch either."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason = setting, reason


def config_class(kind: str, index_type: str) -> type | None:
    """DenseConfig, PlaidConfig, or None (ColBERT flat takes no settings)."""
    if kind == "dense":
        return DenseConfig
    if index_type == "plaid":
        from .plaid import PlaidConfig  # imports torch (MaxSim): only for ColBERT indexes

        return PlaidConfig
    return None


def setting_names(kind: str, index_type: str, search: bool = False) -> tuple[str, ...]:
    """The `params` an index of this kind/type takes at build time (or, with `search`, per query)."""
    if search:
        return _SEARCH_SETTINGS.get((kind, "flat" if kind == "dense" else index_type), ())
    cls = config_class(kind, index_type)
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_SETTINGS) if cls else ()


def _unknown(name: str, valid: tuple[str, ...]) -> SettingError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return SettingError(name, f"unknown setting; {hint}valid: {', '.join(sorted(valid)) or 'none'}")


def _check_value(name: str, hint: Any, value: Any) -> None:
    """`value` against the type annotation `hint` (int, float, bool, str, optionally `| None`)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if not optional:
            raise SettingError(name, f"expected {_describe(base)}, got None")
        return
    if base is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"expected true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SettingError(name, f"expected an integer, got {value!r}")
        low = 0 if name in _ZERO_OK else 1
        if value < low:
            raise SettingError(name, f"expected an integer >= {low}, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise SettingError(name, f"expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise SettingError(name, f"expected a finite number, got {value!r}")
    elif base is str and not isinstance(value, str):
        raise SettingError(name, f"expected a string, got {value!r}")


def _describe(base: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))


def check_settings(cls: type, params: Mapping[str, Any], allowed: tuple[str, ...] | None = None) -> None:
    """Names and types of `params` against the fields of the config dataclass `cls` (or the subset `allowed`)."""
    hints = typing.get_type_hints(cls)
    valid = allowed if allowed is not None else tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_SETTINGS)
    for name, value in params.items():
        if name not in valid:
            raise _unknown(name, valid)
        _check_value(name, hints[name], value)


def make_config(kind: str, index_type: str, quantization: str | None, params: Mapping[str, Any]) -> DenseConfig | Any | None:
    """Config dataclass of a structure. Every setting is checked by name and type first (`SettingError`:
    unknown names with a close-match hint and the valid names; wrong types; integers below 1), so a bad
    value never reaches the manifest or FAISS."""
    cls = config_class(kind, index_type)
    if kind != "dense" and quantization is not None:
        raise ValueError("quantization applies to dense indexes only (PLAID compresses residuals with nbits)")
    if cls is None:
        if params:
            raise SettingError(sorted(params)[0], f"unknown setting; a {kind}/{index_type} index takes no settings")
        return None
    check_settings(cls, params)
    if kind == "dense":
        return DenseConfig(index_type=index_type, quantization=quantization, **params)
    return cls(**params)


def check_search_params(kind: str, index_type: str, params: Mapping[str, Any]) -> None:
    """Per-query search settings (nprobe, ef_search, ndocs, ...) by name and type: `SettingError`."""
    if not params:
        return
    allowed = setting_names(kind, index_type, search=True)
    cls = config_class(kind, index_type)
    if cls is None:
        raise SettingError(sorted(params)[0], f"unknown setting; a {kind}/{index_type} index takes no search settings")
    check_settings(cls, params, allowed)


def doc_row(doc: Mapping[str, Any]) -> tuple[str, str, str | None, dict | None]:
    """Validate one input document -> (doc_id, text, title, metadata)."""
    if not isinstance(doc, Mapping) or "id" not in doc or "text" not in doc:
        raise ValueError(f"documents must be dicts with 'id' and 'text', got {doc!r:.200}")
    metadata = doc.get("metadata") or None
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata of document {doc['id']!r} must be a dict")
    title = doc.get("title") or None
    return str(doc["id"]), str(doc["text"]), None if title is None else str(title), None if metadata is None else dict(metadata)


def make_structure(kind: str, index_type: str, quantization: str | None, dim: int, params: Mapping[str, Any], store: VectorStore | None) -> Any:
    """The search structure of an index: segments (`SegmentSet`) of a DenseIndex (HNSW, IVF-PQ, int8) or a
    PlaidIndex; a DenseIndex (flat over floats or binary codes) or an ExactTokenIndex rebuilt from the chunks."""
    from .merge_policy import TieredMergePolicy
    from .segments import SegmentSet

    config: Any = make_config(kind, index_type, quantization, params)
    if kind == "dense":
        dense = DenseIndex(dim, config, store)
        if dense.from_chunks:
            return dense
        return SegmentSet(dense, TieredMergePolicy(config.segments_per_tier, config.merge_floor_rows, max_rows=config.max_segment_rows))
    if index_type == "plaid":
        from .plaid import PlaidIndex

        return SegmentSet(PlaidIndex(dim, config, store), TieredMergePolicy(config.segments_per_tier, config.merge_floor_rows, max_rows=config.max_segment_rows))
    from .exact import ExactTokenIndex  # imports torch

    assert store is not None, "exact search reads the chunk files"
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
    offsets = offsets_of([len(m) for m in mats])
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
            raise IndexStateError("text queries need an encoder: index.search(texts, encoder=DocumentEncoder(model)), "
                                  "or search through the Retriever, which owns the model")
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
