"""`Retriever`: the small Python API for RAG applications — build or open an index folder, search it,
keep it up to date. Dense (bi-encoder) or ColBERT, optionally fused with BM25 (`hybrid=True`).

    from mbert_retrieval import Retriever

    retriever = Retriever.build("my-index", "examples/data/corpus.jsonl")   # or a list of dicts / strings
    for r in retriever.search("how do plants make sugar?", k=3):
        print(r.id, round(r.score, 3), r.title)

    retriever = Retriever.open("my-index")            # reloads the model the index was built with
    retriever.add([{"id": "new", "text": "...", "metadata": {"topic": "science"}}])
    retriever.search("...", filter={"topic": "science"})

Next to the index files, `retriever.json` records where the model was loaded from (so an index built
with the offline fallback model reopens offline) and the index's default search mode: whether BM25 is kept
and fused in (hybrid). Only write commands change that default (`build(hybrid=True)`, `enable_hybrid()`,
`disable_hybrid()`); `open(hybrid=...)` and `search(hybrid=...)` choose for this session or call only.

BM25 of a hybrid index is an SQLite FTS5 table in the document store (`index.lexical`), kept in sync by
triggers: every write commits it with the documents, in O(new data). Indexes of older versions keep a bm25s
index in `bm25/`, rebuilt after each write, until their next write command (`enable_hybrid()`, `add`, ...)
moves them to FTS5 (one transaction) and removes `bm25/`; that path also stays where sqlite3 lacks FTS5.
Reads never write into the index folder: a hybrid search of an index without the FTS5 table (a dense-only
index searched with hybrid=True, or an old `bm25/` that is out of date) uses a bm25s index built in memory.
A folder whose manifest says it has a `retriever.json` (or that holds `bm25/` or the FTS5 table) refuses to
open when that file is missing or damaged, rather than silently searching in another mode.
`build_sharded` builds the same kind of index with the encoding split into shards (`mbret index --shards N`,
local / torchrun / Ray workers, see `distributed`): the result is an ordinary index folder. A folder of the
former sharded layout (`sharded.json`) is refused with the command that rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .doc_encoder import DocumentEncoder
from .documents import CorpusLike, iter_documents, normalize_documents
from .hybrid import BM25_DIRNAME, RRF_K, BM25Index
from .index.lexical import LexicalIndex
from .index.result import Result
from .distributed.build import resume_count as resume_count_of
from .distributed.legacy import check_not_legacy_sharded
from .retriever_hybrid import HybridMixin
from .retrieval_model import MODEL_DIRNAME, absolute_if_dir, load_retrieval_model, model_path, save_new_weights
from .sidecar import RETRIEVER_FILE, SIDECAR_PARAM, read_sidecar, sidecar_expected

logger = logging.getLogger(__name__)

__all__ = ["Retriever", "Result", "normalize_documents", "read_sidecar", "RETRIEVER_FILE", "MAX_CANDIDATES", "MODEL_DIRNAME",
           "load_retrieval_model"]

MAX_CANDIDATES = 100_000  # hybrid: deepest list fused per query (also capped at the number of documents)
ProgressFn = Callable[[int], None]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _add_reporting_committed(index: Any, docs: Iterable[Mapping[str, Any]], **write: Any) -> None:
    """`index.add(docs)` for a build. Bad input found part way (a corpus is read as it is encoded) raises the
    reader's DataError (file, line) saying that the documents committed before it stay: building again once
    the input is fixed resumes after them. `write`: `Index.add`'s keyword arguments."""
    from .data import DataError

    try:
        index.add(docs, **write)
    except DataError as err:
        kept = len(index)
        if not kept:
            raise
        raise DataError(f"{err.message} ({kept} documents committed before it are kept: fix the input and build "
                        "again to resume)", err.path, err.line, err.field) from None


# -------------------------------------------------------------------------------------------- retriever
class Retriever(HybridMixin):
    """An index folder plus the model that queries it (and, optionally, a BM25 index for hybrid search)."""

    def __init__(self, index: Any, model: Any, hybrid: bool = False, rrf_k: int = RRF_K,
                 sidecar: Mapping[str, Any] | None = None):
        self.index = index
        self.model = model
        self.hybrid = hybrid  # this session's default search mode (never written to the index)
        self.rrf_k = rrf_k
        self._sidecar = dict(sidecar) if sidecar is not None else read_sidecar(self.path)
        self._bm25: BM25Index | None = None
        self._bm25_seen: tuple[int, int] | None = None  # (data_version, count) when `_bm25` was last checked
        self.resumed_from = 0  # build(): documents already in the folder when the build started

    @property
    def hybrid_default(self) -> bool:
        """The index's stored default search mode (retriever.json), which only write commands change."""
        return bool(self._sidecar.get("hybrid", False))

    @property
    def path(self) -> Path:
        return Path(self.index.path)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, index_dir: str | os.PathLike, corpus: CorpusLike, model: Any = None, kind: str = "dense",
              index_type: str = "flat", *, hybrid: bool = False, corpus_format: str = "auto",
              chunk_size: int = 4096, model_options: Mapping[str, Any] | None = None,
              progress: ProgressFn | None = None, **params: Any) -> Retriever:
        """Encode `corpus` into a new index at `index_dir` and return a ready retriever.

        `model`: hub id, local path or loaded model (None: the default model for `kind`, which falls back
        to the packaged all-MiniLM-L6-v2 offline). `index_type`: flat | hnsw | ivfpq (dense), flat | plaid
        (colbert); `params`: index settings (e.g. `quantization="int8"`, `hnsw_m=32`, `nbits=4`).
        Resumable: building into a folder that holds an interrupted build of the same model continues it
        (documents already committed are not encoded again). `progress(n)` is called as documents are encoded."""
        from .index import Index

        docs = iter_documents(corpus, corpus_format)  # read as the index asks (flat memory); first document checked now
        if not isinstance(model, (str, type(None))):
            kind = getattr(model, "kind", kind)
        else:
            model = load_retrieval_model(model, kind, **dict(model_options or {}))
        path = Path(index_dir)
        check_not_legacy_sharded(path)
        model, saved_model = save_new_weights(model, path, model_options or {})
        if (path / "manifest.json").exists():
            index = Index.open(path, model)
            m = index.manifest
            if (m.kind, m.index_type) != (kind, index_type):
                index.close()
                from .index import IndexMismatchError

                raise IndexMismatchError(f"{path} holds a {m.kind}/{m.index_type} index, not {kind}/{index_type}")
        else:
            try:
                index = Index.create(path, kind, index_type, model, chunk_size=chunk_size, **params)
            except BaseException:
                if saved_model:
                    shutil.rmtree(path / MODEL_DIRNAME, ignore_errors=True)
                raise
        def fill() -> None:
            _add_reporting_committed(index, docs, progress=progress, encoder=DocumentEncoder(model))
            index.finalize(show_progress=progress is not None)

        return cls._run_build(index, model, hybrid, saved_model, len(index), fill)

    @classmethod
    def _run_build(cls, index: Any, model: Any, hybrid: bool, saved_model: bool, resumed_from: int,
                   fill: Callable[[], object]) -> Retriever:  # fmt: skip
        """The steps every build shares around `fill` (the documents into the index): retriever.json (read
        back when resuming, then written), BM25 set up before the documents arrive, the build's end."""
        from .index import IndexCorruptError

        path = index.path
        try:
            sidecar = read_sidecar(path)
        except IndexCorruptError as err:  # a build rewrites it from what it knows
            logger.warning("%s: writing a new one", err)
            sidecar = {}
        retriever = cls(index, model, hybrid=hybrid or bool(sidecar.get("hybrid", False)), sidecar=sidecar)
        retriever.resumed_from = resumed_from
        try:
            retriever._write_sidecar(hybrid=retriever.hybrid, **({"model_saved": True} if saved_model else {}))
            index.manifest.params[SIDECAR_PARAM] = True  # saved with the manifest by the next write below
            if retriever.hybrid_default:
                retriever._ensure_fts()  # before the documents: the triggers index them as they are committed
            fill()
            retriever._finish_build()
        except BaseException:
            index.close()
            raise
        return retriever

    @classmethod
    def build_sharded(cls, index_dir: str | os.PathLike, corpus: CorpusLike, model: Any = None, kind: str = "dense",
                      index_type: str = "flat", *, n_shards: int, backend: str = "local",
                      ray_address: str | None = None, num_workers: int | None = None, hybrid: bool = False,
                      corpus_format: str = "auto", chunk_size: int = 4096,
                      model_options: Mapping[str, Any] | None = None, show_progress: bool = False,
                      progress: ProgressFn | None = None, keep_embeddings: bool = False,
                      **params: Any) -> Retriever | None:
        """`build` with the encoding split into `n_shards` embedding shards written by parallel workers
        (`backend`: "local", "torchrun" or "ray", see `distributed.build_sharded`); the driver then builds the
        same ordinary index from them, searchable and writable like any other. Resumable like `build`;
        `window=WindowConfig(...)` splits long documents into windows in the workers. Under torchrun only
        rank 0 returns a retriever; the other ranks encode their shards and return None."""
        from .distributed import ShardedBuild

        docs = normalize_documents(corpus, corpus_format)
        if not isinstance(model, (str, type(None))):
            kind = getattr(model, "kind", kind)
        else:
            model = load_retrieval_model(model, kind, **dict(model_options or {}))
        path = Path(index_dir)
        job = ShardedBuild(docs, path, model, kind, n_shards, backend, ray_address, num_workers=num_workers,
                           show_progress=show_progress, window=params.pop("window", None),
                           model_kwargs={k: v for k, v in (model_options or {}).items() if k != "device"})
        job.check(index_type)
        resumed = resume_count_of(path)
        store = job.encode()
        if not job.is_driver:
            return None
        model, saved_model = save_new_weights(model, path, model_options or {})
        job.loaded = model
        index = job.open_index(index_type, chunk_size=chunk_size, **params)
        return cls._run_build(index, model, hybrid, saved_model, min(resumed, len(docs)),
                              lambda: job.fill(index, store, keep_embeddings=keep_embeddings, progress=progress))

    @classmethod
    def open(cls, index_dir: str | os.PathLike, model: Any = None, *, hybrid: bool | None = None,
             model_options: Mapping[str, Any] | None = None, verify: bool = False, load_model: bool = True,
             **overrides: Any) -> Retriever:
        """Open an index folder. Without `model`, the model recorded at build time is loaded (from the
        local folder it was loaded from, else by its id). A model that does not match the index (other
        model id, dim or kind) raises `IndexMismatchError`. `overrides`: index search settings
        (nprobe, ef_search, ndocs, ...). A folder of the former sharded layout raises `LegacyShardedError`.

        `hybrid`: this session's default search mode (None: the index's stored default; True: fuse BM25,
        built in memory when the index keeps none; False: dense / ColBERT only). Never written to the index.
        `load_model=False`: open without any model (for delete / info: searching and adding then raise).
        A missing or damaged retriever.json that the index was built with raises `IndexCorruptError`."""
        from .index import Index, IndexManifest, IndexMismatchError

        path = Path(index_dir)
        check_not_legacy_sharded(path)
        manifest = IndexManifest.load(path)
        sidecar = read_sidecar(path, required=sidecar_expected(path, manifest))
        options = dict(model_options or {})
        if not load_model:
            if model is not None:
                raise ValueError("give either model= or load_model=False, not both")
        elif model is None or (sidecar.get("model_saved") is True and isinstance(model, (str, os.PathLike))
                               and absolute_if_dir(str(model)) == manifest.model_id):
            model = cls._recorded_model(manifest, sidecar, options, path)  # the saved copy, when there is one
        elif isinstance(model, (str, os.PathLike)):
            model = load_retrieval_model(str(model), manifest.kind, **options)
        if model is not None and getattr(model, "kind", None) != manifest.kind:
            raise IndexMismatchError(f"index {path} holds {manifest.kind!r} vectors but the model is "
                                     f"{getattr(model, 'kind', None)!r}")
        index = Index.open(path, model, verify=verify, **overrides)
        if not sidecar and LexicalIndex(index.docstore).exists():
            index.close()
            read_sidecar(path, required=True)  # raises: only hybrid indexes keep the FTS5 table
        if hybrid is None:
            hybrid = bool(sidecar.get("hybrid", False))
        return cls(index, model, hybrid=bool(hybrid), rrf_k=int(sidecar.get("rrf_k", RRF_K)), sidecar=sidecar)

    @staticmethod
    def _recorded_model(manifest: Any, sidecar: Mapping[str, Any], options: dict[str, Any],
                        path: Path | None = None):
        from .hub import FALLBACK_MODEL_ID, fallback_model_path, load_model

        local = sidecar.get("model_path")
        if sidecar.get("model_id") not in (None, manifest.model_id):
            local = None  # the sidecar describes another build: trust the manifest
        saved = path / MODEL_DIRNAME if path is not None and sidecar.get("model_saved") is True else None
        if saved is not None:  # built with weights made at build time, saved with the index
            if not (saved / "modules.json").is_file():
                raise FileNotFoundError(f"{saved} is missing: it holds the model this index was built with "
                                        "(its ColBERT projection); restore it, or rebuild the index")
            model = load_model(str(saved), kind=manifest.kind, **options)
        elif local and os.path.isdir(local):
            model = load_model(local, kind=manifest.kind, **options)
        elif manifest.model_id == FALLBACK_MODEL_ID:
            model = load_model(fallback_model_path(), kind=manifest.kind, **options)
        elif local or os.path.isabs(manifest.model_id):
            missing = local or manifest.model_id
            if not os.path.isdir(manifest.model_id):
                raise FileNotFoundError(f"the model this index was built with ({manifest.model_id!r}, loaded from "
                                        f"{missing}) is not there any more: pass model= explicitly")
            model = load_model(manifest.model_id, kind=manifest.kind, **options)
        else:
            model = load_model(manifest.model_id, kind=manifest.kind, revision=manifest.model_revision, **options)
            if getattr(getattr(model, "resolved", None), "fallback", False):
                raise RuntimeError(f"the index was built with {manifest.model_id!r}, which cannot be loaded (hub "
                                   "unreachable and not cached); the offline fallback model would not match it")
        model.model_id = manifest.model_id  # same files, loaded from where they are now
        model.revision = manifest.model_revision
        return model

    def _write_sidecar(self, **changes: Any) -> None:
        """Write retriever.json (write commands only: builds, enable_hybrid, disable_hybrid). `changes`
        (e.g. `hybrid=False`) override what is recorded; without `hybrid`, the stored default becomes hybrid
        when it was or when this retriever is (a build with hybrid=True)."""
        from .index.storage import atomic_write_text

        changes.pop("bm25_stale", None)  # older versions' marker: BM25 files are now bound to the documents
        data = dict(self._sidecar)
        data.pop("bm25_stale", None)
        data["hybrid"] = bool(data.get("hybrid", False) or self.hybrid)
        data["rrf_k"] = self.rrf_k
        if self.model is not None:
            resolved = getattr(self.model, "resolved", None)
            data.update({
                "model_id": self.model.model_id,
                "model_path": model_path(self.model) or data.get("model_path"),
                "kind": self.model.kind,
            })
            if resolved is not None and getattr(resolved, "fallback", False):
                data["fallback"] = True
                data["fallback_message"] = resolved.message
        data.update(changes)
        data["hybrid"] = bool(data["hybrid"])
        atomic_write_text(self.path / RETRIEVER_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")
        self._sidecar = data

    @property
    def fallback_message(self) -> str | None:
        """The offline-fallback note when the model is the packaged MiniLM standing in for a default model."""
        resolved = getattr(self.model, "resolved", None)
        if resolved is not None and getattr(resolved, "fallback", False):
            return resolved.message
        return self._sidecar.get("fallback_message")

    # ------------------------------------------------------------------ search
    def search(self, query: str | Sequence[str], k: int = 10, filter: Mapping[str, Any] | None = None, *,
               hybrid: bool | None = None, candidates: int | None = None, **params: Any,
               ) -> list[Result] | list[list[Result]]:
        """Top-`k` results for one query (-> list[Result]) or a list of queries (-> list[list[Result]]).

        `filter`: metadata filter, e.g. `{"topic": "science"}`, `{"year": {"$gte": 2020}}`,
        `{"lang": ["en", "de"]}`, `{"$or": [...]}`. `hybrid`: fuse with BM25 by reciprocal rank fusion
        (None: this retriever's default, see `open`; True / False: for this call only, nothing is written);
        `candidates`: depth of each list before fusion (1..MAX_CANDIDATES, default max(k, 50)).
        `params`: per-call index settings (nprobe, ef_search, ndocs, ...). An empty query raises ValueError."""
        single = isinstance(query, str)
        queries: list[str] = [query] if isinstance(query, str) else list(query)
        if not _is_int(k) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not all(isinstance(q, str) for q in queries):
            raise ValueError("queries must be strings")
        if any(not q.strip() for q in queries):
            raise ValueError("empty query: give some text to search for")
        if candidates is not None and (not _is_int(candidates) or not 1 <= candidates <= MAX_CANDIDATES):
            raise ValueError(f"candidates must be an integer in 1..{MAX_CANDIDATES}, got {candidates!r}")
        if not queries:
            return []
        if self.model is None:
            raise RuntimeError("this retriever was opened without a model (load_model=False): searching needs one")
        k = min(int(k), max(len(self.index), 1))  # never more results than documents (and no huge allocations)
        use_hybrid = self.hybrid if hybrid is None else bool(hybrid)
        if not use_hybrid:
            hits = self.index.search(queries, k=k, filter=filter or None, encoder=self.encoder, **params)
            out = [[h for h in row] for row in hits]
        else:
            depth = max(1, min(int(candidates or max(k, 50)), len(self.index)))
            out = self._hybrid_search(queries, k, filter, depth, params)
        return out[0] if single else out

    # ------------------------------------------------------------------ updates
    def _write(self, fn: Callable[[], int]) -> int:
        """Run a document write. A hybrid index's FTS5 table follows the documents inside the same SQLite
        transaction (triggers); one without it (an older version's `bm25/`) gets it after the write, which
        moves it off bm25s; where FTS5 is not available, the bm25s index on disk is rebuilt (a crash in
        between leaves a BM25 file whose binding no longer matches: it is not used)."""
        from .index import IndexCorruptError, IndexStateError

        self._bm25, self._bm25_seen = None, None
        n = fn()
        try:  # another process may have changed the stored default meanwhile
            self._sidecar = read_sidecar(self.path) or self._sidecar
        except IndexCorruptError as err:
            logger.warning("%s (keeping the settings read at open)", err)
        if self.hybrid_default:
            try:
                if self._ensure_fts():
                    return n
            except IndexStateError as err:  # another writer: it moves the index to FTS5 (searches use bm25s)
                logger.warning("full-text BM25 index not created (%s)", err)
                return n
            self._save_bm25()
        return n

    @property
    def encoder(self) -> DocumentEncoder:
        """The model as the index uses it (documents and their windows, queries -> vectors): the retriever owns
        the model, the index only receives vectors."""
        if self.model is None:
            raise RuntimeError("this retriever was opened without a model (load_model=False): encoding needs one")
        return DocumentEncoder(self.model)

    def add(self, docs: CorpusLike, progress: ProgressFn | None = None) -> int:
        """Add documents (dicts, strings, `Document`s or a corpus path); ids already present are skipped.
        Returns the number added."""
        items = iter_documents(docs)  # read as they are encoded; bad input raises when reached

        def run() -> int:
            return self.index.add(items, encoder=self.encoder, progress=progress)  # one checkpoint for the whole call

        return self._write(run)

    def update(self, docs: CorpusLike, progress: ProgressFn | None = None) -> int:
        """Insert or replace documents by id (unchanged texts are not re-encoded). Returns the number encoded."""
        items = iter_documents(docs)

        def run() -> int:
            return self.index.update(items, encoder=self.encoder, progress=progress)

        return self._write(run)

    def delete(self, ids: str | Iterable[str]) -> int:
        """Delete documents by id (unknown ids are ignored). Returns the number deleted."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        return self._write(lambda: self.index.delete(ids))

    # ------------------------------------------------------------------ reading
    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.index.get(list(ids))

    def info(self) -> dict[str, Any]:
        """Index description (manifest, counts, disk usage) plus model and hybrid settings."""
        info = self.index.info()
        info["model_path"] = self._sidecar.get("model_path")
        info["hybrid"] = self.hybrid  # this session's default
        info["hybrid_default"] = self.hybrid_default  # the index's stored default
        lexical = self.lexical_index()
        if lexical is not None:
            info["bm25_backend"] = "fts5"
            info["bm25_documents"] = lexical.count()
        elif BM25Index.exists(self.path / BM25_DIRNAME):
            info["bm25_backend"] = "bm25s"
            try:
                info["bm25_documents"] = BM25Index.read_config(self.path / BM25_DIRNAME).get("n_docs")
            except (ValueError, OSError):
                info["bm25_documents"] = None
        if self._sidecar.get("fallback"):
            info["fallback_model"] = True
        return info

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        model_id = getattr(self.model, "model_id", None)
        return f"Retriever({str(self.path)!r}, model={model_id!r}, docs={len(self)}, hybrid={self.hybrid})"
