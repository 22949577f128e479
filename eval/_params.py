"""`--param KIND.NAME=VALUE` options of the benchmark scripts (values parsed as JSON where they are JSON)."""

from __future__ import annotations

import json
from typing import Any, Iterable


def parse_kind_params(items: Iterable[str], kinds: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{kind: {name: value}}; an item without KIND. or with an unknown KIND exits with a message."""
    known = list(kinds)
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        kind, dot, name = key.partition(".")
        if not sep or not dot or kind not in known:
            raise SystemExit(f"--param expects KIND.NAME=VALUE with KIND in {known}, got {item!r}")
        try:
            out.setdefault(kind, {})[name] = json.loads(value)
        except json.JSONDecodeError:
            out.setdefault(kind, {})[name] = value
    return out
