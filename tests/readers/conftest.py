"""Helpers for the corpus-reader tests: write a file (text or bytes) and check where a DataError points."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _check_error(err: Exception, path: Path, line: int | None, field: str | None = None) -> None:
    from mbert_retrieval.data import DataError

    assert isinstance(err, DataError), repr(err)
    assert err.path == str(path) and str(path) in str(err)
    assert err.line == line, str(err)
    if line is not None:
        assert re.search(rf"\bline {line}\b", str(err)), str(err)
    if field is not None:
        assert err.field == field and repr(field) in str(err), str(err)


@pytest.fixture
def write():
    return _write


@pytest.fixture
def jsonl():
    return _jsonl


@pytest.fixture
def check_error():
    return _check_error
