"""The model side of a retriever: loading a model for retrieval (local paths made absolute, so an index
records a stable model id), where its files live, and saving weights made at build time into the index."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MODEL_DIRNAME", "load_retrieval_model", "save_new_weights", "model_path", "absolute_if_dir"]

logger = logging.getLogger(__name__)


def absolute_if_dir(name: str | None) -> str | None:
    if name is not None and os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name))
    return name


def load_retrieval_model(name: str | None = None, kind: str = "dense", revision: str | None = None,
                         **options: Any):
    """`hub.load_model` with local paths made absolute (so the index records a stable model id).
    `options`: encoder settings (max_batch_size, max_tokens_per_batch, device, max_length, ...)."""
    from .hub import load_model

    return load_model(absolute_if_dir(name), kind=kind, revision=revision, **options)


MODEL_DIRNAME = "model"  # <index>/model/: a model whose weights were made at build time (see `save_new_weights`)


def save_new_weights(model: Any, path: Path, options: Mapping[str, Any]) -> tuple[Any, bool]:
    """A model holding weights made when it was loaded (ColBERT on a plain encoder: a random projection and
    marker-token embeddings, `model.new_weights`) is saved into `<index>/model/` at build time, and the index
    reopens from those files: a change of torch's initialisation cannot break the index, and the
    "untrained projection" warning comes once, at build. Resuming an interrupted build reloads the saved copy.
    Returns (the model to build with, whether this call saved a new copy)."""
    target = path / MODEL_DIRNAME
    if not getattr(model, "new_weights", False):
        return model, False
    if (path / "manifest.json").exists() and (target / "modules.json").is_file():
        from .hub import load_model

        saved = load_model(str(target), kind=model.kind, **dict(options))
        saved.model_id, saved.revision = model.model_id, getattr(model, "revision", None)
        saved.resolved = getattr(model, "resolved", None)
        return saved, False
    # no manifest yet: whatever is in `target` is left by a build that stopped before creating the index
    if target.exists():
        shutil.rmtree(target)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)  # from now on the model's weights are these files (its fingerprint too)
    logger.info("saved the model with its new projection in %s (the index reopens from there)", target)
    return model, True


def model_path(model: Any) -> str | None:
    resolved = getattr(model, "resolved", None)
    if resolved is not None and getattr(resolved, "path", None):
        return os.path.abspath(resolved.path)
    model_id = getattr(model, "model_id", None)
    return os.path.abspath(model_id) if model_id and os.path.isdir(model_id) else None
