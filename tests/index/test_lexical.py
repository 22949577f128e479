"""FTS5 BM25 in the document store (`mbert_retrieval.index.lexical`): kept in sync by triggers, safe queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mbert_retrieval.index import lexical as lexical_mod
from mbert_retrieval.index.docstore import DocRow, DocStore, WindowRow
from mbert_retrieval.index.lexical import FTS_TABLE, LexicalIndex, fts5_available, match_expression

pytestmark = pytest.mark.skipif(not fts5_available(), reason="this Python's sqlite3 has no FTS5")

TEXTS = {
    "cat": ("Cats", "the cat sat on the mat and purred", {"animal": True}),
    "dog": (None, "dogs bark at the mailman every morning", {"animal": True}),
    "py": ("Python", "python lists are mutable while tuples are immutable", {"animal": False}),
    "zebra": (None, "a zebra named Quagmire lives in the savanna", {"animal": True}),
}


def _rows(start: int = 0) -> list[DocRow]:
    return [DocRow(start + i, d, text, title, meta) for i, (d, (title, text, meta)) in enumerate(TEXTS.items())]


@pytest.fixture
def store(tmp_path):
    s = DocStore(tmp_path / "docs.sqlite")
    s.commit(_rows())
    yield s
    s.close()


def _ids(lex: LexicalIndex, query: str, **kw) -> list[str]:
    return [d for d, _ in lex.search(query, k=10, **kw)[0]]


def test_install_backfills_live_documents_and_finds_exact_terms(store):
    store.delete(["py"])  # a tombstone is not indexed
    lex = LexicalIndex(store)
    assert not lex.exists()
    assert lex.install() == 3 and lex.exists() and lex.count() == 3
    assert _ids(lex, "Quagmire") == ["zebra"]
    assert _ids(lex, "CAT") == ["cat"]  # case-folded; title indexed too
    assert _ids(lex, "barking") == ["dog"]  # porter stemming: bark(ing|s)
    assert _ids(lex, "python tuples") == []
    hits = lex.search(["zebra savanna", "xylophone"], k=5)
    assert hits[0][0][0] == "zebra" and hits[0][0][1] > 0 and hits[1] == []
    lex.verify()
    with pytest.raises(ValueError):
        lex.search("cat", k=0)


def test_writes_are_reflected_immediately_and_after_reopen(tmp_path, store):
    lex = LexicalIndex(store)
    lex.install()
    store.commit([DocRow(10, "okapi", "the okapi is a shy forest giraffe")])
    store.upsert([DocRow(11, "cat", "felines enjoy sunbeams")])  # new version: old text unindexed
    store.set_fields("dog", "Mailman story", {"animal": True})  # title change re-indexed
    store.delete(["zebra"])
    expect = {"okapi": ["okapi"], "purred": [], "sunbeams": ["cat"], "story": ["dog"], "Quagmire": []}
    assert {q: _ids(lex, q) for q in expect} == expect
    store.purge_deleted()  # purging tombstones (already unindexed) changes nothing
    assert {q: _ids(lex, q) for q in expect} == expect
    lex.verify()
    store.close()
    reopened = DocStore(tmp_path / "docs.sqlite")
    try:
        assert {q: _ids(LexicalIndex(reopened), q) for q in expect} == expect
    finally:
        reopened.close()


def test_a_failed_commit_leaves_documents_and_fts_together(store):
    """An exception inside the commit transaction (here: a window whose id is taken, after the document rows
    went in) rolls back the documents and their FTS rows alike."""
    lex = LexicalIndex(store)
    lex.install()
    before = lex.count()
    bad = [WindowRow(20, 20, 0, 5), WindowRow(20, 20, 5, 9)]  # same window iid twice
    with pytest.raises(Exception):
        store.commit([DocRow(20, "okapi", "the okapi is a shy forest giraffe")], windows=bad)
    with pytest.raises(Exception):
        store.upsert([DocRow(21, "cat", "felines enjoy sunbeams")], windows=bad)
    assert lex.count() == before and store.count() == before
    assert _ids(lex, "okapi") == [] and _ids(lex, "purred") == ["cat"] and _ids(lex, "sunbeams") == []
    lex.verify()


def test_a_failed_install_leaves_nothing(store, monkeypatch):
    lex = LexicalIndex(store)
    monkeypatch.setitem(lexical_mod._TRIGGERS, "docs_fts_zz", "CREATE TRIGGER broken syntax")
    with pytest.raises(Exception):
        lex.install()
    monkeypatch.undo()
    assert not lex.exists()
    assert not store._query("SELECT 1 FROM sqlite_master WHERE name LIKE 'docs_fts%'")


def test_a_missing_trigger_means_not_there_and_install_repairs(store):
    lex = LexicalIndex(store)
    lex.install()
    with store.transaction() as conn:
        conn.execute("DROP TRIGGER docs_fts_ai")
    store.commit([DocRow(10, "okapi", "the okapi is a shy forest giraffe")])  # not indexed: no trigger
    assert not lex.exists()
    with pytest.raises(ValueError, match="out of step"):
        lex.verify()
    lex.install()
    assert lex.exists() and _ids(lex, "okapi") == ["okapi"]
    lex.verify()


@pytest.mark.parametrize("query", ['"', '""', "*", "cat*", "NEAR(", "NEAR(cat dog)", "-x", "-cat", "title:",
                                   "title:cat", "text:", "AND", "OR NOT", "cat AND", "(", ")", "^cat", "{title}: cat",
                                   "'", "cat' OR '1'='1", "\\", "\x00", "   ", "?!.,;", "_", "a the of"])
def test_hostile_queries_never_raise(store, query):
    lex = LexicalIndex(store)
    lex.install()
    hits = lex.search(query, k=5, filter={"animal": True})[0]
    assert all(d in TEXTS for d, _ in hits)
    if "cat" in query.lower():
        assert _ids(lex, query)[:1] == ["cat"]  # the word is still searched, as a plain word


def test_match_expression_quotes_words_only():
    assert match_expression('title: "cats" NEAR(dogs*) -x') == '"title" OR "cats" OR "near" OR "dogs" OR "x"'
    assert match_expression("the of a") is None  # stopwords only
    assert match_expression("__ ,;") is None
    assert match_expression(" ".join(f"w{i}" for i in range(5000))).count(" OR ") == lexical_mod.MAX_TERMS - 1


def test_filters_join_the_metadata(store):
    lex = LexicalIndex(store)
    lex.install()
    assert _ids(lex, "cat python", filter={"animal": False}) == ["py"]
    assert _ids(lex, "cat python", filter={"animal": True}) == ["cat"]
    assert _ids(lex, "cat", filter={"animal": {"$exists": False}}) == []
    with pytest.raises(ValueError):
        lex.search("cat", filter={"bad key\"": 1})


def test_reads_never_write(tmp_path, store):
    lex = LexicalIndex(store)
    lex.install()
    store.close()
    files = sorted(tmp_path.iterdir())
    before = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in files}
    for readonly in (False, True):  # as `Index.open` opens it, and read-only
        reader = DocStore(tmp_path / "docs.sqlite", readonly=readonly)
        try:
            lex = LexicalIndex(reader)
            assert lex.exists() and _ids(lex, "Quagmire") == ["zebra"] and lex.count() == 4
            lex.verify()
        finally:
            reader.close()
        if readonly:  # SQLite's WAL bookkeeping files, which a read-only connection leaves behind
            before.update({f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in tmp_path.glob("*-[ws][ah][lm]")})
    assert {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(tmp_path.iterdir())} == before


def test_drop_removes_table_and_triggers(store):
    lex = LexicalIndex(store)
    lex.install()
    lex.drop()
    assert not lex.exists()
    store.commit([DocRow(10, "okapi", "okapi")])  # no trigger left behind to fail on a missing table
    assert not store._query(f"SELECT 1 FROM sqlite_master WHERE name LIKE '{FTS_TABLE}%' OR type = 'trigger'")


_WRITER = textwrap.dedent("""
    import sys
    from mbert_retrieval.index.docstore import DocRow, DocStore
    store = DocStore(sys.argv[1])
    for i in range(1, int(sys.argv[2]) + 1):
        store.upsert([DocRow(100 + i, "live", f"version{i} common words")])  # old version out, new one in
    store.close()
""")


def test_a_reader_sees_old_or_new_state_while_another_process_writes(tmp_path, store):
    """Each write replaces the document "live" in one transaction: a reader in another process always finds
    exactly one version of it, never none (between delete and insert) nor two."""
    lex = LexicalIndex(store)
    lex.install()
    store.upsert([DocRow(100, "live", "version0 common words")])
    n = 60
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "docs.sqlite"), str(n)])
    seen = []
    try:
        while writer.poll() is None or not seen:
            hits = lex.search("common", k=10)[0]
            assert [d for d, _ in hits] == ["live"], hits
            seen.append(_ids(lex, " ".join(f"version{i}" for i in range(n + 1))))
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert all(len(ids) == 1 for ids in seen)
    assert _ids(lex, f"version{n}") == ["live"] and _ids(lex, "version0") == []
    lex.verify()


def test_a_document_with_windows_is_one_bm25_document(tmp_path):
    """Windows are rows of the vector structures only: BM25 ranks whole documents (the `docs` rows)."""
    s = DocStore(tmp_path / "docs.sqlite")
    try:
        lex = LexicalIndex(s)
        lex.install()
        text = "okapi " * 50 + "giraffe " * 50
        s.commit([DocRow(0, "long", text)], windows=[WindowRow(1, 0, 0, 300), WindowRow(2, 0, 250, len(text))])
        assert lex.count() == 1 and lex.search("okapi giraffe", k=10) == [[("long", pytest.approx(lex.search("okapi giraffe")[0][0][1]))]]
        s.delete(["long"])
        assert lex.count() == 0
    finally:
        s.close()
