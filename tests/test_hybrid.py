"""BM25 (bm25s) index and reciprocal rank fusion; hybrid search through the Retriever."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbert_retrieval.hybrid import BM25Index, rrf

TEXTS = {
    "cat": "the cat sat on the mat and purred",
    "dog": "dogs bark at the mailman every morning",
    "py": "python lists are mutable while tuples are immutable",
    "rust": "rust ownership prevents data races at compile time",
    "zebra": "a zebra named Quagmire lives in the savanna",
}


# ---------------------------------------------------------------------------------------------- rrf
def test_rrf_sums_reciprocal_ranks():
    fused = rrf([["a", "b", "c"], ["b", "c", "d"]], k=60)
    scores = dict(fused)
    assert [d for d, _ in fused] == ["b", "c", "a", "d"]
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 63)


def test_rrf_weights_limit_duplicates_and_ties():
    assert rrf([["a"], ["b"]], weights=[1.0, 2.0])[0][0] == "b"
    assert rrf([["a", "b", "c"]], limit=2) == [("a", 1 / 61), ("b", 1 / 62)]
    # an id repeated inside one list counts once, at its best rank
    assert dict(rrf([["a", "a", "b"]]))["a"] == pytest.approx(1 / 61)
    # equal scores keep first appearance order
    assert [d for d, _ in rrf([["x", "y"], ["y", "x"]])] == ["x", "y"]
    assert rrf([]) == []
    with pytest.raises(ValueError):
        rrf([["a"]], weights=[1.0, 2.0])
    with pytest.raises(ValueError):
        rrf([["a"]], k=-1)


# ---------------------------------------------------------------------------------------------- BM25
def test_bm25_search_filter_and_unknown_terms():
    bm25 = BM25Index.build(list(TEXTS), list(TEXTS.values()))
    assert len(bm25) == 5
    hits = bm25.search(["zebra savanna", "python tuples", "xylophone"], k=3)
    assert hits[0][0][0] == "zebra"
    assert hits[1][0][0] == "py"
    assert hits[2] == []  # no shared term: nothing, rather than zero-score noise
    assert all(score > 0 for row in hits for _, score in row)
    assert bm25.search("cat mat", k=10, allowed=["dog", "py"]) == [[]]
    assert bm25.search("cat dogs", k=10, allowed=["dog"])[0][0][0] == "dog"
    assert bm25.search("cat", k=10, allowed=[]) == [[]]
    with pytest.raises(ValueError):
        bm25.search("cat", k=0)


def test_bm25_save_load_roundtrip_without_pickle(tmp_path):
    bm25 = BM25Index.build(list(TEXTS), list(TEXTS.values()))
    folder = bm25.save(tmp_path / "bm25")
    loaded = BM25Index.load(folder)
    assert loaded.doc_ids == bm25.doc_ids
    assert loaded.search("rust compile", k=2) == bm25.search("rust compile", k=2)
    # on disk: .npy arrays that load with allow_pickle=False, and JSON
    names = {p.name for p in folder.iterdir()}
    assert names <= {"data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.index.json",
                     "params.index.json", "doc_ids.json", "bm25.json"}, names
    for npy in folder.glob("*.npy"):
        np.load(npy, allow_pickle=False)
    for js in folder.glob("*.json"):
        json.loads(js.read_text())
    # saving again replaces the folder as a whole and leaves no temporary siblings
    BM25Index.build(["only"], ["just one document"]).save(folder)
    assert BM25Index.load(folder).doc_ids == ["only"]
    assert [p.name for p in tmp_path.iterdir()] == ["bm25"]


def test_bm25_empty_and_errors(tmp_path):
    empty = BM25Index.build([], [])
    assert empty.search(["anything"], k=5) == [[]]
    empty.save(tmp_path / "e")
    assert len(BM25Index.load(tmp_path / "e")) == 0
    with pytest.raises(ValueError):
        BM25Index.build(["a", "a"], ["x", "y"])
    with pytest.raises(ValueError):
        BM25Index.build(["a"], ["x", "y"])
    with pytest.raises(FileNotFoundError):
        BM25Index.load(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- hybrid
def test_hybrid_retriever_surfaces_exact_terms_and_tracks_updates(tmp_path, tiny_modernbert):
    """A random tiny model ranks by noise; BM25 fused in brings the exact-term match to the top, and the BM25
    index follows add / delete."""
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v, "metadata": {"animal": k in ("cat", "dog", "zebra")}} for k, v in TEXTS.items()]
    r = Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True)
    assert (tmp_path / "idx" / "bm25" / "doc_ids.json").is_file()
    assert r.search("Quagmire", k=2)[0].id == "zebra"
    assert r.search("Quagmire", k=5, hybrid=False) is not None
    # filter applies to both lists
    assert all(x.metadata["animal"] is False for x in r.search("Quagmire python", k=5, filter={"animal": False}))

    r.add([{"id": "new", "text": "the okapi is a shy forest giraffe"}])
    assert r.search("okapi", k=1)[0].id == "new"
    r.delete(["new"])
    assert "new" not in [x.id for x in r.search("okapi giraffe", k=5)]
    r.update([{"id": "cat", "text": "felines enjoy sunbeams"}])
    assert r.search("sunbeams", k=1)[0].id == "cat"
    r.close()

    # hybrid is remembered; a stale marker or a count mismatch makes BM25 rebuild on open
    r2 = Retriever.open(tmp_path / "idx")
    assert r2.hybrid
    assert r2.search("sunbeams", k=1)[0].id == "cat"
    r2.index.delete(["dog"])  # behind the retriever's back
    assert "dog" not in [x.id for x in r2.search("dogs bark mailman", k=5)]
    r2.close()


def test_hybrid_on_demand_for_a_dense_only_index(tmp_path, tiny_modernbert):
    from mbert_retrieval.retriever import Retriever

    r = Retriever.build(tmp_path / "idx", list(TEXTS.values()), model=tiny_modernbert)
    assert not r.hybrid
    assert not (tmp_path / "idx" / "bm25").exists()
    assert r.search("Quagmire", k=1, hybrid=True)[0].id == "4"  # strings get ids "0", "1", ...
    assert (tmp_path / "idx" / "bm25").is_dir()
    r.close()


def test_bm25_of_another_process_is_picked_up(tmp_path, tiny_modernbert):
    """A long-lived retriever (a server) whose index another process updates (same document count: one
    added, one deleted) reloads the BM25 index that process saved."""
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    serving = Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True)
    serving.search("Quagmire", k=2)  # BM25 loaded and kept
    other = Retriever.open(tmp_path / "idx", model=tiny_modernbert)
    other.add([{"id": "okapi", "text": "the okapi is a shy forest giraffe"}])
    other.delete(["zebra"])
    other.close()
    assert len(serving) == len(docs)
    assert set(serving.bm25().doc_ids) == (set(TEXTS) - {"zebra"}) | {"okapi"}
    assert serving.search("okapi", k=1)[0].id == "okapi"
    serving.close()
