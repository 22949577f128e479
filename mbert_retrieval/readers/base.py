"""What every corpus reader shares: the error type, the document type, the load report, read options,
guarded byte/line reading (corrupt gzip and bad UTF-8 become `DataError`) and value checks (lone
surrogates, non-finite numbers, nesting depth) that would otherwise fail later, far from the input."""

from __future__ import annotations

import codecs
import gzip
import math
import os
import zlib
from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

PathLike = str | os.PathLike

ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_FIELDS = ("text", "contents", "content")
TABLE_TEXT_COLUMNS = ("text", "contents", "content", "body")
MAX_METADATA_DEPTH = 32
READ_CHUNK = 1 << 20

# errors a corrupt or truncated .gz file raises while it is read
GZIP_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)


class DataError(ValueError):
    """Malformed input. The message names the file, the line number and the field when known."""

    def __init__(self, message: str, path: PathLike | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = self.path or "<input>"
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


@dataclass
class Document:
    """One retrievable unit: id, body text, optional title and free-form metadata."""

    id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict)


def document_text(doc: Document | Mapping[str, Any]) -> str:
    """The text a model encodes for a document, the BEIR way: `title + " " + text` (stripped) when a
    title is present, else the stripped text. The one place in the package where this join is done."""
    if isinstance(doc, Document):
        title, text = doc.title, doc.text
    else:
        title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip() if title else text.strip()


@dataclass
class ReadOptions:
    """How files are cut into documents (`load_corpus(..., options=ReadOptions(...))`).

    text_unit: documents in a `.txt` file: "line", "paragraph" (blank-line separated), "file" (the whole
        file), or "auto": for a `.txt` file given as the corpus, paragraphs when it has blank lines between
        text, else lines; for `.txt` files found in a folder, the whole file.
    text_column / id_column / title_column: `.csv`/`.tsv` columns (default: the first of text, contents,
        content, body; of _id, id, doc_id, docid (else row numbers "1", "2", ...); title when present).
        The other columns become metadata; cells that read as numbers (`12`, `-3.5`, `1e3`; not `007`)
        become numbers, empty cells are left out, everything else stays a string.
    max_file_bytes: files of a folder larger than this are skipped (and reported).
    """

    text_unit: str = "auto"
    text_column: str | None = None
    id_column: str | None = None
    title_column: str | None = None
    max_file_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.text_unit not in ("auto", "line", "paragraph", "file"):
            raise ValueError(f"text_unit must be auto, line, paragraph or file, got {self.text_unit!r}")
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")


@dataclass
class LoadReport:
    """What `load_corpus` / `iter_corpus` read: filled as documents are read, complete once they are all read
    (pass a fresh report to each call).

    folder: whether the source is a folder. format: "beir", "jsonl", "json", "csv", "tsv", "text", "markdown", "code", "file" or "folder".
    text_unit: for text files cut into documents, "line", "paragraph" or "file".
    skipped: (path, reason) of files left out of a folder (binary, not UTF-8, too large, unreadable).
    extensions: files read per extension ("" for none)."""

    source: str = ""
    folder: bool = False
    format: str = ""
    text_unit: str | None = None
    n_files: int = 0
    n_documents: int = 0
    n_blank_skipped: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extensions: Counter = field(default_factory=Counter)

    def skip(self, path: PathLike, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def reset(self) -> None:
        """Back to an empty report, in place (the corpus is read again from the start)."""
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)

    def add_file(self, path: Path) -> None:
        self.n_files += 1
        self.extensions[path.suffix.lower()] += 1

    def detected(self) -> str:
        """What was read: "folder of 12 files (8 .md, 4 .py)", "csv file", "text file, one document per line"."""
        if self.folder and self.format != "beir":
            exts = ", ".join(f"{n} {e or '(no extension)'}" for e, n in self.extensions.most_common())
            kind = "folder" if self.format == "folder" else f"{self.format} folder"
            what = f"{kind} of {self.n_files} file{'s' * (self.n_files != 1)}" + (f" ({exts})" if exts else "")
        else:
            what = f"{self.format or 'corpus'} {'folder' if self.folder else 'file'}"
        if self.text_unit and self.text_unit != "file":
            what += f", {'.txt files: ' if self.folder else ''}one document per {self.text_unit}"
        return what

    def skipped_summary(self, max_names: int = 3) -> str:
        """"2 files (binary: a.png; too large: big.log)", or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        by_reason: dict[str, list[str]] = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason.split(" (")[0], []).append(Path(path).name)
        shown = "; ".join(f"{r}: {', '.join(n[:max_names])}" + (f" and {len(n) - max_names} more" if len(n) > max_names
                                                               else "") for r, n in by_reason.items())
        return f"{len(self.skipped)} file{'s' * (len(self.skipped) != 1)} ({shown})"

    def summary(self) -> str:
        """One line for the CLI: "detected: folder of 12 files (8 .md, 4 .py); 30 documents; 1 blank document
        skipped; skipped 2 files (binary: a.png; too large: big.log)"."""
        parts = [f"detected: {self.detected()}", f"{self.n_documents} document{'s' * (self.n_documents != 1)}"]
        if self.n_blank_skipped:
            parts.append(f"{self.n_blank_skipped} blank document{'s' * (self.n_blank_skipped != 1)} skipped")
        if self.skipped:
            parts.append(f"skipped {self.skipped_summary()}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `--json` output)."""
        return {"source": self.source, "folder": self.folder, "format": self.format, "text_unit": self.text_unit, "files": self.n_files,
                "documents": self.n_documents, "blank_skipped": self.n_blank_skipped,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "extensions": dict(self.extensions)}


# -------------------------------------------------------------------------------------------- reading
def suffix_without_gz(path: Path) -> str:
    """The format suffix, lower case, ignoring a trailing `.gz` (`corpus.jsonl.gz` -> `.jsonl`)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def open_binary(path: Path) -> BinaryIO:
    if not path.is_file():
        raise DataError("file not found", path)
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # type: ignore[return-value]


def gzip_error(path: PathLike, err: BaseException, line: int | None = None) -> DataError:
    return DataError(f"corrupt or truncated gzip file ({type(err).__name__}: {err})", path, line)


def iter_lines(path: PathLike, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without the newline unless `keep_ends`); DataError on bad
    UTF-8 or a corrupt or truncated `.gz` file (naming the line being read)."""
    path = Path(path)
    n = 0
    with open_binary(path) as fh:
        try:
            for raw in fh:
                n += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"invalid UTF-8 at byte {e.start} of the line", path, n) from None
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield n, line if keep_ends else line.rstrip("\r\n")
        except GZIP_ERRORS as e:  # raised by the read of line n + 1 (the consumer's errors never land here)
            raise gzip_error(path, e, n + 1) from None


def iter_text_chunks(path: Path, size: int = READ_CHUNK) -> Iterator[str]:
    """The file's text in pieces of about `size` characters (BOM dropped); DataError on bad UTF-8 (with the
    line) or a corrupt `.gz` file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1  # line number at the start of the current raw chunk
    first = True
    with open_binary(path) as fh:
        while True:
            try:
                raw = fh.read(size)
            except GZIP_ERRORS as e:
                raise gzip_error(path, e) from None
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = max(0, min(len(raw), e.start))
                raise DataError("invalid UTF-8", path, lines + raw.count(b"\n", 0, at)) from None
            lines += raw.count(b"\n")
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            if text:
                yield text
            if not raw:
                return


def read_whole_text(path: Path) -> str:
    """A whole (small) file as text; DataError on bad UTF-8 (with the line) or a corrupt `.gz` file."""
    return "".join(iter_text_chunks(path))


def decode_bytes(path: PathLike, data: bytes) -> str:
    """UTF-8 (BOM dropped), or UTF-16 when the data starts with a UTF-16 BOM; DataError naming the line."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError("invalid UTF-16", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError("invalid UTF-8 (binary file?)", path, data.count(b"\n", 0, e.start) + 1) from None
    return text.removeprefix("\ufeff")


# --------------------------------------------------------------------------------------------- checks
def check_string(value: str, path: PathLike | None, line: int | None, fld: str) -> str:
    """`value` unchanged, or DataError when it holds a lone surrogate (e.g. JSON "\\ud800"), which cannot be
    stored as UTF-8 and would fail later, in the document store, far from the input."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"lone surrogate {value[e.start]!r} at character {e.start} (not valid Unicode text)",
                            path, line, fld) from None
    return value


def check_metadata(metadata: Mapping[str, Any], path: PathLike | None, line: int | None,
                   fld: str = "metadata") -> dict:
    """`metadata` as a dict, after checking every key and value (iteratively, so depth cannot overflow the
    stack): keys are strings, strings are valid Unicode, numbers are finite (NaN / Infinity / 1e400 cannot
    be compared by filters), nesting is at most MAX_METADATA_DEPTH levels."""
    stack: list[tuple[Any, str, int]] = [(metadata, fld, 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise DataError(f"nested more than {MAX_METADATA_DEPTH} levels deep", path, line, fld)
        if isinstance(value, str):
            check_string(value, path, line, where)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise DataError(f"{value} is not a finite number", path, line, where)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise DataError(f"keys must be strings, got {k!r}", path, line, where)
                check_string(k, path, line, where)
                stack.append((v, f"{where}.{k}", depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
        elif not (value is None or isinstance(value, (bool, int))):
            raise DataError(f"unsupported value of type {type(value).__name__}", path, line, where)
    return dict(metadata)


class IdSet:
    """Ids seen so far in one corpus; `add` raises DataError (file, line, field) on a duplicate."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def add(self, doc_id: str, path: PathLike | None, line: int | None, fld: str = "_id") -> None:
        if doc_id in self._seen:
            raise DataError(f"duplicate document id {doc_id!r}", path, line, fld)
        self._seen.add(doc_id)
