"""Embedding shards on disk: the output of distributed encoding, the input the driver builds one index from.

Layout of a shard folder (`OUT/_embeddings` while `mbret index --shards N` builds `OUT`)::

    shards.json                 manifest: model_id, kind, dim, n_shards, corpus fingerprint, one record per shard
    shard-00003.safetensors     shard 3: vectors + document ids (no pickle)
    shard-00003.done.json       written (atomically) right after the data file: the shard is finished

Shard i holds documents `boundaries[i]:boundaries[i+1]` of the corpus, in corpus order, so concatenating
the shards in order gives back the corpus order. A shard file holds

- dense: `vectors` (n_rows, dim) float32, one row per document (or per window, see below);
- colbert: `vectors` (n_tokens, dim) float32, the token matrices of its rows stacked, and `lengths` (n_rows,);
- both: `id_bytes` (utf-8 of all ids concatenated) and `id_offsets` (n + 1,) int64;
- folders encoded with windows (`shards.json` records the window setting; format 2): `doc_rows` (n,) int64,
  the rows of each document (1: the whole document; k > 1: a long document split into k windows), and
  `spans` (rows of split documents, 2) int64, the character span of each window.

Every file is written atomically (temp file, fsync, rename: `index.storage`), so a crash leaves either no
file or a whole one. The `.done.json` sidecar is the commit point: a shard is finished when its sidecar exists
and the data file matches the sidecar's size and sha256; otherwise it is pending and is encoded again
(resume). Several processes (torchrun ranks) may finish shards concurrently: `shards.json` is rewritten
from the sidecars under an exclusive file lock, and the sidecars stay the source of truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..index.errors import IndexCorruptError, IndexMismatchError
from ..index.storage import (TMP_PREFIX, FileRecord, atomic_write_text, load_arrays, remove_quietly, save_arrays,
                             verify_file)
from ..ragged import offsets_of

__all__ = ["SHARDS_MANIFEST", "ShardRecord", "ShardsManifest", "ShardData", "ShardStore", "ShardCorruptError",
           "shard_boundaries", "ids_fingerprint"]

SHARDS_MANIFEST = "shards.json"
FORMAT_VERSION = 2  # 2: windows (`window`, `doc_rows`, `spans`); format 1 folders are read as they are
KINDS = ("dense", "colbert")


class ShardCorruptError(IndexCorruptError):
    """A shard file is missing, truncated or does not match its recorded sha256."""


def shard_boundaries(n_docs: int, n_shards: int) -> list[int]:
    """Start offsets of `n_shards` contiguous, near-equal shards (length n_shards + 1)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return [(i * n_docs) // n_shards for i in range(n_shards + 1)]


def ids_fingerprint(ids: Sequence[str]) -> str:
    """sha256 of the ids in order (detects resuming into a folder made from another corpus)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class ShardRecord:
    """One shard in the manifest (`status`: pending | done)."""

    shard: int
    start: int
    stop: int
    status: str = "pending"
    file: str = ""
    n_docs: int = 0
    n_vectors: int = 0
    sha256: str = ""
    bytes: int = 0

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass
class ShardsManifest:
    """Contents of `shards.json`."""

    model_id: str
    kind: str
    n_docs: int
    n_shards: int
    boundaries: list[int]
    corpus_sha256: str
    dim: int | None = None  # known once the first shard is written
    model_config: dict = field(default_factory=dict)
    window: dict | None = None  # `WindowConfig.to_dict()` when long documents are split into windows
    shards: list[ShardRecord] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def complete(self) -> bool:
        return all(r.done for r in self.shards)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardsManifest:
        try:
            shards = [ShardRecord(**r) for r in data.pop("shards")]
            m = cls(**data, shards=shards)
        except (KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{SHARDS_MANIFEST} is invalid: {exc}") from exc
        if m.format_version > FORMAT_VERSION:
            raise IndexMismatchError(f"{SHARDS_MANIFEST} format {m.format_version} is newer than supported")
        if m.kind not in KINDS or len(m.shards) != m.n_shards or len(m.boundaries) != m.n_shards + 1:
            raise IndexCorruptError(f"{SHARDS_MANIFEST} is inconsistent (kind / n_shards / boundaries)")
        return m


@dataclass
class ShardData:
    """The arrays of one shard. `lengths` (tokens per row) is None for dense shards; `doc_rows` (rows per
    document) and `spans` (one per window row) are None unless the shard was encoded with windows."""

    shard: int
    ids: list[str]
    vectors: np.ndarray
    lengths: np.ndarray | None = None
    doc_rows: np.ndarray | None = None
    spans: np.ndarray | None = None

    @property
    def offsets(self) -> np.ndarray | None:
        """Token offsets (n_rows + 1,) for colbert shards."""
        if self.lengths is None:
            return None
        return offsets_of(self.lengths)

    def _row_bounds(self) -> np.ndarray:
        rows = np.ones(len(self.ids), np.int64) if self.doc_rows is None else np.asarray(self.doc_rows, np.int64)
        return offsets_of(rows)

    def iter_documents(self) -> Iterator[tuple[np.ndarray | list[np.ndarray], list[tuple[int, int]] | None]]:
        """(vectors, windows) per document, lazily: dense, a (dim,) row, or an (k, dim) array for a document
        split into k windows; colbert, a token matrix, or k of them; `windows` the k character spans or None."""
        bounds, off = self._row_bounds(), self.offsets
        window_row = 0
        for j in range(len(self.ids)):
            a, b = int(bounds[j]), int(bounds[j + 1])
            if off is None:
                vecs: np.ndarray | list[np.ndarray] = self.vectors[a] if b - a == 1 else self.vectors[a:b]
            else:
                mats = [self.vectors[off[r]: off[r + 1]] for r in range(a, b)]
                vecs = mats[0] if b - a == 1 else mats
            spans = None
            if b - a > 1:
                assert self.spans is not None  # several rows: a windowed shard
                spans = [(int(s), int(e)) for s, e in self.spans[window_row: window_row + b - a]]
                window_row += b - a
            yield vecs, spans

    def documents(self) -> list[np.ndarray | list[np.ndarray]]:
        """Per-document vectors (see `iter_documents`)."""
        return [v for v, _ in self.iter_documents()]


def _encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = [str(i).encode("utf-8") for i in ids]
    return np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), offsets_of([len(r) for r in raw])


def _decode_ids(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    buf = bytes(np.asarray(data, dtype=np.uint8))
    return [buf[offsets[i]: offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


class ShardStore:
    """A folder of embedding shards with its `shards.json` manifest."""

    def __init__(self, directory: str | os.PathLike, manifest: ShardsManifest) -> None:
        self.dir = Path(directory)
        self.manifest = manifest

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create_or_resume(cls, directory: str | os.PathLike, ids: Sequence[str], model_id: str, kind: str,
                         n_shards: int, model_config: dict | None = None, window: dict | None = None) -> ShardStore:
        """Open the shard folder for (re)encoding `ids`; a folder made for another corpus, model, kind, shard
        count or window setting raises `IndexMismatchError` (use a fresh folder). `window`:
        `WindowConfig.to_dict()` when long documents are split into windows."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fp = ids_fingerprint(ids)
        with cls._locked(directory):
            if (directory / SHARDS_MANIFEST).is_file():
                store = cls.open(directory)
                m = store.manifest
                wanted = {"model_id": model_id, "kind": kind, "n_shards": n_shards, "corpus_sha256": fp,
                          "window": window}
                for key, value in wanted.items():
                    if getattr(m, key) != value:
                        raise IndexMismatchError(
                            f"{directory / SHARDS_MANIFEST} was made with {key}={getattr(m, key)!r}, "
                            f"not {value!r}: use another output folder or delete this one")
                store._refresh_locked()
                return store
            bounds = shard_boundaries(len(ids), n_shards)
            m = ShardsManifest(model_id=model_id, kind=kind, n_docs=len(ids), n_shards=n_shards, boundaries=bounds,
                               corpus_sha256=fp, model_config=dict(model_config or {}), window=window,
                               shards=[ShardRecord(i, bounds[i], bounds[i + 1]) for i in range(n_shards)])
            store = cls(directory, m)
            store._save_manifest()
            return store

    @classmethod
    def open(cls, directory: str | os.PathLike) -> ShardStore:
        path = Path(directory) / SHARDS_MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {SHARDS_MANIFEST} in {directory}: not a shard folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexCorruptError(f"{path} is corrupt: {exc}") from exc
        return cls(directory, ShardsManifest.from_dict(data))

    # ----------------------------------------------------------------- names / state
    @staticmethod
    def file_name(shard: int) -> str:
        return f"shard-{shard:05d}.safetensors"

    @staticmethod
    def done_name(shard: int) -> str:
        return f"shard-{shard:05d}.done.json"

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def dim(self) -> int | None:
        return self.manifest.dim

    @property
    def n_shards(self) -> int:
        return self.manifest.n_shards

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def shard_range(self, shard: int) -> tuple[int, int]:
        b = self.manifest.boundaries
        return b[shard], b[shard + 1]

    def _sidecar(self, shard: int) -> ShardRecord | None:
        found = self._read_sidecar(shard)
        return None if found is None else found[0]

    def _read_sidecar(self, shard: int) -> tuple[ShardRecord, int] | None:
        """(record, dim) of a finished shard, or None (no sidecar, or an unreadable one: the shard is redone)."""
        path = self.dir / self.done_name(shard)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            dim = int(data.pop("dim"))
            rec = ShardRecord(**data)
        except (ValueError, TypeError, KeyError):
            return None
        return (rec, dim) if rec.shard == shard and rec.done else None

    def pending(self, shards: Sequence[int] | None = None, verify: bool = True) -> list[int]:
        """Shards (of `shards`, default all) still to encode: no sidecar, or a data file that does not match
        it; their leftover files (and temp files of interrupted writes) are removed. Pass only the shards this
        process owns when other processes write to the same folder."""
        todo = []
        for i in range(self.n_shards) if shards is None else shards:
            rec = self._sidecar(i)
            ok = rec is not None
            if rec is not None:
                try:
                    verify_file(self.dir / rec.file, FileRecord(rec.sha256, rec.bytes), check_hash=verify)
                except IndexCorruptError:
                    ok = False
            for tmp in self.dir.glob(f"{TMP_PREFIX}shard-{i:05d}.*"):
                remove_quietly(tmp)
            if not ok:
                remove_quietly(self.dir / self.done_name(i))
                remove_quietly(self.dir / self.file_name(i))
                todo.append(i)
        self.refresh()
        return todo

    def refresh(self) -> ShardsManifest:
        """Fold the sidecars of shards finished (possibly by other processes) into `shards.json`."""
        with self._locked(self.dir):
            return self._refresh_locked()

    def _refresh_locked(self) -> ShardsManifest:
        m = self.manifest
        for i in range(self.n_shards):
            found = self._read_sidecar(i)
            start, stop = self.shard_range(i)
            m.shards[i] = found[0] if found is not None else ShardRecord(i, start, stop)
            if found is not None and m.dim is None and found[0].n_vectors:
                m.dim = found[1]
        self._save_manifest()
        return m

    def _save_manifest(self) -> None:
        atomic_write_text(self.dir / SHARDS_MANIFEST, json.dumps(self.manifest.to_dict(), indent=2) + "\n")

    @staticmethod
    @contextlib.contextmanager
    def _locked(directory: Path) -> Iterator[None]:
        """Blocking exclusive lock on `directory/.shards.lock` (manifest updates from several processes)."""
        from filelock import FileLock

        with FileLock(str(Path(directory) / ".shards.lock")):
            yield

    # ----------------------------------------------------------------- writing
    def write_shard(self, shard: int, ids: Sequence[str], vectors: Any,
                    windows: Sequence[Sequence[tuple[int, int]] | None] | None = None) -> ShardRecord:
        """Write shard `shard` (dense: (n, dim) array; colbert: one (n_i, dim) matrix per document), then its
        sidecar, then fold it into the manifest. A folder encoded with windows takes `windows` (per document,
        its window spans or None) and, for a document split into k windows, k rows (dense: a (k, dim) array;
        colbert: k matrices) in place of its vector."""
        start, stop = self.shard_range(shard)
        ids = [str(i) for i in ids]
        if len(ids) != stop - start:
            raise ValueError(f"shard {shard} holds documents {start}:{stop}, got {len(ids)} ids")
        arrays: dict[str, np.ndarray] = {}
        if self.manifest.window is not None:
            vectors = self._window_rows(ids, vectors, windows, arrays)
        elif windows is not None and any(w is not None for w in windows):
            raise ValueError(f"{self.dir} was made without windows: cannot store window spans")
        if self.kind == "dense":
            mat = np.asarray(vectors, dtype=np.float32) if len(vectors) else np.zeros((0, self.dim or 0), np.float32)
            if mat.ndim != 2 or len(mat) != int(arrays.get("doc_rows", np.ones(len(ids))).sum()):
                raise ValueError(f"dense shard needs ({len(ids)}, dim) vectors, got {mat.shape}")
        else:
            mats = [np.asarray(v, dtype=np.float32) for v in vectors]
            if len(mats) != int(arrays.get("doc_rows", np.ones(len(ids))).sum()) or any(v.ndim != 2 for v in mats):
                raise ValueError(f"colbert shard needs {len(ids)} (n_i, dim) matrices")
            dims = {v.shape[1] for v in mats}
            if len(dims) > 1:
                raise ValueError(f"token matrices of different dims {sorted(dims)}")
            arrays["lengths"] = np.array([len(v) for v in mats], dtype=np.int64)
            mat = np.concatenate(mats) if mats else np.zeros((0, self.dim or 0), np.float32)
        dim = int(mat.shape[1])
        if self.dim is not None and mat.size and dim != self.dim:
            raise IndexMismatchError(f"shard {shard} has dim {dim}, the other shards {self.dim}")
        arrays["vectors"] = mat
        arrays["id_bytes"], arrays["id_offsets"] = _encode_ids(ids)
        name = self.file_name(shard)
        rec = save_arrays(self.dir / name, arrays, metadata={"kind": self.kind, "shard": str(shard)})
        record = ShardRecord(shard, start, stop, "done", name, len(ids), int(len(mat)), rec.sha256, rec.bytes)
        atomic_write_text(self.dir / self.done_name(shard), json.dumps({**asdict(record), "dim": dim}) + "\n")
        self.refresh()
        return record

    def _window_rows(self, ids: list[str], vectors: Any, windows: Any, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Rows of a windowed shard: every document's row(s) in order; `doc_rows` and `spans` into `arrays`."""
        windows = list(windows) if windows is not None else [None] * len(ids)
        vectors = list(vectors)
        if len(windows) != len(ids) or len(vectors) != len(ids):
            raise ValueError(f"shard needs vectors and windows for its {len(ids)} documents")
        rows: list[np.ndarray] = []
        counts, spans = [], []
        for doc_id, vecs, win in zip(ids, vectors, windows):
            if win is None:
                rows.append(np.asarray(vecs, dtype=np.float32))
                counts.append(1)
                continue
            parts = list(vecs)
            if len(parts) != len(win) or len(win) < 2:
                raise ValueError(f"document {doc_id!r}: {len(win)} windows need as many rows, got {len(parts)}")
            rows += [np.asarray(v, dtype=np.float32) for v in parts]
            counts.append(len(win))
            spans += [(int(a), int(b)) for a, b in win]
        arrays["doc_rows"] = np.asarray(counts, dtype=np.int64)
        arrays["spans"] = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        return rows

    # ----------------------------------------------------------------- reading
    def read_shard(self, shard: int, verify: bool = True, mmap: bool = False) -> ShardData:
        """Arrays of a finished shard; `ShardCorruptError` when the file does not match its record."""
        rec = self.manifest.shards[shard]
        if not rec.done:
            rec = self._sidecar(shard) or rec
        if not rec.done:
            raise ShardCorruptError(f"shard {shard} in {self.dir} is not finished (status {rec.status!r})")
        path = self.dir / rec.file
        try:
            verify_file(path, FileRecord(rec.sha256, rec.bytes), check_hash=verify)
        except IndexCorruptError as exc:
            raise ShardCorruptError(f"shard {shard} in {self.dir}: {exc}") from exc
        names = ["vectors", "id_bytes", "id_offsets"] + (["lengths"] if self.kind == "colbert" else []) \
            + (["doc_rows", "spans"] if self.manifest.window is not None else [])
        try:
            arrays = load_arrays(path, names=names, mmap=mmap)
        except IndexCorruptError as exc:
            raise ShardCorruptError(f"shard {shard} in {self.dir}: {exc}") from exc
        ids = _decode_ids(arrays["id_bytes"], arrays["id_offsets"])
        lengths = np.asarray(arrays["lengths"], dtype=np.int64) if self.kind == "colbert" else None
        doc_rows, spans = arrays.get("doc_rows"), arrays.get("spans")
        if len(ids) != rec.n_docs or len(arrays["vectors"]) != rec.n_vectors or \
                (doc_rows is not None and (spans is None or len(doc_rows) != len(ids)
                                           or int(doc_rows[doc_rows > 1].sum()) != len(spans))):
            raise ShardCorruptError(f"shard {shard} in {self.dir} does not match its manifest record")
        return ShardData(shard, ids, arrays["vectors"], lengths, doc_rows, spans)

    def iter_shards(self, verify: bool = True, mmap: bool = False) -> Iterator[ShardData]:
        for i in range(self.n_shards):
            yield self.read_shard(i, verify=verify, mmap=mmap)

    def verify(self) -> None:
        """Check every shard against its sha256 (raises `ShardCorruptError`)."""
        for i in range(self.n_shards):
            rec = self.manifest.shards[i]
            if not rec.done:
                raise ShardCorruptError(f"shard {i} in {self.dir} is not finished")
            try:
                verify_file(self.dir / rec.file, FileRecord(rec.sha256, rec.bytes))
            except IndexCorruptError as exc:
                raise ShardCorruptError(f"shard {i} in {self.dir}: {exc}") from exc

    def merged(self) -> tuple[list[str], Any]:
        """All ids and vectors in corpus order (dense: one array; colbert, or a folder encoded with windows:
        one entry per document, as `ShardData.iter_documents` gives them)."""
        ids: list[str] = []
        parts: list = []
        flat = self.kind == "dense" and self.manifest.window is None
        for data in self.iter_shards():
            ids += data.ids
            if not flat:
                parts += data.documents()
            elif len(data.ids):  # an empty shard may have been written before the dim was known: (0, 0)
                parts.append(np.asarray(data.vectors))
        if flat:
            return ids, np.concatenate(parts) if parts else np.zeros((0, self.dim or 0), np.float32)
        return ids, parts
