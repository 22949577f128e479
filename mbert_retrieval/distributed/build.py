"""`build_sharded`: corpus -> embedding shards (local / torchrun / Ray) -> one index per shard. The entry
point for `mbret index --shards N [--ray ADDRESS]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .encode import EncodeConfig, _model_id, corpus_ids_texts, encode_corpus
from .sharded_index import EMBEDDINGS_DIR, ShardedIndex, ShardedManifest, is_sharded, remove_embeddings
from .shards import ids_fingerprint

__all__ = ["build_sharded"]


def build_sharded(corpus_path_or_docs: Any, index_dir: str | os.PathLike, model: Any = None, kind: str | None = None,
                  index_type: str = "flat", n_shards: int = 2, backend: str = "local",
                  ray_address: str | None = None, show_progress: bool = False, *, num_workers: int | None = None,
                  keep_embeddings: bool = False, model_kwargs: dict | None = None,
                  wait_timeout_s: float = 86400.0, **index_params: Any) -> ShardedIndex:
    """Build (or resume building) a sharded index in `index_dir`.

    corpus_path_or_docs: a corpus path (anything `data.load_corpus` reads), `load_corpus`'s dict, or a list of
        `Document`s / dicts with id, text[, title, metadata].
    model: a loaded BiEncoder/ColBERT, a path or hub id, or None for the default model of `kind`.
    kind: "dense" | "colbert" | None (from the model). index_type: as `Index.create` ("flat", "hnsw",
        "ivfpq" for dense; "flat", "plaid" for colbert); `index_params` go to every shard's `Index.create`.
    backend: "local" | "torchrun" | "ray" (`ray_address`: "auto", "ray://host:10001", "local" for a new local
        Ray, or None: `ray.init`'s default, i.e. RAY_ADDRESS or a cluster started on this machine, else a new one).
    Embedding shards are written to `index_dir/_embeddings` (resumable) and removed once every shard index
    is built, unless `keep_embeddings`. Re-running a finished build of the same corpus, model, index type and
    shard count opens it without encoding anything; a finished folder of anything else raises
    `IndexMismatchError` (sharded indexes are read-only: build into a new folder). `model_kwargs` go to
    `load_model` wherever the model is loaded from a path or id (Ray workers, a model given by name).
    Under torchrun every rank encodes its shards and only rank 0 builds the shard indexes once every shard
    is encoded (it waits up to `wait_timeout_s`); the other ranks return None.
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
            else load_model(None if model is None else str(model), kind=kind, **(model_kwargs or {}))
        encoder_ref = loaded
    kind = kind or getattr(loaded, "kind", None)
    cfg = EncodeConfig(n_shards=n_shards, backend=backend, ray_address=ray_address, num_workers=num_workers,
                       show_progress=show_progress, model_kwargs=dict(model_kwargs or {}))
    finished = _finished(Path(index_dir), list(by_id), _model_id(encoder_ref, kind), kind, index_type, n_shards,
                         loaded)
    if finished is not None:
        return finished
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


def _finished(path: Path, ids: list[str], model_id: str, kind: str | None, index_type: str, n_shards: int,
              model: Any) -> ShardedIndex | None:
    """The finished sharded index in `path` when it was built from these ids with these settings (None when
    `path` holds no finished sharded index); a finished index of anything else raises IndexMismatchError."""
    if not is_sharded(path):
        return None
    m = ShardedManifest.load(path)
    if m.state != "ready":
        return None  # interrupted: resume
    wanted = {"kind": kind or m.kind, "index_type": index_type, "model_id": model_id, "n_shards": n_shards,
              "corpus": ids_fingerprint(ids) if m.corpus_sha256 else m.corpus_sha256}
    have = {"kind": m.kind, "index_type": m.index_type, "model_id": m.model_id, "n_shards": len(m.shards),
            "corpus": m.corpus_sha256}
    if not m.corpus_sha256 and m.n_documents != len(ids):  # built before corpus_sha256 was recorded
        have["corpus"], wanted["corpus"] = f"{m.n_documents} documents", f"{len(ids)} documents"
    if diff := [k for k in wanted if wanted[k] != have[k]]:
        from ..index import IndexMismatchError

        details = ", ".join(f"{k}={have[k]!r}" for k in diff if k != "corpus")
        raise IndexMismatchError(
            f"{path} holds a finished sharded index built with another {' / '.join(diff)}"
            f"{f' ({details})' if details else ''}: sharded indexes are read-only, build into a new folder "
            "(or delete this one)")
    return ShardedIndex.open(path, model)


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
