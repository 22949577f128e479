"""BM25 (bm25s) index and reciprocal rank fusion; hybrid search through the Retriever.

Hybrid indexes keep BM25 as an FTS5 table in the document store (`mbert_retrieval.index.lexical`, tested in
tests/index/test_lexical.py); folders of older versions keep a bm25s index in `bm25/`. Tests of that older
path make such a folder with `_as_older_version` (FTS5 table dropped, `bm25/` saved as the old writer did)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbert_retrieval.doc_encoder import build_index
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
def _as_older_version(path, model) -> None:
    """Turn a hybrid index into what an older version wrote: no FTS5 table, a bm25s index in `bm25/`."""
    from mbert_retrieval.index.lexical import LexicalIndex
    from mbert_retrieval.retriever import Retriever

    with Retriever.open(path, model=model) as r:
        LexicalIndex(r.index.docstore).drop()
        r._save_bm25()
    assert BM25Index.exists(path / "bm25")


def _fts_ids(r, query: str, k: int = 10) -> list[str]:
    return [d for d, _ in r.lexical_index().search(query, k=k)[0]]


def test_hybrid_retriever_surfaces_exact_terms_and_tracks_updates(tmp_path, tiny_modernbert):
    """A random tiny model ranks by noise; BM25 fused in brings the exact-term match to the top, and the BM25
    index follows add / delete."""
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v, "metadata": {"animal": k in ("cat", "dog", "zebra")}} for k, v in TEXTS.items()]
    r = Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True)
    # BM25 lives in the document store (FTS5): no bm25/ folder any more (it was rebuilt whole on every write)
    assert r.lexical_index() is not None and not (tmp_path / "idx" / "bm25").exists()
    assert r.info()["bm25_backend"] == "fts5" and r.info()["bm25_documents"] == len(TEXTS)
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
    r2.index.delete(["dog"])  # behind the retriever's back: the FTS5 triggers follow it all the same
    assert "dog" not in [x.id for x in r2.search("dogs bark mailman", k=5)]
    assert "dog" not in _fts_ids(r2, "dogs bark mailman")
    r2.close()


def _snapshot(folder) -> dict:
    """Every file and folder under `folder` with its size and modification time, except the reader leases
    (`.readers/`, `storage.LEASE_DIR`: every reader registers the snapshot it uses there, by design)."""
    from mbert_retrieval.index.storage import LEASE_DIR

    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.rglob("*"))
            if LEASE_DIR not in f.relative_to(folder).parts}


def test_hybrid_search_never_changes_the_index(tmp_path, tiny_modernbert):
    """A hybrid search of a dense-only index builds BM25 in memory: nothing in the folder changes and the
    index's default stays dense (once, the first `search --hybrid` made the index hybrid for good)."""
    from mbert_retrieval.retriever import Retriever

    Retriever.build(tmp_path / "idx", list(TEXTS.values()), model=tiny_modernbert).close()
    before = _snapshot(tmp_path / "idx")
    with Retriever.open(tmp_path / "idx", hybrid=True) as r:
        assert r.search("Quagmire", k=1)[0].id == "4"  # strings get ids "0", "1", ...
    with Retriever.open(tmp_path / "idx") as r:
        assert r.search("Quagmire", k=1, hybrid=True)[0].id == "4"
    assert _snapshot(tmp_path / "idx") == before
    with Retriever.open(tmp_path / "idx", hybrid=True) as r:
        assert r.hybrid and not r.hybrid_default
    sidecar = (tmp_path / "idx" / "retriever.json").read_bytes()
    with Retriever.open(tmp_path / "idx", hybrid=True) as r:
        r.add([{"id": "new", "text": "the okapi is a shy forest giraffe"}])  # a write keeps it dense too
        assert r.search("okapi", k=1)[0].id == "new"
    assert not (tmp_path / "idx" / "bm25").exists()
    assert (tmp_path / "idx" / "retriever.json").read_bytes() == sidecar
    with Retriever.open(tmp_path / "idx") as r:
        assert not r.hybrid and not r.hybrid_default
        plain = [x.id for x in r.search("Quagmire", k=5)]
        assert plain == [h.doc_id for h in r.index.search(["Quagmire"], k=5, encoder=r.encoder)[0]]


@pytest.mark.parametrize("older", [False, True])
def test_reads_leave_the_folder_untouched(tmp_path, tiny_modernbert, older):
    """Opening and searching a hybrid index after a write that bypassed the Retriever writes nothing: the
    FTS5 table followed the write in its transaction; an older version's `bm25/`, now out of date, is
    replaced by a bm25s index built in memory (the read does not move the folder to FTS5)."""
    from mbert_retrieval.index import Index
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    if older:
        _as_older_version(tmp_path / "idx", tiny_modernbert)
    with Retriever.open(tmp_path / "idx") as r:
        with Index.open(tmp_path / "idx", r.model) as index:
            index.delete(["zebra"])  # behind the retriever's back: BM25 on disk is stale now
    before = _snapshot(tmp_path / "idx")
    with Retriever.open(tmp_path / "idx") as r:
        assert r.hybrid and (r.lexical_index() is None) is older
        assert "zebra" not in [d for d, _ in r.lexical_search("Quagmire savanna", k=5)[0]]
        assert "zebra" not in [x.id for x in r.search("Quagmire savanna", k=5)]
        assert r.search("purred", k=1)[0].id == "cat"
    assert _snapshot(tmp_path / "idx") == before


def test_hybrid_false_overrides_a_hybrid_index(tmp_path, tiny_modernbert):
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    with Retriever.open(tmp_path / "idx", hybrid=False) as r:
        assert not r.hybrid
        dense = [h.doc_id for h in r.index.search(["Quagmire"], k=5, encoder=r.encoder)[0]]
        assert [x.id for x in r.search("Quagmire", k=5)] == dense
        assert [x.id for x in r.search("Quagmire", k=5, hybrid=False)] == dense
        assert r.search("Quagmire", k=1, hybrid=True)[0].id == "zebra"
    with Retriever.open(tmp_path / "idx") as r:
        assert r.hybrid  # the stored default is untouched


def test_enable_and_disable_hybrid_are_write_commands(tmp_path, tiny_modernbert):
    from mbert_retrieval.retriever import Retriever

    Retriever.build(tmp_path / "idx", list(TEXTS.values()), model=tiny_modernbert).close()
    with Retriever.open(tmp_path / "idx") as r:
        assert r.lexical_index() is None
        r.enable_hybrid()  # creates the FTS5 table and indexes the documents (no bm25/ folder any more)
        assert r.hybrid and r.hybrid_default and r.lexical_index() is not None
        assert not (tmp_path / "idx" / "bm25").exists()
    sidecar = json.loads((tmp_path / "idx" / "retriever.json").read_text())
    assert sidecar["hybrid"] is True and "bm25_stale" not in sidecar
    with Retriever.open(tmp_path / "idx") as r:
        assert r.hybrid and r.search("Quagmire", k=1)[0].id == "4"
        r.disable_hybrid()
        assert not r.hybrid and not (tmp_path / "idx" / "bm25").exists() and r.lexical_index() is None
    with Retriever.open(tmp_path / "idx") as r:
        assert not r.hybrid and r.lexical_index() is None
        assert r.search("Quagmire", k=1, hybrid=True)[0].id == "4"  # bm25s in memory


def test_bm25_of_another_index_is_not_served(tmp_path, tiny_modernbert):
    """Older versions' folders: a BM25 folder copied from another index (same ids and size, other texts) is
    ignored."""
    import shutil

    from mbert_retrieval.retriever import Retriever

    other_texts = {k: f"unrelated words number {i} xylophone" for i, k in enumerate(TEXTS)}
    Retriever.build(tmp_path / "a", [{"id": k, "text": v} for k, v in TEXTS.items()], model=tiny_modernbert,
                    hybrid=True).close()
    Retriever.build(tmp_path / "b", [{"id": k, "text": v} for k, v in other_texts.items()], model=tiny_modernbert,
                    hybrid=True).close()
    for name in ("a", "b"):
        _as_older_version(tmp_path / name, tiny_modernbert)
    shutil.rmtree(tmp_path / "a" / "bm25")
    shutil.copytree(tmp_path / "b" / "bm25", tmp_path / "a" / "bm25")
    with Retriever.open(tmp_path / "a") as r:
        assert r.bm25().search("xylophone", k=5) == [[]]
        assert r.bm25().search("Quagmire", k=1)[0][0][0] == "zebra"
        assert r.search("Quagmire", k=1)[0].id == "zebra"


def test_bm25_file_is_bound_to_the_document_state(tmp_path, tiny_modernbert):
    """Older versions' folders: a write without BM25 upkeep (the Index directly, or a crash before BM25 was
    saved) that keeps the document count leaves a BM25 file that no longer matches the documents: not used."""
    from mbert_retrieval.index import Index
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    _as_older_version(tmp_path / "idx", tiny_modernbert)
    r = Retriever.open(tmp_path / "idx", model=tiny_modernbert)
    with Index.open(tmp_path / "idx", r.model) as index:
        index.update([{"id": "cat", "text": "felines enjoy sunbeams"}], encoder=r.encoder)  # same count, new text
    r.close()
    with Retriever.open(tmp_path / "idx") as r2:
        assert r2.search("sunbeams", k=1)[0].id == "cat"
        assert r2.bm25().search("purred", k=5) == [[]]


def test_sidecar_damaged_or_deleted_is_an_error(tmp_path, tiny_modernbert):
    from mbert_retrieval.index import IndexCorruptError
    from mbert_retrieval.retriever import Retriever

    for name, hybrid in (("hyb", True), ("dense", False)):
        Retriever.build(tmp_path / name, list(TEXTS.values()), model=tiny_modernbert, hybrid=hybrid).close()
        sidecar = tmp_path / name / "retriever.json"
        good = sidecar.read_text()
        for bad in ("{not json", "[1, 2]", '{"hybrid": "yes"}'):
            sidecar.write_text(bad)
            with pytest.raises(IndexCorruptError, match="retriever.json"):
                Retriever.open(tmp_path / name, model=tiny_modernbert)
        sidecar.unlink()
        with pytest.raises(IndexCorruptError, match="retriever.json is missing"):
            Retriever.open(tmp_path / name, model=tiny_modernbert)
        sidecar.write_text(good)
        with Retriever.open(tmp_path / name, model=tiny_modernbert) as r:
            assert r.hybrid is hybrid

    # an index built without the Retriever never had one: fine
    from mbert_retrieval.hub import load_model

    model = load_model(tiny_modernbert, kind="dense")
    build_index(tmp_path / "plain", [{"id": "a", "text": "alpha"}], "dense", "flat", model).close()
    with Retriever.open(tmp_path / "plain", model=model) as r:
        assert not r.hybrid and [x.id for x in r.search("alpha", k=1, hybrid=True)] == ["a"]
    assert not (tmp_path / "plain" / "retriever.json").exists()


def test_search_argument_checks(tmp_path, tiny_modernbert):
    from mbert_retrieval.retriever import MAX_CANDIDATES, Retriever

    with Retriever.build(tmp_path / "idx", list(TEXTS.values()), model=tiny_modernbert, hybrid=True) as r:
        for hybrid in (True, False):
            for empty in ("", "   ", ["ok", ""]):
                with pytest.raises(ValueError, match="empty query"):
                    r.search(empty, k=3, hybrid=hybrid)
        for bad in (0, -1, MAX_CANDIDATES + 1, 2.5, True):
            with pytest.raises(ValueError, match="candidates"):
                r.search("zebra", k=3, candidates=bad)
        # deeper than the corpus, or more results than documents: capped, not an error
        assert len(r.search("zebra", k=10**9, candidates=MAX_CANDIDATES)) == len(TEXTS)
        assert len(r.search("zebra", k=10**9, hybrid=False)) == len(TEXTS)


def test_open_without_a_model_deletes_and_keeps_bm25(tmp_path, tiny_modernbert):
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    with Retriever.open(tmp_path / "idx", load_model=False) as r:
        assert r.model is None
        assert r.delete(["zebra"]) == 1
        with pytest.raises(RuntimeError, match="without a model"):
            r.search("zebra", k=1)
        assert r.lexical_search("Quagmire", k=5) == [[]]  # BM25 alone needs no model
    with Retriever.open(tmp_path / "idx") as r:
        assert r.lexical_index() is not None and _fts_ids(r, "Quagmire zebra") == []


def test_bm25_of_another_process_is_picked_up(tmp_path, tiny_modernbert):
    """A long-lived retriever (a server) whose index another process updates (same document count: one
    added, one deleted) sees that process's committed documents in BM25 (the FTS5 table is in the same
    database)."""
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    serving = Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True)
    serving.search("Quagmire", k=2)  # BM25 loaded and kept
    other = Retriever.open(tmp_path / "idx", model=tiny_modernbert)
    other.add([{"id": "okapi", "text": "the okapi is a shy forest giraffe"}])
    other.delete(["zebra"])
    other.close()
    assert len(serving) == len(docs)
    assert _fts_ids(serving, "okapi Quagmire") == ["okapi"]
    assert serving.search("okapi", k=1)[0].id == "okapi"
    serving.close()


@pytest.mark.parametrize("how", ["enable_hybrid", "add"])
def test_older_folder_moves_to_fts_on_its_next_write_command(tmp_path, tiny_modernbert, how):
    """An older version's hybrid folder (bm25/, no FTS5) is searched as it is until a write command creates the
    FTS5 table over its documents (one transaction) and removes bm25/; later writes no longer rebuild BM25."""
    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    _as_older_version(tmp_path / "idx", tiny_modernbert)
    with Retriever.open(tmp_path / "idx") as r:
        assert r.lexical_index() is None and r.info()["bm25_backend"] == "bm25s"
        assert r.search("Quagmire", k=1)[0].id == "zebra"
        if how == "enable_hybrid":
            r.enable_hybrid()
        else:
            r.add([{"id": "okapi", "text": "the okapi is a shy forest giraffe"}])
        assert r.lexical_index() is not None and not (tmp_path / "idx" / "bm25").exists()
        r.add([{"id": "gnu", "text": "a gnu grazes"}])
        assert not (tmp_path / "idx" / "bm25").exists()
    with Retriever.open(tmp_path / "idx") as r:
        assert r.info()["bm25_backend"] == "fts5" and r.info()["bm25_documents"] == len(r)
        assert _fts_ids(r, "gnu Quagmire") in (["gnu", "zebra"], ["zebra", "gnu"])
        assert r.search("gnu", k=1)[0].id == "gnu"
        r.lexical_index().verify()


def test_sidecar_is_required_once_the_index_keeps_fts(tmp_path, tiny_modernbert):
    """An index built without the Retriever, made hybrid later: its FTS5 table says retriever.json belongs
    to it, so losing that file is an error rather than a silent switch to dense-only search."""
    from mbert_retrieval.hub import load_model
    from mbert_retrieval.index import IndexCorruptError
    from mbert_retrieval.retriever import Retriever

    model = load_model(tiny_modernbert, kind="dense")
    build_index(tmp_path / "plain", [{"id": "a", "text": "alpha"}], "dense", "flat", model).close()
    with Retriever.open(tmp_path / "plain", model=model) as r:
        r.enable_hybrid()
    (tmp_path / "plain" / "retriever.json").unlink()
    with pytest.raises(IndexCorruptError, match="retriever.json is missing"):
        Retriever.open(tmp_path / "plain", model=model)


_WRITER = """
import sys
from mbert_retrieval.retriever import Retriever
with Retriever.open(sys.argv[1], model=sys.argv[2]) as r:
    for i in range(1, 4):
        r.update([{"id": "live", "text": f"version{i} of the okapi document"}])
"""


def test_hybrid_reader_sees_old_or_new_state_while_another_process_writes(tmp_path, tiny_modernbert):
    """A long-lived hybrid reader beside a writer process: every search sees one committed version of the
    replaced document (never none, never two), and the last one once the writer is done."""
    import subprocess
    import sys

    from mbert_retrieval.retriever import Retriever

    docs = [{"id": k, "text": v} for k, v in TEXTS.items()] + [{"id": "live", "text": "version0 of the okapi document"}]
    Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, hybrid=True).close()
    reader = Retriever.open(tmp_path / "idx")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "idx"), tiny_modernbert])
    try:
        while writer.poll() is None:
            assert _fts_ids(reader, "okapi") == ["live"]
            ids = [x.id for x in reader.search("okapi", k=len(docs), hybrid=True)]
            assert ids.count("live") == 1 and len(ids) == len(set(ids))
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert _fts_ids(reader, "version3 version0") == ["live"] and _fts_ids(reader, "version0") == []
    assert reader.search("version3", k=1)[0].id == "live"
    reader.close()
