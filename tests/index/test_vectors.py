import numpy as np
import pytest

from mbert_retrieval.index.errors import IndexCorruptError
from mbert_retrieval.index.exact import ExactTokenIndex
from mbert_retrieval.index.vectors import VectorStore, take_docs
from mbert_retrieval.maxsim import maxsim_rank

from .conftest import clustered, clustered_tokens


def test_dense_chunks_lookup_and_sample(tmp_path):
    store = VectorStore(tmp_path, "dense", 8)
    x = clustered(30, 8)
    infos = [store.write_chunk(0, np.arange(0, 20), x[:20]), store.write_chunk(1, np.arange(100, 110), x[20:])]
    for info in infos:
        store.verify(info)
        store.register(info)
    assert len(store) == 2 and store.n_vectors == 30
    np.testing.assert_array_equal(store.get_vectors([105, 3, 0]), x[[25, 3, 0]])
    found, seqs, rows = store.locate([105, 50])
    assert found.tolist() == [True, False] and seqs[0] == 1 and rows[0] == 5
    with pytest.raises(KeyError):
        store.get_vectors([50])
    assert store.sample(12).shape == (12, 8) and store.sample(1000).shape == (30, 8)
    store.unregister(1)
    assert store.n_vectors == 20
    with pytest.raises(ValueError):
        store.write_chunk(2, np.arange(3), x[:4])


def test_colbert_chunks_and_take_docs(tmp_path):
    store = VectorStore(tmp_path, "colbert", 16)
    docs = clustered_tokens(10, 16, tokens=(2, 6))
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    info = store.write_chunk(3, np.arange(10, 20), np.concatenate(docs), offsets)
    store.register(info)
    got = store.get_tokens([17, 10])
    np.testing.assert_array_equal(got[0], docs[7])
    np.testing.assert_array_equal(got[1], docs[0])
    vecs, offs = take_docs(store.chunk(3).vectors, store.chunk(3).offsets, np.array([2, 5]))
    np.testing.assert_array_equal(vecs, np.concatenate([docs[2], docs[5]]))
    assert offs.tolist() == [0, len(docs[2]), len(docs[2]) + len(docs[5])]
    with pytest.raises(ValueError, match="offsets"):
        store.write_chunk(4, np.arange(2), np.concatenate(docs[:2]))
    # registry entry and file disagree
    bad = info.__class__(**{**info.__dict__, "n_docs": 11})
    with pytest.raises(IndexCorruptError, match=info.name):
        store.register(bad)


def test_exact_token_index(tmp_path):
    store = VectorStore(tmp_path, "colbert", 16)
    docs = clustered_tokens(40, 16, tokens=(3, 9), seed=1)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    store.register(store.write_chunk(0, np.arange(40), np.concatenate(docs), offsets))
    index = ExactTokenIndex(16, store, doc_batch=7)
    index.add(np.arange(40))
    queries = [docs[5][:3], docs[30][:2]]
    scores, ids = index.search(queries, 5)
    for q, s_row, i_row in zip(queries, scores, ids):
        order, exact = maxsim_rank(q, docs, k=5)
        np.testing.assert_array_equal(i_row, order)
        np.testing.assert_allclose(s_row, exact, rtol=1e-5)
    index.remove([5])
    assert 5 not in index.search(queries, 5)[1][0]
    assert set(index.search(queries, 5, allowed=np.array([1, 2]))[1][0].tolist()) == {1, 2, -1}
