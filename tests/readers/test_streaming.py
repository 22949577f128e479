"""Streaming ingest: corpora are read as documents are asked for (errors raised when reached, with file and
line), `DocumentStream` re-reads with a fresh report and knows its length, memory does not hold the corpus, and
a build that meets bad input part way keeps what it committed and resumes once the file is fixed."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest
from typer.testing import CliRunner

from mbert_retrieval.data import DataError, LoadReport, estimate_documents, iter_code_dir, iter_corpus, load_corpus
from mbert_retrieval.documents import CheckedDocuments, DocumentStream, iter_documents, normalize_documents


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"_id": f"d{i}", "text": f"document {i} text"} for i in range(start, start + n)]


# ------------------------------------------------------------------------------- errors when reached
@pytest.mark.parametrize("name, content, bad_line", [
    ("c.jsonl", "".join(json.dumps(r) + "\n" for r in _rows(3)) + '{"_id": "x", "text": \n', 4),
    ("c.json", "[\n" + ",\n".join(json.dumps(r) for r in _rows(3)) + ',\n{"_id": "x", "text": 5}\n]\n', 5),
    ("c.tsv", "id\ttext\n1\tone\n2\ttwo\n3\tthree\n4\n", 5),
    ("c.csv", "id,text\n1,one\n2,two\n3,three\n3,again\n", 5),
])
def test_documents_before_a_bad_line_are_yielded_first(tmp_path, write, check_error, name, content, bad_line):
    p = write(tmp_path / name, content)
    docs = iter_corpus(p)
    assert [next(docs).id for _ in range(3)]  # read before the bad row is reached
    with pytest.raises(DataError) as exc:
        next(docs)
    check_error(exc.value, p, bad_line)


def test_gzip_jsonl_streams_and_estimates(tmp_path, write, jsonl):
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(gzip.compress(jsonl(_rows(5) + ["", '{"_id": "d0", "text": "again"}']).encode()))
    docs = iter_corpus(p)
    assert [next(docs).id for _ in range(5)] == [f"d{i}" for i in range(5)]
    with pytest.raises(DataError, match="duplicate") as exc:
        next(docs)
    assert exc.value.line == 7
    assert estimate_documents(p) == 7  # lines, blank one included: an upper bound


def test_folder_is_read_file_by_file(tmp_path, write):
    for i in range(3):
        write(tmp_path / "notes" / f"{i}.md", f"# Note {i}\nbody {i}")
    write(tmp_path / "src" / "a.py", "x = 1\n")
    write(tmp_path / "src" / "b.py", "y = 2\n")
    report = LoadReport()
    docs = iter_corpus(tmp_path / "notes", report=report)
    assert next(docs).id == "0.md" and report.n_files == 1  # the other files are not read yet
    assert [d.id for d in docs] == ["1.md", "2.md"] and report.n_files == 3
    code = iter_code_dir(tmp_path / "src", report=(code_report := LoadReport()))
    assert next(code).id == "a.py" and code_report.n_files == 1
    assert estimate_documents(tmp_path / "notes") is None


def test_estimate_documents(tmp_path, write, jsonl):
    write(tmp_path / "b" / "corpus.jsonl", jsonl(_rows(4)))
    assert estimate_documents(tmp_path / "b") == 4
    assert estimate_documents(write(tmp_path / "t.tsv", "id\ttext\n1\ta\n2\tb")) == 2  # no final newline
    assert estimate_documents(write(tmp_path / "e.jsonl", "")) == 0
    assert estimate_documents(write(tmp_path / "c.csv", "id,text\n1,a\n")) is None


# ------------------------------------------------------------------------------------- DocumentStream
def test_document_stream_checks_the_start_at_once(tmp_path, write, jsonl, check_error):
    bad_first = write(tmp_path / "bad.jsonl", '{"_id": "a"}\n' + jsonl(_rows(2)))
    with pytest.raises(DataError) as exc:
        DocumentStream(bad_first)
    check_error(exc.value, bad_first, 1, "text")
    with pytest.raises(DataError, match="empty"):
        DocumentStream(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(DataError, match="no such file"):
        DocumentStream(tmp_path / "missing.jsonl")
    late = write(tmp_path / "late.jsonl", jsonl(_rows(2)) + "{oops\n")
    stream = DocumentStream(late)  # the bad line is not reached yet
    with pytest.raises(DataError) as exc:
        list(stream)
    check_error(exc.value, late, 3)


def test_document_stream_rereads_with_a_fresh_report(tmp_path, write, jsonl):
    p = write(tmp_path / "c.jsonl", jsonl(_rows(5) + [{"_id": "blank", "text": "  "}]))
    report = LoadReport()
    stream = DocumentStream(p, report=report)
    assert stream.estimate() == 6  # lines: no pass has finished yet
    first = [d["id"] for d in stream]
    assert first == [f"d{i}" for i in range(5)] and report.n_documents == 5 and report.n_blank_skipped == 1
    assert list(stream.ids()) == first and report.n_documents == 5 and report.n_files == 1  # not doubled
    assert len(stream) == 5 and stream.estimate() == 5
    assert next(iter(stream)) == {"id": "d0", "text": "document 0 text", "title": None, "metadata": {}}


def test_document_stream_len_costs_a_pass_only_when_unknown(tmp_path, write, jsonl):
    stream = DocumentStream(write(tmp_path / "c.jsonl", jsonl(_rows(7))))
    assert len(stream) == 7  # a counting pass
    assert [d["id"] for d in stream][-1] == "d6"  # then a full pass from the start
    assert normalize_documents(stream) == list(stream)


def test_iter_documents_is_lazy_for_python_objects():
    docs = iter_documents([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    assert [next(docs)["id"], next(docs)["id"]] == ["a", "b"]
    with pytest.raises(DataError, match="duplicate"):
        next(docs)
    with pytest.raises(DataError, match="document 0"):
        iter_documents([{"id": "a"}, {"id": "b", "text": "y"}])  # the first document: at once
    assert list(iter_documents([])) == []
    checked = [{"id": "a", "text": "x", "title": None, "metadata": {}}]
    assert list(iter_documents(CheckedDocuments(checked))) == checked


def test_streaming_does_not_hold_the_corpus(tmp_path, jsonl):
    """Peak Python memory of streaming a corpus is a fraction of reading it whole (what grows is the id set)."""
    n = 20_000
    p = tmp_path / "c.jsonl"
    p.write_text(jsonl({"_id": f"d{i}", "title": f"title {i}", "text": "some words of text " * 8} for i in range(n)))

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def stream() -> None:
        count = 0
        for _ in DocumentStream(p):
            count += 1
        assert count == n

    whole = peak(lambda: load_corpus(p))
    streamed = peak(stream)
    assert streamed < whole / 3, (streamed, whole)


# ------------------------------------------------------------------------------- late errors in a build
def test_build_keeps_committed_documents_and_resumes_after_a_late_error(tmp_path, jsonl, tiny_modernbert):
    from mbert_retrieval.retriever import Retriever

    good = _rows(10)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(jsonl(good + ['{"_id": "bad", "text": }'] + _rows(2, start=10)))
    with pytest.raises(DataError) as exc:
        Retriever.build(tmp_path / "idx", corpus, model=tiny_modernbert, chunk_size=4)
    assert exc.value.path == str(corpus) and exc.value.line == 11
    assert "8 documents committed before it are kept" in str(exc.value)  # two chunks of 4; d8, d9 were pending
    corpus.write_text(jsonl(good + _rows(3, start=10)))
    with Retriever.build(tmp_path / "idx", corpus, model=tiny_modernbert, chunk_size=4) as r:
        assert r.resumed_from == 8 and len(r) == 13
        assert {d["id"] for d in r.get([f"d{i}" for i in range(13)])} == {f"d{i}" for i in range(13)}


def test_cli_index_late_error_exits_2_with_file_and_line_then_resumes(tmp_path, jsonl, tiny_modernbert):
    from mbert_retrieval.cli.main import app

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(jsonl(_rows(10) + ['{"_id": "bad", "text": }']))
    args = ["index", str(corpus), str(tmp_path / "idx"), "--model", tiny_modernbert, "--chunk-size", "4", "-q"]
    runner = CliRunner()
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 2 and f"{corpus}:11:" in first.stderr and "Traceback" not in first.stderr
    corpus.write_text(jsonl(_rows(11)))
    second = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["documents"] == 11
