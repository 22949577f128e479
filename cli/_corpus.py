"""The corpus side of `mbret index` / `mbret add`: input-format options, reading with a load report (lazily:
the corpus streams into the index, see `documents.DocumentStream`), the count of documents the model will cut
at its maximum length, and the summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import typer

from ._common import BadInput, out, plural

TEXT_UNITS = ("auto", "line", "paragraph", "file")
_TRUNCATION_BATCH = 512  # texts tokenized at a time when counting


class CorpusOptions:
    """The typer options that say how a corpus is read (shared by `index` and `add`)."""

    format = typer.Option("auto", "--format", help="auto | beir | jsonl | json | csv | tsv | text | markdown | code "
                          "| folder (auto: from the path; a folder takes every text-like file).")
    text_column = typer.Option(None, "--text-column", help=".csv/.tsv: column holding the text (default: the "
                               "first of text, contents, content, body).")
    id_column = typer.Option(None, "--id-column", help=".csv/.tsv: column holding the id (default: _id, id, "
                             "doc_id or docid; else row numbers).")
    title_column = typer.Option(None, "--title-column", help=".csv/.tsv: column holding the title (default: "
                                "title when present).")
    max_file_bytes = typer.Option(1_000_000, "--max-file-bytes", help="Folders: files larger than this are "
                                  "skipped (and listed in the summary).")
    txt_split = typer.Option("auto", "--txt-split", help=".txt files: one document per line | paragraph | file "
                             "(auto: a .txt corpus file by paragraph when it has blank lines, else by line; .txt "
                             "files in a folder: one per file).")


def read_documents(corpus: Path, corpus_format: str, text_column: str | None = None,
                   id_column: str | None = None, title_column: str | None = None,
                   txt_split: str = "auto", max_file_bytes: int = 1_000_000) -> tuple[Any, Any]:
    """The documents of `corpus` as a `DocumentStream` of index documents (read lazily, again at each
    iteration; `len()` is exact and costs one reading pass until a pass has finished; `estimate()` is a cheap
    progress total), and the `LoadReport` of what was read (format detected, blank documents and files
    skipped, with reasons), complete once a pass has finished. The path, the options and the first document
    are checked here; bad input further on raises when it is reached. Bad options or input: BadInput /
    DataError (exit 2)."""
    from mbert_retrieval.data import CORPUS_FORMATS, LoadReport, ReadOptions
    from mbert_retrieval.documents import DocumentStream

    if corpus_format not in CORPUS_FORMATS:
        raise BadInput(f"--format must be one of {', '.join(CORPUS_FORMATS)}, got {corpus_format!r}")
    if txt_split not in TEXT_UNITS:
        raise BadInput(f"--txt-split must be one of {', '.join(TEXT_UNITS)}, got {txt_split!r}")
    columns = {"--text-column": text_column, "--id-column": id_column, "--title-column": title_column}
    given = [flag for flag, value in columns.items() if value is not None]
    if given and _format_of(corpus, corpus_format) not in ("csv", "tsv"):
        raise BadInput(f"{', '.join(given)} only apply to .csv / .tsv corpora, not to {corpus}")
    if max_file_bytes < 1:
        raise BadInput(f"--max-file-bytes must be >= 1, got {max_file_bytes}")
    options = ReadOptions(text_unit=txt_split, text_column=text_column, id_column=id_column, title_column=title_column,
                          max_file_bytes=max_file_bytes)
    report = LoadReport()
    return DocumentStream(corpus, corpus_format, options, report), report


def _format_of(corpus: Path, corpus_format: str) -> str:
    from mbert_retrieval.data import detect_format

    return detect_format(corpus) if corpus_format == "auto" and corpus.exists() else corpus_format


def _truncation_setup(model: Any, index: Any) -> tuple[Any, int, int, str] | None:
    """(tokenizer, token limit, extra tokens, prompt) to count truncated documents with, or None when
    nothing is cut (the model's chunking or the index's windows split long documents) or the model has no
    tokenizer to count with."""
    config = getattr(model, "config", None)
    encoder = getattr(model, "encoder", None)
    tokenizer = getattr(encoder, "tokenizer", None)
    limit = getattr(getattr(encoder, "config", None), "max_length", None)
    windows = (getattr(getattr(index, "manifest", None), "params", None) or {}).get("window")
    if tokenizer is None or not limit or getattr(config, "chunking", None) is not None or windows:
        return None
    extra = 0
    prompt = getattr(config, "document_prompt", "") or ""
    if getattr(model, "kind", None) == "colbert":
        limit = min(int(limit), int(getattr(config, "document_length", limit)))
        extra = 1  # the [D] marker
    return tokenizer, int(limit), extra, prompt


class TruncationCounter:
    """Counts, as documents stream past (`wrap`), those longer than what the model encodes: the corpus is read
    once, for the index and the count together. `result()`: what `count_truncated` returns, for the documents
    seen so far."""

    def __init__(self, model: Any, index: Any = None):
        self._setup = _truncation_setup(model, index)
        self.n = 0

    def _count(self, batch: list[dict[str, Any]]) -> None:
        from mbert_retrieval.chunking import tokenize_untruncated
        from mbert_retrieval.data import document_text

        assert self._setup is not None
        tokenizer, limit, extra, prompt = self._setup
        ids = tokenize_untruncated(tokenizer, [document_text(d) for d in batch], prompt)
        self.n += sum(len(x) + extra > limit for x in ids)

    def _counted(self, docs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == _TRUNCATION_BATCH:
                self._count(batch)
                yield from batch
                batch = []
        if batch:
            self._count(batch)
            yield from batch

    def wrap(self, docs: Iterable[dict[str, Any]]) -> Any:
        """`docs` (checked index documents, e.g. a `DocumentStream`), counted as they pass, in batches of
        a few hundred; passed through unchanged when nothing is cut."""
        from mbert_retrieval.documents import CheckedDocuments

        return docs if self._setup is None else CheckedDocuments(self._counted(docs))

    def result(self) -> tuple[int, int] | None:
        return None if self._setup is None else (self.n, self._setup[1])


def count_truncated(model: Any, docs: Iterable[dict[str, Any]], index: Any = None) -> tuple[int, int] | None:
    """(documents longer than what the model encodes, that length in tokens), counted with the model's own
    tokenizer (special tokens and prompt included); None when nothing is cut (the model's chunking or the
    index's windows split long documents) or the model has no tokenizer to count with. Costs one tokenizer
    pass, a small fraction of encoding; `docs` is read once, a batch at a time (`TruncationCounter` counts
    during the indexing pass instead)."""
    counter = TruncationCounter(model, index)
    if counter.result() is None:
        return None
    for _ in counter.wrap(docs):
        pass
    return counter.result()


def read_summary(report: Any, truncated: tuple[int, int] | None) -> dict[str, Any]:
    """The `--json` fields describing what was read: format detected, blank documents and files skipped (with
    reasons), documents cut at the model's maximum length."""
    return {"detected": report.detected(), "format": report.format, "text_unit": report.text_unit,
            "files": report.n_files, "blank_skipped": report.n_blank_skipped,
            "files_skipped": [{"path": p, "reason": r} for p, r in report.skipped],
            "truncated": None if truncated is None else truncated[0],
            "max_tokens": None if truncated is None else truncated[1]}


def print_read_summary(info: dict[str, Any]) -> None:
    """The lines under "indexed N documents": what was read, what was left out and what was cut."""
    parts = [f"read: {info['detected']}"]
    if info["blank_skipped"]:
        parts.append(f"{plural(info['blank_skipped'], 'blank document')} skipped")
    out.print("  " + "; ".join(parts), markup=False)
    if info["files_skipped"]:
        by_reason: dict[str, list[str]] = {}
        for row in info["files_skipped"]:
            by_reason.setdefault(row["reason"], []).append(row["path"])
        out.print(f"  skipped {plural(len(info['files_skipped']), 'file')}:", markup=False)
        for reason, paths in by_reason.items():
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            out.print(f"    {reason}: {shown}", markup=False)
    if info["truncated"]:
        out.print(f"  truncated: {plural(info['truncated'], 'document')} longer than the model's "
                  f"{info['max_tokens']} tokens: only the first {info['max_tokens']} tokens are encoded",
                  markup=False)
