"""`VectorStore`: the full-precision float32 vectors of an index, in chunk files `chunks/NNNNNNNN.safetensors`.

A dense chunk holds `ids` (n,) int64 and `vectors` (n, dim); a ColBERT chunk holds `ids` (n,), `offsets`
(n + 1,) and the concatenated token `vectors` (n_tokens, dim). Chunk files are written atomically before
their documents are committed in SQLite (the chunk registry lives there); vectors are memory-mapped, so
exact rerank and rebuilds read only the rows they need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..ragged import offsets_of, token_rows
from .docstore import ChunkInfo
from .errors import IndexCorruptError
from .storage import FileRecord, load_arrays, read_metadata, save_arrays, verify_file

__all__ = ["VectorStore", "ChunkData", "take_docs"]

CHUNK_DIR = "chunks"


@dataclass
class ChunkData:
    """The arrays of one chunk (`offsets` is None for dense chunks)."""

    seq: int
    iids: np.ndarray
    vectors: np.ndarray
    offsets: np.ndarray | None = None


def take_docs(vectors: np.ndarray, offsets: np.ndarray | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Select documents `rows` of a chunk: dense rows, or token ranges (with new offsets) for ColBERT."""
    rows = np.asarray(rows, dtype=np.int64)
    if offsets is None:
        return np.asarray(vectors[rows], dtype=np.float32), None
    token_idx, lengths = token_rows(offsets, rows)
    return np.asarray(vectors[token_idx], dtype=np.float32), offsets_of(lengths)


class VectorStore:
    """Registry of loaded chunk files with an iid -> (chunk, row) lookup."""

    def __init__(self, directory: str | Path, kind: str, dim: int, index_id: str | None = None, first_bound_chunk: int | None = None) -> None:
        self.dir = Path(directory) / CHUNK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.dim = dim
        self.index_id = index_id  # written into new chunk files, checked on register
        self.first_bound_chunk = first_bound_chunk  # chunks numbered from here on must carry the index id
        self._chunks: dict[int, ChunkData] = {}
        self._lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def chunk_name(seq: int) -> str:
        return f"{seq:08d}.safetensors"

    # ----------------------------------------------------------------- writing / registering
    def write_chunk(self, seq: int, iids: np.ndarray, vectors: np.ndarray, offsets: np.ndarray | None = None) -> ChunkInfo:
        """Write a chunk file atomically (not registered yet: commit its documents first)."""
        iids = np.ascontiguousarray(iids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"chunk vectors must be (n, {self.dim}), got {vectors.shape}")
        arrays = {"ids": iids, "vectors": vectors}
        if self.kind == "colbert":
            if offsets is None or len(offsets) != len(iids) + 1 or offsets[-1] != len(vectors):
                raise ValueError("ColBERT chunks need offsets of length n_docs + 1 ending at n_tokens")
            arrays["offsets"] = np.ascontiguousarray(offsets, dtype=np.int64)
        elif len(vectors) != len(iids):
            raise ValueError(f"{len(iids)} ids for {len(vectors)} vectors")
        name = self.chunk_name(seq)
        metadata = {"kind": self.kind, "seq": str(seq), **({"index_id": self.index_id} if self.index_id else {})}
        rec = save_arrays(self.dir / name, arrays, metadata=metadata)
        return ChunkInfo(seq, name, rec.sha256, rec.bytes, len(iids), len(vectors))

    def verify(self, info: ChunkInfo, check_hash: bool = True) -> None:
        verify_file(self.dir / info.name, FileRecord(info.sha256, info.bytes), check_hash=check_hash)

    def register(self, info: ChunkInfo) -> None:
        """Map a committed chunk file (vectors memory-mapped, ids/offsets in memory) after checking that it is
        the file the registry means: the index id and chunk number in its metadata (a chunk file of another
        index, or another chunk of this one, copied over it is refused)."""
        self._check_origin(info)
        names = ["ids", "vectors"] + (["offsets"] if self.kind == "colbert" else [])
        arrays = load_arrays(self.dir / info.name, names=names, mmap=True)
        iids = np.array(arrays["ids"], dtype=np.int64)
        offsets = np.array(arrays["offsets"], dtype=np.int64) if self.kind == "colbert" else None
        vectors = arrays["vectors"]
        if len(iids) != info.n_docs or len(vectors) != info.n_vectors or vectors.shape[1:] != (self.dim,):
            raise IndexCorruptError(f"chunk file {info.name!r} does not match its registry entry")
        self._chunks[info.seq] = ChunkData(info.seq, iids, vectors, offsets)
        self._lookup = None

    def _check_origin(self, info: ChunkInfo) -> None:
        meta = read_metadata(self.dir / info.name)
        found_id, found_seq = meta.get("index_id"), meta.get("seq")
        required = self.index_id is not None and self.first_bound_chunk is not None and info.seq >= self.first_bound_chunk
        if (found_id is not None and self.index_id is not None and found_id != self.index_id) or (found_id is None and required):
            raise IndexCorruptError(
                f"chunk file {info.name!r} belongs to another index (index id {found_id}, manifest.json says {self.index_id})"
            )
        if found_seq is not None and found_seq != str(info.seq):
            raise IndexCorruptError(f"chunk file {info.name!r} holds chunk {found_seq}, not chunk {info.seq}: it was replaced")

    def unregister(self, seq: int) -> None:
        self._chunks.pop(seq, None)
        self._lookup = None

    def clear(self) -> None:
        self._chunks.clear()
        self._lookup = None

    # ----------------------------------------------------------------- reading
    def __iter__(self) -> Iterator[ChunkData]:
        return iter([self._chunks[s] for s in sorted(self._chunks)])

    def __len__(self) -> int:
        return len(self._chunks)

    def chunk(self, seq: int) -> ChunkData:
        return self._chunks[seq]

    @property
    def n_vectors(self) -> int:
        return sum(len(c.vectors) for c in self._chunks.values())

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._lookup is None:
            chunks = list(self)
            iids = np.concatenate([c.iids for c in chunks]) if chunks else np.zeros(0, np.int64)
            seqs = np.concatenate([np.full(len(c.iids), c.seq, np.int64) for c in chunks]) if chunks else np.zeros(0, np.int64)
            rows = np.concatenate([np.arange(len(c.iids)) for c in chunks]) if chunks else np.zeros(0, np.int64)
            order = np.argsort(iids, kind="stable")
            self._lookup = (iids[order], seqs[order], rows[order])
        return self._lookup

    def locate(self, iids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, chunk seq, row in chunk) for each iid."""
        keys, seqs, rows = self._index()
        iids = np.asarray(iids, dtype=np.int64)
        if len(keys) == 0:
            none = np.full(len(iids), -1, np.int64)
            return np.zeros(len(iids), bool), none, none.copy()
        pos = np.minimum(np.searchsorted(keys, iids), len(keys) - 1)
        found = keys[pos] == iids
        return found, np.where(found, seqs[pos], -1), np.where(found, rows[pos], -1)

    def _require(self, iids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, seqs, rows = self.locate(iids)
        if not found.all():
            missing = np.asarray(iids)[~found][:5].tolist()
            raise KeyError(f"no stored full-precision vectors for internal ids {missing}")
        return seqs, rows

    def get_vectors(self, iids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense vectors (n, dim) of `iids`, in order."""
        iids = np.asarray(iids, dtype=np.int64)
        seqs, rows = self._require(iids)
        out = np.empty((len(iids), self.dim), dtype=np.float32)
        for seq in np.unique(seqs):
            sel = seqs == seq
            out[sel] = self._chunks[int(seq)].vectors[rows[sel]]
        return out

    def get_tokens(self, iids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """ColBERT token matrices of `iids`, in order."""
        seqs, rows = self._require(np.asarray(iids, dtype=np.int64))
        out = []
        for seq, row in zip(seqs.tolist(), rows.tolist()):
            c = self._chunks[seq]
            assert c.offsets is not None  # ColBERT chunks always have offsets
            out.append(np.array(c.vectors[c.offsets[row] : c.offsets[row + 1]], dtype=np.float32))  # copy: maps are read-only
        return out

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to `n` vectors (document vectors or tokens) drawn uniformly from all chunks, for training."""
        chunks = list(self)
        sizes = np.array([len(c.vectors) for c in chunks], dtype=np.int64)
        total = int(sizes.sum())
        if total == 0:
            return np.zeros((0, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        bounds = offsets_of(sizes)
        out = []
        for i, c in enumerate(chunks):
            sel = picks[(picks >= bounds[i]) & (picks < bounds[i + 1])] - bounds[i]
            if len(sel):
                out.append(np.asarray(c.vectors[sel], dtype=np.float32))
        return np.concatenate(out)
