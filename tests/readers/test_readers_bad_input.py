"""Bad input is a DataError (file, line, field), never a RecursionError, a gzip/zlib error or a string that
cannot be stored as UTF-8 later."""

from __future__ import annotations

import gzip
import json

import pytest

from mbert_retrieval.data import (
    DataError, check_metadata, check_string, iter_corpus, load_corpus, read_jsonl_corpus, read_queries_file,
)

DEEP = "[" * 100_000 + "]" * 100_000


# ------------------------------------------------------------------------------------------ nesting depth
def test_deeply_nested_jsonl_line(tmp_path, write, check_error):
    p = write(tmp_path / "c.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b", "metadata": {"x": '
              + DEEP + "}}\n")
    with pytest.raises(DataError, match="nested too deeply") as exc:
        read_jsonl_corpus(p)
    check_error(exc.value, p, 2)


def test_deeply_nested_json_array_line(tmp_path, write, check_error):
    p = write(tmp_path / "c.json", '[\n{"_id": "1", "text": "a"},\n{"_id": "2", "text": ' + DEEP + "}\n]\n")
    with pytest.raises(DataError, match="nested too deeply") as exc:
        load_corpus(p)
    check_error(exc.value, p, 3)


def test_deeply_nested_queries(tmp_path, write, check_error):
    p = write(tmp_path / "q.jsonl", '{"_id": "q", "text": ' + DEEP + "}\n")
    with pytest.raises(DataError, match="nested too deeply") as exc:
        read_queries_file(p)
    check_error(exc.value, p, 1)


def test_metadata_depth_capped(tmp_path, write, check_error):
    """Parsable but deeper than the store can serialise safely: refused at the reader."""
    meta = {}
    inner = meta
    for _ in range(50):
        inner["x"] = {}
        inner = inner["x"]
    p = write(tmp_path / "c.jsonl", json.dumps({"_id": "1", "text": "a", "metadata": meta}) + "\n")
    with pytest.raises(DataError, match="nested more than") as exc:
        read_jsonl_corpus(p)
    check_error(exc.value, p, 1, "metadata")


# ------------------------------------------------------------------------------------------------ gzip
def _gz(rows: int) -> bytes:
    return gzip.compress("".join(json.dumps({"_id": str(i), "text": f"doc {i} " * 20}) + "\n"
                                 for i in range(rows)).encode())


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.json.gz", "c.csv.gz"])
def test_not_gzip(tmp_path, write, check_error, name):
    p = write(tmp_path / name, b"this is not gzip data at all\n")
    with pytest.raises(DataError, match="corrupt or truncated gzip") as exc:
        load_corpus(p)
    assert exc.value.path == str(p)


def test_truncated_gzip_names_file_and_line(tmp_path, write):
    data = _gz(2000)
    p = write(tmp_path / "c.jsonl.gz", data[: len(data) // 2])
    docs = []
    with pytest.raises(DataError, match="corrupt or truncated gzip") as exc:
        docs.extend(read_jsonl_corpus(p).values())
    assert exc.value.path == str(p) and exc.value.line is not None and exc.value.line > 1


def test_corrupt_gzip_body(tmp_path, write):
    data = bytearray(_gz(500))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # zeroed bytes in the deflate stream
    p = write(tmp_path / "c.jsonl.gz", bytes(data))
    with pytest.raises(DataError) as exc:
        load_corpus(p)
    assert exc.value.path == str(p)


def test_truncated_gzip_queries(tmp_path, write):
    data = gzip.compress(b"".join(b'{"_id": "%d", "text": "q"}\n' % i for i in range(5000)))
    p = write(tmp_path / "q.jsonl.gz", data[:-20])
    with pytest.raises(DataError, match="gzip"):
        read_queries_file(p)


# ------------------------------------------------------------------------------------------ surrogates
@pytest.mark.parametrize("row, field", [
    ('{"_id": "1", "text": "bad \\ud800 text"}', "text"),
    ('{"_id": "1", "text": "ok", "title": "\\udfff"}', "title"),
    ('{"_id": "\\ud83d", "text": "ok"}', "_id"),
    ('{"_id": "1", "text": "ok", "metadata": {"tag": "\\ud800"}}', "metadata.tag"),
    ('{"_id": "1", "text": "ok", "metadata": {"list": ["a", "\\ud800"]}}', "metadata.list[1]"),
    ('{"_id": "1", "text": "ok", "metadata": {"\\ud800": 1}}', "metadata"),
])
def test_lone_surrogate_jsonl(tmp_path, write, check_error, row, field):
    p = write(tmp_path / "c.jsonl", '{"_id": "0", "text": "fine \\ud83d\\ude00"}\n' + row + "\n")
    with pytest.raises(DataError, match="surrogate") as exc:
        read_jsonl_corpus(p)
    check_error(exc.value, p, 2, field)


def test_surrogate_pair_is_fine(tmp_path, write):
    p = write(tmp_path / "c.jsonl", '{"_id": "0", "text": "smile \\ud83d\\ude00"}\n')
    assert read_jsonl_corpus(p)["0"].text == "smile \U0001F600"


def test_lone_surrogate_json_array_and_queries(tmp_path, write, check_error):
    p = write(tmp_path / "c.json", '[\n  {"_id": "1", "text": "a"},\n  {"_id": "2", "text": "\\ud800"}\n]')
    with pytest.raises(DataError, match="surrogate") as exc:
        load_corpus(p)
    check_error(exc.value, p, 3, "text")
    q = write(tmp_path / "q.jsonl", '{"_id": "q1", "text": "\\udc00"}\n')
    with pytest.raises(DataError, match="surrogate") as exc:
        read_queries_file(q)
    check_error(exc.value, q, 1, "text")


def test_check_helpers_for_python_inputs():
    """The same checks, for callers that validate documents given as Python objects."""
    assert check_string("ok \U0001F600", None, None, "text") == "ok \U0001F600"
    with pytest.raises(DataError, match="surrogate") as exc:
        check_string("a\ud800", "<input>", None, "text")
    assert exc.value.field == "text"
    with pytest.raises(DataError, match="finite"):
        check_metadata({"year": float("nan")}, "<input>", None)
    with pytest.raises(DataError, match="keys must be strings"):
        check_metadata({1: "x"}, "<input>", None)
    assert check_metadata({"a": [1, 2.5, True, None, {"b": "c"}]}, None, None) == {"a": [1, 2.5, True, None, {"b": "c"}]}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_metadata_rejected(tmp_path, write, check_error, value):
    p = write(tmp_path / "c.jsonl", '{"_id": "1", "text": "a", "metadata": {"year": ' + value + "}}\n")
    with pytest.raises(DataError) as exc:
        list(iter_corpus(p))
    check_error(exc.value, p, 1)


@pytest.mark.parametrize("key", ["id", "_id", "doc_id"])
def test_duplicate_id_names_the_key_the_file_uses(tmp_path, key):
    path = tmp_path / "dup.jsonl"
    path.write_text(f'{{"{key}": "a", "text": "x"}}\n{{"{key}": "a", "text": "y"}}\n')
    with pytest.raises(DataError, match="duplicate") as exc:
        load_corpus(path)
    assert f"line 2, field '{key}'" in str(exc.value)
