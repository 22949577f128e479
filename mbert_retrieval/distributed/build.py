"""`build_sharded`: corpus -> embedding shards written by parallel workers (local / torchrun / Ray) -> ONE
ordinary index, built by the driver with the public `Index` API. The entry point of
`mbret index CORPUS OUT --shards N [--ray ADDRESS | under torchrun]`.

The shards only split the encoding work. Once every embedding shard is written (`OUT/_embeddings`,
resumable: finished shards are never encoded again), the driver feeds them, shard after shard and
memory-mapped, into `Index.add(docs, vectors=...)` of the index in `OUT` (each shard's documents are
their own commit(s); ids already in the index are skipped, so an interrupted build resumes), then
`Index.finalize`. What comes out is the index one process would build from the same vectors in the same
order: searchable and writable (add / update / delete / compact) like any other.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from .encode import EncodeConfig, _model_id, corpus_ids_texts, encode_corpus
from .legacy import check_not_legacy_sharded
from .shards import SHARDS_MANIFEST, ShardStore

logger = logging.getLogger(__name__)

__all__ = ["build_sharded", "ShardedBuild", "EMBEDDINGS_DIR", "fill_from_shards", "resume_count"]

EMBEDDINGS_DIR = "_embeddings"  # the embedding shards, inside the index folder until the build is finished
_GET_BATCH = 1000  # ids per `Index.get` call when a re-run checks that a finished index holds the corpus
ProgressFn = Callable[[int], None]


def _as_dict(doc: Any) -> dict[str, Any]:
    """An index document `{"id", "text", "title", "metadata"}` from a dict or a `Document`."""
    if isinstance(doc, Mapping):
        return {"id": str(doc.get("id", doc.get("_id"))), "text": doc.get("text", ""),
                "title": doc.get("title") or None, "metadata": doc.get("metadata") or None}
    return {"id": doc.id, "text": doc.text, "title": doc.title or None, "metadata": doc.metadata or None}


def _by_id(docs: Any) -> dict[str, Any]:
    """id -> document, in corpus order (duplicate ids raise ValueError)."""
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


def fill_from_shards(index: Any, store: ShardStore, docs: Mapping[str, Any], *, show_progress: bool = False,
                     progress: ProgressFn | None = None, workers: int = 1, backend: str = "local") -> int:
    """Add the documents of every embedding shard of `store` to `index` with their precomputed vectors, shard
    after shard (each shard memory-mapped, one `Index.add` call per shard: its own commit(s)), then finalize
    the index. `docs`: id -> document (dict or `Document`: text, title, metadata are stored). Ids already in
    the index are skipped (resume). `workers` > 1: the search structure is left to `finalize`, which builds
    it as that many segments in parallel (worker processes, or Ray tasks with `backend="ray"`) and commits
    them into the one manifest. Returns the number of documents added."""
    from tqdm.auto import tqdm

    store.refresh()
    if not store.complete:
        raise RuntimeError(f"embedding shards in {store.dir} are not all encoded: {store.pending()}")
    added = 0
    with tqdm(total=store.manifest.n_docs, desc="indexing shards", unit="doc", disable=not show_progress) as bar:
        def advance(n: int) -> None:
            bar.update(n)
            if progress is not None:
                progress(n)

        for i in range(store.n_shards):
            data = store.read_shard(i, mmap=True)
            batch, vectors = [], []
            for doc_id, (vecs, windows) in zip(data.ids, data.iter_documents()):  # views of the mapped file
                doc = _as_dict(docs[doc_id])
                if windows is not None:  # a long document: one row per window, with its span
                    doc["windows"] = windows
                batch.append(doc)
                vectors.append(vecs)
            added += index.add(batch, vectors=vectors, progress=advance, defer_structure=workers > 1)
    index.finalize(show_progress=show_progress, workers=workers, backend=backend)
    return added


class ShardedBuild:
    """One sharded build of `docs` into `index_dir`: `check` the folder, `encode` the shards (every worker),
    then, on the driver, `open_index` and `fill` it. `build_sharded` runs these steps; `Retriever` runs them
    with its own steps (retriever.json, BM25) in between."""

    def __init__(self, docs: Any, index_dir: str | os.PathLike, model: Any, kind: str | None = None,
                 n_shards: int = 2, backend: str = "local", ray_address: str | None = None, *,
                 num_workers: int | None = None, show_progress: bool = False, model_kwargs: dict | None = None,
                 wait_timeout_s: float = 86400.0, window: Any = None) -> None:
        from ..data import load_corpus
        from ..windows import WindowConfig

        self.window = WindowConfig.from_value(window)

        self.path = Path(index_dir)
        check_not_legacy_sharded(self.path)
        self.docs = _by_id(load_corpus(docs) if isinstance(docs, (str, os.PathLike)) else docs)
        self.config = EncodeConfig(n_shards=n_shards, backend=backend, ray_address=ray_address,
                                   num_workers=num_workers, show_progress=show_progress,
                                   model_kwargs=dict(model_kwargs or {}),
                                   window=None if self.window is None else self.window.to_dict())
        self.wait_timeout_s = wait_timeout_s
        kind = kind or getattr(model, "kind", None)
        self.loaded: Any = None if isinstance(model, (str, os.PathLike)) else model
        if model is None or isinstance(model, (str, os.PathLike)):
            if backend != "ray":  # Ray workers load the model themselves
                from ..hub import load_model

                self.loaded = load_model(None if model is None else str(model), kind=kind, **self.config.model_kwargs)
                kind = kind or self.loaded.kind
            self.encoder_ref: Any = self.loaded if self.loaded is not None else model
        else:
            self.encoder_ref = _model_ref(model) if backend == "ray" else model
        if self.encoder_ref is None:  # Ray, no model given: the default model of the kind, loaded by each worker
            from ..hub import DEFAULT_MODELS

            self.encoder_ref = DEFAULT_MODELS[kind or "dense"]
        if kind is None and isinstance(self.encoder_ref, (str, os.PathLike)):
            from .encode import _detect_kind

            kind = _detect_kind(self.encoder_ref, None)
        if kind not in ("dense", "colbert"):
            raise ValueError(f"kind must be 'dense' or 'colbert', got {kind!r}")
        self.kind: str = kind
        self.model_id = self.loaded.model_id if self.loaded is not None else _model_id(self.encoder_ref, self.kind)

    # ------------------------------------------------------------------ state of the folder
    @property
    def is_driver(self) -> bool:
        """Whether this process builds the index (under torchrun: rank 0; every other backend: yes)."""
        return self.config.backend != "torchrun" or int(os.environ.get("RANK", "0")) == 0

    @property
    def embeddings_dir(self) -> Path:
        return self.path / EMBEDDINGS_DIR

    def _manifest(self) -> Any:
        from ..index import IndexManifest

        return IndexManifest.load(self.path) if (self.path / "manifest.json").is_file() else None

    def check(self, index_type: str) -> None:
        """Before anything is encoded: an index already in the folder must be of this kind, index type and
        model (it is then resumed, or, when finished, checked to hold the corpus)."""
        from ..index import IndexMismatchError

        m = self._manifest()
        if m is None:
            return
        if (m.kind, m.index_type) != (self.kind, index_type):
            raise IndexMismatchError(f"{self.path} holds a {m.kind}/{m.index_type} index, not {self.kind}/{index_type}: "
                                     "build into another folder")
        if m.model_id != self.model_id:
            raise IndexMismatchError(f"{self.path} holds an index built with model {m.model_id!r}, not "
                                     f"{self.model_id!r}: build into another folder")
        wanted = None if self.window is None else self.window.to_dict()
        if m.state != "ready" and m.params.get("window") != wanted:
            raise IndexMismatchError(f"the build in {self.path} was started with window={m.params.get('window')!r}, "
                                     f"not {wanted!r}: resume it with the same window settings")

    def finished(self) -> bool:
        """The folder holds a finished index (a re-run encodes nothing)."""
        m = self._manifest()
        return m is not None and m.state == "ready"

    # ------------------------------------------------------------------ steps
    def encode(self) -> ShardStore | None:
        """Encode the pending embedding shards (this worker's share of them under torchrun). On the driver,
        returns the complete store once every shard is written (None when the index is already finished:
        it must then hold every document of the corpus, other documents are for `add`); elsewhere None."""
        if self.finished():
            from ..index import Index

            with Index.open(self.path, verify=False) as index:
                self._check_holds_corpus(index)
            return None
        store = encode_corpus(list(self.docs.values()), self.encoder_ref, self.kind, self.embeddings_dir,
                              config=self.config)
        if not self.is_driver:
            return None
        if self.config.backend == "torchrun":
            _wait_complete(store, self.wait_timeout_s)
        return store

    def open_index(self, index_type: str, **params: Any) -> Any:
        """The index in the folder: a new one (`Index.create` with `params`), or the one being built (resume)."""
        from ..index import Index

        if self._manifest() is not None:
            return Index.open(self.path, self.loaded)
        if self.loaded is not None:
            return Index.create(self.path, self.kind, index_type, self.loaded, window=self.window, **params)
        dim = ShardStore.open(self.embeddings_dir).dim if (self.embeddings_dir / SHARDS_MANIFEST).is_file() else None
        return Index.create(self.path, self.kind, index_type, model_id=self.model_id, dim=dim, window=self.window,
                            **params)

    def fill(self, index: Any, store: ShardStore | None, *, keep_embeddings: bool = False,
             progress: ProgressFn | None = None) -> int:
        """Feed the embedding shards into `index` and finalize it, then remove them (unless `keep_embeddings`).
        `store` None: the index was already finished (`encode` checked it). Returns the documents added."""
        added = 0
        if store is not None:
            ray = self.config.backend == "ray"
            workers = store.n_shards  # one segment per shard (processes run at most one per CPU at a time)
            added = fill_from_shards(index, store, self.docs, show_progress=self.config.show_progress, progress=progress,
                                     workers=workers, backend="ray" if ray else "local")
        if not keep_embeddings:
            shutil.rmtree(self.embeddings_dir, ignore_errors=True)
        return added

    def _check_holds_corpus(self, index: Any) -> None:
        from ..index import IndexMismatchError

        ids = list(self.docs)
        missing = 0
        for start in range(0, len(ids), _GET_BATCH):
            missing += sum(doc is None for doc in index.get(ids[start: start + _GET_BATCH]))
        if missing:
            raise IndexMismatchError(
                f"{self.path} is a finished index and {missing} document(s) of this corpus are not in it: use "
                f"`mbret add {self.path} CORPUS` (or `Index.add`) to add documents to an index")


def build_sharded(corpus_path_or_docs: Any, index_dir: str | os.PathLike, model: Any = None, kind: str | None = None,
                  index_type: str = "flat", n_shards: int = 2, backend: str = "local",
                  ray_address: str | None = None, show_progress: bool = False, *, num_workers: int | None = None,
                  keep_embeddings: bool = False, model_kwargs: dict | None = None,
                  wait_timeout_s: float = 86400.0, progress: ProgressFn | None = None, **index_params: Any) -> Any:
    """Build (or resume building) one index in `index_dir`, with the encoding split into `n_shards` embedding
    shards written by parallel workers. Returns the open `Index` (None on torchrun ranks other than 0).

    corpus_path_or_docs: a corpus path (anything `data.load_corpus` reads), `load_corpus`'s dict, or a list of
        `Document`s / dicts with id, text[, title, metadata].
    model: a loaded BiEncoder/ColBERT, a path or hub id, or None for the default model of `kind`.
    kind: "dense" | "colbert" | None (from the model). index_type and `index_params`: as `Index.create`;
        `window=WindowConfig(...)` (or True) splits long documents into windows, in the workers.
    backend: "local" | "torchrun" | "ray" (`ray_address`: "auto", "ray://host:10001", "local" for a new local
        Ray, or None: `ray.init`'s default). Under torchrun every rank encodes its shards and rank 0 builds
        the index once every shard is encoded (it waits up to `wait_timeout_s`); the other ranks return None.
    Embedding shards are written to `index_dir/_embeddings` (resumable) and removed once the index is
    finished, unless `keep_embeddings`. Re-running a finished build of the same corpus encodes nothing; a
    folder holding another kind, index type or model raises `IndexMismatchError`, and so does a folder of
    the former sharded layout (`sharded.json`, `LegacyShardedError`).
    """
    build = ShardedBuild(corpus_path_or_docs, index_dir, model, kind, n_shards, backend, ray_address,
                         num_workers=num_workers, show_progress=show_progress, model_kwargs=model_kwargs,
                         wait_timeout_s=wait_timeout_s, window=index_params.pop("window", None))
    build.check(index_type)
    store = build.encode()
    if not build.is_driver:
        return None
    index = build.open_index(index_type, **index_params)
    try:
        build.fill(index, store, keep_embeddings=keep_embeddings, progress=progress)
    except BaseException:
        index.close()
        raise
    return index


def resume_count(index_dir: str | os.PathLike) -> int:
    """Documents an interrupted sharded build in `index_dir` has already done (encoded, or committed to the
    index); 0 for none."""
    path = Path(index_dir)
    done = 0
    if (path / EMBEDDINGS_DIR / SHARDS_MANIFEST).is_file():
        store = ShardStore.open(path / EMBEDDINGS_DIR)
        done = sum(r.stop - r.start for r in store.refresh().shards if r.done)
    if (path / "manifest.json").is_file():
        from ..index import IndexManifest

        done = max(done, int(IndexManifest.load(path).n_documents))
    return done


def _model_ref(model: Any) -> str:
    """What Ray workers load for an already loaded model: the name it was loaded by (so that workers resolve
    it the same way, including the offline fallback, and the model_id matches), else its model_id."""
    resolved = getattr(model, "resolved", None)
    return getattr(resolved, "requested", None) or model.model_id


def _wait_complete(store: ShardStore, timeout_s: float, poll_s: float = 2.0) -> None:
    """Wait until other processes (torchrun ranks) have finished every shard."""
    deadline = time.monotonic() + timeout_s
    while not store.refresh().complete:
        if time.monotonic() > deadline:
            raise TimeoutError(f"embedding shards in {store.dir} still unfinished after {timeout_s:.0f} s")
        logger.info("waiting for other ranks to finish their shards in %s", store.dir)
        time.sleep(poll_s)
