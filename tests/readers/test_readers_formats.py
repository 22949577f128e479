"""Input formats: .json arrays, .csv/.tsv tables, .txt by line/paragraph/file, Markdown titles."""

from __future__ import annotations

import gzip
import json

import pytest

from mbert_retrieval.data import DataError, Document, LoadReport, ReadOptions, iter_corpus, load_corpus


# ------------------------------------------------------------------------------------------------ .json
def test_json_array_pretty_printed(tmp_path, write):
    rows = [{"_id": "a", "title": "T", "text": "alpha", "metadata": {"year": 2020}}, {"id": 2, "contents": "two"}]
    p = write(tmp_path / "c.json", json.dumps(rows, indent=2))
    report = LoadReport()
    corpus = load_corpus(p, report=report)
    assert corpus == {"a": Document("a", "alpha", "T", {"year": 2020}), "2": Document("2", "two")}
    assert report.format == "json" and report.n_documents == 2


def test_json_array_streams_and_names_lines(tmp_path, write, check_error):
    text = "[\n" + ",\n".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) for i in range(3)) + ",\n{broken\n]"
    p = write(tmp_path / "c.json", text)
    it = iter_corpus(p)
    assert [next(it).id for _ in range(3)] == ["0", "1", "2"]  # documents arrive before the bad element
    with pytest.raises(DataError, match="invalid JSON") as exc:
        next(it)
    check_error(exc.value, p, 5)


def test_json_array_large_elements_across_reads(tmp_path, write):
    """Elements larger than one read (1 MiB) and many small ones parse the same as json.load."""
    rows = [{"_id": "big", "text": "word " * 400_000}] + [{"_id": str(i), "text": f"t{i}\n"} for i in range(3000)]
    p = write(tmp_path / "c.json", json.dumps(rows, indent=1))
    corpus = load_corpus(p)
    assert len(corpus) == 3001 and corpus["big"].text == rows[0]["text"] and corpus["2999"].text == "t2999\n"


@pytest.mark.parametrize("content, line, message", [
    ('[{"_id": "1", "text": "a"},\n {"_id": "2", "text": "b"}', 2, "truncated"),
    ('[{"_id": "1", "text": "a"},\n\n {"_id": "2", "text": "b"},\n]', 4, "trailing comma"),
    ('[{"_id": "1", "text": "a"}\n {"_id": "2", "text": "b"}]', 2, "expected ','"),
    ('[{"_id": "1", "text": "a"},\n 5]', 2, "expected a JSON object"),
    ('[{"_id": "1", "text": "a"}]\n[]', 2, "extra data"),
    ('"just a string"', 1, "array of objects"),
    ('[{"_id": "1", "text": "a"},\n {"_id": "1", "text": "b"}]', 2, "duplicate"),
    ('[{"_id": "1", "text": "a"},\n {"_id": "2", "text": "b", "score": NaN}]', 2, "NaN"),
    ('{\n  "_id": "1",\n  "text": "a"\n}', 1, "array of objects"),
])
def test_json_array_errors(tmp_path, write, check_error, content, line, message):
    p = write(tmp_path / "c.json", content)
    with pytest.raises(DataError, match=message) as exc:
        load_corpus(p)
    check_error(exc.value, p, line)


def test_json_file_holding_json_lines(tmp_path, write, jsonl):
    p = write(tmp_path / "c.json", jsonl([{"_id": "1", "text": "a"}, {"_id": "2", "text": "b"}]))
    assert list(load_corpus(p)) == ["1", "2"]


def test_json_gz(tmp_path, write):
    p = write(tmp_path / "c.json.gz", gzip.compress(json.dumps([{"_id": "1", "text": "a"}]).encode()))
    assert list(load_corpus(p)) == ["1"]


# ------------------------------------------------------------------------------------------ .csv / .tsv
def test_csv_default_columns_and_metadata(tmp_path, write):
    p = write(tmp_path / "c.csv", 'id,Title,Body,year,score,zip,tag,empty\n'
                                  'd1,First,"hello, ""world""\nsecond line",2019,0.5,007,x,\n'
                                  'd2,,plain,-3,1e3,12a,,\n')
    report = LoadReport()
    corpus = load_corpus(p, report=report)
    assert report.format == "csv"
    assert corpus["d1"] == Document("d1", 'hello, "world"\nsecond line', "First",
                                    {"year": 2019, "score": 0.5, "zip": "007", "tag": "x"})
    assert corpus["d2"] == Document("d2", "plain", "", {"year": -3, "score": 1000.0, "zip": "12a"})


def test_csv_text_column_choice_and_row_ids(tmp_path, write):
    p = write(tmp_path / "c.csv", "question,answer\nwhat?,this\nwhy?,because\n")
    with pytest.raises(DataError, match="columns are: question, answer") as exc:
        load_corpus(p)
    assert exc.value.line == 1
    corpus = load_corpus(p, options=ReadOptions(text_column="answer"))
    assert corpus == {"1": Document("1", "this", "", {"question": "what?"}),
                      "2": Document("2", "because", "", {"question": "why?"})}
    with pytest.raises(DataError, match="no text column 'nope'"):
        load_corpus(p, options=ReadOptions(text_column="nope"))
    ids = load_corpus(p, options=ReadOptions(text_column="answer", id_column="question", title_column="question"))
    assert ids["why?"] == Document("why?", "because", "why?", {})


@pytest.mark.parametrize("content, line, message", [
    ("id,text\n1,a\n2,b,extra\n", 3, "expected 2 cells"),
    ("id,text\n1,a\n1,b\n", 3, "duplicate"),
    ('id,text\n1,a\n2,"unterminated\n', 3, "malformed CSV"),
    ("id,text,id\n1,a,2\n", 1, "repeated column"),
])
def test_csv_errors(tmp_path, write, check_error, content, line, message):
    p = write(tmp_path / "c.csv", content)
    with pytest.raises(DataError, match=message) as exc:
        load_corpus(p)
    check_error(exc.value, p, line)


def test_csv_long_field(tmp_path, write):
    text = "x" * 300_000  # above the csv module's default field limit (128 KiB)
    p = write(tmp_path / "c.csv", f'id,text\n1,"{text}"\n')
    assert load_corpus(p)["1"].text == text


def test_tsv_no_quoting(tmp_path, write):
    p = write(tmp_path / "c.tsv", '_id\ttitle\ttext\n1\tT\t"quoted" text, with comma\n\n2\t\tsecond\n')
    report = LoadReport()
    corpus = load_corpus(p, report=report)
    assert report.format == "tsv"
    assert corpus == {"1": Document("1", '"quoted" text, with comma', "T"), "2": Document("2", "second")}


# ------------------------------------------------------------------------------------------------- .txt
def test_txt_auto_paragraphs(tmp_path, write):
    p = write(tmp_path / "notes.txt", "first para\ncontinues\n\n\nsecond para\n  \nthird\n")
    report = LoadReport()
    corpus = load_corpus(p, report=report)
    assert report.text_unit == "paragraph" and "one document per paragraph" in report.summary()
    assert corpus == {
        "notes.txt#1": Document("notes.txt#1", "first para\ncontinues", "", {"path": "notes.txt", "line": 1}),
        "notes.txt#5": Document("notes.txt#5", "second para", "", {"path": "notes.txt", "line": 5}),
        "notes.txt#7": Document("notes.txt#7", "third", "", {"path": "notes.txt", "line": 7}),
    }


def test_txt_auto_lines_without_blank_lines(tmp_path, write):
    p = write(tmp_path / "lines.txt", "\none\ntwo\nthree\n\n")
    report = LoadReport()
    assert list(load_corpus(p, report=report)) == ["lines.txt#2", "lines.txt#3", "lines.txt#4"]
    assert report.text_unit == "line"


@pytest.mark.parametrize("unit, ids", [
    ("line", ["t.txt#1", "t.txt#2", "t.txt#4"]),
    ("paragraph", ["t.txt#1", "t.txt#4"]),
    ("file", ["t.txt"]),
])
def test_txt_unit_option(tmp_path, write, unit, ids):
    p = write(tmp_path / "t.txt", "a\nb\n\nc\n")
    corpus = load_corpus(p, options=ReadOptions(text_unit=unit))
    assert list(corpus) == ids
    if unit == "file":
        assert corpus["t.txt"].text == "a\nb\n\nc\n"


def test_text_unit_validated():
    with pytest.raises(ValueError, match="text_unit"):
        ReadOptions(text_unit="sentence")


# --------------------------------------------------------------------------------------------- Markdown
def test_markdown_title(tmp_path, write):
    p = write(tmp_path / "guide.md", "```\n# not a title\n```\nintro\n# Install Guide #\nrun pip\n## Sub\n# Other\n")
    report = LoadReport()
    doc = load_corpus(p, report=report)["guide.md"]
    assert report.format == "markdown"
    assert doc.title == "Install Guide"
    assert doc.text == "```\n# not a title\n```\nintro\nrun pip\n## Sub\n# Other\n"
    untitled = load_corpus(write(tmp_path / "plain.md", "## only level two\ntext"))["plain.md"]
    assert untitled.title == "" and untitled.text == "## only level two\ntext"


def test_kind_forces_reader(tmp_path, write):
    p = write(tmp_path / "notes.log", "x\ny\n")
    assert list(load_corpus(p)) == ["notes.log"]  # unknown extension: one document
    assert list(load_corpus(p, kind="text", options=ReadOptions(text_unit="line"))) == ["notes.log#1", "notes.log#2"]
    with pytest.raises(ValueError, match="unknown corpus kind"):
        load_corpus(p, kind="xml")


def test_compressed_text_and_markdown(tmp_path, write):
    p = write(tmp_path / "notes.txt.gz", gzip.compress(b"one\n\ntwo\n"))
    assert list(load_corpus(p)) == ["notes.txt.gz#1", "notes.txt.gz#3"]
    assert load_corpus(p, options=ReadOptions(text_unit="file"))["notes.txt.gz"].text == "one\n\ntwo\n"
    md = write(tmp_path / "guide.md.gz", gzip.compress(b"# Guide\nbody\n"))
    assert load_corpus(md)["guide.md.gz"].title == "Guide"


def test_iter_corpus_checks_path_and_kind_at_once(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        iter_corpus(tmp_path / "missing.jsonl")  # before any document is asked for
    with pytest.raises(ValueError, match="unknown corpus kind"):
        iter_corpus(tmp_path, kind="xml")
    with pytest.raises(DataError, match="expected a .csv file, got a folder"):
        iter_corpus(tmp_path, kind="csv")


def test_report_of_a_single_file(tmp_path, write, jsonl):
    p = write(tmp_path / "c.jsonl", jsonl([{"_id": "1", "text": "a"}]))
    report = LoadReport()
    load_corpus(p, report=report)
    assert report.summary() == "detected: jsonl file; 1 document"
    assert report.to_dict()["format"] == "jsonl" and report.to_dict()["documents"] == 1 and not report.folder


def test_queries_json_array(tmp_path, write, check_error):
    from mbert_retrieval.data import read_queries_file

    p = write(tmp_path / "q.json", '[\n {"_id": "q1", "text": "one"},\n {"id": 2, "query": "two"}\n]')
    assert read_queries_file(p) == {"q1": "one", "2": "two"}
    bad = write(tmp_path / "bad.json", '[\n {"_id": "q1", "text": "one"},\n "q2"\n]')
    with pytest.raises(DataError, match="expected a JSON object") as exc:
        read_queries_file(bad)
    check_error(exc.value, bad, 3)
