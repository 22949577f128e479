"""`ShardedIndex`: one `mbert_retrieval.index.Index` per embedding shard, searched in parallel, top-k merged.

Folder layout::

    sharded.json        kind, index_type, model_id, dim, params, one entry per shard (folder, documents,
                        sha256 of the shard's manifest.json when the build finished)
    shard-00000/        an ordinary Index folder (manifest.json, docs.sqlite, chunks/, FAISS / PLAID files)
    shard-00001/ ...
    _embeddings/        the embedding shards while building (removed afterwards unless kept)

Search encodes the queries once, sends the vectors to every shard in a thread pool (FAISS and the torch MaxSim
release the GIL), and merges the per-shard top-k by score. Each shard applies metadata filters itself, so the
merged top-k under a filter is exact with respect to the shards' own results. With flat (exact) shards the
merged ranking is the single-index ranking; with IVF-PQ / HNSW / PLAID every shard trains its own structure,
so results differ slightly from one big index (see SIZING.md for measured agreement).

Memory. What holds: shard indexes are opened lazily on first search; an opened shard keeps its float vectors
memory-mapped (chunk files; the OS pages them in and out) and its SQLite store on disk, but its FAISS
structure (flat codes, HNSW graph, IVF-PQ codes) or PLAID codes in RAM. `max_open_shards` bounds how many
shards are open at once (least recently used ones are closed), so one machine can serve a corpus whose
structures do not fit in its RAM together, at the price of re-reading shards per query batch. To serve
shards on several machines, open a subset on each (`ShardedIndex.open(path, shards=[...])`) and merge their
answers with `merge_hits`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..index import Hit, Index, IndexCorruptError, IndexMismatchError
from ..index.manifest import MANIFEST_NAME, IndexManifest
from ..index.errors import FilterFieldError
from ..index.storage import atomic_write_text, plain_file_name
from .shards import ShardStore

logger = logging.getLogger(__name__)

__all__ = ["SHARDED_MANIFEST", "ShardedManifest", "ShardEntry", "ShardedIndex", "merge_hits", "is_sharded"]

SHARDED_MANIFEST = "sharded.json"
EMBEDDINGS_DIR = "_embeddings"


def is_sharded(path: str | os.PathLike) -> bool:
    """True when `path` is a sharded index folder (holds `sharded.json`)."""
    return (Path(path) / SHARDED_MANIFEST).is_file()


@dataclass
class ShardEntry:
    """One shard index in `sharded.json`."""

    name: str
    n_documents: int = 0
    manifest_sha256: str = ""  # sha256 of the shard's manifest.json when the build finished ("" while building)


@dataclass
class ShardedManifest:
    """Contents of `sharded.json`."""

    kind: str
    index_type: str
    model_id: str
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    shards: list[ShardEntry] = field(default_factory=list)
    state: str = "building"
    format_version: int = 1
    corpus_sha256: str = ""  # sha256 of the corpus ids in order (`shards.ids_fingerprint`): a re-run is a no-op

    @property
    def n_documents(self) -> int:
        return sum(s.n_documents for s in self.shards)

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / SHARDED_MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ShardedManifest:
        path = directory / SHARDED_MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {SHARDED_MANIFEST} in {directory}: not a sharded index folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["shards"] = [ShardEntry(**s) for s in data["shards"]]
            manifest = cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise IndexCorruptError(f"{path} is corrupt or invalid: {exc}") from exc
        for entry in manifest.shards:  # joined to `directory` later: never a path outside it
            plain_file_name(entry.name, SHARDED_MANIFEST)
        return manifest


def _manifest_sha(path: Path) -> str:
    return hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()


def merge_hits(per_shard: Sequence[Sequence[Sequence[Hit]]], k: int) -> list[list[Hit]]:
    """Merge per-shard results ([shard][query] -> hits) into the top-`k` per query, by descending score
    (ties: earlier shard first, then the shard's own order)."""
    if not per_shard:
        return []
    merged = []
    for q in range(len(per_shard[0])):
        hits = [h for shard in per_shard for h in shard[q]]
        merged.append(sorted(hits, key=lambda h: -h.score)[:k])  # sorted() is stable
    return merged


class ShardedIndex:
    """Several shard indexes queried as one. Build with `build_from_shards`, load with `open`."""

    def __init__(self, path: str | os.PathLike, manifest: ShardedManifest, model: Any = None,
                 shards: Sequence[int] | None = None, max_open_shards: int | None = None,
                 max_workers: int | None = None, verify: bool = True, **overrides: Any) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.model = model
        self.shard_ids = list(range(len(manifest.shards))) if shards is None else [int(s) for s in shards]
        self.max_open_shards = max_open_shards
        self.max_workers = max_workers or min(len(self.shard_ids), os.cpu_count() or 1) or 1
        self.verify = verify
        self.overrides = overrides
        self._open: OrderedDict[int, Index] = OrderedDict()
        self._locks = {i: threading.Lock() for i in self.shard_ids}
        self._lru_lock = threading.Lock()
        self._pins: dict[int, int] = {}
        if model is not None:  # same checks as Index.open, once for all shards
            IndexManifest(kind=manifest.kind, index_type=manifest.index_type, model_id=manifest.model_id,
                          dim=manifest.dim).check_compatible(model)

    # ----------------------------------------------------------------- building
    @classmethod
    def build_from_shards(cls, path: str | os.PathLike, store: ShardStore, docs: Mapping[str, Any],
                          index_type: str = "flat", model: Any = None, show_progress: bool = False,
                          **params: Any) -> ShardedIndex:
        """One index per embedding shard of `store` (finished shard indexes are kept: resumable).
        `docs`: id -> Document or dict (text, title, metadata are stored with the vectors)."""
        path = Path(path)
        store.refresh()
        if not store.complete:
            raise RuntimeError(f"embedding shards in {store.dir} are not all encoded: {store.pending()}")
        path.mkdir(parents=True, exist_ok=True)
        m = store.manifest
        if is_sharded(path):
            manifest = ShardedManifest.load(path)
            if (manifest.kind, manifest.index_type, manifest.model_id, len(manifest.shards)) != \
                    (m.kind, index_type, m.model_id, m.n_shards):
                raise IndexMismatchError(f"{path} holds another sharded index "
                                         f"({manifest.kind}/{manifest.index_type}/{manifest.model_id}, "
                                         f"{len(manifest.shards)} shards): use another folder")
            if manifest.corpus_sha256 and manifest.corpus_sha256 != m.corpus_sha256:
                raise IndexMismatchError(f"{path} holds a sharded index of another corpus: use another folder")
        else:
            manifest = ShardedManifest(kind=m.kind, index_type=index_type, model_id=m.model_id, dim=int(m.dim or 0),
                                       params=dict(params), shards=[ShardEntry(f"shard-{i:05d}") for i in
                                                                    range(m.n_shards)])
        manifest.corpus_sha256 = m.corpus_sha256
        manifest.save(path)
        from tqdm.auto import tqdm

        for i in tqdm(range(m.n_shards), desc="index shards", unit="shard", disable=not show_progress):
            entry, folder = manifest.shards[i], path / manifest.shards[i].name
            if entry.manifest_sha256 and (folder / MANIFEST_NAME).is_file():
                continue  # finished in an earlier run
            data = store.read_shard(i, mmap=True)
            if (folder / MANIFEST_NAME).is_file():
                index = Index.open(folder)
            else:
                index = Index.create(folder, m.kind, index_type, model_id=m.model_id, dim=manifest.dim, **params)
            try:
                index.add([_as_dict(d, docs) for d in data.ids], vectors=_iter_vectors(data))
                index.finalize()
                entry.n_documents = len(index)
            finally:
                index.close()
            entry.manifest_sha256 = _manifest_sha(folder)
            manifest.save(path)
        manifest.state = "ready"
        manifest.save(path)
        return cls(path, manifest, model)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, model: Any = None, *, shards: Sequence[int] | None = None,
             max_open_shards: int | None = None, max_workers: int | None = None, verify: bool = True,
             **overrides: Any) -> ShardedIndex:
        """Open a sharded index folder (shards are opened lazily, on first search). `shards`: serve only these
        shard numbers; `verify`: check sha256 of every shard file when the shard is opened; `overrides`:
        search settings passed to every shard's `Index.open` (nprobe, ef_search, backend, ...)."""
        path = Path(path)
        manifest = ShardedManifest.load(path)
        if manifest.state != "ready":
            raise IndexCorruptError(f"sharded index {path} was not finished (state {manifest.state!r}): run the "
                                   "same build again (`mbret index ... --shards N`, `build_sharded`) to resume it")
        for i in shards if shards is not None else range(len(manifest.shards)):
            if not (path / manifest.shards[i].name / MANIFEST_NAME).is_file():
                raise IndexCorruptError(f"shard index {manifest.shards[i].name!r} is missing from {path}")
        return cls(path, manifest, model, shards, max_open_shards, max_workers, verify, **overrides)

    def shard(self, i: int) -> Index:
        """The (lazily opened) index of shard `i`."""
        index = self._acquire(i)
        self._release(i)
        return index

    def _acquire(self, i: int) -> Index:
        """Open shard `i` if needed and pin it (pinned shards are never closed by the LRU)."""
        with self._locks[i]:
            with self._lru_lock:
                if i in self._open:
                    self._open.move_to_end(i)
                    self._pins[i] = self._pins.get(i, 0) + 1
                    return self._open[i]
            entry = self.manifest.shards[i]
            folder = self.path / entry.name
            if self.verify and _manifest_sha(folder) != entry.manifest_sha256:
                raise IndexCorruptError(f"shard index {entry.name!r} in {self.path} changed since the sharded "
                                        "index was built (manifest.json sha256 differs)")
            index = Index.open(folder, verify=self.verify, **self.overrides)
            with self._lru_lock:
                self._open[i] = index
                self._pins[i] = self._pins.get(i, 0) + 1
            return index

    def _release(self, i: int) -> None:
        """Unpin shard `i`; close least recently used unpinned shards beyond `max_open_shards`."""
        with self._lru_lock:
            self._pins[i] -= 1
            if not self.max_open_shards:
                return
            for j in [j for j in self._open if not self._pins.get(j)]:
                if len(self._open) <= self.max_open_shards:
                    break
                self._open.pop(j).close()

    # ----------------------------------------------------------------- search
    def _query_vectors(self, queries: Any) -> Any:
        if isinstance(queries, str) or (isinstance(queries, (list, tuple)) and queries
                                        and all(isinstance(q, str) for q in queries)):
            if self.model is None:
                raise ValueError("text queries need a model: ShardedIndex.open(path, model=...)")
            texts = [queries] if isinstance(queries, str) else list(queries)
            return self.model.encode_queries(texts)
        return queries

    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None,
               **params: Any) -> list[list[Hit]]:
        """Top-`k` hits per query over all served shards (text queries need the model; vectors as for
        `Index.search`). `filter` and `params` are passed to every shard."""
        vectors = self._query_vectors(queries)

        missing: list[FilterFieldError] = []

        def one(i: int) -> list[list[Hit]] | None:
            index = self._acquire(i)
            try:
                return index.search(vectors, k, filter, **params)
            except FilterFieldError as exc:  # no document of this shard has the field: an error only if no shard has it
                missing.append(exc)
                return None
            finally:
                self._release(i)

        workers = min(self.max_workers, self.max_open_shards or self.max_workers)
        if len(self.shard_ids) == 1 or workers <= 1:
            results = [one(i) for i in self.shard_ids]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="shard-search") as pool:
                results = list(pool.map(one, self.shard_ids))
        found = [r for r in results if r is not None]
        if not found and missing:
            raise missing[0]
        return merge_hits(found, k)

    # ----------------------------------------------------------------- misc
    def __len__(self) -> int:
        return sum(self.manifest.shards[i].n_documents for i in self.shard_ids)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.manifest), "n_documents": len(self), "served_shards": self.shard_ids,
                "open_shards": list(self._open)}

    def close(self) -> None:
        with self._lru_lock:
            for index in self._open.values():
                index.close()
            self._open.clear()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ShardedIndex({str(self.path)!r}, kind={m.kind!r}, index_type={m.index_type!r}, "
                f"shards={len(m.shards)}, docs={m.n_documents})")


def _as_dict(doc_id: str, docs: Mapping[str, Any]) -> dict[str, Any]:
    d = docs[doc_id]
    if isinstance(d, Mapping):
        return {"id": doc_id, "text": d.get("text", ""), "title": d.get("title") or None,
                "metadata": d.get("metadata") or None}
    return {"id": doc_id, "text": d.text, "title": d.title or None, "metadata": d.metadata or None}


def _iter_vectors(data) -> Any:
    if data.lengths is None:
        return iter(data.vectors)
    return iter(data.documents())


def remove_embeddings(path: str | os.PathLike) -> None:
    """Delete the `_embeddings` folder of a finished sharded index."""
    shutil.rmtree(Path(path) / EMBEDDINGS_DIR, ignore_errors=True)

