"""JSON corpora: JSON Lines (one object per line, `.jsonl[.gz]`) and `.json` files holding an array of
objects, streamed object by object (memory holds one object, not the file). Both use the same fields:
`_id`/`id`/`doc_id`/`docid`, `text`/`contents`/`content`, `title`, `metadata`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import (
    ID_FIELDS, TEXT_FIELDS, DataError, Document, IdSet, PathLike, check_metadata, check_string, iter_lines,
    iter_text_chunks,
)

_WHITESPACE = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (not a finite number)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(text: str) -> Any:
    """`json.loads` that rejects NaN/Infinity. RecursionError (deep nesting) and ValueError propagate."""
    return _DECODER.decode(text)


def iter_json_objects(path: PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; DataError on anything else."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except json.JSONDecodeError as e:
            at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at" (no "at at")
            raise DataError(f"invalid JSON ({e.msg}{at} column {e.colno})", path, n) from None
        except RecursionError:
            raise DataError("JSON nested too deeply", path, n) from None
        except ValueError as e:
            raise DataError(f"invalid JSON ({e})", path, n) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
        yield n, obj


def get_id(obj: dict, names: Sequence[str], path: PathLike, n: int | None) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DataError(f"id must be a string or an integer, got {value!r}", path, n, name)
            value = check_string(str(value), path, n, name)
            if not value.strip():
                raise DataError("empty id", path, n, name)
            return value
    raise DataError(f"missing id (one of {', '.join(names)})", path, n, names[0])


def get_text(obj: dict, names: Sequence[str], path: PathLike, n: int | None) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, str):
                raise DataError(f"expected a string, got {type(value).__name__}", path, n, name)
            return check_string(value, path, n, name)
    raise DataError(f"missing {names[0]!r} field", path, n, names[0])


def document_from_object(obj: dict, path: PathLike, n: int | None) -> Document:
    """A Document from one parsed JSON object, every field checked (file, line and field on error)."""
    doc_id = get_id(obj, ID_FIELDS, path, n)
    text = get_text(obj, TEXT_FIELDS, path, n)
    title = obj.get("title")
    if title is None:
        title = ""
    elif not isinstance(title, str):
        raise DataError(f"expected a string, got {type(title).__name__}", path, n, "title")
    check_string(title, path, n, "title")
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise DataError(f"expected an object, got {type(metadata).__name__}", path, n, "metadata")
    return Document(id=doc_id, text=text, title=title, metadata=check_metadata(metadata, path, n))


def id_field(obj: dict) -> str:
    """The key an object's id came from (`_id`, `id`, `doc_id` or `docid`), for error messages."""
    return next((k for k in ID_FIELDS if k in obj), "_id")


def iter_jsonl_corpus(path: PathLike) -> Iterator[Document]:
    """Stream documents from a JSONL corpus (BEIR `_id`/`title`/`text`/`metadata`; also `id`/`doc_id`
    and `contents`). `.jsonl.gz` is read transparently. Duplicate ids raise DataError."""
    ids = IdSet()
    for n, obj in iter_json_objects(path):
        doc = document_from_object(obj, path, n)
        ids.add(doc.id, path, n, id_field(obj))
        yield doc


# ---------------------------------------------------------------------------------------- JSON arrays
def first_char(path: Path) -> str:
    """The first non-whitespace character of a text file ("" when there is none)."""
    for chunk in iter_text_chunks(path, size=1 << 14):
        stripped = chunk.lstrip(_WHITESPACE)
        if stripped:
            return stripped[0]
    return ""


class _Buffer:
    """Decoded text of a file read in growing pieces, with the line number of any position."""

    def __init__(self, path: Path):
        self.path = path
        self._chunks = iter_text_chunks(path)
        self.text = ""
        self.eof = False
        self._line, self._line_pos = 1, 0  # line number at position _line_pos (positions only move forward)

    def more(self) -> bool:
        """Read at least as much again as is buffered (amortised linear reparsing); False at end of file."""
        want = max(len(self.text), 1 << 16)
        got: list[str] = []
        size = 0
        while not self.eof and size < want:
            piece = next(self._chunks, None)
            if piece is None:
                self.eof = True
            else:
                got.append(piece)
                size += len(piece)
        self.text += "".join(got)
        return bool(got)

    def line_at(self, pos: int) -> int:
        if pos > self._line_pos:
            self._line += self.text.count("\n", self._line_pos, pos)
            self._line_pos = pos
        return self._line

    def drop(self, pos: int) -> int:
        """Forget text before `pos` (already parsed); returns the new position (0)."""
        self.line_at(pos)
        self.text = self.text[pos:]
        self._line_pos = 0
        return 0

    def skip_ws(self, pos: int) -> int:
        """Position of the next non-whitespace character, reading more as needed (len(text) at EOF)."""
        while True:
            while pos < len(self.text) and self.text[pos] in _WHITESPACE:
                pos += 1
            if pos < len(self.text) or not self.more():
                return pos


def iter_json_array(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(line where it starts, value) for each element of a JSON file holding one top-level array, parsed
    element by element. DataError (file and line) for anything that is not one well-formed array."""
    path = Path(path)
    buf = _Buffer(path)
    pos = buf.skip_ws(0)
    if pos >= len(buf.text):
        return
    if buf.text[pos] != "[":
        raise DataError("expected a JSON array of objects", path, buf.line_at(pos))
    pos = buf.skip_ws(pos + 1)
    first = True
    while True:
        if pos >= len(buf.text):
            raise DataError("unexpected end of file inside the array (truncated?)", path, buf.line_at(pos))
        if first and buf.text[pos] == "]":
            pos += 1
            break
        while True:
            try:
                value, end = _DECODER.raw_decode(buf.text, pos)
                break
            except json.JSONDecodeError as e:
                if buf.more():
                    continue
                raise DataError(f"invalid JSON ({e.msg})", path, buf.line_at(e.pos)) from None
            except RecursionError:
                raise DataError("JSON nested too deeply", path, buf.line_at(pos)) from None
            except ValueError as e:
                raise DataError(f"invalid JSON ({e})", path, buf.line_at(pos)) from None
        yield buf.line_at(pos), value
        first = False
        pos = buf.skip_ws(end)
        if pos > len(buf.text) // 2:
            pos = buf.drop(pos)
        if pos >= len(buf.text):
            raise DataError("unexpected end of file inside the array (truncated?)", path, buf.line_at(pos))
        if buf.text[pos] == "]":
            pos += 1
            break
        if buf.text[pos] != ",":
            raise DataError(f"expected ',' or ']' after an array element, got {buf.text[pos]!r}", path,
                            buf.line_at(pos))
        pos = buf.skip_ws(pos + 1)
        if pos < len(buf.text) and buf.text[pos] == "]":
            raise DataError("trailing comma before ']'", path, buf.line_at(pos))
    pos = buf.skip_ws(pos)
    if pos < len(buf.text):
        raise DataError("extra data after the JSON array", path, buf.line_at(pos))


def iter_json_corpus(path: PathLike) -> Iterator[Document]:
    """Stream documents from a `.json` file: an array of objects with the JSONL fields (a file whose first
    character is `{` is read as JSON Lines, as many `.json` exports are). Duplicate ids raise DataError."""
    path = Path(path)
    if first_char(path) == "{":
        try:
            yield from iter_jsonl_corpus(path)
        except DataError as e:
            if e.line == 1 and "invalid JSON" in str(e):
                raise DataError(f"{e.message}; a .json corpus holds an array of objects "
                                "(or one object per line)", path, 1) from None
            raise
        return
    ids = IdSet()
    for n, obj in iter_json_array(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
        doc = document_from_object(obj, path, n)
        ids.add(doc.id, path, n, id_field(obj))
        yield doc
