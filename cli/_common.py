"""Shared pieces of the `mbret` commands: consoles, error handling and exit codes, option parsing,
progress bars, JSON output and model loading."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import typer
from rich.console import Console

# Consoles resolve sys.stdout / sys.stderr when they write, so test runners that swap them still capture.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
RESUME_SAME = "re-run the same command to resume where it stopped"
EXIT_CODES_HELP = ("Exit codes: 0 success; 1 runtime failure (corrupt index, model cannot be loaded, "
                   "training/evaluation error); 2 bad input (malformed corpus/queries file with file and line, "
                   "bad option, unknown filter, model that does not match the index); 130 interrupted.")

STATE = {"verbose": False}


class BadInput(ValueError):
    """A bad command-line value (filter, key=value parameter, option combination)."""


# ---------------------------------------------------------------------------------------------- errors
def _bad_input_types() -> tuple[type[BaseException], ...]:
    from mbert_retrieval.data import DataError
    from mbert_retrieval.index import IndexMismatchError

    types: list[type[BaseException]] = [BadInput, DataError, IndexMismatchError, FileNotFoundError,
                                        FileExistsError, NotADirectoryError, ValueError]
    config = sys.modules.get("mbert_retrieval.train.config")  # not imported: none of its errors was raised
    if config is not None:  # (importing it would import torch)
        types.append(config.ConfigError)
    return tuple(types)


_EXTRAS = {"faiss": "pip install 'mbert-retrieval[cpu]' (or [gpu] on a CUDA machine)",
           "fastapi": "pip install 'mbert-retrieval[server]'", "uvicorn": "pip install 'mbert-retrieval[server]'",
           "ray": "pip install 'mbert-retrieval[ray]'", "datasets": "pip install 'mbert-retrieval[hub]'",
           "pylate": "pip install 'mbert-retrieval[pylate]' && pip install --no-deps pylate==1.6.0"}


def format_error(exc: BaseException) -> str:
    """One-line message; malformed-input errors lead with `file:line:` like a compiler."""
    from mbert_retrieval.data import DataError

    text = str(exc) or type(exc).__name__
    root = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if root in _EXTRAS:
        return f"{text}: install it with {_EXTRAS[root]}"
    if isinstance(exc, DataError) and exc.path and exc.line is not None:
        where = f"{exc.path}, line {exc.line}" + (f", field {exc.field!r}" if exc.field is not None else "")
        rest = text[len(where) + 2:] if text.startswith(where + ": ") else text
        field = f" (field {exc.field!r})" if exc.field is not None else ""
        return f"{exc.path}:{exc.line}: {rest}{field}"
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        return f"{text}: {exc.filename}"
    if isinstance(exc, KeyError):
        return f"missing key {text}"
    return text


@contextlib.contextmanager
def cli_errors(resume_hint: str | None = None) -> Iterator[None]:
    """Turn the package's exceptions into a clear message on stderr and an exit code (no traceback
    unless --verbose): 2 for bad input, 1 for runtime failures, 130 when interrupted (`resume_hint`: how the
    work done so far is picked up again, for commands that can)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]" + (f": {resume_hint}" if resume_hint else ""), markup=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything at the CLI boundary
        code = EXIT_BAD_INPUT if isinstance(exc, _bad_input_types()) else EXIT_RUNTIME
        if STATE["verbose"]:
            err.print(traceback.format_exc(), markup=False)
        label = "error" if code == EXIT_BAD_INPUT else "failed"
        err.print(f"[bold red]{label}:[/bold red] ", end="")
        err.print(format_error(exc), markup=False)
        raise typer.Exit(code) from None


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err.print("[bold red]error:[/bold red] ", end="")
    err.print(message, markup=False)
    raise typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    STATE["verbose"] = verbose
    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(getattr(h, "_mbret", False) for h in root.handlers):
        handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
        handler._mbret = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # the CLI prints the offline-fallback note itself; library chatter stays quiet unless --verbose
    logging.getLogger("mbert_retrieval.hub").setLevel(logging.INFO if verbose else logging.ERROR)
    for name in ("bm25s", "httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # transformers reads this when it is imported; importing it here would cost seconds on every command
    # (`--help`, `info` and `delete` load no model): the rest is done by `quiet_transformers` before a load
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    if "transformers" in sys.modules:
        quiet_transformers()


def quiet_transformers() -> None:
    """transformers' log level as --verbose says, and no per-load progress bars (call before loading a model)."""
    with contextlib.suppress(Exception):
        import transformers

        transformers.logging.set_verbosity_info() if STATE["verbose"] else transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------------- parsing
def json_error_text(exc: json.JSONDecodeError) -> str:
    """"Expecting value at column 3"; json's "Unterminated string starting at" already ends with "at"."""
    joiner = " column" if exc.msg.endswith(" at") else " at column"
    return f"{exc.msg}{joiner} {exc.colno}"


def _json_or_str(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


_FILTER_RE = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$", re.S)
_OPS = {"=": "$eq", "!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}
FILTER_SYNTAX = ("field=value, field!=value, field>=N, field<=N, field>N, field<N, or a JSON object like "
                 "'{\"year\": {\"$gte\": 2020}}'")


def parse_filters(items: Sequence[str] | None) -> dict[str, Any] | None:
    """`--filter` values -> one metadata filter. Each is `field=value` (also != >= <= > <; the value is
    read as JSON when it parses — numbers, true/false/null, ["a", "b"] lists — else as a string) or a
    whole JSON object (`{"year": {"$gte": 2020}}`). Several filters are ANDed."""
    if not items:
        return None
    parts: list[dict[str, Any]] = []
    for raw in items:
        text = raw.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadInput(f"--filter {raw!r}: invalid JSON ({json_error_text(exc)})") from None
            if not isinstance(value, dict):
                raise BadInput(f"--filter {raw!r}: a JSON filter must be an object")
            parts.append(value)
            continue
        m = _FILTER_RE.match(text)
        if not m or not m.group(1):
            raise BadInput(f"--filter {raw!r}: expected {FILTER_SYNTAX}")
        if m.group(3)[:1] in ("=", "!", "<", ">"):  # year>>2, year==2, year=>2: a typo, not a value ">2"
            raise BadInput(f"--filter {raw!r}: malformed operator {m.group(2) + m.group(3)[:1]!r}; expected "
                           f"{FILTER_SYNTAX} (a value that starts with = ! < > goes in a JSON object)")
        field, op, value = m.group(1), m.group(2), _json_or_str(m.group(3))
        if op == "=" and not isinstance(value, dict):
            parts.append({field: value})
        else:
            parts.append({field: {_OPS[op]: value}})
    merged: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []
    for part in parts:
        if any(key in merged for key in part):
            extra.append(part)
        else:
            merged.update(part)
    if extra:
        merged = {"$and": [merged, *extra]}
    from mbert_retrieval.index import compile_filter

    try:
        compile_filter(merged)
    except ValueError as exc:
        raise BadInput(f"--filter: {exc}") from None
    return merged


def parse_params(items: Sequence[str] | None, option: str = "--param") -> dict[str, Any]:
    """`key=value` strings -> dict (values read as JSON when they parse: 16, true, null, 0.5, ...)."""
    out: dict[str, Any] = {}
    for raw in items or ():
        key, sep, value = raw.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise BadInput(f"{option} {raw!r}: expected key=value")
        out[key] = _json_or_str(value.strip())
    return out


DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def model_options(batch_size: int | None, max_tokens: int | None, device: str | None,
                  dtype: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if dtype is not None:
        dtype = DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
        if dtype not in DTYPES:
            raise BadInput(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        opts["dtype"] = dtype
    if batch_size is not None:
        if batch_size < 1:
            raise BadInput(f"--batch-size must be >= 1, got {batch_size}")
        opts["max_batch_size"] = batch_size
    if max_tokens is not None:
        if max_tokens < 1:
            raise BadInput(f"--max-tokens must be >= 1, got {max_tokens}")
        opts["max_tokens_per_batch"] = max_tokens
    if device:
        opts["device"] = device
    return opts


# ---------------------------------------------------------------------------------------------- output
def _default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (Path, set, frozenset)):
        return str(obj) if isinstance(obj, Path) else sorted(obj)
    return str(obj)


def plural(n: int, word: str) -> str:
    """"1 document", "2 documents"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=_default)


def print_json(obj: Any, indent: int | None = 2) -> None:
    """JSON on stdout, nothing else (rich markup off, no wrapping)."""
    sys.stdout.write(dumps(obj, indent) + "\n")
    sys.stdout.flush()


def note_fallback(message: str | None) -> None:
    if message:
        err.print("[yellow]note:[/yellow] ", end="")
        err.print(message, markup=False)


@contextlib.contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `advance(n)`."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def status(message: str, enabled: bool = True) -> Iterator[None]:
    """A spinner on stderr while something slow (reading, loading a model) happens."""
    quiet_transformers()  # the slow steps wrapped in a status are where models get loaded
    if not enabled:
        yield
        return
    with err.status(message):
        yield


def plain_mapping(obj: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(dumps(obj))
