import numpy as np
import pytest
import torch

from mbert_retrieval.index import exact as exact_mod
from mbert_retrieval.index.exact import ExactTokenIndex
from mbert_retrieval.index.vectors import VectorStore
from mbert_retrieval.maxsim import maxsim, pad_token_vectors

from .conftest import clustered_tokens

DIM = 16


def _index(tmp_path, docs, **kw):
    store = VectorStore(tmp_path, "colbert", DIM)
    half = len(docs) // 2
    for seq, part in enumerate((docs[:half], docs[half:])):  # two chunk files
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in part])])
        iids = np.arange(len(part)) + seq * half
        store.register(store.write_chunk(seq, iids, np.concatenate(part), offsets))
    index = ExactTokenIndex(DIM, store, **kw)
    index.add(np.arange(len(docs)))
    return index


def _reference(queries, docs):
    """Padded einsum MaxSim (float32), independent of the packed path the index uses."""
    dp, dm = pad_token_vectors([torch.from_numpy(d) for d in docs])
    qp, qm = pad_token_vectors([torch.from_numpy(q) for q in queries])
    return maxsim(qp, dp, qm, dm).numpy()


def test_batched_exact_search_matches_reference_and_single_queries(tmp_path, monkeypatch):
    docs = clustered_tokens(60, DIM, tokens=(2, 12), seed=2)
    rng = np.random.default_rng(0)
    queries = [docs[i][: int(rng.integers(1, 5))] + 0.1 for i in range(0, 60, 6)]
    monkeypatch.setattr(exact_mod, "_SIM_BUDGET", 64)  # many small blocks: block boundaries must not matter
    index = _index(tmp_path, docs, device="cpu")
    scores, ids = index.search(queries, 5)
    ref = _reference(queries, docs)
    for qi in range(len(queries)):
        np.testing.assert_allclose(scores[qi], ref[qi, ids[qi]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores[qi], np.sort(ref[qi])[::-1][:5], rtol=1e-5, atol=1e-5)
        one_s, one_i = index.search([queries[qi]], 5)
        np.testing.assert_array_equal(one_i[0], ids[qi])
        np.testing.assert_allclose(one_s[0], scores[qi], rtol=1e-6)


def test_exact_filter_device_and_options(tmp_path):
    docs = clustered_tokens(30, DIM, tokens=(2, 6), seed=4)
    index = _index(tmp_path, docs, device="cpu")
    assert index.device == torch.device("cpu") and index.dtype == torch.float32
    allowed = np.array([3, 17, 29])
    _, ids = index.search([docs[0][:2]], 5, allowed=allowed)
    assert set(ids[0].tolist()) == {3, 17, 29, -1}
    assert index.search([], 3)[1].shape == (0, 3)
    with pytest.raises(TypeError):
        index.search([docs[0]], 3, nprobe=2)
    with pytest.raises(ValueError, match="device must be"):
        ExactTokenIndex(DIM, index.store, device="gpu")
