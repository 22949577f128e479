"""The IVF-PQ segment file: a segment's inverted-list entries only (list number, PQ code, id), in safetensors.

The coarse quantizer and the PQ codebooks are the segment set's template (`codec.*.faiss`, written once after
training); a segment file written as a whole FAISS index would carry its own copy of them, which for a small
add is most of what it writes. Reading puts the entries back into an empty copy of the trained template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexCorruptError
from .storage import FileRecord, load_arrays, save_arrays

__all__ = ["IVF_SEGMENT_SUFFIX", "load_ivf_entries", "save_ivf_entries"]

IVF_SEGMENT_SUFFIX = ".ivf.safetensors"


def save_ivf_entries(index: Any, path: Path) -> FileRecord:
    """Write the entries of `index` (a FAISS IndexIDMap2 over an IndexIVF), with their external ids."""
    import faiss
    from faiss.contrib.inspect_tools import get_invlist

    ivf = faiss.extract_index_ivf(index)
    id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
    parts = [(list_no, *get_invlist(ivf.invlists, list_no)) for list_no in range(ivf.nlist) if ivf.invlists.list_size(list_no)]
    lists = np.concatenate([np.full(len(ids), n, np.int32) for n, ids, _ in parts]) if parts else np.zeros(0, np.int32)
    inner = np.concatenate([ids for _, ids, _ in parts]) if parts else np.zeros(0, np.int64)
    codes = np.concatenate([c for _, _, c in parts]) if parts else np.zeros((0, ivf.code_size), np.uint8)
    return save_arrays(path, {"ids": id_map[inner], "lists": lists, "codes": codes}, metadata={"format": "ivf-entries"})


def load_ivf_entries(index: Any, path: Path) -> None:
    """Add the entries `save_ivf_entries` wrote to `index`, an empty copy of the trained template."""
    import faiss

    a = load_arrays(path, ["ids", "lists", "codes"])
    ivf = faiss.extract_index_ivf(index)
    ids, lists, codes = a["ids"], a["lists"], a["codes"]
    if index.ntotal or codes.ndim != 2 or codes.shape[1] != ivf.code_size or not len(ids) == len(lists) == len(codes) \
            or (len(lists) and not 0 <= int(lists.min()) <= int(lists.max()) < ivf.nlist):  # fmt: skip
        raise IndexCorruptError(f"index file {Path(path).name!r} does not match the index's IVF-PQ quantizer")
    width = ivf.coarse_code_size()  # a standalone IVF code: the list number (little-endian) then the PQ code
    listno = lists.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
    ivf.add_sa_codes(np.ascontiguousarray(np.hstack([listno, codes])), np.arange(len(ids), dtype=np.int64))
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, dtype=np.int64), index.id_map)
    index.ntotal = ivf.ntotal
    index.construct_rev_map()
