"""`Index`: the facade over one index folder (manifest + document store + vector chunks + structure).

Folder layout::

    manifest.json                 kind, model, dim, params, the live segments, sha256 of every structure file
    docs.sqlite                   documents, internal ids, deleted flags (the tombstones), chunk registry, BM25
    chunks/NNNNNNNN.safetensors   float32 vectors, one file per committed chunk of documents
    seg.NNNNNN.dense.faiss        one immutable segment: the FAISS index of its rows (HNSW, IVF-PQ, int8)
    seg.NNNNNN.plaid.safetensors  one immutable segment: compressed tokens + inverted lists of its documents
    codec.GGGGGG.*                what segments share, trained once: IVF-PQ quantizer, PLAID codec

Write protocol (crash-safe, resumable): documents are encoded chunk by chunk; each chunk file is written
atomically, *then* its documents are committed in SQLite in one transaction (the commit point of the
documents). The search structure is made of segments (`segments.SegmentSet`): a checkpoint writes the new
rows as one new segment file (and the merges the policy asks for), then atomically replaces the manifest
that lists the live segments (the commit point of the structure); no existing file is rewritten, so an add
costs O(rows added). On open the segments are reconciled with SQLite by internal id (rows missing from
every segment are re-added from chunk files, deleted ones dropped), so a crash anywhere loses nothing and
duplicates nothing. Flat dense indexes (floats, binary codes) and exact ColBERT keep no structure file:
they are rebuilt from the chunk files on open.
Documents are committed every `chunk_size` documents or `commit_seconds` of encoding, whichever comes first;
an update's metadata-only changes are committed in the same transaction as the next chunk (old-or-new).
Readers (open, catching up) load a consistent snapshot (`sync.py`) under a read lease and never take the
writer lock; writers delete no file while a reader is loading (`storage.read_lease`).

Long documents (`window=WindowConfig(...)`, off by default): a document longer than a window is encoded as
several windows, each one row of the structure under its own internal id (the `windows` table of the
document store maps it to the document and its character span); search max-pools the rows per document and
returns each document once, with the span of its best window (`Hit.window`, `Hit.passage`). The structures
only ever see row ids and vectors, so every index kind works unchanged. A document that fits the model keeps
one row under its own id, as in indexes built before windows existed.

Binding: the manifest's `index_id` is recorded in docs.sqlite (with the checkpoint generation, written just
before each manifest) and in every chunk file; every open checks both, so a file of another index or an
older copy is refused, never served. Folders of format 1 (no index id) open as they are and are bound by
their next write.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..doc_encoder import DocumentEncoder
from ..windows import WindowConfig
from .docstore import DocStore
from .errors import FilterFieldError, IndexCorruptError, IndexMismatchError, IndexStateError
from .result import Hit, Result
from .segments import SegmentSet
from .manifest import FORMAT_VERSION, INDEX_TYPES, MANIFEST_NAME, IndexManifest, new_index_id
from .ingest import COMMIT_SECONDS, IngestMixin, ProgressFn
from .structures import make_config, query_vectors
from .storage import TMP_PREFIX, readers_active, remove_quietly, writer_lock
from .sync import BUILD_PARAMS as _BUILD_PARAMS
from .sync import DOCSTORE_NAME, INDEX_PARAMS as _INDEX_PARAMS, load_snapshot, reconcile
from .vectors import VectorStore, take_docs
from .windows_search import WindowMap, search_documents

logger = logging.getLogger(__name__)

__all__ = ["Index", "Hit", "Result"]

_STRUCTURE_FILE = re.compile(r"^(dense|plaid|exact|seg|codec)\.\d{6}\.")


class Index(IngestMixin):
    """A dense or ColBERT index on disk. Build with `create` + `add` + `finalize` (or `build`), load with `open`."""

    def __init__(self, path: Path, manifest: IndexManifest, docstore: DocStore, store: VectorStore, structure: Any,
                 overrides: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.path, self.manifest, self.docstore, self.store, self.structure = path, manifest, docstore, store, structure
        self._overrides = dict(overrides or {})  # this session's search settings (kept across `_sync`)
        self._data_version = docstore.data_version()
        self._windows = WindowMap(docstore)  # structure row -> document

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(cls, path: str | Path, kind: str, index_type: str, model: Any = None, *, quantization: str | None = None,
               model_id: str | None = None, dim: int | None = None, chunk_size: int = 4096, autosave: bool = True,
               commit_seconds: float = COMMIT_SECONDS, window: WindowConfig | Mapping[str, Any] | bool | None = None,
               **params: Any) -> Index:  # fmt: skip
        """New empty index in `path` (state "building"). `model` (a model or its `DocumentEncoder`) says whose
        vectors the index will hold: its kind, id, dimension, revision and weights fingerprint are recorded,
        the model itself is not kept (or pass model_id and dim). Documents are committed (the unit of resumability) every `chunk_size` documents or `commit_seconds`
        of encoding, whichever comes first. `window`: split documents longer than the model reads into
        windows, one index row each (`WindowConfig()`, recommended: windows of the model's full length; None,
        the default: one row per document, cut at the model's length)."""
        window_config = WindowConfig.from_value(window)
        if window_config is not None and model is not None:
            DocumentEncoder(model).window_limit()  # the model must say how long a window may be: checked before anything is written
        path = Path(path)
        if kind not in INDEX_TYPES or index_type not in INDEX_TYPES[kind]:
            raise ValueError(f"unknown kind/index_type {kind!r}/{index_type!r}; valid: {INDEX_TYPES}")
        if (path / MANIFEST_NAME).exists():
            raise FileExistsError(f"{path} already holds an index: use Index.open (or Index.build to resume)")
        if model is not None:
            if getattr(model, "kind", kind) != kind:
                raise IndexMismatchError(f"a {kind!r} index needs a {kind!r} model, got {model.kind!r}")
            model_id, dim = model.model_id, int(model.dim)
        if not model_id or not dim:
            raise ValueError("Index.create needs a model (or model_id and dim)")
        if isinstance(commit_seconds, bool) or not isinstance(commit_seconds, (int, float)) or not commit_seconds > 0:
            raise ValueError(f"commit_seconds must be a positive number, got {commit_seconds!r}")
        fingerprint, index_id = getattr(model, "fingerprint", None), new_index_id()
        config = make_config(kind, index_type, quantization, params)
        stored = {k: v for k, v in (vars(config) if config is not None else {}).items() if k not in ("index_type", "quantization")}
        manifest = IndexManifest(
            kind=kind, index_type=index_type, model_id=model_id, dim=dim, quantization=quantization,
            model_revision=getattr(model, "revision", None), model_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            index_id=index_id, params={"chunk_size": int(chunk_size), "autosave": bool(autosave), "commit_seconds": commit_seconds, **stored},
        )  # fmt: skip
        if window_config is not None:
            manifest.params["window"] = window_config.to_dict()
        path.mkdir(parents=True, exist_ok=True)
        docstore = DocStore(path / DOCSTORE_NAME)  # before the manifest: a folder with a manifest can always be opened
        try:
            docstore.bind(index_id, manifest.generation)
        finally:
            docstore.close()
        manifest.save(path)
        return cls._assemble(path, verify=False, keep={k: manifest.params[k] for k in _BUILD_PARAMS})

    @classmethod
    def open(cls, path: str | Path, model: Any = None, *, verify: bool = True, **overrides: Any) -> Index:
        """Open an index: validates the manifest, checks that `model` (if given: a model or its `DocumentEncoder`,
        not kept) made its vectors, file sizes and (with `verify`) sha256 checksums. `overrides` change
        search/runtime settings (e.g. nprobe, backend) for this session."""
        path = Path(path)
        build = {k: overrides.pop(k) for k in _BUILD_PARAMS if k in overrides}
        manifest = IndexManifest.load(path)
        if model is not None:
            manifest.check_compatible(model)
        if unknown := set(overrides) - (set(manifest.params) - {"state", *_INDEX_PARAMS}):
            raise TypeError(f"unknown index settings {sorted(unknown)}")
        return cls._assemble(path, verify=verify, overrides=overrides, keep=build)

    @classmethod
    def build(cls, path: str | Path, docs: Iterable[Mapping[str, Any]], kind: str, index_type: str, model: Any = None, *,
              vectors: Iterable[Any] | None = None, encoder: Any = None, show_progress: bool = False, **params: Any) -> Index:  # fmt: skip
        """Create (or resume an interrupted build of) an index, add `docs` (with their `vectors`, or encoded
        by `encoder`, a `DocumentEncoder`) and finalize it. `model`: as `create` (its identity only)."""
        path = Path(path)
        if (path / MANIFEST_NAME).exists():
            index = cls.open(path, model)
            if (index.manifest.kind, index.manifest.index_type) != (kind, index_type):
                raise IndexMismatchError(f"{path} holds a {index.manifest.kind}/{index.manifest.index_type} index, not {kind}/{index_type}")
            logger.info("resuming the build of %s (%d documents already committed)", path, len(index))
        else:
            index = cls.create(path, kind, index_type, model, **params)
        index.add(docs, vectors=vectors, encoder=encoder, show_progress=show_progress)
        index.finalize(show_progress=show_progress)
        return index

    @classmethod
    def _assemble(cls, path: Path, verify: bool, overrides: Mapping[str, Any] | None = None,
                  keep: Mapping[str, Any] | None = None) -> Index:  # fmt: skip
        """Load a consistent snapshot of the folder (`sync.load_snapshot`: never takes the writer lock)."""
        if not (path / DOCSTORE_NAME).is_file():
            raise IndexCorruptError(f"index file {DOCSTORE_NAME!r} is missing from {path}")
        docstore = DocStore(path / DOCSTORE_NAME)
        try:
            if verify:
                docstore.quick_check()
                docstore.verify_rows()
                _verify_lexical(docstore)
            snap = load_snapshot(path, docstore, keep or {}, overrides, verify)
            index = cls(path, snap.manifest, docstore, snap.store, snap.structure, overrides)
            index._data_version = snap.data_version
        except BaseException:
            docstore.close()
            raise
        return index

    def _sync(self, locked: bool) -> None:
        """Catch up with what another process wrote since this one loaded the index (`mbret add` beside a
        running `mbret serve`, two writers one after the other): SQLite's data_version tells that another
        connection committed; then a fresh snapshot is loaded and swapped in. Never takes the writer lock, so
        a reader never makes a write fail; a reader (`locked` False) that cannot load one keeps serving the
        state it has and tries again on a later call."""
        version = self.docstore.data_version()
        if version == self._data_version:
            return
        keep = {k: v for k, v in self.manifest.params.items() if k in _BUILD_PARAMS}
        try:
            snap = load_snapshot(self.path, self.docstore, keep, self._overrides, verify=False, previous=self.structure)
        except (IndexCorruptError, OSError) as exc:
            if locked:
                raise
            logger.warning("%s changed, but its new state could not be loaded yet (%s): serving the previous one", self.path, exc)
            return
        self.manifest, self.store, self.structure = snap.manifest, snap.store, snap.structure
        self._windows.mark_stale()
        self._data_version = snap.data_version
        logger.info("%s was changed by another process: reloaded (%d documents)", self.path, len(self))

    # ----------------------------------------------------------------- internal helpers
    @property
    def chunk_size(self) -> int:
        """Documents per encoded chunk file (the unit of resumability)."""
        return int(self.manifest.params.get("chunk_size", 4096))

    _chunk_size = chunk_size  # used by the retriever / distributed layers

    def _reconcile(self) -> None:
        """Make the in-memory structure hold exactly the live documents of the document store."""
        reconcile(self.docstore, self.store, self.structure)

    def _cleanup(self) -> None:
        """Remove leftovers of interrupted writes and files no longer used (writer only: temp files; unregistered
        chunks and old generations, unless a reader is loading a snapshot that may still need them: then later)."""
        keep_unused = readers_active(self.path)
        registered = {c.name for c in self.docstore.chunks()}
        for f in self.store.dir.iterdir():
            if f.name.startswith(TMP_PREFIX) or (not keep_unused and f.suffix == ".safetensors" and f.name not in registered):
                remove_quietly(f)
        for f in self.path.iterdir():
            if f.name.startswith(TMP_PREFIX) or (not keep_unused and _STRUCTURE_FILE.match(f.name) and f.name not in self.manifest.files):
                remove_quietly(f)

    def _after_write(self) -> None:
        if self.manifest.state == "ready" and self.manifest.params.get("autosave", True):
            self._save()
        else:
            self._update_counts()
            self.manifest.save(self.path)

    def _update_counts(self) -> None:
        self.manifest.n_documents = self.docstore.count()
        self.manifest.n_vectors = int(sum(c.n_vectors for c in self.docstore.chunks(include_dropped=True)))

    # ----------------------------------------------------------------- public write API
    def add(self, docs: Iterable[Mapping[str, Any]], *, vectors: Iterable[Any] | None = None, encoder: Any = None,
            show_progress: bool = False, progress: ProgressFn | None = None, defer_structure: bool = False) -> int:  # fmt: skip
        """Add documents (`{"id", "text", "title"?, "metadata"?}`) with their `vectors`, or encoded by `encoder`
        (a `DocumentEncoder`: only the documents not yet indexed are encoded); ids already in the index are
        skipped, so re-running an interrupted `add` resumes it. Returns the number of documents added.
        `progress(n)` is called as documents are encoded (every few hundred) or skipped. `defer_structure`
        (a build only): commit documents and vectors, and leave the search structure to `finalize` (which
        can build it in parallel)."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._bind()
            self._cleanup()
            self._defer_structure = defer_structure and self.manifest.state != "ready"
            try:
                n = self._ingest(docs, vectors, self._encoder(vectors, encoder), replace=False, show_progress=show_progress, progress=progress)
            finally:
                self._defer_structure = False
            self._after_write()
        return n

    def update(self, docs: Iterable[Mapping[str, Any]], *, vectors: Iterable[Any] | None = None, encoder: Any = None,
               show_progress: bool = False, progress: ProgressFn | None = None) -> int:  # fmt: skip
        """Insert or replace documents by id (unchanged text/title are not re-encoded). Returns the number encoded."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._bind()
            self._cleanup()
            n = self._ingest(docs, vectors, self._encoder(vectors, encoder), replace=True, show_progress=show_progress, progress=progress)
            self._after_write()
        return n

    def _encoder(self, vectors: Any, encoder: Any) -> Any:
        """The `DocumentEncoder` of a write, checked against the manifest (None when vectors are given)."""
        if vectors is not None:
            return None
        if encoder is None:
            raise IndexStateError("documents need their vectors: pass vectors=..., or encoder=DocumentEncoder(model) "
                                  "(the index holds no model; the Retriever encodes)")  # fmt: skip
        encoder = DocumentEncoder(encoder)
        self.manifest.check_compatible(encoder)
        return encoder

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (unknown ids are ignored). Returns the number deleted."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._bind()
            iids = self.docstore.delete([str(i) for i in ids])
            self.structure.remove(self.docstore.row_ids(iids))
            self._after_write()
        return len(iids)

    def finalize(self, show_progress: bool = False, workers: int = 1, backend: str = "local") -> None:
        """Train the structure when it needs it (IVF-PQ, int8, PLAID) from the chunk files, index every
        document and checkpoint; the index becomes "ready". `show_progress`: a bar over PLAID's k-means.
        `workers` > 1: the rows not in a segment yet are built into that many segments in parallel (worker
        processes, or Ray tasks with `backend="ray"`; at most segments_per_tier - 1, so that they are not
        merged straight back), as a sharded build does."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._bind()
            self._cleanup()
            if not self._can_add():
                if self.store.n_vectors == 0:
                    raise IndexStateError(f"cannot finish the build of {self.path}: no vectors to train on (add documents first)")
                n = self.store.n_vectors
                sample = self.store.sample(self.structure.train_sample_size(n), seed=self.structure.config.seed)
                self._train(self.structure.train, sample, n, show_progress)
            if workers > 1 and isinstance(self.structure, SegmentSet):
                from .parallel_build import build_segments

                build_segments(self, min(workers, self.structure.policy.segments_per_tier - 1), backend)
            self._reconcile()
            self.manifest.state = "ready"
            self._save()

    def save(self) -> None:
        """Checkpoint the structure under a new generation, then atomically point the manifest to it
        (done automatically after each write when `autosave` is on)."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._bind()
            self._save()

    def _bind(self) -> None:
        """Writer: bind an index of format 1 (no index id) to its files before writing: a new index id in
        the manifest, the document store and every new chunk file, and row checksums for the stored
        documents. The manifest written at the end of the write makes it permanent."""
        if self.manifest.index_id is not None:
            return
        found = self.docstore.binding()  # a crash after binding the store and before saving the manifest
        index_id = found.index_id or new_index_id()
        self.docstore.fill_checksums()
        self.docstore.bind(index_id, self.manifest.generation)
        self.manifest.index_id, self.manifest.format_version = index_id, FORMAT_VERSION
        self.store.index_id, self.store.first_bound_chunk = index_id, self.docstore.binding().first_chunk
        logger.info("%s: bound its files to index id %s (format %d)", self.path, index_id, FORMAT_VERSION)

    def _save(self) -> None:
        generation = self.manifest.generation + 1
        files = self.structure.save(self.path, generation)
        self._update_counts()
        self.manifest.files = {name: rec.to_dict() for name, rec in files.items()}
        self.manifest.generation = generation
        self.manifest.params["state"] = self.structure.state()
        assert self.manifest.index_id is not None  # every writer binds first (`_bind`)
        self.docstore.bind(self.manifest.index_id, generation)  # the store is one generation ahead until:
        self.manifest.save(self.path)  # commit point of the checkpoint
        plaid = self.manifest.index_type == "plaid"
        if plaid and self.structure.is_trained and not self.structure.config.keep_full_vectors:
            chunks = self.docstore.chunks()  # folded into the compressed structure: drop the float copies
            self.docstore.mark_chunks_dropped([c.seq for c in chunks])
            for c in chunks:
                self.store.unregister(c.seq)
        self._cleanup()

    def _train(self, train: Callable[..., None], sample: np.ndarray, n: int, show_progress: bool) -> None:
        niter = getattr(self.structure.config, "kmeans_niter", None)
        with tqdm(total=niter, desc=f"k-means ({len(sample):,} vectors)", unit="iter", disable=not show_progress or niter is None) as bar:
            train(sample, n, progress=bar.update)

    def compact(self, retrain: bool = False, show_progress: bool = False) -> None:
        """Merge every segment into one and rewrite the chunk files, without deleted documents (purged from
        SQLite too). `retrain`: train the shared state again on the current data (PLAID centroids and residual
        buckets, IVF-PQ quantizer: when the data drifted from what the index was trained on) and re-encode
        every row with it; a no-op for structures that train nothing."""
        with writer_lock(self.path):
            self._sync(locked=True)
            if retrain and not self.store.n_vectors and len(self):  # a request this index cannot meet: bad input
                raise ValueError(f"retraining {self.path} needs its full vectors: build it with keep_full_vectors=true "
                                      "(a PLAID index keeps only compressed tokens otherwise), or re-index")
            self._bind()
            self._cleanup()
            live = self.docstore.live_row_ids()
            _, seq = self.docstore.counters()
            new_chunks, assignment = [], {}
            for chunk in list(self.store):
                rows = np.flatnonzero(np.isin(chunk.iids, live))
                for s in range(0, len(rows), self._chunk_size):
                    part = rows[s : s + self._chunk_size]
                    vectors, offsets = take_docs(chunk.vectors, chunk.offsets, part)
                    info = self.store.write_chunk(seq, chunk.iids[part], vectors, offsets)
                    new_chunks.append(info)
                    assignment.update({int(i): seq for i in self._windows.row_documents(chunk.iids[part])[0]})
                    seq += 1
            self.docstore.replace_chunks(new_chunks, assignment, purge=True)
            self.store.clear()
            for info in new_chunks:
                self.store.register(info)
            if retrain and isinstance(self.structure, SegmentSet) and self.structure.needs_training and self.structure.is_trained:
                self._retrain(show_progress)
            else:
                self.structure.compact()
            self._save()
            self.docstore.shrink()

    def _retrain(self, show_progress: bool) -> None:
        structure = self.structure
        n = len(self.docstore.live_row_ids()) if self.manifest.kind == "dense" else int(structure.info().get("n_tokens", 0))
        size = structure.train_sample_size(max(n, 1))
        seed = structure.config.seed
        sample = self.store.sample(size, seed=seed)
        self._train(structure.retrain, sample, n, show_progress)

    # ----------------------------------------------------------------- search / read API
    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None, *, encoder: Any = None,
               **params: Any) -> list[list[Hit]]:  # fmt: skip
        """Top-`k` hits for each query: text(s) (encoded by `encoder`, a `DocumentEncoder`) or query vectors (dense: (dim,) or
        (n, dim); ColBERT: one (n_tokens, dim) matrix or a list of them). `filter`: metadata filter
        (see `compile_filter`); one that matches nothing because a field it needs is in no document raises
        `FilterFieldError`. `params`: per-call search settings (nprobe, ef_search, ndocs, ...). Each document
        comes back once: one indexed as windows scores as its best window, whose span is `Hit.window`. An empty or
        blank text query raises ValueError; an index whose build did not finish raises `IndexStateError`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        texts = [queries] if isinstance(queries, str) else queries if isinstance(queries, (list, tuple)) else []
        if any(isinstance(q, str) and not q.strip() for q in texts):
            raise ValueError("empty query")
        if isinstance(queries, (list, tuple)) and not queries:
            return []
        self._sync(locked=False)
        if self.manifest.state != "ready":
            raise IndexStateError(f"the build of {self.path} did not finish: re-run `mbret index ...` to finish it")
        vectors, n = query_vectors(self.manifest.kind, queries, None if encoder is None else DocumentEncoder(encoder))
        if n == 0:
            return []
        allowed = None
        if filter:
            allowed = self.docstore.filter_iids(filter)
            if len(allowed) == 0:
                self._explain_empty_filter(filter)
                return [[] for _ in range(n)]
            allowed = self._windows.allowed_rows(allowed)
        found = search_documents(self.structure, self._windows, vectors, n, k, allowed, params)
        docs = self.docstore.get_by_iids(sorted({d for row in found for d, _, _, _ in row}))
        spans = self.docstore.windows_by_iids(sorted({r for row in found for _, _, r, is_window in row if is_window}))
        out = []
        for row in found:
            hits = []
            for doc_iid, score, row_id, is_window in row:
                if (doc := docs.get(doc_iid)) is None:
                    continue
                w = spans.get(row_id) if is_window else None
                hits.append(Hit(doc.doc_id, score, doc.text, doc.title, doc.metadata or {}, None if w is None else (w.start, w.end)))
            out.append(hits)
        return out

    def _explain_empty_filter(self, flt: Mapping[str, Any]) -> None:
        """A filter matched nothing: raise `FilterFieldError` (a ValueError) when that is because a field it
        needs is in no document (a typo, usually), rather than silently answer nothing."""
        if len(self) and (missing := self.docstore.missing_fields(flt)):
            raise FilterFieldError(missing, self.docstore.metadata_fields())

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Stored documents by id (None for unknown ids)."""
        self._sync(locked=False)
        return [None if r is None else r.to_dict() for r in self.docstore.get([str(i) for i in ids])]

    def __len__(self) -> int:
        return self.docstore.count()

    def __contains__(self, doc_id: object) -> bool:
        return bool(self.docstore.live_doc_ids([str(doc_id)]))

    def info(self) -> dict[str, Any]:
        """Manifest fields plus live counts, disk usage and structure details."""
        out = self.manifest.to_dict()
        n_windows, n_split = self.docstore.window_counts()
        n_documents = len(self)
        out.update(
            n_documents=n_documents,
            n_windows=n_documents - n_split + n_windows,  # index rows: a document that fits the model is one window
            n_split_documents=n_split,  # documents indexed as more than one row
            window=self.manifest.params.get("window"),
            n_deleted=self.docstore.count(include_deleted=True) - len(self),
            n_chunks=len(self.store),
            n_segments=int(self.structure.info().get("segments", 1 if len(self) else 0)),
            disk_bytes=sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()),
            structure=self.structure.info(),
        )
        return out

    def close(self) -> None:
        self.docstore.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"Index({str(self.path)!r}, kind={m.kind!r}, index_type={m.index_type!r}, model={m.model_id!r}, docs={len(self)}, state={m.state!r})"


def _verify_lexical(docstore: DocStore) -> None:
    """The BM25 table (hybrid indexes) holds exactly the live documents; checked with `verify`."""
    from .lexical import LexicalIndex

    lexical = LexicalIndex(docstore)
    if lexical.exists():
        try:
            lexical.verify()
        except ValueError as exc:
            raise IndexCorruptError(str(exc)) from None
