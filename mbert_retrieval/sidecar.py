"""`<index>/retriever.json`: what the `Retriever` records beside an index (model path, hybrid default,
fallback), read strictly: a damaged or missing-but-expected file is an error, never a silent mode switch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .hybrid import BM25_DIRNAME, BM25Index

__all__ = ["RETRIEVER_FILE", "SIDECAR_PARAM", "read_sidecar", "sidecar_expected"]

RETRIEVER_FILE = "retriever.json"
SIDECAR_PARAM = "retriever"  # manifest.params key: this index has a retriever.json (set by Retriever.build)


def read_sidecar(path: str | os.PathLike, required: bool = False) -> dict[str, Any]:
    """`<index>/retriever.json` as a dict ({} when absent and not `required`). A damaged file (not JSON, not
    an object, a field of the wrong type) or a `required` one that is missing raises `IndexCorruptError`
    naming the file: guessing would silently change how the index is searched (dense instead of hybrid)."""
    from .index import IndexCorruptError

    f = Path(path) / RETRIEVER_FILE
    if not f.is_file():
        if required:
            raise IndexCorruptError(f"{f} is missing: this index was built with it (it records the model path and "
                                    "whether BM25 is fused in); restore it, or rebuild the index")
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexCorruptError(f"{f} is damaged ({err}): restore it, or rebuild the index") from None
    if not isinstance(data, dict):
        raise IndexCorruptError(f"{f} is damaged: expected a JSON object, got {type(data).__name__}")
    fields: dict[str, type] = {"hybrid": bool, "fallback": bool, "rrf_k": int, "model_id": str, "model_path": str,
                               "kind": str, "fallback_message": str}
    for name, kind in fields.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or data[name] < 0)):
            raise IndexCorruptError(f"{f} is damaged: field {name!r} has an invalid value {value!r}")
    return data




def sidecar_expected(path: Path, manifest: Any) -> bool:
    """Whether `path` must hold a retriever.json: its manifest says the Retriever built it, or a BM25 index
    is there (only hybrid indexes, which always have one, keep BM25 on disk)."""
    params = getattr(manifest, "params", None) or {}
    return bool(params.get(SIDECAR_PARAM)) or BM25Index.exists(path / BM25_DIRNAME)
