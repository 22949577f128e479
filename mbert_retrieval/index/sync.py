"""Loading a consistent snapshot of an index folder: what `Index.open` and catching up (`Index._sync`) read.

A snapshot is the manifest, the document store as of one read transaction (chunk registry and live rows
read together), the chunk files it registers and the structure files the manifest lists. The reader holds
a read lease (`storage.read_lease`) while it loads, so writers delete none of those files meanwhile; it
never takes the writer lock, so readers never make a write fail. A reader that loses a race anyway (a
writer checkpointed between its manifest read and its store read: the store is two generations ahead, or
the chunks folded into the newer structure are gone) retries from a fresh manifest; an error is reported
as corruption only when the index did not move on during the attempt (or after `ATTEMPTS` tries).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from .docstore import DocStore
from .errors import IndexCorruptError
from .manifest import IndexManifest
from .storage import read_lease, verify_file
from .segments import SegmentSet, check_segment_state
from .structures import make_structure
from .vectors import VectorStore, take_docs

__all__ = ["DOCSTORE_NAME", "BUILD_PARAMS", "Snapshot", "load_snapshot", "load_vectors", "reconcile"]

DOCSTORE_NAME = "docs.sqlite"
BUILD_PARAMS = ("chunk_size", "autosave", "commit_seconds")  # per-session write settings (kept across reloads)
OWNER_PARAMS = ("retriever",)  # manifest.params keys recorded by layers above the index (Retriever: has retriever.json)
INDEX_PARAMS = ("window",)  # manifest.params keys of the index itself (not structure settings, not per-session overrides)
ATTEMPTS = 6


class Snapshot(NamedTuple):
    """A loaded, reconciled state of the index and the store's `data_version` read just before it."""

    manifest: IndexManifest
    store: VectorStore
    structure: Any
    data_version: int


def load_vectors(path: Path, manifest: IndexManifest, docstore: DocStore, overrides: Mapping[str, Any] | None,
                 verify: bool, previous: Any = None) -> tuple[VectorStore, Any]:  # fmt: skip
    """Chunk registry and search structure of `manifest`. The document store and the chunk files must be
    bound to the manifest (index id, generation: cheap, on every open). The structure files are read whole
    anyway, so their sha256 is always checked (a same-size corruption is caught on every open); the
    memory-mapped chunk files only with `verify`. `previous`: the structure this process loaded before
    (catching up): its segments that the manifest still lists, under the same name and checksum, are
    immutable and are reused as they are (neither read nor hashed again), so catching up costs O(new data)."""
    binding = docstore.check_binding(manifest.index_id, manifest.generation)
    store = VectorStore(path, manifest.kind, manifest.dim, manifest.index_id, binding.first_chunk)
    for chunk in docstore.chunks():
        store.verify(chunk, check_hash=verify)
        store.register(chunk)
    known = previous.loaded_records() if isinstance(previous, SegmentSet) else {}
    for name, record in manifest.file_records().items():
        if known.get(name) != record:
            verify_file(path / name, record, check_hash=True)
    not_structure = (*BUILD_PARAMS, *OWNER_PARAMS, *INDEX_PARAMS, "state")
    params = {k: v for k, v in {**manifest.params, **(overrides or {})}.items() if k not in not_structure}
    structure = make_structure(manifest.kind, manifest.index_type, manifest.quantization, manifest.dim, params, store)
    state = manifest.params.get("state", {})
    if isinstance(structure, SegmentSet):
        check_segment_state(state)
        structure.load(path, manifest.generation, state, manifest.file_records(), previous if isinstance(previous, SegmentSet) else None)
    else:
        structure.load(path, manifest.generation, state)
    return store, structure


def reconcile(docstore: DocStore, store: VectorStore, structure: Any, add_missing: bool = True) -> None:
    """Make `structure` hold exactly the live rows of the document store: rows it lacks are added from the
    chunk files (unless `add_missing` is off: an unfinished build, whose `finalize` adds them, possibly in
    parallel), rows of deleted documents removed (an untrained structure is left alone)."""
    if structure.needs_training and not structure.is_trained:
        return
    live = docstore.live_row_ids()
    present = structure.ids()
    if len(extra := present[~np.isin(present, live)]):
        structure.remove(extra)
    missing = live[~np.isin(live, present)]
    if not len(missing) or not add_missing:
        return
    found, seqs, rows = store.locate(missing)
    if not found.all():
        raise IndexCorruptError(f"{int((~found).sum())} documents of {DOCSTORE_NAME} are neither in the index structure nor in a chunk file")
    for seq in np.unique(seqs):
        sel = seqs == seq
        if getattr(structure, "needs_vectors", True):
            chunk = store.chunk(int(seq))
            vectors, offsets = take_docs(chunk.vectors, chunk.offsets, rows[sel])
            structure.add(missing[sel], vectors, offsets)
        else:
            structure.add(missing[sel])


def load_snapshot(path: Path, docstore: DocStore, keep: Mapping[str, Any], overrides: Mapping[str, Any] | None,
                  verify: bool, previous: Any = None) -> Snapshot:  # fmt: skip
    """Read the manifest (with the session settings `keep` put back into its params), then the store in one
    read transaction, the files they name, and reconcile, all under a read lease; retry from a fresh manifest
    when a writer moved the index on meanwhile (see the module docstring)."""
    for attempt in range(ATTEMPTS):
        version = docstore.data_version()
        with read_lease(path):
            manifest = IndexManifest.load(path)
            manifest.params.update(keep)
            try:
                with docstore.snapshot():
                    store, structure = load_vectors(path, manifest, docstore, overrides, verify, previous)
                    reconcile(docstore, store, structure, add_missing=manifest.state == "ready")
                return Snapshot(manifest, store, structure, version)
            except (IndexCorruptError, FileNotFoundError):
                if attempt == ATTEMPTS - 1 or not _moved_on(path, manifest, docstore, version):
                    raise
        time.sleep(0.005 * 2**attempt)
    raise AssertionError("unreachable")


def _moved_on(path: Path, manifest: IndexManifest, docstore: DocStore, version: int) -> bool:
    """Whether a writer changed the index since `manifest` and store version `version` were read."""
    if docstore.data_version() != version:
        return True
    try:
        return IndexManifest.load(path).generation != manifest.generation
    except (OSError, ValueError):
        return True
