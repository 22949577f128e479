"""Reading inputs: the one place where corpora, queries and relevance judgments are parsed.

Formats: BEIR folders (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), JSONL corpora, folders of
text/markdown files, source-code trees, query files (.jsonl / .tsv / .txt) and qrels (BEIR tsv or TREC).
Every malformed input raises `DataError`, whose message names the file, the line and (when relevant) the field.
`iter_*` functions stream; `read_*` functions build dicts/lists (and check for duplicate ids).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "Document",
    "BeirDataset",
    "document_text",
    "iter_jsonl_corpus",
    "read_jsonl_corpus",
    "read_queries_file",
    "read_qrels_tsv",
    "read_beir_folder",
    "read_text_files",
    "read_code_dir",
    "load_corpus",
    "CODE_LANGUAGES",
    "SKIP_DIRS",
]

PathLike = str | os.PathLike

ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_FIELDS = ("text", "contents", "content")
QUERY_ID_FIELDS = ("_id", "id", "query_id", "qid")
QUERY_TEXT_FIELDS = ("text", "query")
TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".rst")

# extension -> language name (metadata["language"] of code documents)
CODE_LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".rb": "ruby", ".js": "javascript", ".mjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".java": "java", ".go": "go",
    ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
    ".hh": "cpp", ".cs": "csharp", ".php": "php", ".swift": "swift", ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".sql": "sql", ".r": "r",
    ".lua": "lua", ".pl": "perl", ".pm": "perl", ".hs": "haskell", ".jl": "julia", ".ex": "elixir",
    ".exs": "elixir", ".erl": "erlang", ".clj": "clojure", ".dart": "dart", ".m": "objective-c",
    ".mm": "objective-c", ".vue": "vue", ".css": "css", ".scss": "scss", ".html": "html", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".proto": "protobuf", ".cu": "cuda", ".zig": "zig", ".nim": "nim",
}
SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".idea", ".vscode", "build", "dist", "target", ".eggs",
})


class DataError(ValueError):
    """Malformed input. The message names the file, the line number and the field when known."""

    def __init__(self, message: str, path: PathLike | None = None, line: int | None = None,
                 field: str | None = None):
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


@dataclass
class BeirDataset:
    """A retrieval test collection: corpus by id, queries by id (only those judged in `qrels`), qrels."""

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""


def document_text(doc: Document | Mapping[str, Any]) -> str:
    """The text a model encodes for a document, the BEIR way: `title + " " + text` (stripped) when a
    title is present, else the stripped text. The one place in the package where this join is done."""
    if isinstance(doc, Document):
        title, text = doc.title, doc.text
    else:
        title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip() if title else text.strip()


# ----------------------------------------------------------------------------------------------- lines
def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without the newline); DataError on bad UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with _open_binary(path) as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"invalid UTF-8 at byte {e.start} of the line", path, n) from None
            if n == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield n, line.rstrip("\r\n")


def _iter_json_objects(path: PathLike) -> Iterator[tuple[int, dict]]:
    for n, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at column {e.colno})", path, n) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
        yield n, obj


def _get_id(obj: dict, names: Sequence[str], path: PathLike, n: int) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DataError(f"id must be a string or an integer, got {value!r}", path, n, name)
            value = str(value)
            if not value.strip():
                raise DataError("empty id", path, n, name)
            return value
    raise DataError(f"missing id (one of {', '.join(names)})", path, n, names[0])


def _get_text(obj: dict, names: Sequence[str], path: PathLike, n: int) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, str):
                raise DataError(f"expected a string, got {type(value).__name__}", path, n, name)
            return value
    raise DataError(f"missing {names[0]!r} field", path, n, names[0])


# ---------------------------------------------------------------------------------------------- corpus
def iter_jsonl_corpus(path: PathLike) -> Iterator[Document]:
    """Stream documents from a JSONL corpus (BEIR `_id`/`title`/`text`/`metadata`; also `id`/`doc_id`
    and `contents`). `.jsonl.gz` is read transparently. Duplicate ids raise DataError."""
    seen: set[str] = set()
    for n, obj in _iter_json_objects(path):
        doc_id = _get_id(obj, ID_FIELDS, path, n)
        if doc_id in seen:
            raise DataError(f"duplicate document id {doc_id!r}", path, n, "_id")
        seen.add(doc_id)
        text = _get_text(obj, TEXT_FIELDS, path, n)
        title = obj.get("title")
        if title is None:
            title = ""
        elif not isinstance(title, str):
            raise DataError(f"expected a string, got {type(title).__name__}", path, n, "title")
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise DataError(f"expected an object, got {type(metadata).__name__}", path, n, "metadata")
        yield Document(id=doc_id, text=text, title=title, metadata=metadata)


def read_jsonl_corpus(path: PathLike) -> dict[str, Document]:
    """Read a whole JSONL corpus into {id: Document}, in file order."""
    return {doc.id: doc for doc in iter_jsonl_corpus(path)}


def _relative_id(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _decode_file(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError("invalid UTF-8 (binary file?)", path, line) from None
    return text[1:] if text.startswith("\ufeff") else text


def _collect_files(dir_or_files: PathLike | Iterable[PathLike], extensions: Sequence[str],
                   skip_dirs: frozenset[str] = SKIP_DIRS) -> tuple[Path, list[Path]]:
    """(base folder for relative ids, sorted files). A folder is walked recursively (hidden and
    `skip_dirs` folders skipped); explicit files are taken as given."""
    exts = {e.lower() for e in extensions}
    if isinstance(dir_or_files, (str, os.PathLike)):
        root = Path(dir_or_files)
        if root.is_file():
            return root.parent, [root]
        if not root.is_dir():
            raise DataError("no such file or directory", root)
        files: list[Path] = []
        for cur, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
            files.extend(Path(cur) / f for f in names if Path(f).suffix.lower() in exts and not f.startswith("."))
        return root, sorted(files)
    files = [Path(p) for p in dir_or_files]
    for p in files:
        if not p.is_file():
            raise DataError("file not found", p)
    if not files:
        return Path("."), []
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    return base, sorted((p.resolve() for p in files))


def read_text_files(dir_or_files: PathLike | Iterable[PathLike],
                    extensions: Sequence[str] = TEXT_EXTENSIONS) -> list[Document]:
    """One document per text/markdown file; id = path relative to the folder (posix), metadata["path"].
    Undecodable files raise DataError naming the file and line."""
    base, files = _collect_files(dir_or_files, extensions)
    docs = []
    for p in files:
        text = _decode_file(p, p.read_bytes())
        docs.append(Document(id=_relative_id(p, base), text=text, metadata={"path": str(p)}))
    return docs


def read_code_dir(path: PathLike | Iterable[PathLike], extensions: Sequence[str] | None = None,
                  max_bytes: int = 1_000_000, skip_dirs: Iterable[str] = SKIP_DIRS) -> list[Document]:
    """One document per source file under `path` (or the given files). id = relative path; metadata:
    `language` (from the extension), `path`, `num_lines`. Binary (NUL byte / not UTF-8) and files larger
    than `max_bytes` are skipped with a log message; .git, node_modules, virtualenvs... are not entered."""
    exts = tuple(extensions) if extensions is not None else tuple(CODE_LANGUAGES)
    base, files = _collect_files(path, exts, frozenset(skip_dirs))
    docs = []
    for p in files:
        size = p.stat().st_size
        if size > max_bytes:
            logger.info("skipping %s: %d bytes > max_bytes=%d", p, size, max_bytes)
            continue
        data = p.read_bytes()
        if b"\x00" in data[:8192]:
            logger.info("skipping binary file %s", p)
            continue
        try:
            text = _decode_file(p, data)
        except DataError:
            logger.info("skipping %s: not UTF-8", p)
            continue
        rel = _relative_id(p, base)
        language = CODE_LANGUAGES.get(p.suffix.lower(), p.suffix.lower().lstrip(".") or "text")
        docs.append(Document(id=rel, text=text, metadata={
            "language": language, "path": rel, "num_lines": text.count("\n") + (0 if text.endswith("\n") else 1),
        }))
    return docs


# --------------------------------------------------------------------------------------------- queries
def read_queries_file(path: PathLike) -> dict[str, str]:
    """Queries by id from `.jsonl` (`_id`/`id` + `text`/`query`), `.tsv` (`id<TAB>text`, optional header)
    or plain text (one query per non-empty line, ids "0", "1", ... in order). Duplicate ids raise."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    queries: dict[str, str] = {}

    def add(qid: str, text: str, n: int, fld: str) -> None:
        if qid in queries:
            raise DataError(f"duplicate query id {qid!r}", path, n, fld)
        queries[qid] = text

    if kind in (".jsonl", ".json"):
        for n, obj in _iter_json_objects(path):
            qid = _get_id(obj, QUERY_ID_FIELDS, path, n)
            add(qid, _get_text(obj, QUERY_TEXT_FIELDS, path, n), n, "_id")
    elif kind == ".tsv":
        for n, line in _iter_lines(path):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError("expected 'id<TAB>text'", path, n)
            if n == 1 and parts[0].strip().lower() in ("id", "_id", "qid", "query-id", "query_id"):
                continue  # header
            qid = parts[0].strip()
            if not qid:
                raise DataError("empty query id", path, n, "id")
            add(qid, "\t".join(parts[1:]), n, "id")
    else:
        index = 0
        for n, line in _iter_lines(path):
            if line.strip():
                add(str(index), line.strip(), n, "id")
                index += 1
    return queries


# ----------------------------------------------------------------------------------------------- qrels
def _iter_qrels(path: PathLike) -> Iterator[tuple[int, str, str, int]]:
    """Yield (line, query id, doc id, score). BEIR tsv (`query-id corpus-id score`, header optional)
    or TREC qrels (`qid iter docid rel`), split on tabs, else on whitespace."""
    for n, line in _iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) == 3:
            qid, did, score = parts
        elif len(parts) == 4:
            qid, _, did, score = parts
        else:
            raise DataError(f"expected 3 (query-id, corpus-id, score) or 4 (TREC) fields, got {len(parts)}",
                            path, n)
        if n == 1 and (qid.lower() in ("query-id", "query_id", "qid") or score.lower() == "score"):
            continue  # header
        try:
            value = int(score)
        except ValueError:
            try:
                f = float(score)
            except ValueError:
                f = float("nan")
            if f != f or f != int(f):
                raise DataError(f"score must be an integer, got {score!r}", path, n, "score") from None
            value = int(f)
        if not qid or not did:
            raise DataError("empty query or corpus id", path, n, "query-id" if not qid else "corpus-id")
        yield n, qid, did, value


def read_qrels_tsv(path: PathLike) -> dict[str, dict[str, int]]:
    """Relevance judgments {query id: {doc id: score}}. A repeated (query, doc) pair with a different
    score raises DataError; an exact repeat is ignored."""
    qrels: dict[str, dict[str, int]] = {}
    for n, qid, did, score in _iter_qrels(path):
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != score:
            raise DataError(f"conflicting judgment for ({qid!r}, {did!r}): {judged[did]} vs {score}", path, n,
                            "score")
        judged[did] = score
    return qrels


# ------------------------------------------------------------------------------------------------ BEIR
def _find_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"BEIR folder has no {stem}.jsonl", folder / f"{stem}.jsonl")


def read_beir_folder(path: PathLike, split: str = "test") -> BeirDataset:
    """Read a BEIR folder. Queries are filtered to those judged in `qrels/<split>.tsv`; a judged query
    missing from queries.jsonl raises DataError (qrels file + line); judged documents missing from the
    corpus are logged."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError("BEIR dataset folder not found", folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(f"no qrels for split {split!r} (available: {', '.join(available) or 'none'})", qrels_path)
    corpus = read_jsonl_corpus(_find_file(folder, "corpus"))
    queries_path = _find_file(folder, "queries")
    all_queries = read_queries_file(queries_path)
    qrels: dict[str, dict[str, int]] = {}
    missing_docs = 0
    for n, qid, did, score in _iter_qrels(qrels_path):
        if qid not in all_queries:
            raise DataError(f"query id {qid!r} is not in {queries_path}", qrels_path, n, "query-id")
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != score:
            raise DataError(f"conflicting judgment for ({qid!r}, {did!r})", qrels_path, n, "score")
        judged[did] = score
        missing_docs += did not in corpus
    if missing_docs:
        logger.warning("%s: %d judgments point at documents missing from the corpus", qrels_path, missing_docs)
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=folder.name)


def load_corpus(path: PathLike, kind: str = "auto") -> dict[str, Document]:
    """Load a corpus from a BEIR folder, a .jsonl file, a text file or a folder of text or code files.

    kind: "auto" | "beir" | "jsonl" | "text" | "code". Auto: folder with corpus.jsonl -> BEIR corpus;
    .jsonl(.gz) file -> JSONL; other file -> text (code when its extension is a known language);
    folder -> code when it holds any known source file, else text/markdown files."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or directory", p)
    if kind == "auto":
        name = p.name.lower()
        if p.is_dir() and any((p / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")):
            kind = "beir"
        elif p.is_file() and (name.endswith(".jsonl") or name.endswith(".jsonl.gz")):
            kind = "jsonl"
        elif p.is_file():
            kind = "code" if p.suffix.lower() in CODE_LANGUAGES else "text"
        else:
            _, code_files = _collect_files(p, tuple(CODE_LANGUAGES))
            kind = "code" if code_files else "text"
    if kind == "beir":
        return read_jsonl_corpus(_find_file(p, "corpus"))
    if kind == "jsonl":
        return read_jsonl_corpus(p)
    if kind in ("text", "code"):
        docs = read_text_files(p) if kind == "text" else read_code_dir(p)
        return {d.id: d for d in docs}
    raise ValueError(f"unknown corpus kind {kind!r}: expected auto, beir, jsonl, text or code")
