"""`Index`: the facade over one index folder (manifest + document store + vector chunks + structure).

Folder layout::

    manifest.json                 kind, model, dim, params, checksums of the structure files, state
    docs.sqlite                   documents, internal ids, chunk registry (SQLite, WAL)
    chunks/NNNNNNNN.safetensors   float32 vectors, one file per encoded chunk of documents
    dense.GGGGGG.faiss            FAISS structure (dense) of checkpoint generation G
    plaid.GGGGGG.safetensors      compressed token structure (ColBERT / PLAID)

Write protocol (crash-safe, resumable): documents are encoded chunk by chunk; each chunk file is written
atomically, *then* its documents are committed in SQLite in one transaction (the commit point). The
search structure is a checkpoint: written under a new generation name, then the manifest is atomically
replaced to point to it. On open the structure is reconciled with SQLite by internal id (missing ids are
re-added from chunk files, removed ones dropped), so a crash anywhere loses nothing and duplicates nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .docstore import DocRow, DocStore
from .errors import IndexCorruptError, IndexMismatchError, IndexStateError
from .manifest import INDEX_TYPES, MANIFEST_NAME, IndexManifest
from .structures import doc_row, flatten_vectors, make_config, make_structure, query_vectors
from .storage import TMP_PREFIX, remove_quietly, verify_file, writer_lock
from .vectors import VectorStore, take_docs

logger = logging.getLogger(__name__)

__all__ = ["Index", "Hit"]

DOCSTORE_NAME = "docs.sqlite"
_STRUCTURE_FILE = re.compile(r"^(dense|plaid|exact)\.\d{6}\.")
_BUILD_PARAMS = ("chunk_size", "autosave")
_PROGRESS_SLICE = 256  # documents encoded between two progress reports
ProgressFn = Callable[[int], None]


@dataclass
class Hit:
    """One search result."""

    doc_id: str
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Index:
    """A dense or ColBERT index on disk. Build with `create` + `add` + `finalize` (or `build`), load with `open`."""

    def __init__(self, path: Path, manifest: IndexManifest, docstore: DocStore, store: VectorStore, structure: Any, model: Any,
                 overrides: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.path, self.manifest, self.docstore, self.store, self.structure, self.model = path, manifest, docstore, store, structure, model
        self._overrides = dict(overrides or {})  # this session's search settings (kept across `_sync`)
        self._data_version = docstore.data_version()

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(cls, path: str | Path, kind: str, index_type: str, model: Any = None, *, quantization: str | None = None,
               model_id: str | None = None, dim: int | None = None, chunk_size: int = 4096, autosave: bool = True,
               **params: Any) -> "Index":  # fmt: skip
        """New empty index in `path` (state "building"). `model` gives model_id/dim (or pass them for vectors-only use)."""
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
        config = make_config(kind, index_type, quantization, params)
        stored = {k: v for k, v in (vars(config) if config is not None else {}).items() if k not in ("index_type", "quantization")}
        manifest = IndexManifest(
            kind=kind, index_type=index_type, model_id=model_id, dim=dim, quantization=quantization,
            model_revision=getattr(model, "revision", None), params={"chunk_size": int(chunk_size), "autosave": bool(autosave), **stored},
        )  # fmt: skip
        path.mkdir(parents=True, exist_ok=True)
        DocStore(path / DOCSTORE_NAME).close()  # before the manifest: a folder with a manifest can always be opened
        manifest.save(path)
        return cls._assemble(path, manifest, model, verify=False)

    @classmethod
    def open(cls, path: str | Path, model: Any = None, *, verify: bool = True, **overrides: Any) -> "Index":
        """Open an index: validates the manifest, checks `model` compatibility, file sizes and (with `verify`)
        sha256 checksums. `overrides` change search/runtime settings (e.g. nprobe, backend) for this session."""
        path = Path(path)
        manifest = IndexManifest.load(path)
        if model is not None:
            manifest.check_compatible(model)
        if unknown := set(overrides) - (set(manifest.params) - {"state"}):
            raise TypeError(f"unknown index settings {sorted(unknown)}")
        manifest.params.update({k: overrides.pop(k) for k in _BUILD_PARAMS if k in overrides})
        return cls._assemble(path, manifest, model, verify=verify, overrides=overrides)

    @classmethod
    def build(cls, path: str | Path, docs: Iterable[Mapping[str, Any]], kind: str, index_type: str, model: Any, *,
              show_progress: bool = False, **params: Any) -> "Index":  # fmt: skip
        """Create (or resume an interrupted build of) an index, add `docs` and finalize it."""
        path = Path(path)
        if (path / MANIFEST_NAME).exists():
            index = cls.open(path, model)
            if (index.manifest.kind, index.manifest.index_type) != (kind, index_type):
                raise IndexMismatchError(f"{path} holds a {index.manifest.kind}/{index.manifest.index_type} index, not {kind}/{index_type}")
            logger.info("resuming the build of %s (%d documents already committed)", path, len(index))
        else:
            index = cls.create(path, kind, index_type, model, **params)
        index.add(docs, show_progress=show_progress)
        index.finalize()
        return index

    @classmethod
    def _assemble(cls, path: Path, manifest: IndexManifest, model: Any, verify: bool,
                  overrides: Mapping[str, Any] | None = None) -> "Index":  # fmt: skip
        if not (path / DOCSTORE_NAME).is_file():
            raise IndexCorruptError(f"index file {DOCSTORE_NAME!r} is missing from {path}")
        docstore = DocStore(path / DOCSTORE_NAME)
        try:
            if verify:
                docstore.quick_check()
            store, structure = cls._load_vectors(path, manifest, docstore, overrides, verify)
            index = cls(path, manifest, docstore, store, structure, model, overrides)
            index._reconcile()
        except BaseException:
            docstore.close()
            raise
        return index

    @staticmethod
    def _load_vectors(path: Path, manifest: IndexManifest, docstore: DocStore, overrides: Mapping[str, Any] | None,
                      verify: bool) -> tuple[VectorStore, Any]:  # fmt: skip
        """Chunk registry and search structure of `manifest`. The structure files are read whole anyway, so
        their sha256 is always checked (a same-size corruption is caught on every open); the memory-mapped
        chunk files only with `verify`."""
        store = VectorStore(path, manifest.kind, manifest.dim)
        for chunk in docstore.chunks():
            store.verify(chunk, check_hash=verify)
            store.register(chunk)
        for name, record in manifest.file_records().items():
            verify_file(path / name, record, check_hash=True)
        params = {k: v for k, v in {**manifest.params, **(overrides or {})}.items() if k not in (*_BUILD_PARAMS, "state")}
        structure = make_structure(manifest.kind, manifest.index_type, manifest.quantization, manifest.dim, params, store)
        structure.load(path, manifest.generation, manifest.params.get("state", {}))
        return store, structure

    def _sync(self, locked: bool) -> None:
        """Catch up with what another process wrote since this one loaded the index (`mbret add` beside a
        running `mbret serve`, two writers one after the other): SQLite's data_version tells that another
        connection committed; then manifest, chunk registry and structure are reloaded and reconciled.
        Writers call it holding the writer lock; readers only when the lock is free (else they keep serving
        the state they have, and catch up on a later call)."""
        version = self.docstore.data_version()
        if version == self._data_version:
            return
        if not locked:
            try:
                with writer_lock(self.path):
                    self._sync(locked=True)
            except (IndexStateError, OSError):  # a writer is busy (or the folder is read-only): later
                pass
            return
        manifest = IndexManifest.load(self.path)
        manifest.params.update({k: v for k, v in self.manifest.params.items() if k in _BUILD_PARAMS})
        self.store, self.structure = self._load_vectors(self.path, manifest, self.docstore, self._overrides, False)
        self.manifest = manifest
        self._reconcile()
        self._data_version = version
        logger.info("%s was changed by another process: reloaded (%d documents)", self.path, len(self))

    # ----------------------------------------------------------------- internal helpers
    @property
    def chunk_size(self) -> int:
        """Documents per encoded chunk file (the unit of resumability)."""
        return int(self.manifest.params.get("chunk_size", 4096))

    _chunk_size = chunk_size  # used by the retriever / distributed layers

    def _can_add(self) -> bool:
        return not self.structure.needs_training or self.structure.is_trained

    def _reconcile(self) -> None:
        """Make the in-memory structure hold exactly the live documents of the document store."""
        if not self._can_add():
            return
        live, _ = self.docstore.live_iids()
        present = self.structure.ids()
        if len(extra := present[~np.isin(present, live)]):
            self.structure.remove(extra)
        missing = live[~np.isin(live, present)]
        if not len(missing):
            return
        found, seqs, rows = self.store.locate(missing)
        if not found.all():
            raise IndexCorruptError(
                f"{int((~found).sum())} documents of {DOCSTORE_NAME} are neither in the index structure nor in a chunk file"
            )
        for seq in np.unique(seqs):
            sel = seqs == seq
            if getattr(self.structure, "needs_vectors", True):
                chunk = self.store.chunk(int(seq))
                vectors, offsets = take_docs(chunk.vectors, chunk.offsets, rows[sel])
                self.structure.add(missing[sel], vectors, offsets)
            else:
                self.structure.add(missing[sel])

    def _cleanup(self) -> None:
        """Remove leftovers of interrupted writes (writer only: temp files, unregistered chunks, old generations)."""
        registered = {c.name for c in self.docstore.chunks()}
        for f in self.store.dir.iterdir():
            if f.name.startswith(TMP_PREFIX) or (f.suffix == ".safetensors" and f.name not in registered):
                remove_quietly(f)
        for f in self.path.iterdir():
            if f.name.startswith(TMP_PREFIX) or (_STRUCTURE_FILE.match(f.name) and f.name not in self.manifest.files):
                remove_quietly(f)

    def _encode(self, texts: list[str], progress: ProgressFn | None = None) -> Any:
        """Document vectors; with `progress`, encoded in slices of `_PROGRESS_SLICE` texts, reporting each."""
        if self.model is None:
            raise IndexStateError("this index was opened without a model: pass `model=` or precomputed vectors")
        if progress is None or len(texts) <= _PROGRESS_SLICE:
            out = self.model.encode_documents(texts, show_progress=False)
            if progress is not None:
                progress(len(texts))
            return out
        parts = []
        for start in range(0, len(texts), _PROGRESS_SLICE):
            part = texts[start : start + _PROGRESS_SLICE]
            parts.append(self.model.encode_documents(part, show_progress=False))
            progress(len(part))
        if self.manifest.kind == "dense":
            return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
        return [m for p in parts for m in p]

    def _commit_chunk(self, rows: list[tuple], vectors: Any, replace: bool, progress: ProgressFn | None = None) -> None:
        if vectors is None:
            vectors = self._encode([f"{title} {text}" if title else text for _, text, title, _ in rows], progress)
        elif progress is not None:
            progress(len(rows))
        flat, offsets = flatten_vectors(self.manifest.kind, self.manifest.dim, vectors, len(rows))
        next_iid, next_chunk = self.docstore.counters()
        iids = np.arange(next_iid, next_iid + len(rows), dtype=np.int64)
        info = self.store.write_chunk(next_chunk, iids, flat, offsets)  # 1. chunk file, atomically
        doc_rows = [DocRow(int(i), *r) for i, r in zip(iids, rows)]
        replaced = self.docstore.commit(doc_rows, info, replace=replace)  # 2. commit point
        self.store.register(info)
        if replaced:
            self.structure.remove(np.asarray(replaced, dtype=np.int64))
        if self._can_add():
            self.structure.add(iids, flat, offsets)

    def _ingest(self, docs: Iterable[Mapping[str, Any]], vectors: Iterable[Any] | None, replace: bool, show_progress: bool,
                progress: ProgressFn | None = None) -> int:  # fmt: skip
        total = len(docs) if hasattr(docs, "__len__") else None  # type: ignore[arg-type]
        pairs: Iterator = zip(docs, vectors if vectors is not None else repeat(None))
        seen: set[str] = set()
        written = 0
        with tqdm(total=total, desc="indexing", unit="doc", disable=not show_progress) as bar:
            while batch := list(islice(pairs, self._chunk_size)):
                rows = [doc_row(d) for d, _ in batch]
                ids = [r[0] for r in rows]
                if len(set(ids)) != len(ids) or seen.intersection(ids):
                    raise ValueError("duplicate document ids in one call")
                seen.update(ids)
                keep = self._select(rows, replace)
                todo = [rows[i] for i in keep]
                if progress is not None and len(todo) < len(rows):
                    progress(len(rows) - len(todo))  # already indexed (a resumed build) or unchanged
                if todo:
                    vecs = None if vectors is None else [batch[i][1] for i in keep]
                    self._commit_chunk(todo, vecs, replace, progress)
                    written += len(todo)
                bar.update(len(batch))
        return written

    def _select(self, rows: list[tuple], replace: bool) -> list[int]:
        """Positions of `rows` that need encoding: new ids for add; new or changed text/title for update."""
        if not replace:
            live = self.docstore.live_doc_ids([r[0] for r in rows])
            return [i for i, r in enumerate(rows) if r[0] not in live]
        keep = []
        for i, (row, old) in enumerate(zip(rows, self.docstore.get([r[0] for r in rows]))):
            if old is not None and (old.text, old.title) == (row[1], row[2]):
                if (old.metadata or None) != row[3]:
                    self.docstore.set_fields(row[0], row[2], row[3])  # metadata only: no re-encoding
                continue
            keep.append(i)
        return keep

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
    def add(self, docs: Iterable[Mapping[str, Any]], *, vectors: Iterable[Any] | None = None, show_progress: bool = False,
            progress: ProgressFn | None = None) -> int:  # fmt: skip
        """Encode and add documents (`{"id", "text", "title"?, "metadata"?}`); ids already in the index are
        skipped, so re-running an interrupted `add` resumes it. Returns the number of documents added.
        `progress(n)` is called as documents are encoded (every few hundred) or skipped."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._cleanup()
            n = self._ingest(docs, vectors, replace=False, show_progress=show_progress, progress=progress)
            self._after_write()
        return n

    def update(self, docs: Iterable[Mapping[str, Any]], *, vectors: Iterable[Any] | None = None, show_progress: bool = False,
               progress: ProgressFn | None = None) -> int:  # fmt: skip
        """Insert or replace documents by id (unchanged text/title are not re-encoded). Returns the number encoded."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._cleanup()
            n = self._ingest(docs, vectors, replace=True, show_progress=show_progress, progress=progress)
            self._after_write()
        return n

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (unknown ids are ignored). Returns the number deleted."""
        with writer_lock(self.path):
            self._sync(locked=True)
            iids = self.docstore.delete([str(i) for i in ids])
            self.structure.remove(np.asarray(iids, dtype=np.int64))
            self._after_write()
        return len(iids)

    def finalize(self) -> None:
        """Train the structure when it needs it (IVF-PQ, int8, PLAID) from the chunk files, index every
        document and checkpoint; the index becomes "ready"."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._cleanup()
            if not self._can_add():
                if self.store.n_vectors == 0:
                    raise IndexStateError("cannot finalize: no vectors to train on (add documents first)")
                n = self.store.n_vectors
                sample = self.store.sample(self.structure.train_sample_size(n), seed=self.structure.config.seed)
                self.structure.train(sample, n)
            self._reconcile()
            self.manifest.state = "ready"
            self._save()

    def save(self) -> None:
        """Checkpoint the structure under a new generation, then atomically point the manifest to it
        (done automatically after each write when `autosave` is on)."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._save()

    def _save(self) -> None:
        generation = self.manifest.generation + 1
        files = self.structure.save(self.path, generation)
        self._update_counts()
        self.manifest.files = {name: rec.to_dict() for name, rec in files.items()}
        self.manifest.generation = generation
        self.manifest.params["state"] = self.structure.state()
        self.manifest.save(self.path)  # commit point of the checkpoint
        plaid = self.manifest.index_type == "plaid"
        if plaid and self.structure.is_trained and not self.structure.config.keep_full_vectors:
            chunks = self.docstore.chunks()  # folded into the compressed structure: drop the float copies
            self.docstore.mark_chunks_dropped([c.seq for c in chunks])
            for c in chunks:
                self.store.unregister(c.seq)
        self._cleanup()

    def compact(self) -> None:
        """Rewrite chunk files and structure without deleted documents, and purge them from SQLite."""
        with writer_lock(self.path):
            self._sync(locked=True)
            self._cleanup()
            live, _ = self.docstore.live_iids()
            _, seq = self.docstore.counters()
            new_chunks, assignment = [], {}
            for chunk in list(self.store):
                rows = np.flatnonzero(np.isin(chunk.iids, live))
                for s in range(0, len(rows), self._chunk_size):
                    part = rows[s : s + self._chunk_size]
                    vectors, offsets = take_docs(chunk.vectors, chunk.offsets, part)
                    info = self.store.write_chunk(seq, chunk.iids[part], vectors, offsets)
                    new_chunks.append(info)
                    assignment.update({int(i): seq for i in chunk.iids[part]})
                    seq += 1
            self.docstore.replace_chunks(new_chunks, assignment, purge=True)
            self.store.clear()
            for info in new_chunks:
                self.store.register(info)
            self.structure.compact()
            self._save()

    # ----------------------------------------------------------------- search / read API
    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None, **params: Any) -> list[list[Hit]]:
        """Top-`k` hits for each query: text(s) (encoded with the model) or query vectors (dense: (dim,) or
        (n, dim); ColBERT: one (n_tokens, dim) matrix or a list of them). `filter`: metadata filter
        (see `DocStore.filter_iids`). `params`: per-call search settings (nprobe, ef_search, ndocs, ...)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        vectors, n = query_vectors(self.manifest.kind, queries, self.model)
        if n == 0:
            return []
        self._sync(locked=False)
        allowed = None
        if filter:
            allowed = self.docstore.filter_iids(filter)
            if len(allowed) == 0:
                return [[] for _ in range(n)]
        scores, iids = self.structure.search(vectors, k, allowed=allowed, **params)
        rows = self.docstore.get_by_iids(np.unique(iids[iids >= 0]).tolist())
        return [
            [Hit(r.doc_id, float(s), r.text, r.title, r.metadata or {}) for s, i in zip(srow, irow) if i >= 0 and (r := rows.get(int(i)))]
            for srow, irow in zip(scores, iids)
        ]

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
        out.update(
            n_documents=len(self),
            n_deleted=self.docstore.count(include_deleted=True) - len(self),
            n_chunks=len(self.store),
            disk_bytes=sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()),
            structure=self.structure.info(),
        )
        return out

    def close(self) -> None:
        self.docstore.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"Index({str(self.path)!r}, kind={m.kind!r}, index_type={m.index_type!r}, model={m.model_id!r}, docs={len(self)}, state={m.state!r})"
