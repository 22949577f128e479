"""IVF-PQ sizing numbers against what FAISS really writes."""

from __future__ import annotations

import numpy as np
import pytest

from mbert_retrieval.distributed.sizing import ivfpq_bytes_per_vector, ivfpq_index_bytes


def test_bytes_per_vector_formula():
    s = ivfpq_bytes_per_vector(384, 48, 8)
    assert (s.code, s.ids, s.file, s.float_vector) == (48, 16, 64, 1536)
    assert ivfpq_bytes_per_vector(768, 96, 4).code == 48
    assert ivfpq_bytes_per_vector(384, 48, 8).compression == 32.0
    with pytest.raises(ValueError):
        ivfpq_bytes_per_vector(384, 50, 8)
    total = ivfpq_index_bytes(10_000, 384, 48, 8, nlist=100)
    assert total["file"] == 10_000 * 64 + 100 * 384 * 4 + 256 * 384 * 4


def test_file_bytes_match_faiss():
    faiss = pytest.importorskip("faiss")
    d, m, nbits = 32, 8, 8
    x = np.random.default_rng(0).standard_normal((2000, d)).astype(np.float32)

    def size(n):
        index = faiss.IndexIDMap2(faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, 4, m, nbits, faiss.METRIC_INNER_PRODUCT))
        index.train(x)
        index.add_with_ids(x[:n], np.arange(n))
        return len(faiss.serialize_index(index))

    assert (size(2000) - size(1000)) / 1000 == ivfpq_bytes_per_vector(d, m, nbits).file
