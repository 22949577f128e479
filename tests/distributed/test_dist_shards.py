"""Embedding shards: local and torchrun-style encoding equal one process, resume, corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbert_retrieval.data import document_text
from mbert_retrieval.distributed import EncodeConfig, ShardCorruptError, ShardStore, encode_corpus, shard_boundaries
from mbert_retrieval.index import IndexMismatchError


def _texts(docs):
    return [document_text(d) for d in docs]


def test_boundaries_cover_the_corpus():
    assert shard_boundaries(10, 3) == [0, 3, 6, 10]
    assert shard_boundaries(2, 4) == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_local_shards_equal_single_process(tmp_path, docs, dense_model, colbert_model, kind):
    model = dense_model if kind == "dense" else colbert_model
    expected = model.encode_documents(_texts(docs))
    store = encode_corpus(docs, model, kind, tmp_path / "emb", n_shards=3)
    assert store.complete and store.n_shards == 3
    ids, vectors = store.merged()
    assert ids == [d["id"] for d in docs]
    if kind == "dense":
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    else:
        assert len(vectors) == len(expected)
        for got, want in zip(vectors, expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
    manifest = json.loads((tmp_path / "emb" / "shards.json").read_text())
    assert manifest["kind"] == kind and manifest["dim"] == model.dim and manifest["n_shards"] == 3
    assert [s["status"] for s in manifest["shards"]] == ["done"] * 3
    assert sum(s["n_docs"] for s in manifest["shards"]) == len(docs)
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


def test_torchrun_rank_split_equals_single_process(tmp_path, docs, dense_model, monkeypatch, counting):
    expected = dense_model.encode_documents(_texts(docs))
    out = tmp_path / "emb"
    owned = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        model = counting(dense_model)
        store = encode_corpus(docs, model, "dense", out, n_shards=4, backend="torchrun")
        owned[rank] = model.calls
        if rank == 0:
            assert not store.complete  # rank 1's shards are still missing
            assert [s.done for s in store.manifest.shards] == [True, False, True, False]
    assert owned == {0: 2, 1: 2}
    store = ShardStore.open(out)
    assert store.complete
    ids, vectors = store.merged()
    assert ids == [d["id"] for d in docs]
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_resume_skips_finished_shards(tmp_path, docs, dense_model, counting):
    out = tmp_path / "emb"
    model = counting(dense_model)
    encode_corpus(docs, model, "dense", out, n_shards=4)
    assert model.calls == 4
    # shard 2 "crashed" after its data file was written but before its sidecar (the commit point);
    # shard 3 left a temp file behind
    (out / ShardStore.done_name(2)).unlink()
    (out / ".tmp-shard-00003.safetensors-deadbeef").write_bytes(b"partial")
    model = counting(dense_model)
    store = encode_corpus(docs, model, "dense", out, n_shards=4)
    assert model.calls == 1 and store.complete
    assert not list(out.glob(".tmp-*"))
    model = counting(dense_model)
    encode_corpus(docs, model, "dense", out, n_shards=4)
    assert model.calls == 0
    np.testing.assert_allclose(store.merged()[1], dense_model.encode_documents(_texts(docs)), atol=1e-5)


def test_corrupt_shard_is_detected_and_redone(tmp_path, docs, dense_model, counting):
    out = tmp_path / "emb"
    store = encode_corpus(docs, dense_model, "dense", out, n_shards=3)
    path = out / ShardStore.file_name(1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip a bit inside the vectors
    path.write_bytes(bytes(data))
    with pytest.raises(ShardCorruptError, match="shard 1"):
        store.read_shard(1)
    with pytest.raises(ShardCorruptError):
        store.verify()
    store.read_shard(0)  # the others are fine
    model = counting(dense_model)
    store = encode_corpus(docs, model, "dense", out, n_shards=3)
    assert model.calls == 1
    store.verify()


def test_truncated_shard_is_detected(tmp_path, docs, dense_model):
    store = encode_corpus(docs, dense_model, "dense", tmp_path / "emb", n_shards=2)
    path = tmp_path / "emb" / ShardStore.file_name(0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ShardCorruptError, match="truncated"):
        store.read_shard(0)


def test_resume_into_a_folder_of_another_run_is_refused(tmp_path, docs, dense_model):
    out = tmp_path / "emb"
    encode_corpus(docs, dense_model, "dense", out, n_shards=2)
    with pytest.raises(IndexMismatchError, match="n_shards"):
        encode_corpus(docs, dense_model, "dense", out, n_shards=3)
    with pytest.raises(IndexMismatchError, match="corpus_sha256"):
        encode_corpus(docs[:-1], dense_model, "dense", out, n_shards=2)


def test_more_shards_than_documents(tmp_path, docs, dense_model):
    store = encode_corpus(docs[:3], dense_model, "dense", tmp_path / "emb", n_shards=5)
    ids, vectors = store.merged()
    assert ids == [d["id"] for d in docs[:3]] and vectors.shape == (3, dense_model.dim)


def test_bad_backend_and_missing_ray_message(tmp_path, docs, dense_model, monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        EncodeConfig(backend="spark")
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'mbert-retrieval\[ray\]'"):
        encode_corpus(docs, "some/model", "dense", tmp_path / "emb", n_shards=2, backend="ray")
    assert not (tmp_path / "emb").exists()
