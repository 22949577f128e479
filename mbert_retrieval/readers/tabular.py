"""`.csv` and `.tsv` corpora (optionally `.gz`): a header row, then one document per row.

The text column is `ReadOptions.text_column`, else the first column named text, contents, content or body
(case-insensitive); without one the error lists the columns. The id column is `id_column`, else one named
_id, id, doc_id or docid, else the row number ("1" for the first row after the header). `title_column`, else
a column named title. Every other non-empty cell goes into metadata under its column name; a cell that is a
plain decimal number (`12`, `-3.5`, `2.5e3`; not `007`, `1,000`, `nan` or `inf`) becomes an int or float.
CSV follows RFC 4180 quoting (a quoted field may hold commas and newlines); TSV has no quoting (each line is
one row, cells split on tabs), as in MS MARCO and BEIR files."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import (
    ID_FIELDS, TABLE_TEXT_COLUMNS, DataError, Document, IdSet, ReadOptions, iter_lines,
    suffix_without_gz,
)

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_CSV_FIELD_LIMIT = 1 << 30


def parse_cell(value: str) -> Any:
    """An int or float for a plain decimal number (finite), else the string unchanged."""
    if _NUMBER.fullmatch(value):
        if value.lstrip("-").isdigit():
            return int(value)
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def _pick(header: Sequence[str], chosen: str | None, defaults: Sequence[str], what: str, path: Path,
          required: bool) -> int | None:
    if chosen is not None:
        if chosen not in header:
            raise DataError(f"no {what} column {chosen!r}; the columns are: {', '.join(header)}", path, 1)
        return header.index(chosen)
    lower = [h.strip().lower() for h in header]
    for name in defaults:
        if name in lower:
            return lower.index(name)
    if required:
        raise DataError(f"no {what} column (one of {', '.join(defaults)}); the columns are: {', '.join(header)}; "
                        f"choose one with text_column (--text-column)", path, 1)
    return None


def _rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the row, cells). Blank lines are skipped."""
    if delimiter == "\t":
        for n, line in iter_lines(path):
            if line.strip():
                yield n, line.split("\t")
        return
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # the default (128 KiB) is smaller than many documents
    reader = csv.reader((line for _, line in iter_lines(path, keep_ends=True)), delimiter=delimiter, strict=True)
    last = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", path, reader.line_num) from None
        start, last = last + 1, reader.line_num
        if cells and any(c.strip() for c in cells):
            yield start, cells


def iter_table_corpus(path: Path, options: ReadOptions | None = None) -> Iterator[Document]:
    """Stream documents from a `.csv` / `.tsv` file (see the module docstring for the columns)."""
    options = options or ReadOptions()
    delimiter = "\t" if suffix_without_gz(path) == ".tsv" else ","
    rows = _rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        return
    header_line, header = first
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"repeated column names in the header: {', '.join(header)}", path, header_line)
    text_i = _pick(header, options.text_column, TABLE_TEXT_COLUMNS, "text", path, required=True)
    assert text_i is not None  # required=True raises instead of returning None
    id_i = _pick(header, options.id_column, ID_FIELDS, "id", path, required=False)
    title_i = _pick(header, options.title_column, ("title",), "title", path, required=False)
    used = {text_i, id_i, title_i}
    meta_cols = [(i, h) for i, h in enumerate(header) if i not in used]
    ids = IdSet()
    for row_number, (n, cells) in enumerate(rows, start=1):
        if len(cells) != len(header):
            raise DataError(f"expected {len(header)} cells (as in the header), got {len(cells)}", path, n)
        doc_id = cells[id_i].strip() if id_i is not None else str(row_number)
        if not doc_id:
            raise DataError("empty id", path, n, header[id_i] if id_i is not None else None)
        ids.add(doc_id, path, n, header[id_i] if id_i is not None else "id")
        metadata = {h: parse_cell(cells[i]) for i, h in meta_cols if cells[i].strip()}
        yield Document(id=doc_id, text=cells[text_i], title=cells[title_i].strip() if title_i is not None else "",
                       metadata=metadata)
