import sqlite3

import pytest

from mbert_retrieval.index.docstore import ChunkInfo, DocRow, DocStore, StoreAheadError, compile_filter
from mbert_retrieval.index.errors import IndexCorruptError


@pytest.fixture
def store(tmp_path):
    s = DocStore(tmp_path / "docs.sqlite")
    rows = [
        DocRow(i, f"d{i}", f"text {i}", f"t{i}" if i % 2 else None,
               {"year": 2018 + i, "lang": "en" if i % 2 else "de", "tags": ["a", "b"] if i < 2 else ["c"], "src": {"name": f"s{i % 2}"}})
        for i in range(6)
    ]  # fmt: skip
    s.commit(rows, ChunkInfo(0, "00000000.safetensors", "x" * 64, 10, 6, 6))
    yield s
    s.close()


def test_basic_reads(store):
    assert store.count() == 6
    assert store.counters() == (6, 1)
    got = store.get(["d3", "nope", "d0"])
    assert got[0].text == "text 3" and got[0].title == "t3" and got[0].metadata["year"] == 2021
    assert got[1] is None and got[2].title is None
    assert [r.doc_id for r in store.iter_documents(batch_size=2)] == [f"d{i}" for i in range(6)]
    assert set(store.get_by_iids([1, 2, 99])) == {1, 2}
    assert store.chunks()[0].n_docs == 6
    assert store._query("PRAGMA journal_mode")[0][0] == "wal"


def test_delete_upsert_and_counters(store):
    assert store.delete(["d1", "zzz"]) == [1]
    assert store.count() == 5 and store.count(include_deleted=True) == 6
    assert store.get(["d1"]) == [None]
    replaced = store.upsert([DocRow(10, "d2", "new text"), DocRow(11, "d1", "back again")])
    assert replaced == [2]
    assert store.get(["d2"])[0].iid == 10 and store.get(["d1"])[0].text == "back again"
    assert store.counters()[0] == 12
    live, chunks = store.live_iids()
    assert live.tolist() == [0, 3, 4, 5, 10, 11]
    with pytest.raises(sqlite3.IntegrityError):
        store.commit([DocRow(12, "d0", "dup")])
    assert store.count() == 6  # rolled back
    assert store.purge_deleted() == 2 and store.count(include_deleted=True) == 6


@pytest.mark.parametrize(
    "flt,expected",
    [
        ({"lang": "en"}, [1, 3, 5]),
        ({"year": [2018, 2020]}, [0, 2]),
        ({"year": {"$gte": 2021}}, [3, 4, 5]),
        ({"year": {"$gt": 2019, "$lt": 2022}}, [2, 3]),
        ({"lang": "de", "year": {"$lte": 2020}}, [0, 2]),
        ({"lang": {"$ne": "en"}}, [0, 2, 4]),
        ({"year": {"$nin": [2018, 2019]}}, [2, 3, 4, 5]),
        ({"$or": [{"year": 2018}, {"year": 2023}]}, [0, 5]),
        ({"tags": {"$contains": "a"}}, [0, 1]),
        ({"src.name": "s1"}, [1, 3, 5]),
        ({"missing": {"$exists": False}}, [0, 1, 2, 3, 4, 5]),
        ({"lang": {"$exists": True}, "year": {"$in": []}}, []),
    ],
)
def test_filters(store, flt, expected):
    assert store.filter_iids(flt).tolist() == expected


def test_filters_exclude_deleted_and_reject_bad_input(store):
    store.delete(["d1"])
    assert store.filter_iids({"lang": "en"}).tolist() == [3, 5]
    for bad in ({"year": {"$regex": "x"}}, {'a"b': 1}, {"year": {"$in": 3}}, {"x": {"a": 1}}, {"$or": []}):
        with pytest.raises(ValueError):
            store.filter_iids(bad)
    sql, params = compile_filter({"lang": "en"})
    assert "?" in sql and params[-1] == "en" and set(params[:-1]) == {'$."lang"'}  # values bound, never inlined


def test_chunk_registry(store):
    store.commit([DocRow(6, "d6", "x")], ChunkInfo(1, "00000001.safetensors", "y" * 64, 5, 1, 1))
    store.mark_chunks_dropped([0])
    assert [c.seq for c in store.chunks()] == [1]
    assert [c.dropped for c in store.chunks(include_dropped=True)] == [True, False]
    store.replace_chunks([ChunkInfo(5, "00000005.safetensors", "z" * 64, 5, 1, 1)], {6: 5})
    assert [c.seq for c in store.chunks(include_dropped=True)] == [0, 5]
    assert store.counters()[1] == 6


def test_corrupt_database(tmp_path):
    path = tmp_path / "docs.sqlite"
    DocStore(path).close()
    data = bytearray(path.read_bytes())
    data[:16] = b"x" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="docs.sqlite"):
        DocStore(path)


@pytest.fixture
def mixed(tmp_path):
    """Documents whose `v` has every JSON type: SQLite orders TEXT above numbers and reads true as 1."""
    s = DocStore(tmp_path / "mixed.sqlite")
    values = {"int": 2020, "real": 1999.5, "str": "1990", "strnum": "1", "true": True, "false": False, "one": 1,
              "null": None, "list": [True, "a"]}  # fmt: skip
    rows = [DocRow(i, name, f"text {name}", None, {"v": v, "k": name}) for i, (name, v) in enumerate(values.items())]
    s.commit(rows + [DocRow(len(rows), "absent", "no v", None, {"k": "absent"})])
    yield lambda flt: sorted(s.get_by_iids(s.filter_iids(flt).tolist())[i].doc_id for i in s.filter_iids(flt).tolist())
    s.close()


@pytest.mark.parametrize(
    "flt,expected",
    [
        ({"v": {"$gte": 2019}}, ["int"]),  # the string "1990" is not a number
        ({"v": {"$lt": 2000}}, ["one", "real"]),  # true (read as 1 by SQLite) is not ordered
        ({"v": {"$lt": 1e300}}, ["int", "one", "real"]),
        ({"v": {"$gte": "1"}}, ["str", "strnum"]),  # strings order with strings only
        ({"v": 1}, ["one"]),  # not true, not "1"
        ({"v": 1.0}, ["one"]),  # 1 == 1.0
        ({"v": "1"}, ["strnum"]),
        ({"v": True}, ["true"]),
        ({"v": False}, ["false"]),
        ({"v": {"$ne": 1}}, ["absent", "false", "int", "list", "null", "real", "str", "strnum", "true"]),
        ({"v": [1990, True]}, ["true"]),
        ({"v": {"$in": ["1990", 1]}}, ["one", "str"]),
        ({"v": {"$nin": [True, 2020, None]}}, ["false", "list", "one", "real", "str", "strnum"]),
        ({"v": None}, ["absent", "null"]),
        ({"v": {"$contains": 1}}, ["one"]),  # the list holds true, which is not 1
        ({"v": {"$contains": True}}, ["list", "true"]),
    ],
)
def test_filters_compare_like_with_like(mixed, flt, expected):
    assert mixed(flt) == expected


@pytest.mark.parametrize("bad", [{"v": {"$gt": True}}, {"v": {"$lt": None}}, {"v": float("nan")}, {"v": {"$lt": float("inf")}},
                                 {"v": {"$in": [1, float("-inf")]}}, {"v": {"$gte": 10**400}}])  # fmt: skip
def test_filter_values_that_cannot_compare_are_refused(mixed, bad):
    with pytest.raises(ValueError, match="'v'"):
        mixed(bad)


@pytest.mark.parametrize("value,shown", [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"),
                                         (10**400, "beyond the float range"), ([1, float("nan")], "nan")])  # fmt: skip
def test_unstorable_numbers_in_metadata_are_refused(store, value, shown):
    with pytest.raises(ValueError, match=rf"document 'dx'.*field 'src\.x.*{shown}"):
        store.commit([DocRow(9, "dx", "t", None, {"src": {"x": value}})])
    assert store.count() == 6  # nothing written
    with pytest.raises(ValueError, match=r"document 'd1'.*field 'src\.x"):
        store.set_fields("d1", None, {"src": {"x": value}})
    assert store.get(["d1"])[0].metadata["year"] == 2019


def test_missing_fields_and_metadata_fields(store):
    assert store.missing_fields({"yeer": {"$gte": 2019}, "year": {"$gte": 2019}}) == ["yeer"]
    assert store.missing_fields({"$or": [{"lang": "en"}, {"tpoic": "x"}], "src.nmae": "s1"}) == ["tpoic", "src.nmae"]
    assert store.missing_fields({"src.name": "s1", "tags": {"$contains": "a"}}) == []
    # conditions absent documents meet are no typo to report
    assert store.missing_fields({"x": {"$exists": False}, "y": {"$ne": 1}, "z": None, "w": {"$nin": [1]}}) == []
    assert store.metadata_fields() == ["lang", "src", "tags", "year"]


def test_row_checksums_catch_edits_outside_the_library(store):
    store.verify_rows()
    store.set_fields("d2", "new title", {"year": 1})
    store.verify_rows()  # in-library changes keep the checksum right
    store._conn.execute("UPDATE docs SET text = 'text 4!' WHERE doc_id = 'd4'")
    with pytest.raises(IndexCorruptError, match=r"docs.sqlite.*'d4'.*checksum"):
        store.verify_rows()


def _legacy_store(path):
    """A document store as format-1 indexes wrote it (no checksum column, no binding)."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE docs (iid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, text TEXT NOT NULL, title TEXT, metadata TEXT,
                           deleted INTEGER NOT NULL DEFAULT 0, chunk INTEGER);
        CREATE TABLE chunks (seq INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
                             n_docs INTEGER NOT NULL, n_vectors INTEGER NOT NULL, dropped INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO docs (iid, doc_id, text) VALUES (0, 'a', 'old text'), (1, 'b', 'more');
        INSERT INTO meta VALUES ('next_iid', 2), ('next_chunk', 0);
    """)  # fmt: skip
    conn.commit()
    conn.close()


def test_legacy_store_is_migrated_and_checksummed_by_a_writer(tmp_path):
    _legacy_store(tmp_path / "docs.sqlite")
    s = DocStore(tmp_path / "docs.sqlite")
    assert s.binding().index_id is None and s.get(["a"])[0].text == "old text"
    s.verify_rows()  # rows from before checksums are not checked yet
    s.commit([DocRow(2, "c", "new")])
    s.fill_checksums()
    s._conn.execute("UPDATE docs SET text = 'edited' WHERE doc_id = 'a'")
    with pytest.raises(IndexCorruptError, match="'a'"):
        s.verify_rows()
    s.close()


def test_binding_to_the_manifest(store):
    store.bind("11111111-2222-3333-4444-555555555555", 3)
    assert store.binding().generation == 3 and store.binding().first_chunk == 1
    store.check_binding("11111111-2222-3333-4444-555555555555", 3)
    store.check_binding("11111111-2222-3333-4444-555555555555", 2)  # a checkpoint interrupted before its manifest
    store.check_binding(None, 7)  # a manifest of format 1 binds nothing
    with pytest.raises(IndexCorruptError, match="docs.sqlite.*another index"):
        store.check_binding("99999999-2222-3333-4444-555555555555", 3)
    with pytest.raises(IndexCorruptError, match="docs.sqlite.*generation 3.*at 4"):
        store.check_binding("11111111-2222-3333-4444-555555555555", 4)  # an older copy of the store
    with pytest.raises(StoreAheadError):
        store.check_binding("11111111-2222-3333-4444-555555555555", 1)


@pytest.mark.parametrize("name", ["../evil.safetensors", "/etc/passwd", "sub/00000001.safetensors", "..", "c:x", "a\\b"])
def test_chunk_names_must_be_plain_file_names(store, name):
    store._conn.execute("UPDATE chunks SET name = ? WHERE seq = 0", (name,))
    with pytest.raises(IndexCorruptError, match="not a plain file name"):
        store.chunks()
