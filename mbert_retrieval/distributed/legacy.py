"""Folders of the former sharded layout (one index per shard under a `sharded.json`): recognised, never read.

`mbret index --shards N` now builds one ordinary index; a folder of the old layout is refused with one line
that says how to rebuild it (`LegacyShardedError`, an `IndexMismatchError`: exit code 2 in the CLI).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ..index.errors import IndexMismatchError

__all__ = ["LEGACY_SHARDED_MANIFEST", "LegacyShardedError", "is_legacy_sharded", "legacy_sharded_message",
           "check_not_legacy_sharded"]

LEGACY_SHARDED_MANIFEST = "sharded.json"


class LegacyShardedError(IndexMismatchError):
    """A folder of the former sharded layout (`sharded.json`), which this version does not read."""


def is_legacy_sharded(path: str | os.PathLike) -> bool:
    """True when `path` holds a sharded index of the former layout (a `sharded.json`)."""
    return (Path(path) / LEGACY_SHARDED_MANIFEST).is_file()


def legacy_sharded_message(path: str | os.PathLike) -> str:
    """One line: what the folder is and the `mbret index` command that rebuilds it as one index (the settings
    `sharded.json` records: shard count, model, kind, index type; the corpus is not recorded: CORPUS)."""
    path = Path(path)
    words = ["mbret", "index", "CORPUS", shlex.quote(f"{path}-new")]
    try:
        data = json.loads((path / LEGACY_SHARDED_MANIFEST).read_text(encoding="utf-8"))
        words += ["--shards", str(len(data.get("shards") or []) or "N")]
        if data.get("model_id"):
            words += ["--model", shlex.quote(str(data["model_id"]))]
        if data.get("kind") in ("dense", "colbert"):
            words += ["--kind", str(data["kind"])]
        if data.get("index_type"):
            words += ["--index", shlex.quote(str(data["index_type"]))]
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable: the generic command
        words += ["--shards", "N"]
    return (f"{path} is a sharded index of the former layout (one index per shard, {LEGACY_SHARDED_MANIFEST}), "
            f"which this version no longer reads: rebuild it as one index with `{' '.join(words)}` "
            "(same corpus; --shards only splits the encoding now)")


def check_not_legacy_sharded(path: str | os.PathLike) -> None:
    """Raise `LegacyShardedError` (with the rebuild command) when `path` is a folder of the former layout."""
    if is_legacy_sharded(path):
        raise LegacyShardedError(legacy_sharded_message(path))
