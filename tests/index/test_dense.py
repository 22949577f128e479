import numpy as np
import pytest

from mbert_retrieval.index.dense import DenseConfig, DenseIndex, topk
from mbert_retrieval.index.errors import IndexStateError
from mbert_retrieval.index.vectors import VectorStore

from .conftest import clustered

DIM = 32


def _build(tmp_path, x, ids=None, **cfg):
    ids = np.arange(len(x), dtype=np.int64) if ids is None else ids
    store = VectorStore(tmp_path, "dense", x.shape[1])
    info = store.write_chunk(0, ids, x)
    store.register(info)
    index = DenseIndex(x.shape[1], DenseConfig(**cfg), store)
    if index.needs_training:
        index.train(store.sample(10_000), len(x))
    index.add(ids, x)
    return index


def _recall(approx, exact):
    return np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(approx, exact)])


@pytest.fixture(scope="module")
def data():
    x = clustered(3000, DIM, seed=1)
    q = clustered(50, DIM, seed=2)
    exact = topk(q @ x.T, np.arange(len(x)), 10)[1]
    return x, q, exact


def test_topk_padding():
    s, i = topk(np.array([[0.1, 0.5]], np.float32), np.array([7, 8]), 3)
    assert i.tolist() == [[8, 7, -1]] and np.isneginf(s[0, 2])


def test_flat_is_exact(tmp_path, data):
    x, q, exact = data
    index = _build(tmp_path, x)
    scores, ids = index.search(q, 10)
    np.testing.assert_array_equal(ids, exact)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_torch_backend_matches_faiss(tmp_path, data):
    x, q, exact = data
    index = _build(tmp_path, x, backend="torch")
    np.testing.assert_array_equal(index.search(q, 10)[1], exact)
    index.remove(np.arange(100))
    assert index.search(q, 10)[1].min() >= 100


@pytest.mark.parametrize(
    "cfg,bound",
    [
        ({"index_type": "hnsw", "hnsw_m": 16, "ef_construction": 80}, 0.9),
        ({"index_type": "ivfpq", "nprobe": 8}, 0.8),
        ({"index_type": "ivfpq", "nprobe": 8, "rerank": False}, 0.3),
        ({"index_type": "flat", "quantization": "int8"}, 0.9),
        ({"index_type": "hnsw", "quantization": "int8", "hnsw_m": 16}, 0.85),
        ({"index_type": "flat", "quantization": "binary", "rerank_factor": 30}, 0.65),  # 32 sign bits only
    ],
)
def test_recall_against_flat(tmp_path, data, cfg, bound):
    x, q, exact = data
    index = _build(tmp_path, x, **cfg)
    assert index.effective_type == cfg["index_type"]
    r = _recall(index.search(q, 10)[1], exact)
    assert r >= bound, (cfg, r)
    assert r <= 1.0


def test_ivfpq_defaults_and_untrained(tmp_path, data):
    x, q, _ = data
    index = DenseIndex(DIM, DenseConfig(index_type="ivfpq"))
    with pytest.raises(IndexStateError):
        index.search(q, 5)
    with pytest.raises(IndexStateError):
        index.add(np.arange(3), x[:3])
    index.train(x, len(x))
    assert index.trained_params["pq_m"] == 8 and 39 <= index.trained_params["nlist"] <= 4 * 55


def test_ivfpq_falls_back_to_flat_with_few_vectors(tmp_path, data):
    x, q, exact = data
    with pytest.warns(UserWarning, match="falling back"):
        index = _build(tmp_path, x[:200], index_type="ivfpq")
    assert index.effective_type == "flat"
    assert index.search(q[:1], 3)[1].shape == (1, 3)


@pytest.mark.parametrize("cfg", [{}, {"index_type": "hnsw"}, {"index_type": "ivfpq"}, {"quantization": "binary"}])
def test_filtered_search(tmp_path, data, cfg):
    x, q, _ = data
    index = _build(tmp_path, x, **cfg)
    allowed = np.arange(0, 3000, 7)
    for threshold in (10_000, 0):  # exact path over the allowed ids, then FAISS IDSelector path
        scores, ids = index.search(q[:5], 10, allowed=allowed, exact_filter_threshold=threshold)
        got = ids[ids >= 0]
        assert len(got) > 0 and np.isin(got, allowed).all()
    exact = topk(q[:5] @ x[allowed].T, allowed, 10)[1]
    np.testing.assert_array_equal(index.search(q[:5], 10, allowed=allowed)[1], exact)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq"])
def test_remove_add_and_roundtrip(tmp_path, data, index_type):
    x, q, _ = data
    index = _build(tmp_path, x, index_type=index_type)
    top = index.search(q[:3], 5)[1][:, 0]
    assert index.remove(top) == len(set(top.tolist()))
    assert index.remove(top) == 0  # idempotent
    assert not np.isin(index.search(q[:3], 5)[1], top).any()
    assert len(index) == 3000 - len(set(top.tolist()))
    assert not np.isin(index.ids(), top).any()
    files = index.save(tmp_path, 1)
    back = DenseIndex(DIM, DenseConfig(index_type=index_type), index.store)
    back.load(tmp_path, 1, index.state())
    if index_type == "flat":  # not saved: the facade's reconcile refills it from the chunk files
        assert files == {} and len(back) == 0
        live = index.ids()
        back.add(live, index.store.get_vectors(live))
    else:
        assert list(files) == ["dense.000001.faiss"]
    if index_type in ("hnsw", "ivfpq"):  # tombstones are not persisted: the facade re-applies deletions from SQLite
        back.remove(top)
    np.testing.assert_array_equal(back.search(q, 10)[1], index.search(q, 10)[1])
    if index_type in ("hnsw", "ivfpq"):
        before = index.search(q, 10)[1]
        index.compact()
        assert index.index.ntotal == len(index) and not index._tombstones
        assert _recall(index.search(q, 10)[1], before) > 0.9


def test_config_validation():
    with pytest.raises(ValueError, match="quantization"):
        DenseConfig(index_type="ivfpq", quantization="int8")
    with pytest.raises(ValueError, match="quantization"):
        DenseConfig(index_type="hnsw", quantization="binary")
    with pytest.raises(ValueError, match="torch"):
        DenseConfig(index_type="hnsw", backend="torch")
    with pytest.raises(ValueError, match="divisible"):
        DenseIndex(12, DenseConfig(quantization="binary"))
    with pytest.raises(TypeError):
        DenseIndex(DIM).search(np.zeros((1, DIM), np.float32), 1, bogus=1)


def test_gpu_routing_without_a_gpu(tmp_path, data, monkeypatch):
    """Where faiss-gpu runs a search (no GPU here: `index_cpu_to_gpu` is replaced by a recorder): plain
    searches go to the GPU copy, made once; filtered searches and k or nprobe above faiss-gpu's 2048 stay on
    the CPU index; a GPU that fails to take the index leaves search on the CPU."""
    import faiss

    x, q, exact = data
    index = _build(tmp_path, x, index_type="ivfpq", nlist=32, pq_m=8, nprobe=8, rerank=False)
    _, cpu_ids = index.search(q, 10)  # the CPU backend
    calls: list[str] = []

    class FakeGpuIndex:
        def __init__(self, cpu):
            self.cpu = cpu

        def search(self, x, k, params=None):
            calls.append(f"gpu k={k}")
            return self.cpu.search(x, k)

    monkeypatch.setattr(index, "_backend", lambda: "faiss-gpu")
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, cpu: FakeGpuIndex(cpu), raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", lambda: type("P", (), {"set_index_parameter":
                        lambda self, ix, name, v: calls.append(f"{name}={v}")})(), raising=False)
    index.search(q, 10)
    assert calls == ["nprobe=8", "gpu k=10"]
    calls.clear()
    index.search(q, 10)
    assert calls == ["nprobe=8", "gpu k=10"] and isinstance(index._gpu[1], FakeGpuIndex)  # cloned once
    calls.clear()
    index.search(q, 3000)
    index.search(q, 10, nprobe=4096)
    index.search(q, 10, allowed=np.arange(0, 3000, 2))
    assert calls == []  # all three on the CPU index

    index._gpu = None
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda *a: (_ for _ in ()).throw(RuntimeError("no GPU")))
    scores, ids = index.search(q, 10)
    assert calls == [] and np.array_equal(ids, cpu_ids)  # fell back to CPU, same results


def test_ivfpq_removes_many_times_and_compacts(tmp_path, data):
    """FAISS's id map over an IVF index loses its inner labels after one removal; a second removal aborted the
    whole process (faiss assertion). Deletes are tombstones now, dropped by compact with the training kept."""
    x, q, _ = data
    index = _build(tmp_path, x, index_type="ivfpq", nprobe=16)
    for batch in (np.arange(0, 50), np.arange(50, 80), np.arange(100, 101)):
        assert index.remove(batch) == len(batch)
    gone = set(range(80)) | {100}
    assert not gone & set(index.ids().tolist()) and len(index) == len(x) - len(gone)
    _, ids = index.search(q, 10)
    assert not gone & set(ids[ids >= 0].tolist())
    import faiss

    nlist = faiss.downcast_index(index.index.index).nlist
    index.compact()
    assert index.info()["tombstones"] == 0 and len(index) == len(x) - len(gone)
    _, after = index.search(q, 10)
    assert not gone & set(after[after >= 0].tolist())
    assert index.remove(np.arange(200, 210)) == 10  # and again after compaction
    assert faiss.downcast_index(index.index.index).nlist == nlist  # not retrained: the same coarse quantizer
