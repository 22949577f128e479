"""Ray backend on a local 2-CPU cluster: shards equal to one process, resume, and a build of one index."""

from __future__ import annotations

import numpy as np
import pytest

from mbert_retrieval.data import document_text
from mbert_retrieval.distributed import EncodeConfig, build_sharded, encode_corpus
from mbert_retrieval.index import Index

pytest.importorskip("ray", reason="Ray is not installed (pip install 'mbert-retrieval[ray]')")


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_ray_shards_equal_single_process(tmp_path, ray_cluster, docs, tiny_modernbert, dense_model, colbert_model,
                                         kind):
    model = dense_model if kind == "dense" else colbert_model
    expected = model.encode_documents([document_text(d) for d in docs])
    cfg = EncodeConfig(n_shards=3, backend="ray", num_workers=2, batch_size=5,
                       model_kwargs={"dim": 16, "dtype": "float32"} if kind == "colbert" else {"dtype": "float32"})
    store = encode_corpus(docs, tiny_modernbert, kind, tmp_path / "emb", config=cfg)
    assert store.complete and store.dim == model.dim
    ids, vectors = store.merged()
    assert ids == [d["id"] for d in docs]
    if kind == "dense":
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    else:
        assert [len(v) for v in vectors] == [len(v) for v in expected]
        for got, want in zip(vectors, expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert ray_cluster.is_initialized()  # an existing Ray session is used and left running
    if kind == "colbert":
        return
    # resume on Ray: shard 1 lost its commit record; build_sharded re-encodes only it, then builds the index
    mtime0 = (tmp_path / "emb" / store.file_name(0)).stat().st_mtime_ns
    (tmp_path / "emb" / store.done_name(1)).unlink()
    (tmp_path / "sh").mkdir()
    (tmp_path / "emb").rename(tmp_path / "sh" / "_embeddings")
    index = build_sharded(docs, tmp_path / "sh", tiny_modernbert, "dense", "flat", n_shards=3, backend="ray",
                          num_workers=1, keep_embeddings=True, model_kwargs={"dtype": "float32"})
    assert (tmp_path / "sh" / "_embeddings" / store.file_name(0)).stat().st_mtime_ns == mtime0
    assert isinstance(index, Index) and len(index) == len(docs)
    index.close()
    reopened = Index.open(tmp_path / "sh", dense_model)
    q = dense_model.encode_queries(["shard merge"])
    want = [docs[i]["id"] for i in np.argsort(-(expected @ q[0]))[:3]]
    assert [h.doc_id for h in reopened.search(q, k=3)[0]] == want
    assert reopened.delete([want[0]]) == 1  # an ordinary, writable index
    assert [h.doc_id for h in reopened.search(q, k=2)[0]] == want[1:]
    reopened.close()


def test_ray_workers_split_windows_like_one_process(tmp_path, ray_cluster, tiny_modernbert, dense_model):
    from mbert_retrieval.windows import WindowConfig

    words = "retrieval shards merge windows tokens model index search query document encoder".split()
    docs = [{"id": f"d{i}", "title": f"Doc {i}" if i % 2 else "",
             "text": " ".join(words[(i + j) % len(words)] for j in range(10 + 30 * (i % 3)))} for i in range(9)]
    window = WindowConfig(tokens=32, overlap=4).to_dict()
    local = encode_corpus(docs, dense_model, "dense", tmp_path / "local", config=EncodeConfig(n_shards=2, window=window))
    remote = encode_corpus(docs, tiny_modernbert, "dense", tmp_path / "ray",
                           config=EncodeConfig(n_shards=2, backend="ray", num_workers=1, batch_size=4, window=window,
                                               model_kwargs={"dtype": "float32"}))
    n_split = 0
    for shard in range(2):
        want, got = local.read_shard(shard), remote.read_shard(shard)
        assert got.ids == want.ids
        for (gv, gw), (wv, ww) in zip(got.iter_documents(), want.iter_documents()):
            assert gw == ww
            np.testing.assert_allclose(gv, wv, atol=1e-5)
            n_split += gw is not None
    assert n_split > 0


def test_ray_tasks_build_the_segments(tmp_path, ray_cluster, docs, tiny_modernbert, dense_model):
    """With --ray the segments (one per shard) are built by Ray tasks and committed by the driver into one
    manifest: the same index as the local worker processes build."""
    kw = {"n_shards": 3, "hnsw_m": 4, "ef_construction": 16, "model_kwargs": {"dtype": "float32"}}
    on_ray = build_sharded(docs, tmp_path / "ray", tiny_modernbert, "dense", "hnsw", backend="ray", num_workers=1, **kw)
    local = build_sharded(docs, tmp_path / "local", tiny_modernbert, "dense", "hnsw", **kw)
    assert on_ray.info()["n_segments"] == local.info()["n_segments"] == 3
    q = dense_model.encode_queries(["shard merge", "late interaction"])
    got, want = on_ray.search(q, k=5), local.search(q, k=5)
    assert [[h.doc_id for h in r] for r in got] == [[h.doc_id for h in r] for r in want]
    on_ray.close()
    local.close()
