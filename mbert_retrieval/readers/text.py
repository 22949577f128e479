"""Plain-text and Markdown files as documents.

A `.txt` file becomes one document per line, per paragraph (blank-line separated) or one for the whole
file (`ReadOptions.text_unit`); ids are `<file>#<line>` (the line where the document starts) for lines and
paragraphs, the file's relative path otherwise. A Markdown file is one document whose title is its first
`# heading` (that line is taken out of the text, so the encoded `title + text` holds it once)."""

from __future__ import annotations

from html.parser import HTMLParser

import re
from typing import Iterable, Iterator

from .base import DataError, Document, PathLike, iter_lines

MARKDOWN_EXTENSIONS = (".md", ".markdown")
TEXT_UNITS = ("line", "paragraph", "file")

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_H1 = re.compile(r"^\s{0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")


def detect_text_unit(path: PathLike) -> str:
    """"paragraph" when the file has a blank line between two non-blank lines, else "line"."""
    seen_text = blank_after_text = False
    for _, line in iter_lines(path):
        if line.strip():
            if blank_after_text:
                return "paragraph"
            seen_text = True
        elif seen_text:
            blank_after_text = True
    return "line"


def split_text_units(lines: Iterable[tuple[int, str]], doc_id: str, unit: str, path: PathLike | None = None
                     ) -> Iterator[Document]:
    """Documents of a text file's (line number, line) pairs cut by `unit` ("line" or "paragraph"); ids
    `<doc_id>#<first line>`, metadata `path` and `line`. Blank lines are not documents; a paragraph keeps
    its line breaks. A NUL byte raises DataError (a binary file, named by `path`)."""
    if unit not in ("line", "paragraph"):
        raise ValueError(f"unit must be line or paragraph, got {unit!r}")
    start, para = 0, []  # type: tuple[int, list[str]]
    for n, line in lines:
        if "\x00" in line:
            raise DataError("binary file (NUL bytes): not a corpus format", path if path is not None else doc_id, n)
        if unit == "line":
            if line.strip():
                yield Document(id=f"{doc_id}#{n}", text=line.strip(), metadata={"path": doc_id, "line": n})
            continue
        if line.strip():
            if not para:
                start = n
            para.append(line.rstrip())
        elif para:
            yield Document(id=f"{doc_id}#{start}", text="\n".join(para).strip(),
                           metadata={"path": doc_id, "line": start})
            para = []
    if para:
        yield Document(id=f"{doc_id}#{start}", text="\n".join(para).strip(), metadata={"path": doc_id, "line": start})


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a decoded file, numbered as the file's lines are (split on "\\n" only)."""
    return enumerate((line.rstrip("\r") for line in text.split("\n")), start=1)


def markdown_title(text: str) -> tuple[str, str]:
    """(title, text without that heading line): the first level-1 ATX heading (`# Title`) outside code
    fences, or ("", text) when there is none."""
    in_fence = False
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _H1.match(line.rstrip("\r"))
        if m:
            return m.group(1).strip(), "\n".join(lines[:i] + lines[i + 1:])
    return "", text


def markdown_document(doc_id: str, text: str, metadata: dict) -> Document:
    title, body = markdown_title(text)
    return Document(id=doc_id, text=body, title=title, metadata=metadata)


HTML_EXTENSIONS = (".html", ".htm", ".xhtml")
_HTML_SKIP = {"script", "style", "noscript", "template", "svg", "head"}
_HTML_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre",
               "blockquote", "table", "ul", "ol", "dd", "dt", "hr", "header", "footer", "main", "nav"}


class _HTMLText(HTMLParser):
    """Visible text of an HTML page (scripts, styles and the head left out; blocks on their own lines) and its
    <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _HTML_SKIP:
            self._skip += 1
        elif tag in _HTML_BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _HTML_SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _HTML_BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_document(doc_id: str, text: str, metadata: dict) -> Document:
    """An HTML page as a document: its visible text (not its tags, scripts or styles), titled by <title>."""
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    body = "\n".join(line for line in lines if line)
    return Document(id=doc_id, text=body, title=" ".join("".join(parser.title).split()), metadata=metadata)
