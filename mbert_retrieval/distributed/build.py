"""`build_sharded`: corpus -> embedding shards (local / torchrun / Ray) -> one index per shard. The entry
point for `mbret index --shards N [--ray ADDRESS]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .encode import EncodeConfig, corpus_ids_texts, encode_corpus
from .sharded_index import EMBEDDINGS_DIR, ShardedIndex, remove_embeddings

__all__ = ["build_sharded"]


def build_sharded(corpus_path_or_docs: Any, index_dir: str | os.PathLike, model: Any = None, kind: str | None = None,
                  index_type: str = "flat", n_shards: int = 2, backend: str = "local",
                  ray_address: str | None = None, show_progress: bool = False, *, num_workers: int | None = None,
                  keep_embeddings: bool = False,
                  wait_timeout_s: float = 86400.0, **index_params: Any) -> ShardedIndex:
    """Build (or resume building) a sharded index in `index_dir`.

    corpus_path_or_docs: a corpus path (anything `data.load_corpus` reads), `load_corpus`'s dict, or a list of
        `Document`s / dicts with id, text[, title, metadata].
    model: a loaded BiEncoder/ColBERT, a path or hub id, or None for the default model of `kind`.
    kind: "dense" | "colbert" | None (from the model). index_type: as `Index.create` ("flat", "hnsw",
        "ivfpq" for dense; "flat", "plaid" for colbert); `index_params` go to every shard's `Index.create`.
    backend: "local" | "torchrun" | "ray" (`ray_address`: "auto", "ray://host:10001", or None for a local Ray).
    Embedding shards are written to `index_dir/_embeddings` (resumable) and removed once every shard index
    is built, unless `keep_embeddings`. Under torchrun every rank encodes its shards and only rank 0 builds
    the shard indexes once every shard is encoded (it waits up to `wait_timeout_s`); the other ranks return None.
    """
    from ..data import load_corpus
    from ..hub import load_model

    docs = load_corpus(corpus_path_or_docs) if isinstance(corpus_path_or_docs, (str, os.PathLike)) \
        else corpus_path_or_docs
    by_id = _by_id(docs)
    if kind is None:
        kind = getattr(model, "kind", None)
    if backend == "ray":
        encoder_ref = model if isinstance(model, (str, os.PathLike)) or model is None else _model_ref(model)
        loaded = None if isinstance(model, (str, os.PathLike)) or model is None else model
        if encoder_ref is None:
            from ..hub import DEFAULT_MODELS

            encoder_ref = DEFAULT_MODELS[kind or "dense"]
    else:
        loaded = model if not isinstance(model, (str, os.PathLike)) and model is not None \
            else load_model(None if model is None else str(model), kind=kind)
        encoder_ref = loaded
    kind = kind or getattr(loaded, "kind", None)
    cfg = EncodeConfig(n_shards=n_shards, backend=backend, ray_address=ray_address, num_workers=num_workers,
                       show_progress=show_progress)
    emb_dir = Path(index_dir) / EMBEDDINGS_DIR
    store = encode_corpus(list(by_id.values()), encoder_ref, kind, emb_dir, config=cfg)
    if backend == "torchrun":
        if int(os.environ.get("RANK", "0")) != 0:
            return None  # type: ignore[return-value]
        _wait_complete(store, wait_timeout_s)
    index = ShardedIndex.build_from_shards(index_dir, store, by_id, index_type, model=loaded,
                                           show_progress=show_progress, **index_params)
    if not keep_embeddings:
        remove_embeddings(index_dir)
    return index


def _by_id(docs: Any) -> dict[str, Any]:
    """id -> document, in corpus order."""
    from collections.abc import Mapping

    if isinstance(docs, Mapping):
        return dict(docs)
    out: dict[str, Any] = {}
    for d in docs:
        doc_id = str(d.get("id", d.get("_id"))) if isinstance(d, Mapping) else d.id
        if doc_id in out:
            raise ValueError(f"duplicate document id {doc_id!r}")
        out[doc_id] = d
    corpus_ids_texts(list(out.values())[:1])  # validates the document shape early
    return out


def _model_ref(model: Any) -> str:
    """What Ray workers load for an already loaded model: the name it was loaded by (so that workers resolve
    it the same way, including the offline fallback, and the model_id matches), else its model_id."""
    resolved = getattr(model, "resolved", None)
    return getattr(resolved, "requested", None) or model.model_id


def _wait_complete(store, timeout_s: float, poll_s: float = 2.0) -> None:
    """Wait until other processes (torchrun ranks) have finished every shard."""
    import logging
    import time

    deadline = time.monotonic() + timeout_s
    while not store.refresh().complete:
        if time.monotonic() > deadline:
            raise TimeoutError(f"embedding shards in {store.dir} still unfinished after {timeout_s:.0f} s")
        logging.getLogger(__name__).info("waiting for other ranks to finish their shards in %s", store.dir)
        time.sleep(poll_s)
