"""Files and folders as documents.

A folder is walked recursively (hidden entries and build/VCS/virtualenv folders skipped) and every text-like
file becomes a document: prose and source code alike, whatever the extension. Files are skipped, with the
reason recorded in the `LoadReport`, when they look binary (a known binary extension or NUL bytes), are not
UTF-8 (or UTF-16 with a BOM), or are larger than `ReadOptions.max_file_bytes`. Ids are paths relative to
the folder (posix); metadata holds `path` and, for source files, `language` and `num_lines`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .base import (
    DataError, Document, LoadReport, PathLike, ReadOptions, decode_bytes, iter_lines, read_whole_text,
    suffix_without_gz,
)
from .text import (HTML_EXTENSIONS, MARKDOWN_EXTENSIONS, detect_text_unit, html_document, markdown_document, numbered_lines,
                   split_text_units)

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".rst")
PLAIN_TEXT_EXTENSIONS = (".txt", ".text")

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
# skipped without being read (their bytes are never text)
BINARY_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".pdf", ".zip", ".gz", ".tgz",
    ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar", ".whl", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe",
    ".o", ".a", ".class", ".bin", ".dat", ".npy", ".npz", ".pt", ".pth", ".safetensors", ".onnx", ".pkl",
    ".parquet", ".arrow", ".sqlite", ".db", ".mp3", ".mp4", ".wav", ".flac", ".ogg", ".mov", ".avi", ".mkv",
    ".woff", ".woff2", ".ttf", ".otf", ".eot", ".psd", ".xls", ".xlsx", ".doc", ".docx", ".ppt", ".pptx",
})
_SNIFF_BYTES = 8192


def relative_id(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def collect_files(dir_or_files: PathLike | Iterable[PathLike], extensions: Sequence[str] | None,
                  skip_dirs: frozenset[str] = SKIP_DIRS) -> tuple[Path, list[Path]]:
    """(base folder for relative ids, sorted files). A folder is walked recursively (hidden and `skip_dirs`
    folders and hidden files skipped; `extensions` None: every file); explicit files are taken as given."""
    exts = None if extensions is None else {e.lower() for e in extensions}
    if isinstance(dir_or_files, (str, os.PathLike)):
        root = Path(dir_or_files)
        if root.is_file():
            return root.parent, [root]
        if not root.is_dir():
            raise DataError("no such file or directory", root)
        files: list[Path] = []
        for cur, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
            files.extend(Path(cur) / f for f in names
                         if not f.startswith(".") and (exts is None or Path(f).suffix.lower() in exts))
        return root, sorted(files)
    files = [Path(p) for p in dir_or_files]
    for p in files:
        if not p.is_file():
            raise DataError("file not found", p)
    if not files:
        return Path("."), []
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    return base, sorted(p.resolve() for p in files)


def sniff_text(path: Path, max_bytes: int | None) -> tuple[str | None, str]:
    """(text, "") for a text-like file, else (None, reason): "binary", "not UTF-8", "too large (...)" or
    "unreadable (...)"."""
    if path.suffix.lower() in BINARY_EXTENSIONS:
        return None, "binary"
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            return None, f"too large ({size} bytes > {max_bytes})"
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    try:
        text = decode_bytes(path, data)
    except DataError:
        return None, "binary" if b"\x00" in data[:_SNIFF_BYTES] else "not UTF-8"
    if "\x00" in text:
        return None, "binary"
    return text, ""


def file_documents(path: Path, doc_id: str, text: str, text_unit: str) -> Iterator[Document]:
    """The documents of one decoded file: source code -> one document with language metadata; Markdown ->
    one document titled by its first `# heading`; HTML -> its visible text titled by <title> (`--format code`
    keeps the markup); plain text -> by `text_unit`; anything else -> one."""
    ext = suffix_without_gz(path)
    if ext in HTML_EXTENSIONS:
        yield html_document(doc_id, text, {"path": doc_id})
    elif ext in CODE_LANGUAGES:
        n_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        yield Document(id=doc_id, text=text, metadata={"language": CODE_LANGUAGES[ext], "path": doc_id,
                                                        "num_lines": n_lines})
    elif ext in MARKDOWN_EXTENSIONS:
        yield markdown_document(doc_id, text, {"path": doc_id})
    elif ext in PLAIN_TEXT_EXTENSIONS and text_unit in ("line", "paragraph"):
        yield from split_text_units(numbered_lines(text), doc_id, text_unit)
    else:
        yield Document(id=doc_id, text=text, metadata={"path": doc_id})


def iter_folder_corpus(root: Path, options: ReadOptions, report: LoadReport,
                       extensions: Sequence[str] | None = None) -> Iterator[Document]:
    """Documents of every text-like file under `root` (only `extensions` when given); skipped files go to
    `report.skipped` with the reason. `.txt` files are whole documents unless `options.text_unit` says
    line or paragraph."""
    base, files = collect_files(root, extensions)
    unit = "file" if options.text_unit == "auto" else options.text_unit
    report.text_unit = unit
    for p in files:
        text, reason = sniff_text(p, options.max_file_bytes)
        if text is None:
            logger.info("skipping %s: %s", p, reason)
            report.skip(p, reason)
            continue
        report.add_file(p)
        yield from file_documents(p, relative_id(p, base), text, unit)


def iter_file_corpus(path: Path, options: ReadOptions, report: LoadReport, as_kind: str | None = None
                     ) -> Iterator[Document]:
    """Documents of one text file given as the corpus (no size cap; binary or undecodable -> DataError).
    `as_kind` ("text", "markdown", "code"; None: from the extension) says how to read it. Plain text
    (`.txt`) is cut per `options.text_unit` ("auto": paragraphs when the file has blank lines between
    text, else lines) and streamed line by line."""
    report.add_file(path)
    ext = suffix_without_gz(path)
    compressed = path.suffix.lower() == ".gz"
    plain = as_kind == "text" or (as_kind is None and ext in PLAIN_TEXT_EXTENSIONS)
    if plain:
        unit = detect_text_unit(path) if options.text_unit == "auto" else options.text_unit
        report.text_unit = unit
        if unit != "file":
            yield from split_text_units(iter_lines(path), path.name, unit, path)
            return
    elif ext in BINARY_EXTENSIONS:
        raise DataError(f"binary file ({ext}): not a corpus format", path)
    text = read_whole_text(path) if compressed else decode_bytes(path, path.read_bytes())
    if "\x00" in text:
        raise DataError("binary file (NUL bytes): not a corpus format", path, text.count("\n", 0, text.index("\x00")) + 1)
    if plain:
        yield Document(id=path.name, text=text, metadata={"path": path.name})
    elif as_kind == "markdown":
        yield markdown_document(path.name, text, {"path": path.name})
    elif as_kind == "code" and ext not in CODE_LANGUAGES:
        yield Document(id=path.name, text=text, metadata={"language": ext.lstrip(".") or "text", "path": path.name,
                                                          "num_lines": text.count("\n") + (not text.endswith("\n"))})
    else:
        yield from file_documents(path, path.name, text, "file")


# ------------------------------------------------------------------------------ the original readers
def read_text_files(dir_or_files: PathLike | Iterable[PathLike],
                    extensions: Sequence[str] = TEXT_EXTENSIONS) -> list[Document]:
    """One document per text/markdown file, raw text (no title); id = path relative to the folder (posix),
    metadata["path"]. Undecodable files raise DataError naming the file and line."""
    base, files = collect_files(dir_or_files, extensions)
    return [Document(id=relative_id(p, base), text=decode_bytes(p, p.read_bytes()), metadata={"path": str(p)})
            for p in files]


def iter_code_dir(path: PathLike | Iterable[PathLike], extensions: Sequence[str] | None = None,
                  max_bytes: int = 1_000_000, skip_dirs: Iterable[str] = SKIP_DIRS,
                  report: LoadReport | None = None) -> Iterator[Document]:
    """One document per source file under `path` (or the given files), read file by file as they are asked
    for (memory: the sorted list of paths, not their contents). id = relative path; metadata: `language`
    (from the extension), `path`, `num_lines`. Binary (NUL byte / not UTF-8) and files larger than
    `max_bytes` are skipped (logged, and recorded in `report`); .git, node_modules, virtualenvs... are not
    entered."""
    exts = tuple(extensions) if extensions is not None else tuple(CODE_LANGUAGES)
    base, files = collect_files(path, exts, frozenset(skip_dirs))
    for p in files:
        text, reason = sniff_text(p, max_bytes)
        if text is None:
            logger.info("skipping %s: %s", p, reason)
            if report is not None:
                report.skip(p, reason)
            continue
        if report is not None:
            report.add_file(p)
        rel = relative_id(p, base)
        language = CODE_LANGUAGES.get(p.suffix.lower(), p.suffix.lower().lstrip(".") or "text")
        yield Document(id=rel, text=text, metadata={
            "language": language, "path": rel, "num_lines": text.count("\n") + (0 if text.endswith("\n") else 1),
        })


def read_code_dir(path: PathLike | Iterable[PathLike], extensions: Sequence[str] | None = None,
                  max_bytes: int = 1_000_000, skip_dirs: Iterable[str] = SKIP_DIRS,
                  report: LoadReport | None = None) -> list[Document]:
    """`iter_code_dir` read whole into a list."""
    return list(iter_code_dir(path, extensions, max_bytes, skip_dirs, report))
