"""IVF-PQ sizing: bytes per vector of the index layer's IVF-PQ structure, for planning shards (see SIZING.md).

The dense index wraps `IndexIVFPQ` in `IndexIDMap2` and keeps the float32 vectors in chunk files for exact
rerank. Per vector that is:

- PQ code: ceil(m * nbits / 8) bytes (in RAM and in the .faiss file);
- inverted-list id: 8 bytes (int64; the IVF stores the IDMap's sequential ids);
- IDMap2 id map: 8 bytes (int64, RAM + file) and its reverse hash map, RAM only, rebuilt on load
  (~50 bytes: measured 91 - 40 B/vector RSS for 1M ids with faiss 1.15);
- float32 vector for rerank: 4 * dim bytes on disk, memory-mapped (only candidate rows are paged in);
- per index, not per vector: coarse centroids nlist * dim * 4 and PQ codebooks 2^nbits * dim * 4 bytes.

Serialized file sizes were checked against FAISS: (file bytes for 40k - for 20k vectors) / 20k = code + 16.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["IVFPQSize", "ivfpq_bytes_per_vector", "ivfpq_index_bytes", "REVMAP_BYTES"]

REVMAP_BYTES = 50  # IndexIDMap2 reverse map (std::unordered_map node + bucket), measured, RAM only


@dataclass(frozen=True)
class IVFPQSize:
    """Bytes per vector of an IVF-PQ index (m sub-quantizers x nbits) over `dim`-dimensional vectors."""

    dim: int
    m: int
    nbits: int
    code: int  # PQ code
    ids: int  # inverted-list id + IDMap2 forward id (int64 each)
    revmap: int  # IDMap2 reverse hash map (RAM only)
    ram: int  # code + ids + revmap: resident per vector
    file: int  # code + ids: per vector in the .faiss file
    float_vector: int  # float32 copy on disk (memory-mapped) for exact rerank
    compression: float  # float32 size / PQ code size

    def as_dict(self) -> dict:
        return asdict(self)


def ivfpq_bytes_per_vector(dim: int, m: int, nbits: int = 8) -> IVFPQSize:
    """Per-vector cost of IVF-PQ with `m` sub-quantizers of `nbits` bits on `dim`-d vectors."""
    if dim <= 0 or m <= 0 or dim % m:
        raise ValueError(f"m={m} must be a positive divisor of dim={dim}")
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must be in [1, 16], got {nbits}")
    code = math.ceil(m * nbits / 8)
    ids = 16
    return IVFPQSize(dim=dim, m=m, nbits=nbits, code=code, ids=ids, revmap=REVMAP_BYTES,
                     ram=code + ids + REVMAP_BYTES, file=code + ids, float_vector=4 * dim,
                     compression=round(4 * dim / code, 1))


def ivfpq_index_bytes(n: int, dim: int, m: int, nbits: int = 8, nlist: int | None = None) -> dict[str, int]:
    """Total bytes for `n` vectors: RAM of the FAISS structure, its file, and the float32 rerank copy on disk.
    `nlist` defaults to the index layer's rule (~4 * sqrt(n))."""
    size = ivfpq_bytes_per_vector(dim, m, nbits)
    nlist = nlist or max(1, int(4 * math.sqrt(n)))
    fixed = nlist * dim * 4 + (2**nbits) * dim * 4
    return {"ram": n * size.ram + fixed, "file": n * size.file + fixed, "float_vectors_disk": n * size.float_vector,
            "fixed": fixed}
