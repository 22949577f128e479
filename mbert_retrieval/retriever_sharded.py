"""Sharded index folders (`mbret index CORPUS DIR --shards N`) behind a `Retriever`.

`Retriever.open` recognises a sharded folder (`sharded.json`, see `distributed.sharded_index`) and wraps its
`ShardedIndex` in a `ShardedView`, which offers what the retriever needs from an `Index`: search with metadata
filters (every shard filters, the per-shard top-k are merged), `get`, documents for BM25, `info`, `len`.

Sharded indexes are read-only: each shard's manifest is pinned by a checksum in `sharded.json`, and documents
are assigned to shards by their position in the corpus, so adding, updating or deleting documents raises
`ShardedReadOnlyError`; rebuild into a new folder (`mbret index CORPUS NEW_DIR --shards N`) instead.

`build_sharded_retriever` is `Retriever.build` for sharded folders (resumable; local, torchrun or Ray encoding).
"""

from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["ShardedReadOnlyError", "ShardedView", "is_sharded", "open_sharded", "sharded_info",
           "sharded_resume_count", "build_sharded_retriever"]


class ShardedReadOnlyError(ValueError):
    """Adding, updating or deleting documents in a sharded index folder."""


def is_sharded(path: str | os.PathLike) -> bool:
    from .distributed.sharded_index import is_sharded as _is_sharded

    return _is_sharded(path)


class _ShardedDocs:
    """The part of `DocStore` the retriever reads for BM25: every live document, shard after shard."""

    def __init__(self, view: ShardedView) -> None:
        self.view = view

    def iter_documents(self, batch_size: int = 1000) -> Iterator[Any]:
        s = self.view.sharded
        return chain.from_iterable(s.shard(i).docstore.iter_documents(batch_size) for i in s.shard_ids)


class ShardedView:
    """A `ShardedIndex` seen through the `Index` methods a `Retriever` uses (read-only)."""

    read_only = True

    def __init__(self, sharded: Any) -> None:
        from .index import IndexManifest

        self.sharded = sharded
        self.path = sharded.path
        first = sharded.manifest.shards[0].name
        # model id, revision, kind and dim as recorded by a shard (all shards are built with the same model)
        self.model_manifest = IndexManifest.load(self.path / first)
        self.docstore = _ShardedDocs(self)

    @property
    def manifest(self) -> Any:
        return self.sharded.manifest

    def set_model(self, model: Any) -> ShardedView:
        """Attach the query model (checked against the index like `Index.open` does)."""
        self.model_manifest.check_compatible(model)
        self.sharded.model = model
        return self

    # ------------------------------------------------------------------ reading
    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None, **params: Any):
        return self.sharded.search(queries, k, filter, **params)

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = [None] * len(ids)
        for i in self.sharded.shard_ids:
            todo = [j for j, doc in enumerate(found) if doc is None]
            if not todo:
                break
            for j, doc in zip(todo, self.sharded.shard(i).get([str(ids[j]) for j in todo])):
                found[j] = doc
        return found

    def allowed_ids(self, filter: Mapping[str, Any]) -> list[str]:
        """Ids of the documents (all shards) that match a metadata filter."""
        out: list[str] = []
        for i in self.sharded.shard_ids:
            store = self.sharded.shard(i).docstore
            out += [row.doc_id for row in store.get_by_iids(store.filter_iids(filter).tolist()).values()]
        return out

    def info(self) -> dict[str, Any]:
        return sharded_info(self.sharded)

    def __len__(self) -> int:
        return len(self.sharded)

    def close(self) -> None:
        self.sharded.close()

    # ------------------------------------------------------------------ writing: refused
    def refuse_write(self) -> None:
        raise ShardedReadOnlyError(
            f"{self.path} is a sharded index ({len(self.sharded.manifest.shards)} shards), which is read-only: "
            f"rebuild it with the changed corpus into a new folder (mbret index CORPUS NEW_DIR --shards "
            f"{len(self.sharded.manifest.shards)}), or use an unsharded index (mbret index without --shards) "
            "when documents must be added, updated or deleted in place")

    def add(self, *args: Any, **kwargs: Any) -> int:
        self.refuse_write()
        return 0

    update = delete = add


def open_sharded(path: str | os.PathLike, model: Any = None, *, verify: bool = False, **overrides: Any) -> ShardedView:
    """Open a finished sharded index folder (shards are opened lazily, on first use)."""
    from .distributed.sharded_index import ShardedIndex

    view = ShardedView(ShardedIndex.open(path, verify=verify, **overrides))
    return view.set_model(model) if model is not None else view


def sharded_info(sharded: Any) -> dict[str, Any]:
    """Description of a sharded index: the sharded manifest plus every shard's own counts and disk usage."""
    m = sharded.manifest
    shards = []
    for i in sharded.shard_ids:
        info = sharded.shard(i).info()
        shards.append({"shard": i, "name": m.shards[i].name, "n_documents": info["n_documents"],
                       "n_deleted": info["n_deleted"], "n_vectors": info.get("n_vectors"),
                       "state": info["state"], "disk_bytes": info["disk_bytes"]})
    first = sharded.shard(sharded.shard_ids[0]).info() if sharded.shard_ids else {}
    return {"sharded": True, "kind": m.kind, "index_type": m.index_type, "model_id": m.model_id,
            "model_revision": first.get("model_revision"), "quantization": first.get("quantization"),
            "dim": m.dim, "params": dict(m.params), "state": m.state, "n_shards": len(m.shards),
            "served_shards": list(sharded.shard_ids), "n_documents": sum(s["n_documents"] for s in shards),
            "n_deleted": sum(s["n_deleted"] for s in shards),
            "n_vectors": sum(s["n_vectors"] or 0 for s in shards),
            "disk_bytes": sum(f.stat().st_size for f in Path(sharded.path).rglob("*") if f.is_file()),
            "created_at": first.get("created_at"), "updated_at": first.get("updated_at"), "shards": shards}


def sharded_resume_count(path: str | os.PathLike) -> int:
    """Documents an interrupted sharded build in `path` has already done (encoded or indexed); 0 for none."""
    from .distributed.sharded_index import EMBEDDINGS_DIR, SHARDED_MANIFEST
    from .distributed.shards import SHARDS_MANIFEST

    path = Path(path)
    indexed = encoded = 0
    with_sha = lambda s: s.get("manifest_sha256")  # noqa: E731
    if (path / SHARDED_MANIFEST).is_file():
        data = json.loads((path / SHARDED_MANIFEST).read_text(encoding="utf-8"))
        indexed = sum(int(s.get("n_documents", 0)) for s in data.get("shards", []) if with_sha(s))
    if (path / EMBEDDINGS_DIR / SHARDS_MANIFEST).is_file():
        from .distributed.shards import ShardStore

        store = ShardStore.open(path / EMBEDDINGS_DIR)
        encoded = sum(r.stop - r.start for r in store.refresh().shards if r.done)
    return max(indexed, encoded)


def build_sharded_retriever(index_dir: str | os.PathLike, docs: Sequence[Mapping[str, Any]], model: Any, kind: str,
                            index_type: str = "flat", *, n_shards: int, backend: str = "local",
                            ray_address: str | None = None, num_workers: int | None = None, hybrid: bool = False,
                            show_progress: bool = False, model_kwargs: Mapping[str, Any] | None = None,
                            **params: Any):
    """Build (or resume) a sharded index of `docs` (the retriever's normalised documents) with the loaded
    `model`, write the retriever sidecar (and BM25 with `hybrid`) and return an open `Retriever`. Under
    torchrun only rank 0 returns a retriever; the other ranks encode their shards and return None."""
    from .distributed import build_sharded
    from .retriever import Retriever

    path = Path(index_dir)
    if (path / "manifest.json").exists():
        from .index import IndexMismatchError

        raise IndexMismatchError(f"{path} holds an unsharded index: build the sharded one into another folder")
    sharded = build_sharded(list(docs), path, model, kind, index_type, n_shards=n_shards, backend=backend,
                            ray_address=ray_address, num_workers=num_workers, show_progress=show_progress,
                            model_kwargs=dict(model_kwargs or {}), **params)
    if sharded is None:  # torchrun rank > 0: its shards are encoded, rank 0 builds the indexes
        return None
    retriever = Retriever(ShardedView(sharded).set_model(model), model, hybrid=hybrid)
    try:
        retriever._write_sidecar(hybrid=hybrid or retriever.hybrid_default)  # the stored default search mode
        retriever._finish_build()
    except BaseException:
        retriever.close()
        raise
    return retriever
