import sqlite3

import pytest

from mbert_retrieval.index.docstore import ChunkInfo, DocRow, DocStore, compile_filter
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
    assert "?" in sql and params == ['$."lang"', "en"]


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
