import numpy as np
import pytest
import torch

from mbert_retrieval.index.late_interaction import padded_positions, resolve_device, resolve_dtype, token_positions
from mbert_retrieval.maxsim import maxsim, maxsim_packed, maxsim_rank, maxsim_rerank, pad_token_vectors, segment_max


def _docs(seed=0, dim=16, lengths=(3, 0, 5, 1, 9)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]


def test_maxsim_packed_equals_padded_maxsim():
    docs = _docs()
    queries = _docs(seed=1, lengths=(4, 7, 1))
    dp, dm = pad_token_vectors([torch.from_numpy(d) for d in docs])
    qp, qm = pad_token_vectors([torch.from_numpy(q) for q in queries])
    expected = maxsim(qp, dp, qm, dm)
    got = maxsim_packed(torch.from_numpy(np.concatenate(queries)), torch.tensor([4, 7, 1]),
                        torch.from_numpy(np.concatenate(docs)), torch.tensor([len(d) for d in docs]))
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got[:, 1] == 0).all()  # the empty document scores 0, as in `maxsim`


def test_maxsim_packed_bf16_is_close_to_float32():
    docs, queries = _docs(lengths=(30, 40)), _docs(seed=2, lengths=(8,))
    args = (torch.from_numpy(np.concatenate(queries)), torch.tensor([8]), torch.from_numpy(np.concatenate(docs)), torch.tensor([30, 40]))
    exact, fast = maxsim_packed(*args), maxsim_packed(*args, dtype=torch.bfloat16)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, exact, rtol=0.02, atol=0.1)


def test_maxsim_rank_orders_by_packed_scores():
    docs, (q,) = _docs(), _docs(seed=3, lengths=(6,))
    order, scores = maxsim_rank(q, docs, k=3)
    dp, dm = pad_token_vectors([torch.from_numpy(d) for d in docs])
    ref = maxsim(torch.from_numpy(q)[None], dp, None, dm)[0].numpy()
    np.testing.assert_array_equal(order, np.argsort(-ref)[:3])
    np.testing.assert_allclose(scores, ref[order], rtol=1e-5)


def test_maxsim_rerank_equals_ranking_each_querys_candidates_alone():
    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((int(rng.integers(1, 9)), 8)).astype(np.float32) for _ in range(12)]
    queries = [rng.standard_normal((int(rng.integers(1, 5)), 8)).astype(np.float32) for _ in range(4)]
    candidates = [np.array([3, 0, 7, 11]), np.array([5]), np.array([], dtype=np.int64), np.array([7, 3, 2, 9, 10, 1])]
    ranked = maxsim_rerank(queries, candidates, docs, k=3)
    for q, cand, (order, scores) in zip(queries, candidates, ranked):
        alone, alone_scores = maxsim_rank(q, [docs[c] for c in cand], k=3)
        np.testing.assert_array_equal(order, alone)
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-6)
        np.testing.assert_allclose(scores, [(q @ docs[c].T).max(1).sum() for c in cand[order]], rtol=1e-5)
    assert len(ranked[2][0]) == 0 and maxsim_rerank(queries[:1], [np.array([], dtype=np.int64)], [], k=3)[0][0].shape == (0,)


def test_segment_max_and_token_positions():
    values = torch.tensor([[1.0, -2.0], [3.0, -1.0], [0.5, 4.0]])
    out = segment_max(values, torch.tensor([0, 0, 2]), 3, empty=-7.0)
    torch.testing.assert_close(out, torch.tensor([[3.0, -1.0], [-7.0, -7.0], [0.5, 4.0]]))
    offsets = torch.tensor([0, 2, 2, 5, 6])
    pos, seg, lengths = token_positions(offsets, torch.tensor([2, 1, 0]))
    assert pos.tolist() == [2, 3, 4, 0, 1] and seg.tolist() == [0, 0, 0, 2, 2] and lengths.tolist() == [3, 0, 2]


def test_device_and_dtype_resolution(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8", torch.device("cpu"))


def test_padded_positions_repeat_the_last_row():
    offsets = torch.tensor([0, 2, 3, 7])
    pos = padded_positions(offsets, torch.tensor([2, 0, 1]))
    assert pos.tolist() == [[3, 4, 5, 6], [0, 1, 1, 1], [2, 2, 2, 2]]
    values = torch.randn(7, 3)
    expected = torch.stack([values[3:7].amax(0), values[0:2].amax(0), values[2:3].amax(0)])
    torch.testing.assert_close(values[pos].amax(1), expected)  # per-item max, no mask needed
    assert padded_positions(offsets, torch.tensor([], dtype=torch.long)).shape[0] == 0


def test_plaid_tensors_list_each_documents_distinct_codes():
    """The centroid interaction reads each document's distinct codes: the inverted lists read by document
    (a document absent from every list, e.g. deleted, has none)."""
    from mbert_retrieval.index.codec import ResidualCodec
    from mbert_retrieval.index.plaid_search import PlaidTensors

    codes = np.array([3, 1, 3, 0, 2, 2, 1, 0], np.uint16)
    doc_offsets = np.array([0, 3, 5, 5, 8], np.int64)  # doc 2 is empty
    pairs = sorted({(int(c), d) for d in range(4) for c in codes[doc_offsets[d] : doc_offsets[d + 1]] if d != 3})  # doc 3: deleted
    cells, docs = np.array(pairs).T
    ivf_offsets = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=4))]).astype(np.int64)
    codec = ResidualCodec(np.eye(4, 8, dtype=np.float32), np.zeros((8, 3), np.float32), np.zeros((8, 4), np.float32), 2)
    t = PlaidTensors.build(codec, torch.device("cpu"), torch.float32, codes, np.zeros((8, 2), np.uint8), np.ones(8, np.float32),
                           doc_offsets, ivf_offsets, docs.astype(np.int32))  # fmt: skip
    got = [t.doc_cells[t.doc_cell_offsets[d] : t.doc_cell_offsets[d + 1]].tolist() for d in range(4)]
    assert got == [[1, 3], [0, 2], [], []]
