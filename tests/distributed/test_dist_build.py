"""`build_sharded`: the encoding split into embedding shards, then ONE ordinary index. Sharded == single for
every index kind, the result is writable, builds resume, old sharded folders are refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbert_retrieval.distributed import EMBEDDINGS_DIR, LegacyShardedError, build_sharded, encode_corpus
from mbert_retrieval.index import Index, IndexMismatchError

QUERIES = ["shard merge", "dense retrieval model", "late interaction score", "query filter", "worker cluster rank"]

# small settings that keep the approximate kinds approximate on a few hundred documents
CASES = {
    ("dense", "flat"): {},
    ("dense", "hnsw"): {"hnsw_m": 4, "ef_construction": 8, "ef_search": 4},
    ("dense", "ivfpq"): {"nlist": 16, "pq_m": 4, "nprobe": 2, "min_train_points": 64, "rerank": False},
    ("colbert", "flat"): {},
    ("colbert", "plaid"): {"n_centroids": 16, "nprobe": 1, "ncandidates": 16, "ndocs": 8},
}
EXACT = {("dense", "flat"), ("colbert", "flat")}


def _index_text(d: dict) -> str:
    return f"{d['title']} {d['text']}" if d.get("title") else d["text"]


def _single(path, docs, model, kind, index_type, params, chunk_size=4096, workers=1):
    """One process, the same vectors in the same order, the public Index API (`workers`: the structure built
    as that many segments, as a sharded build does with one segment per shard)."""
    index = Index.create(path, kind, index_type, model, chunk_size=chunk_size, **params)
    index.add(docs, vectors=list(model.encode_documents([_index_text(d) for d in docs])), defer_structure=workers > 1)
    index.finalize(workers=workers)
    return index


def _results(index, queries, k):
    return [[(h.doc_id, h.score) for h in hits] for hits in index.search(queries, k=k)]


def _assert_same(got, want) -> None:
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=1e-5, atol=1e-5)


def _exact(docs, model, queries, k):
    """Brute force over the model's vectors (dense: dot product; colbert: MaxSim)."""
    doc_vecs = model.encode_documents([_index_text(d) for d in docs])
    out = []
    for q in queries:
        if model.kind == "dense":
            scores = np.asarray(doc_vecs) @ q
        else:
            scores = np.array([(q @ np.asarray(m).T).max(axis=1).sum() for m in doc_vecs])
        order = np.argsort(-scores, kind="stable")[:k]
        out.append([(docs[i]["id"], float(scores[i])) for i in order])
    return out


@pytest.mark.parametrize("kind,index_type", list(CASES))
def test_sharded_build_equals_single_process_build(tmp_path, fake_model, doc_maker, kind, index_type):
    docs = doc_maker(300 if kind == "dense" else 120, seed=1)
    model = fake_model(kind, dim=16 if kind == "dense" else 8)
    params = CASES[(kind, index_type)]
    sharded = build_sharded(docs, tmp_path / "sh", model, kind, index_type, n_shards=3, **params)
    # each shard is its own commit and its own segment, built in parallel: the single-process build commits at
    # the same points (chunk_size = one shard) and builds the same segments (workers = shards)
    single = _single(tmp_path / "single", docs, model, kind, index_type, params, chunk_size=len(docs) // 3, workers=3)
    if (kind, index_type) not in EXACT:
        assert sharded.info()["n_segments"] == 3
    # an ordinary index folder: no per-shard folders, no sharded.json, the embedding shards removed
    assert (tmp_path / "sh" / "manifest.json").is_file() and not (tmp_path / "sh" / "sharded.json").exists()
    assert not (tmp_path / "sh" / EMBEDDINGS_DIR).exists() and not list((tmp_path / "sh").glob("shard-*"))
    assert isinstance(sharded, Index) and len(sharded) == len(docs) and sharded.manifest.state == "ready"
    queries = model.encode_queries(QUERIES)
    k = 10
    got, want = _results(sharded, queries, k), _results(single, queries, k)
    _assert_same(got, want)
    exact = _exact(docs, model, queries, k)
    if (kind, index_type) in EXACT:
        _assert_same(got, exact)
    elif index_type == "ivfpq":  # the comparison means something: this index really is approximate
        assert [[i for i, _ in r] for r in got] != [[i for i, _ in r] for r in exact]
    reopened = Index.open(tmp_path / "sh")
    _assert_same(_results(reopened, queries, k), want)
    reopened.close()
    sharded.close()
    single.close()


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_sharded_equals_single_with_a_real_model(tmp_path, docs, dense_model, colbert_model, kind):
    model = dense_model if kind == "dense" else colbert_model
    sharded = build_sharded(docs, tmp_path / "sh", model, kind, "flat", n_shards=3)
    single = _single(tmp_path / "single", docs, model, kind, "flat", {})
    queries = model.encode_queries(QUERIES)  # the index holds no model: it is searched with vectors
    for k in (1, 5, len(docs) + 3):
        _assert_same(_results(sharded, queries, k), _results(single, queries, k))
    flt = {"lang": "en", "year": {"$gte": 2003}}
    assert [[h.doc_id for h in r] for r in sharded.search(queries, k=4, filter=flt)] == \
        [[h.doc_id for h in r] for r in single.search(queries, k=4, filter=flt)]
    hit = sharded.search(queries[:1], k=1)[0][0]
    doc = next(d for d in docs if d["id"] == hit.doc_id)
    assert (hit.text, hit.title or "", hit.metadata) == (doc["text"], doc["title"], doc["metadata"])
    sharded.close()
    single.close()


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_a_sharded_build_is_writable(tmp_path, fake_model, doc_maker, index_type):
    docs = doc_maker(340, seed=2)
    model = fake_model("dense")
    index = build_sharded(docs[:300], tmp_path / "sh", model, "dense", index_type, n_shards=4,
                          **{**CASES[("dense", index_type)], "rerank": True} if index_type == "ivfpq" else
                          CASES[("dense", index_type)])
    more = docs[300:]
    assert index.add(more, vectors=list(model.encode_documents([_index_text(d) for d in more]))) == 40
    assert index.delete(["d000", "d301"]) == 2
    changed = {**docs[10], "text": "rewritten text"}
    assert index.update([changed], vectors=list(model.encode_documents([_index_text(changed)]))) == 1
    assert len(index) == 338
    index.compact()
    index.close()
    index = Index.open(tmp_path / "sh")
    assert len(index) == 338 and "d000" not in index and "d339" in index
    q = model.encode_documents([_index_text(docs[339])])  # a document's own vector finds it first
    assert index.search(q, k=1)[0][0].doc_id == "d339"
    assert index.get(["d010"])[0]["text"] == "rewritten text"
    assert all(h.doc_id not in ("d000", "d301") for h in index.search(q, k=50)[0])
    index.close()


def test_interrupted_build_resumes_without_reencoding(tmp_path, fake_model, doc_maker, monkeypatch):
    docs = doc_maker(90, seed=3)
    model = fake_model("dense")
    calls = {"n": 0}
    real_add = Index.add

    def add_then_crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed while the second shard is being indexed
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(Index, "add", add_then_crash)
    with pytest.raises(KeyboardInterrupt):
        build_sharded(docs, tmp_path / "sh", model, "dense", "flat", n_shards=3)
    monkeypatch.setattr(Index, "add", real_add)
    assert (tmp_path / "sh" / EMBEDDINGS_DIR).is_dir()  # kept until the index is finished
    with Index.open(tmp_path / "sh") as partial:
        assert len(partial) == 30 and partial.manifest.state == "building"
    model.calls = 0
    index = build_sharded(docs, tmp_path / "sh", model, "dense", "flat", n_shards=3)
    assert model.calls == 0 and len(index) == 90  # every shard was encoded already
    single = _single(tmp_path / "single", docs, model, "dense", "flat", {})
    queries = model.encode_queries(QUERIES)
    _assert_same(_results(index, queries, 7), _results(single, queries, 7))
    index.close()
    single.close()


def test_precomputed_shards_rerun_and_mismatch(tmp_path, docs, counting, dense_model):
    emb = tmp_path / "sh" / EMBEDDINGS_DIR
    encode_corpus(docs, dense_model, "dense", emb, n_shards=2)
    model = counting(dense_model)
    build_sharded(docs, tmp_path / "sh", model, "dense", "flat", n_shards=2, keep_embeddings=True).close()
    assert model.calls == 0 and emb.is_dir()  # shards already encoded: nothing re-encoded
    # a finished build: re-running it (any shard count) encodes nothing
    index = build_sharded(docs, tmp_path / "sh", model, "dense", "flat", n_shards=5)
    assert model.calls == 0 and len(index) == len(docs) and not emb.exists()
    index.close()
    with pytest.raises(IndexMismatchError, match="mbret add"):
        build_sharded(docs + [{"id": "new", "text": "another document"}], tmp_path / "sh", model, "dense", "flat")
    with pytest.raises(IndexMismatchError, match="hnsw"):
        build_sharded(docs, tmp_path / "sh", model, "dense", "hnsw")
    assert model.calls == 0
    with pytest.raises(ValueError, match="windows"):
        build_sharded(docs, tmp_path / "w", model, "dense", "flat", window=True)


def test_torchrun_ranks_share_the_encoding(tmp_path, fake_model, doc_maker, monkeypatch):
    """Two ranks one after the other (as torchrun runs them side by side): rank 1 encodes its shards and
    returns None; rank 0 encodes its own, then builds the one index."""
    docs = doc_maker(40, seed=4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = fake_model("dense")
    assert build_sharded(docs, tmp_path / "sh", rank1, "dense", "flat", n_shards=4, backend="torchrun") is None
    assert rank1.calls == 2 and not (tmp_path / "sh" / "manifest.json").exists()
    monkeypatch.setenv("RANK", "0")
    rank0 = fake_model("dense")
    index = build_sharded(docs, tmp_path / "sh", rank0, "dense", "flat", n_shards=4, backend="torchrun",
                          wait_timeout_s=5)
    assert rank0.calls == 2 and len(index) == 40
    single = _single(tmp_path / "single", docs, rank0, "dense", "flat", {})
    queries = rank0.encode_queries(QUERIES)
    _assert_same(_results(index, queries, 5), _results(single, queries, 5))
    index.close()
    single.close()


def test_a_folder_of_the_former_sharded_layout_is_refused(tmp_path, docs, dense_model):
    from mbert_retrieval import Retriever

    old = tmp_path / "old"
    (old / "shard-00000").mkdir(parents=True)
    (old / "sharded.json").write_text(json.dumps({"kind": "dense", "index_type": "hnsw", "model_id": "some/model",
                                                  "dim": 32, "state": "ready",
                                                  "shards": [{"name": "shard-00000"}, {"name": "shard-00001"}]}))
    for call in (lambda: Retriever.open(old), lambda: Retriever.open(old, load_model=False),
                 lambda: build_sharded(docs, old, dense_model, "dense", "flat"),
                 lambda: Retriever.build(old, docs, dense_model)):
        with pytest.raises(LegacyShardedError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "former layout" in message
        assert f"mbret index CORPUS {old}-new --shards 2 --model some/model --kind dense --index hnsw" in message
    assert isinstance(info.value, IndexMismatchError)  # exit code 2 in the CLI


def _long_docs(n: int = 12) -> list[dict]:
    words = "retrieval shards merge windows tokens model index search query document encoder".split()
    return [{"id": f"d{i}", "title": f"Doc {i}" if i % 2 else "", "metadata": {"group": i % 3},
             "text": " ".join(words[(i * 3 + j) % len(words)] for j in range(10 + 30 * (i % 3)))} for i in range(n)]


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_windows_with_shards_equal_a_single_process_build(tmp_path, dense_model, colbert_model, kind):
    from mbert_retrieval.doc_encoder import DocumentEncoder
    from mbert_retrieval.windows import WindowConfig

    model = dense_model if kind == "dense" else colbert_model
    encoder = DocumentEncoder(model)
    docs, window = _long_docs(), WindowConfig(tokens=32, overlap=4)
    sharded = build_sharded(docs, tmp_path / "sh", model, kind, "flat", n_shards=3, window=window)
    single = Index.create(tmp_path / "single", kind, "flat", model, window=window)
    single.add(docs, encoder=encoder)  # one process: the encoder splits and encodes the documents
    single.finalize()
    info = sharded.info()
    assert info["window"] == window.to_dict() == single.info()["window"]
    assert info["n_split_documents"] == single.info()["n_split_documents"] > 0
    assert info["n_windows"] == single.info()["n_windows"] > len(docs)
    queries = model.encode_queries(["windows tokens", "merge shards", "encoder query document"])
    _assert_same(_results(sharded, queries, 8), _results(single, queries, 8))
    got, want = sharded.search(queries, k=8), single.search(queries, k=8)
    assert [[h.window for h in r] for r in got] == [[h.window for h in r] for r in want]
    assert any(h.window is not None for r in got for h in r)
    # a document added later is split by the index itself, with the same setting
    extra = {"id": "new", "text": " ".join(["windows tokens merge"] * 30)}
    sharded.add([extra], encoder=encoder)
    single.add([extra], encoder=encoder)
    _assert_same(_results(sharded, queries, 8), _results(single, queries, 8))
    sharded.close()
    single.close()


def test_resume_with_other_window_settings_is_refused(tmp_path, dense_model, monkeypatch):
    from mbert_retrieval.windows import WindowConfig

    real_add = Index.add
    monkeypatch.setattr(Index, "add", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_sharded(_long_docs(), tmp_path / "sh", dense_model, "dense", "flat", n_shards=2,
                      window=WindowConfig(tokens=32))
    monkeypatch.setattr(Index, "add", real_add)
    with pytest.raises(IndexMismatchError, match="window"):
        build_sharded(_long_docs(), tmp_path / "sh", dense_model, "dense", "flat", n_shards=2)
