"""`iter_corpus` / `load_corpus`: any corpus path -> documents, with the format detected from the path,
blank documents skipped and counted, and an empty result refused. A `LoadReport` passed in is filled as
the documents are read (what was detected, how many documents, what was skipped and why).

`iter_corpus` streams: JSONL (and BEIR's corpus.jsonl) line by line, CSV/TSV row by row, `.json` arrays
element by element (an incremental parser: memory holds one element and the unparsed text around it, not the
file), text files line by line, folders file by file (the sorted list of their paths is kept, not the
contents). What grows with the corpus while it is read is the set of ids seen (duplicates are refused when
reached: about 100 bytes per document) and, for folders, the path list. Errors (file, line, field) are raised
when the bad input is reached, so a consumer that commits as it goes keeps what came before.
`estimate_documents` gives a cheap count for a progress bar without parsing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from .base import (
    GZIP_ERRORS, READ_CHUNK, DataError, Document, LoadReport, PathLike, ReadOptions, document_text, open_binary,
    suffix_without_gz,
)
from .files import CODE_LANGUAGES, TEXT_EXTENSIONS, iter_code_dir, iter_file_corpus, iter_folder_corpus
from .jsonl import iter_json_corpus, iter_jsonl_corpus
from .tabular import iter_table_corpus
from .text import MARKDOWN_EXTENSIONS

logger = logging.getLogger(__name__)

CORPUS_FORMATS = ("auto", "beir", "jsonl", "json", "csv", "tsv", "text", "markdown", "code", "folder")


def find_beir_file(folder: Path, stem: str) -> Path:
    """`<stem>.jsonl` or `<stem>.jsonl.gz` in a BEIR folder; DataError when neither exists."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"BEIR folder has no {stem}.jsonl", folder / f"{stem}.jsonl")


def detect_format(path: Path) -> str:
    """The corpus format of an existing path: a folder with corpus.jsonl(.gz) -> "beir", another folder ->
    "folder"; a file by its extension (`.gz` ignored): jsonl, json, csv, tsv, text (.txt), markdown
    (.md), code (a known language); any other file -> "file" (one document)."""
    if path.is_dir():
        return "beir" if any((path / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")) else "folder"
    ext = suffix_without_gz(path)
    if ext in (".jsonl", ".json", ".csv", ".tsv"):
        return ext[1:]
    if ext in (".txt", ".text"):
        return "text"
    if ext in MARKDOWN_EXTENSIONS:
        return "markdown"
    return "code" if ext in CODE_LANGUAGES else "file"


def _documents(fmt: str, path: Path, options: ReadOptions, report: LoadReport) -> Iterator[Document]:
    if fmt == "beir":
        return iter_jsonl_corpus(find_beir_file(path, "corpus"))
    if fmt in ("jsonl", "json", "csv", "tsv"):
        if path.is_dir():
            raise DataError(f"expected a .{fmt} file, got a folder", path)
        report.add_file(path)
        if fmt == "jsonl":
            return iter_jsonl_corpus(path)
        return iter_json_corpus(path) if fmt == "json" else iter_table_corpus(path, options)
    if path.is_file():
        return iter_file_corpus(path, options, report, None if fmt in ("file", "folder") else fmt)
    if fmt == "code":
        return iter_code_dir(path, max_bytes=options.max_file_bytes, report=report)
    extensions = {"text": TEXT_EXTENSIONS, "markdown": MARKDOWN_EXTENSIONS}.get(fmt)
    return iter_folder_corpus(path, options, report, extensions)


def _nothing_found(path: Path, report: LoadReport) -> DataError:
    if report.n_blank_skipped:
        return DataError(f"no documents: all {report.n_blank_skipped} documents are blank", path)
    if path.is_file():
        if path.stat().st_size == 0:
            return DataError("no documents (the file is empty)", path)
        return DataError("no documents (the file holds only blank lines, a header or an empty array)", path)
    if report.format == "beir":
        return DataError("no documents (corpus file is empty)", find_beir_file(path, "corpus"))
    skipped = f"; skipped {report.skipped_summary()}" if report.skipped else ""
    return DataError(f"no documents: no readable text files in the folder{skipped}", path)


def _count(docs: Iterator[Document], path: Path, report: LoadReport) -> Iterator[Document]:
    for doc in docs:
        if not document_text(doc):
            report.n_blank_skipped += 1
            logger.debug("skipping blank document %r", doc.id)
            continue
        report.n_documents += 1
        yield doc
    if report.n_documents == 0:
        raise _nothing_found(path, report)
    if report.n_blank_skipped:
        logger.info("%s: skipped %d blank documents", path, report.n_blank_skipped)


def iter_corpus(path: PathLike, kind: str = "auto", options: ReadOptions | None = None, *,
                report: LoadReport | None = None) -> Iterator[Document]:
    """Stream the documents of a corpus: a BEIR folder, a `.jsonl`/`.json`/`.csv`/`.tsv` file (`.gz` too),
    a text, Markdown or source file, or a folder of text-like files (see `detect_format`; `kind` forces one
    of CORPUS_FORMATS). Documents whose title and text are both blank are skipped and counted in
    `report.n_blank_skipped`; no document at all raises DataError. Files are read as documents are asked for,
    so `report` is complete once the iterator is exhausted. The path and `kind` are checked at once."""
    p = Path(path)
    if kind not in CORPUS_FORMATS:
        raise ValueError(f"unknown corpus kind {kind!r}: expected {', '.join(CORPUS_FORMATS)}")
    if not p.exists():
        raise DataError("no such file or directory", p)
    options = options or ReadOptions()
    report = report if report is not None else LoadReport()
    report.source, report.folder = str(p), p.is_dir()
    report.format = detect_format(p) if kind == "auto" else kind
    if report.format == "beir" and not p.is_dir():
        raise DataError("expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), got a file", p)
    return _count(_documents(report.format, p, options, report), p, report)


def estimate_documents(path: PathLike, kind: str = "auto") -> int | None:
    """About how many documents `iter_corpus(path, kind)` yields, without parsing (for a progress bar): the
    lines of a JSONL file or BEIR corpus (`.gz` decompressed), the lines after the header of a TSV; None for
    the other formats. An upper bound: blank lines and blank documents are counted."""
    p = Path(path)
    fmt = detect_format(p) if kind == "auto" and p.exists() else kind
    if fmt == "beir" and p.is_dir():
        p = find_beir_file(p, "corpus")
    elif fmt not in ("jsonl", "tsv") or not p.is_file():
        return None
    n, last = 0, b"\n"
    with open_binary(p) as fh:
        try:
            while chunk := fh.read(READ_CHUNK):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        except GZIP_ERRORS:
            return None  # reading the corpus says what is wrong, with the line
    n += last != b"\n"
    return max(0, n - 1) if fmt == "tsv" else n


def load_corpus(path: PathLike, kind: str = "auto", options: ReadOptions | None = None, *,
                report: LoadReport | None = None) -> dict[str, Document]:
    """`iter_corpus` read whole into {id: Document}, in file order (ids are unique: readers refuse duplicates)."""
    return {doc.id: doc for doc in iter_corpus(path, kind, options, report=report)}
