"""ShardedIndex: same answers as one index on the same vectors, filters, lazy opening, corruption."""

from __future__ import annotations

import numpy as np
import pytest

from mbert_retrieval.data import document_text
from mbert_retrieval.distributed import ShardedIndex, build_sharded, encode_corpus, is_sharded, merge_hits
from mbert_retrieval.index import Hit, Index, IndexCorruptError

QUERIES = ["shard merge", "dense retrieval model", "late interaction score", "query filter"]


def _single(tmp_path, docs, model, kind):
    """One flat index over the same vectors."""
    index = Index.create(tmp_path / "single", kind, "flat", model)
    index.add(docs, vectors=list(model.encode_documents([document_text(d) for d in docs])))
    index.finalize()
    return index


def _ids(results):
    return [[h.doc_id for h in hits] for hits in results]


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_sharded_search_equals_single_index(tmp_path, docs, dense_model, colbert_model, kind):
    model = dense_model if kind == "dense" else colbert_model
    single = _single(tmp_path, docs, model, kind)
    sharded = build_sharded(docs, tmp_path / "sharded", model, kind, "flat", n_shards=3)
    assert is_sharded(tmp_path / "sharded") and len(sharded) == len(docs)
    assert not (tmp_path / "sharded" / "_embeddings").exists()
    for k in (1, 5, len(docs) + 3):
        got, want = sharded.search(QUERIES, k=k), single.search(QUERIES, k=k)
        assert _ids(got) == _ids(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose([h.score for h in g], [h.score for h in w], rtol=1e-5, atol=1e-6)
    hit = sharded.search(QUERIES[:1], k=1)[0][0]
    doc = next(d for d in docs if d["id"] == hit.doc_id)
    assert (hit.text, hit.title or "", hit.metadata) == (doc["text"], doc["title"], doc["metadata"])
    # filters are applied by every shard
    flt = {"lang": "en", "year": {"$gte": 2003}}
    assert _ids(sharded.search(QUERIES, k=4, filter=flt)) == _ids(single.search(QUERIES, k=4, filter=flt))
    assert all(h.metadata["lang"] == "en" for hits in sharded.search(QUERIES, 10, filter=flt) for h in hits)
    single.close()
    sharded.close()


def test_open_lazily_with_bounded_open_shards(tmp_path, docs, dense_model):
    build_sharded(docs, tmp_path / "sh", dense_model, "dense", "flat", n_shards=4).close()
    reference = ShardedIndex.open(tmp_path / "sh", dense_model)
    want = _ids(reference.search(QUERIES, k=6))
    index = ShardedIndex.open(tmp_path / "sh", dense_model, max_open_shards=1)
    assert index.info()["open_shards"] == []
    assert _ids(index.search(QUERIES, k=6)) == want
    assert len(index.info()["open_shards"]) <= 1
    # one machine may serve a subset of shards; merging the subsets gives the full answer
    q = dense_model.encode_queries(QUERIES)
    parts = [ShardedIndex.open(tmp_path / "sh", shards=s).search(q, k=6) for s in ([0, 1], [2, 3])]
    assert _ids(merge_hits(parts, 6)) == want
    reference.close()
    index.close()


def test_resume_build_and_precomputed_shards(tmp_path, docs, dense_model, counting):
    emb = tmp_path / "sh" / "_embeddings"
    encode_corpus(docs, dense_model, "dense", emb, n_shards=2)
    model = counting(dense_model)
    index = build_sharded(docs, tmp_path / "sh", model, "dense", "flat", n_shards=2, keep_embeddings=True)
    assert model.calls == 0 and emb.is_dir()  # shards already encoded: nothing re-encoded
    assert len(index) == len(docs)


def test_corrupt_shard_index_is_detected(tmp_path, docs, dense_model):
    build_sharded(docs, tmp_path / "sh", dense_model, "dense", "hnsw", n_shards=2).close()
    faiss_file = next((tmp_path / "sh" / "shard-00001").glob("dense.*.faiss"))
    data = bytearray(faiss_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    index = ShardedIndex.open(tmp_path / "sh", dense_model)
    with pytest.raises(IndexCorruptError, match="sha256"):
        index.search(QUERIES, k=3)
    index.close()
    (tmp_path / "sh" / "shard-00001" / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="shard-00001"):
        ShardedIndex.open(tmp_path / "sh", dense_model)


def test_merge_hits_orders_by_score():
    a = [[Hit("a1", 0.9, ""), Hit("a2", 0.1, "")]]
    b = [[Hit("b1", 0.5, ""), Hit("b2", 0.4, "")]]
    assert [h.doc_id for h in merge_hits([a, b], 3)[0]] == ["a1", "b1", "b2"]
