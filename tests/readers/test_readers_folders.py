"""Folders index every text-like file and report what they skipped; empty and blank corpora are refused,
blank documents skipped and counted."""

from __future__ import annotations

import pytest

from mbert_retrieval.data import DataError, Document, LoadReport, ReadOptions, iter_corpus, load_corpus


def make_docs_folder(root, write):
    write(root / "guide.md", "# Guide\nhow to install\n")
    write(root / "notes.txt", "plain notes\n\nsecond paragraph\n")
    write(root / "mkdocs.yml", "site_name: docs\n")
    write(root / "pyproject.toml", "[project]\nname = 'x'\n")
    write(root / "page.html", "<p>hello</p>")
    write(root / "sub" / "tool.py", "def f():\n    return 1\n")
    write(root / "LICENSE", "MIT license text")
    write(root / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(root / "blob.dat2", b"abc\x00\x00def")
    write(root / "latin1.txt", "caf\u00e9".encode("latin-1"))
    write(root / "utf16.txt", "wide text".encode("utf-16"))
    write(root / "big.log", "x" * 5000)
    write(root / "empty.md", "   \n")
    write(root / ".hidden.md", "hidden")
    write(root / "node_modules" / "dep.js", "x")
    return root


def test_docs_folder_with_config_files_keeps_docs(tmp_path, write):
    """A .yml/.toml/.html file no longer turns a docs folder into "code" and drops its .md/.txt files."""
    root = make_docs_folder(tmp_path / "docs", write)
    report = LoadReport()
    corpus = load_corpus(root, options=ReadOptions(max_file_bytes=1000), report=report)
    assert sorted(corpus) == ["LICENSE", "guide.md", "mkdocs.yml", "notes.txt", "page.html", "pyproject.toml",
                              "sub/tool.py", "utf16.txt"]
    assert corpus["guide.md"] == Document("guide.md", "how to install\n", "Guide", {"path": "guide.md"})
    assert corpus["notes.txt"].text == "plain notes\n\nsecond paragraph\n"  # whole file inside a folder
    assert corpus["sub/tool.py"].metadata == {"language": "python", "path": "sub/tool.py", "num_lines": 2}
    assert corpus["utf16.txt"].text == "wide text"
    assert report.format == "folder" and report.n_documents == 8 and report.n_blank_skipped == 1
    assert report.n_files == 9 and report.extensions[".md"] == 2 and report.extensions[""] == 1
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in report.skipped}
    assert reasons["logo.png"] == "binary" and reasons["blob.dat2"] == "binary"
    assert reasons["latin1.txt"] == "not UTF-8" and reasons["big.log"].startswith("too large (5000 bytes")
    assert set(reasons) == {"logo.png", "blob.dat2", "latin1.txt", "big.log"}
    line = report.summary()
    assert line.startswith("detected: folder of 9 files (") and "2 .md" in line
    assert "8 documents" in line and "1 blank document skipped" in line
    assert "skipped 4 files (" in line
    for part in ("binary: blob.dat2, logo.png", "not UTF-8: latin1.txt", "too large: big.log"):
        assert part in line
    d = report.to_dict()
    assert d["documents"] == 8 and {"path": str(root / "logo.png"), "reason": "binary"} in d["skipped"]


def test_folder_txt_units_and_kinds(tmp_path, write):
    root = make_docs_folder(tmp_path / "docs", write)
    paragraphs = load_corpus(root, options=ReadOptions(text_unit="paragraph"))
    assert "notes.txt#1" in paragraphs and "notes.txt#3" in paragraphs and "notes.txt" not in paragraphs
    code = load_corpus(root, kind="code")
    assert sorted(code) == ["mkdocs.yml", "page.html", "pyproject.toml", "sub/tool.py"]
    text = load_corpus(root, kind="text")
    assert sorted(text) == ["guide.md", "notes.txt", "utf16.txt"]


def test_folder_is_lazy(tmp_path, write):
    for i in range(3):
        write(tmp_path / "d" / f"{i}.md", f"doc {i}")
    report = LoadReport()
    it = iter_corpus(tmp_path / "d", report=report)
    assert next(it).id == "0.md" and report.n_files == 1  # files are read as documents are asked for
    assert [d.id for d in it] == ["1.md", "2.md"] and report.n_documents == 3


# --------------------------------------------------------------------------------------- empty / blank
@pytest.mark.parametrize("name, content, message", [
    ("c.jsonl", "", "the file is empty"),
    ("c.jsonl", "\n  \n\n", "only blank lines"),
    ("c.json", "[]", "empty array"),
    ("c.csv", "id,text\n", "a header"),
    ("c.txt", "", "the file is empty"),
    ("c.txt", "\n\n   \n", "only blank lines"),
    ("c.jsonl", '{"_id": "1", "text": "  "}\n{"_id": "2", "text": "", "title": "\\t"}\n', "all 2 documents are blank"),
])
def test_empty_corpus_file(tmp_path, write, name, content, message):
    p = write(tmp_path / name, content)
    with pytest.raises(DataError, match=message) as exc:
        load_corpus(p)
    assert exc.value.path == str(p) and "no documents" in str(exc.value)


def test_empty_folder_and_beir(tmp_path, write):
    write(tmp_path / "f" / "img.png", b"\x89PNG")
    with pytest.raises(DataError, match=r"no documents: no readable text files.*skipped 1 file \(binary: img.png\)"):
        load_corpus(tmp_path / "f")
    (tmp_path / "g").mkdir()
    with pytest.raises(DataError, match="no documents"):
        load_corpus(tmp_path / "g")
    write(tmp_path / "beir" / "corpus.jsonl", "")
    with pytest.raises(DataError, match="no documents") as exc:
        load_corpus(tmp_path / "beir")
    assert exc.value.path == str(tmp_path / "beir" / "corpus.jsonl")


def test_blank_documents_skipped_and_counted(tmp_path, write, jsonl):
    p = write(tmp_path / "c.jsonl", jsonl([{"_id": "1", "text": "a"}, {"_id": "2", "text": " \n"},
                                           {"_id": "3", "text": "", "title": "Only a title"}]))
    report = LoadReport()
    assert list(load_corpus(p, report=report)) == ["1", "3"]
    assert report.n_documents == 2 and report.n_blank_skipped == 1
    assert "1 blank document skipped" in report.summary()
    csv = write(tmp_path / "c.csv", "id,text\n1,a\n2,   \n")
    report = LoadReport()
    assert list(load_corpus(csv, report=report)) == ["1"] and report.n_blank_skipped == 1


def test_binary_file_given_as_corpus(tmp_path, write):
    with pytest.raises(DataError, match="binary"):
        load_corpus(write(tmp_path / "x.png", b"\x89PNG\x00"))
    with pytest.raises(DataError, match="binary"):
        load_corpus(write(tmp_path / "x.weird", b"ab\x00\x00cd"))


def test_nul_bytes_past_the_first_block(tmp_path, write, check_error):
    text = ("line\n" * 3000).encode()
    write(tmp_path / "f" / "ok.md", "fine")
    write(tmp_path / "f" / "late.txt", text + b"\x00tail\n")
    report = LoadReport()
    assert list(load_corpus(tmp_path / "f", report=report)) == ["ok.md"]
    assert report.skipped == [(str(tmp_path / "f" / "late.txt"), "binary")]
    p = write(tmp_path / "late.txt", text + b"\x00tail\n")
    with pytest.raises(DataError, match="binary") as exc:
        load_corpus(p, options=ReadOptions(text_unit="line"))
    check_error(exc.value, p, 3001)
    with pytest.raises(DataError, match="binary") as exc:
        load_corpus(p, options=ReadOptions(text_unit="file"))
    check_error(exc.value, p, 3001)


def test_html_pages_index_their_visible_text(tmp_path, write):
    """An HTML page in a folder is a document of its visible text titled by <title>: no tags, scripts or styles."""
    write(tmp_path / "site" / "a.html", "<html><head><title>My  page</title><style>b {color: red}</style></head><body><h1>Intro</h1>"
                         "<p>Bread &amp; <b>butter</b></p><script>var secret = 1;</script><p>Second</p></body></html>")
    (doc,) = load_corpus(tmp_path / "site").values()
    assert doc.title == "My page" and doc.text == "Intro\nBread & butter\nSecond"
    assert "<" not in doc.text and "secret" not in doc.text and "color" not in doc.text
