"""Long documents as windows of text: character spans that each fit the model, cut where the text has structure.

A document longer than the window becomes several spans `(start, end)` of its text; each span is encoded
as a document of its own and stored as one index row that points back to the document id, so search can
max-pool per document and show the matching passage. Cuts prefer, in this order, a Markdown heading or the
start of a top-level code unit (function, class), a blank line (paragraph), a line end, a sentence end;
only where no such boundary falls in the back half of a window is the text cut on a token boundary, and
then consecutive windows share `overlap` tokens. Token counts come from the model's own (fast) tokenizer
through its offset mapping, so a window is never longer than the model reads.
"""

from __future__ import annotations

import ast
import numbers
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Mapping, Sequence

__all__ = ["WindowConfig", "Span", "structure_boundaries", "window_spans", "split_windows", "structure_hint", "model_window_limit", "check_spans"]

Span = tuple[int, int]

# Priority of a cut: higher is better.
_HEADING, _UNIT, _PARAGRAPH, _LINE, _SENTENCE = 5, 4, 3, 2, 1
_MD_HEADING = re.compile(r"^(#{1,6})\s+\S", re.M)
_CODE_UNIT = re.compile(
    r"^(?:def |async def |class |function |func |fn |pub fn |impl |public |private |protected |module |"
    r"interface |struct |enum |export |const \w+ = |var \w+ = |let \w+ = |sub |package |@)",
    re.M,
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s+(?=[A-Z0-9\"'(\[])")
_CODE_EXT = {
    "py", "js", "ts", "tsx", "jsx", "java", "go", "rs", "rb", "php", "c", "h", "cc", "cpp", "hpp", "cs", "kt",
    "swift", "scala", "lua", "pl", "sh", "sql", "r", "jl", "m", "ex", "exs", "hs", "ml", "dart", "zig",
}  # fmt: skip


@dataclass
class WindowConfig:
    """How long documents are split: `tokens` per window (None: the model's max length), `overlap` tokens
    shared by consecutive windows cut inside running text (None: 1/8 of the window, at most 64),
    `structure`: "auto" (Markdown headings, code units, paragraphs), "none" (token windows only)."""

    tokens: int | None = None
    overlap: int | None = None
    structure: str = "auto"

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 8:
            raise ValueError(f"window tokens must be at least 8, got {self.tokens}")
        if self.structure not in ("auto", "none"):
            raise ValueError(f"window structure must be 'auto' or 'none', got {self.structure!r}")
        if self.overlap is not None and (self.overlap < 0 or (self.tokens is not None and self.overlap >= self.tokens // 2)):
            raise ValueError(f"window overlap must be >= 0 and less than half the window, got {self.overlap}")

    def to_dict(self) -> dict[str, Any]:
        """As stored in an index manifest (`params["window"]`)."""
        return {"tokens": self.tokens, "overlap": self.overlap, "structure": self.structure}

    @classmethod
    def from_value(cls, value: WindowConfig | Mapping[str, Any] | bool | None) -> WindowConfig | None:
        """A window setting as given to `Index.create` or read back from a manifest: a WindowConfig, its
        dict, True (the recommended `WindowConfig()`), or None / False (off: one truncated row per document)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"tokens", "overlap", "structure"}
            if unknown:
                raise ValueError(f"unknown window settings {sorted(unknown)}; valid: tokens, overlap, structure")
            for name in ("tokens", "overlap"):
                v = value.get(name)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    raise ValueError(f"window {name} must be an integer or None, got {v!r}")
            return cls(**value)
        raise ValueError(f"window must be a WindowConfig, a dict, True or None, got {value!r}")


def _python_units(text: str) -> list[int]:
    """Character offsets of top-level Python definitions (with their decorators); [] if it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if 0 < first <= len(line_starts):
                out.append(line_starts[first - 1])
    return out


def structure_boundaries(text: str, kind: str = "auto") -> list[tuple[int, int]]:
    """Places where `text` may be cut, as (char offset, priority), sorted by offset.

    `kind`: "markdown", "code", a file extension ("py", "md", ...), "text" or "auto" (guessed from the text).
    """
    kind = kind.lower().lstrip(".")
    if kind == "auto":
        kind = "markdown" if _MD_HEADING.search(text) else ("code" if len(_CODE_UNIT.findall(text)) >= 2 else "text")
    cuts: dict[int, int] = {}

    def put(offset: int, priority: int) -> None:
        if 0 < offset < len(text) and cuts.get(offset, 0) < priority:
            cuts[offset] = priority

    if kind in ("markdown", "md"):
        for m in _MD_HEADING.finditer(text):
            put(m.start(), _HEADING)
    if kind == "py":
        for off in _python_units(text):
            put(off, _UNIT)
    if kind == "code" or kind in _CODE_EXT:
        for m in _CODE_UNIT.finditer(text):
            put(m.start(), _UNIT)
    for m in _BLANK_LINE.finditer(text):
        put(m.end(), _PARAGRAPH)
    for m in re.finditer("\n", text):
        put(m.end(), _LINE)
    if kind not in ("code", "py") and kind not in _CODE_EXT:
        for m in _SENTENCE_END.finditer(text):
            put(m.end(), _SENTENCE)
    return sorted(cuts.items())


def window_spans(offsets: Sequence[tuple[int, int]], text_len: int, tokens: int, overlap: int,
                 boundaries: Sequence[tuple[int, int]] = ()) -> list[Span]:  # fmt: skip
    """Character spans of windows of at most `tokens` tokens over a text whose tokens have `offsets`
    (char (start, end) per token, special tokens excluded). Cuts at the best boundary in the back half
    of each window; elsewhere on a token boundary with `overlap` tokens shared."""
    n = len(offsets)
    if n <= tokens:
        return [(0, text_len)]
    starts = [s for s, _ in offsets]
    # token index at which each boundary's text begins (first token starting at or after it)
    import bisect

    cut_tokens: dict[int, int] = {}
    for off, prio in boundaries:
        t = bisect.bisect_left(starts, off)
        if 0 < t < n and cut_tokens.get(t, 0) < prio:
            cut_tokens[t] = prio
    cut_list = sorted(cut_tokens.items())
    spans: list[Span] = []
    begin = 0
    while begin < n:
        end = min(begin + tokens, n)
        hard = True
        if end < n:
            lo, hi = begin + max(1, tokens // 2), end
            i, j = bisect.bisect_left(cut_list, (lo, -1)), bisect.bisect_right(cut_list, (hi, 99))
            best = max(cut_list[i:j], key=lambda c: (c[1], c[0]), default=None)
            if best is not None:
                end, hard = best[0], False
        char_start = 0 if not spans else offsets[begin][0]
        char_end = text_len if end >= n else offsets[end][0]
        spans.append((char_start, char_end))
        if end >= n:
            break
        begin = max(end - overlap, begin + 1) if hard else end
    return spans


def split_windows(texts: Sequence[str], tokenizer: Any, config: WindowConfig, max_length: int,
                  kinds: Sequence[str] | None = None) -> list[list[Span]]:  # fmt: skip
    """Window spans of each text for a model that reads `max_length` tokens (special tokens included).

    `kinds`: per text, "markdown"/"code"/an extension/"text"/"auto" (see `structure_boundaries`).
    A text that fits gets one span covering it all.
    """
    n_special = len(tokenizer("", add_special_tokens=True)["input_ids"])
    budget = min(config.tokens or max_length, max_length) - n_special
    overlap = min(64, budget // 8) if config.overlap is None else config.overlap
    if budget <= overlap * 2:
        raise ValueError(f"a window of {budget} text tokens leaves no room for an overlap of {overlap}")
    out: list[list[Span]] = []
    for n, text in enumerate(texts):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if len(offsets) <= budget:
            out.append([(0, len(text))])
            continue
        kind = kinds[n] if kinds is not None else "auto"
        bounds = structure_boundaries(text, kind) if config.structure == "auto" else []
        out.append(window_spans(offsets, len(text), budget, overlap, bounds))
    return out


def structure_hint(metadata: Mapping[str, Any] | None) -> str:
    """The `kinds` entry of a document for `split_windows`: its file extension (metadata["path"]) when that
    names Markdown or code, else its metadata["language"] (python, markdown, other code), else "auto"."""
    metadata = metadata or {}
    path = metadata.get("path")
    if isinstance(path, str) and (ext := PurePath(path).suffix.lower().lstrip(".")):
        if ext in ("md", "markdown", "py") or ext in _CODE_EXT:
            return ext
    language = metadata.get("language")
    if isinstance(language, str) and language:
        language = language.lower()
        return {"python": "py", "markdown": "markdown", "text": "text"}.get(language, "code")
    return "auto"


def model_window_limit(model: Any) -> tuple[Any, int]:
    """(tokenizer, tokens a window's text may use) of an encoding model: the encoder's max length (ColBERT:
    the document length, when shorter), less the tokens the model adds to every document text (the
    bi-encoder's document prompt, ColBERT's [D] marker) and a small margin, since a window's text tokenized
    on its own may take a token or two more at its edges than inside the whole text."""
    encoder = getattr(model, "encoder", None)
    tokenizer = getattr(encoder, "tokenizer", None)
    max_length = getattr(getattr(encoder, "config", None), "max_length", None)
    if tokenizer is None or not isinstance(max_length, int):
        raise ValueError(f"windows need a model with a tokenizer and a max length (model.encoder), got {type(model).__name__}")
    config = getattr(model, "config", None)
    added = 0
    doc_length = getattr(config, "document_length", None)
    if isinstance(doc_length, int):  # ColBERT: documents are cut at document_length, [D] marker included
        max_length = min(max_length, doc_length)
        added = 1 if getattr(config, "document_prefix", "") else 0
    prompt = getattr(config, "document_prompt", "")
    if isinstance(prompt, str) and prompt:
        added += len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    margin = 2 if max_length < 128 else 4
    return tokenizer, max_length - added - margin


def check_spans(doc_id: str, spans: Any, text_len: int) -> list[Span]:
    """Caller-given window spans of a document, validated: a non-empty list of (start, end) character
    offsets with 0 <= start < end <= len(text) (ValueError naming the document otherwise)."""
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence) or not spans:
        raise ValueError(f"document {doc_id!r}: 'windows' must be a non-empty list of (start, end) pairs")
    out: list[Span] = []
    for n, span in enumerate(spans):
        ok = isinstance(span, Sequence) and len(span) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in span)
        if not ok or not 0 <= span[0] < span[1] <= text_len:
            raise ValueError(f"document {doc_id!r}: window {n} must be (start, end) with 0 <= start < end <= {text_len}, got {span!r}")
        out.append((int(span[0]), int(span[1])))
    return out
