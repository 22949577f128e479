"""Input readers: every format, and every malformed input names its file and line."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from mbert_retrieval.data import (
    BeirDataset,
    DataError,
    Document,
    document_text,
    iter_jsonl_corpus,
    load_corpus,
    read_beir_folder,
    read_code_dir,
    read_jsonl_corpus,
    read_qrels_tsv,
    read_queries_file,
    read_text_files,
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def assert_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, field: str | None = None) -> None:
    err = exc.value
    assert isinstance(err, ValueError)
    assert err.path == str(path) and str(path) in str(err)
    assert err.line == line
    if line is not None:
        assert re.search(rf"\bline {line}\b", str(err)), str(err)
    if field is not None:
        assert err.field == field and repr(field) in str(err)


# ------------------------------------------------------------------------------------------- documents
def test_document_text_beir_join():
    assert document_text(Document("1", "body", "Title")) == "Title body"
    assert document_text(Document("1", "  body \n")) == "body"
    assert document_text({"title": "T", "text": "x"}) == "T x"
    assert document_text({"text": "x"}) == "x"


def test_jsonl_corpus_fields_and_aliases(tmp_path):
    p = write(tmp_path / "c.jsonl", jsonl([
        {"_id": "a", "title": "T", "text": "hello", "metadata": {"url": "u"}},
        {"id": 7, "contents": "seven"},
        "",
        {"doc_id": "c", "text": "", "title": None},
    ]))
    corpus = read_jsonl_corpus(p)
    assert list(corpus) == ["a", "7", "c"]
    assert corpus["a"] == Document("a", "hello", "T", {"url": "u"})
    assert corpus["7"].text == "seven" and corpus["c"].title == ""


def test_jsonl_corpus_streams(tmp_path):
    p = write(tmp_path / "c.jsonl", jsonl([{"_id": "1", "text": "x"}, "{broken"]))
    it = iter_jsonl_corpus(p)
    assert next(it).id == "1"  # first document arrives before the bad line is read
    with pytest.raises(DataError):
        next(it)


def test_jsonl_gz(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(jsonl([{"_id": "1", "text": "x"}]))
    assert read_jsonl_corpus(p)["1"].text == "x"


@pytest.mark.parametrize("rows, line, field, message", [
    ([{"_id": "1", "text": "a"}, "{not json"], 2, None, "invalid JSON"),
    ([{"_id": "1", "text": "a"}, {"_id": "2", "text": "b"}, {"_id": "3", "title": "t"}], 3, "text", "missing"),
    ([{"text": "a"}], 1, "_id", "missing id"),
    ([{"_id": "1", "text": "a"}, {"_id": "2", "text": "b"}, {"_id": "1", "text": "c"}], 3, "_id", "duplicate"),
    ([{"_id": "1", "text": 5}], 1, "text", "expected a string"),
    ([{"_id": [1], "text": "a"}], 1, "_id", "string or an integer"),
    ([{"_id": "1", "text": "a", "metadata": [1]}], 1, "metadata", "expected an object"),
    ([{"_id": "1", "text": "a", "title": 3}], 1, "title", "expected a string"),
    (["[1, 2]"], 1, None, "JSON object"),
])
def test_jsonl_corpus_errors(tmp_path, rows, line, field, message):
    p = write(tmp_path / "corpus.jsonl", jsonl(rows))
    with pytest.raises(DataError, match=message) as exc:
        read_jsonl_corpus(p)
    assert_error(exc, p, line, field)


def test_invalid_utf8_names_line(tmp_path):
    p = write(tmp_path / "c.jsonl", b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "\xff"}\n')
    with pytest.raises(DataError, match="UTF-8") as exc:
        read_jsonl_corpus(p)
    assert_error(exc, p, 2)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as exc:
        read_jsonl_corpus(tmp_path / "nope.jsonl")
    assert_error(exc, tmp_path / "nope.jsonl", None)


# --------------------------------------------------------------------------------------------- queries
def test_queries_jsonl_tsv_txt(tmp_path):
    j = write(tmp_path / "q.jsonl", jsonl([{"_id": "q1", "text": "one"}, {"id": 2, "query": "two"}]))
    assert read_queries_file(j) == {"q1": "one", "2": "two"}
    t = write(tmp_path / "q.tsv", "query-id\ttext\nq1\tone\n\nq2\ttwo\twith tab\n")
    assert read_queries_file(t) == {"q1": "one", "q2": "two\twith tab"}
    x = write(tmp_path / "q.txt", "first query\n\n  second  \n")
    assert read_queries_file(x) == {"0": "first query", "1": "second"}


@pytest.mark.parametrize("name, content, line, field, message", [
    ("q.jsonl", jsonl([{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}]), 2, "_id", "duplicate"),
    ("q.jsonl", jsonl([{"_id": "1"}]), 1, "text", "missing"),
    ("q.jsonl", "\n\n{oops\n", 3, None, "invalid JSON"),
    ("q.tsv", "q1\tone\nq2 no tab\n", 2, None, "id<TAB>text"),
    ("q.tsv", "q1\tone\nq1\tagain\n", 2, "id", "duplicate"),
])
def test_queries_errors(tmp_path, name, content, line, field, message):
    p = write(tmp_path / name, content)
    with pytest.raises(DataError, match=message) as exc:
        read_queries_file(p)
    assert_error(exc, p, line, field)


# ----------------------------------------------------------------------------------------------- qrels
def test_qrels_beir_and_trec(tmp_path):
    beir = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\nq1\td1\t1\n")
    assert read_qrels_tsv(beir) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    trec = write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d2 2.0\n")
    assert read_qrels_tsv(trec) == {"q1": {"d1": 1, "d2": 2}}


@pytest.mark.parametrize("content, line, field, message", [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq2\td1\t1\nq2\td3\thigh\n", 5, "score", "integer"),
    ("q1\td1\t1\nq1\td2\t0.5\n", 2, "score", "integer"),
    ("q1\td1\t1\nq1\td1\n", 2, None, "3 .*or 4"),
    ("q1\td1\t1\nq1\td1\t2\n", 2, "score", "conflicting"),
    ("q1\t\t1\n", 1, "corpus-id", "empty"),
])
def test_qrels_errors(tmp_path, content, line, field, message):
    p = write(tmp_path / "test.tsv", content)
    with pytest.raises(DataError, match=message) as exc:
        read_qrels_tsv(p)
    assert_error(exc, p, line, field)


# ------------------------------------------------------------------------------------------------ BEIR
def make_beir(root: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\n") -> Path:
    write(root / "corpus.jsonl", jsonl([{"_id": f"d{i}", "title": f"T{i}", "text": f"doc {i}"} for i in range(1, 4)]))
    write(root / "queries.jsonl", jsonl([{"_id": q, "text": f"query {q}"} for q in ("q1", "q2", "q3")]))
    write(root / "qrels" / "test.tsv", qrels)
    return root


def test_beir_folder_filters_queries(tmp_path):
    ds = read_beir_folder(make_beir(tmp_path / "toy"))
    assert isinstance(ds, BeirDataset) and ds.name == "toy"
    assert list(ds.corpus) == ["d1", "d2", "d3"]
    assert ds.queries == {"q1": "query q1", "q2": "query q2"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d3": 2}}


def test_beir_folder_errors(tmp_path):
    root = make_beir(tmp_path / "toy", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(DataError, match="q9") as exc:
        read_beir_folder(root)
    assert_error(exc, root / "qrels" / "test.tsv", 3, "query-id")  # line 1 is the header
    with pytest.raises(DataError, match="available: test"):
        read_beir_folder(root, split="dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DataError, match="queries.jsonl"):
        read_beir_folder(root)


def test_beir_folder_real_scifact(shared_data):
    ds = read_beir_folder(shared_data / "scifact", "test")
    assert len(ds.corpus) == 5183 and len(ds.queries) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339
    assert set(ds.queries) == set(ds.qrels)


# ------------------------------------------------------------------------------------ text and code files
def test_read_text_files(tmp_path):
    write(tmp_path / "docs" / "a.txt", "alpha")
    write(tmp_path / "docs" / "sub" / "b.md", "# beta\n")
    write(tmp_path / "docs" / "c.bin", b"\x00\x01")
    write(tmp_path / "docs" / ".git" / "x.txt", "hidden")
    docs = read_text_files(tmp_path / "docs")
    assert [d.id for d in docs] == ["a.txt", "sub/b.md"]
    assert docs[1].text == "# beta\n"
    files = read_text_files([tmp_path / "docs" / "a.txt", tmp_path / "docs" / "sub" / "b.md"])
    assert [d.id for d in files] == ["a.txt", "sub/b.md"]


def test_read_text_files_bad_utf8(tmp_path):
    p = write(tmp_path / "d" / "bad.txt", b"line one\nline two\nbad \xff byte\n")
    with pytest.raises(DataError, match="UTF-8") as exc:
        read_text_files(tmp_path / "d")
    assert_error(exc, p, 3)


def test_read_code_dir(tmp_path):
    root = tmp_path / "repo"
    write(root / "pkg" / "mod.py", "def f():\n    return 1\n")
    write(root / "lib" / "x.rb", "puts 1")
    write(root / "README.md", "# readme")
    write(root / "big.py", "x = 1\n" * 100)
    write(root / "blob.c", b"int main;\x00\x00")
    write(root / "latin.go", b"package \xe9")
    write(root / "node_modules" / "dep.js", "x")
    write(root / ".git" / "hooks" / "h.py", "x")
    docs = read_code_dir(root, max_bytes=500)
    assert [d.id for d in docs] == ["lib/x.rb", "pkg/mod.py"]
    assert docs[1].metadata == {"language": "python", "path": "pkg/mod.py", "num_lines": 2}
    assert docs[0].metadata["language"] == "ruby"
    only_py = read_code_dir(root, extensions=[".py"], max_bytes=10_000)
    assert [d.id for d in only_py] == ["big.py", "pkg/mod.py"]


def test_load_corpus_autodetect(tmp_path):
    beir = make_beir(tmp_path / "beir")
    assert list(load_corpus(beir)) == ["d1", "d2", "d3"]
    assert list(load_corpus(beir / "corpus.jsonl")) == ["d1", "d2", "d3"]
    write(tmp_path / "notes" / "a.md", "note")
    assert list(load_corpus(tmp_path / "notes")) == ["a.md"]
    write(tmp_path / "code" / "a.py", "pass")
    write(tmp_path / "code" / "doc.md", "doc")
    code = load_corpus(tmp_path / "code")  # a folder holds code and docs alike: both are indexed
    assert list(code) == ["a.py", "doc.md"] and code["a.py"].metadata["language"] == "python"
    assert list(load_corpus(tmp_path / "code", kind="code")) == ["a.py"]
    assert list(load_corpus(tmp_path / "code" / "doc.md")) == ["doc.md"]
    with pytest.raises(DataError):
        load_corpus(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown corpus kind"):
        load_corpus(beir, kind="xml")
