"""Metadata filters -> SQL over `docs.metadata` (JSON), comparing values of like JSON type only: numbers with
numbers, strings with strings, booleans by equality; see `compile_filter`."""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["compile_filter"]

_KEY_RE = re.compile(r"^[^\"\\]+$")
_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NUMBER_TYPES = "('integer', 'real')"


def _json_path(key: str) -> str:
    parts = key.split(".")
    if not key or not all(p and _KEY_RE.match(p) for p in parts):
        raise ValueError(f"invalid metadata field name in filter: {key!r}")
    return "$" + "".join(f'."{p}"' for p in parts)


def _filter_value(key: str, value: Any) -> Any:
    """A filter value as SQLite gets it: str, bool, None or a finite number (ints beyond int64 as floats)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"filter value for field {key!r} is too large to compare: {value}") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"filter value for field {key!r} must be a finite number, got {value!r}")
        return value
    raise ValueError(f"filter values must be str, int, float, bool or None, got {type(value).__name__} for field {key!r}")


Sql = tuple[str, list[Any]]  # an SQL expression and the values of its `?` placeholders, in order


def _typed_eq(typ: Sql, val: Sql, value: Any) -> Sql:
    """SQL that is 1 exactly when a JSON value (its `json_type` `typ`, never NULL; its SQL value `val`)
    equals `value` with a like type, else 0 (never NULL). None matches null or absent."""
    (t, tp), (v, vp) = typ, val
    if value is None:
        return f"{t} IN ('', 'null')", [*tp]
    if isinstance(value, bool):
        return f"{t} = '{'true' if value else 'false'}'", [*tp]
    types = "('text')" if isinstance(value, str) else _NUMBER_TYPES
    return f"({t} IN {types} AND {v} = ?)", [*tp, *vp, value]


def _typed_in(typ: Sql, val: Sql, values: Sequence[Any]) -> Sql:
    """`_typed_eq` for membership in `values` (one `IN` per type)."""
    (t, tp), (v, vp) = typ, val
    numbers = [x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)]
    texts = [x for x in values if isinstance(x, str)]
    parts: list[str] = []
    params: list[Any] = []
    for group, types in ((numbers, _NUMBER_TYPES), (texts, "('text')")):
        if group:
            parts.append(f"({t} IN {types} AND {v} IN ({','.join('?' * len(group))}))")
            params += [*tp, *vp, *group]
    for x in dict.fromkeys(x for x in values if x is None or isinstance(x, bool)):
        sql, ps = _typed_eq(typ, val, x)
        parts.append(sql)
        params += ps
    return "(" + " OR ".join(parts) + ")", params


def _field_clause(key: str, ops: Mapping[str, Any]) -> Sql:
    """SQL condition (and its parameters, in order) of the operators on one metadata field."""
    path = _json_path(key)
    typ: Sql = ("coalesce(json_type(metadata, ?), '')", [path])
    val: Sql = ("json_extract(metadata, ?)", [path])
    clauses: list[str] = []
    params: list[Any] = []
    for op, raw in ops.items():
        if op in ("$eq", "$ne"):
            sql, ps = _typed_eq(typ, val, _filter_value(key, raw))
            sql = f"NOT ({sql})" if op == "$ne" else sql
        elif op in _ORDER:
            value = _filter_value(key, raw)
            if value is None or isinstance(value, bool):
                raise ValueError(f"{op} for field {key!r} needs a number or a string, got {raw!r} (only those are ordered)")
            types = "('text')" if isinstance(value, str) else _NUMBER_TYPES
            sql, ps = f"({typ[0]} IN {types} AND {val[0]} {_ORDER[op]} ?)", [path, path, value]
        elif op in ("$in", "$nin"):
            if not isinstance(raw, (list, tuple)):
                raise ValueError(f"{op} for field {key!r} needs a list")
            if not raw:
                sql, ps = ("0" if op == "$in" else "1"), []
            else:
                sql, ps = _typed_in(typ, val, [_filter_value(key, v) for v in raw])
                sql = f"NOT ({sql})" if op == "$nin" else sql
        elif op == "$exists":
            sql, ps = f"json_type(metadata, ?) IS {'NOT ' if raw else ''}NULL", [path]
        elif op == "$contains":
            inner, ips = _typed_eq(("je.type", []), ("je.value", []), _filter_value(key, raw))
            sql, ps = f"EXISTS (SELECT 1 FROM json_each(metadata, ?) AS je WHERE {inner})", [path, *ips]
        else:
            raise ValueError(f"unknown filter operator {op!r} for field {key!r}")
        clauses.append(sql)
        params += ps
    return " AND ".join(clauses), params


def compile_filter(flt: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Metadata filter -> SQL WHERE clause over `docs.metadata`.

    `{"lang": "en"}` equality, `{"lang": ["en", "de"]}` membership, `{"year": {"$gte": 2020, "$lt": 2024}}`
    comparisons ($eq $ne $gt $gte $lt $lte $in $nin $exists $contains), `{"$or": [{...}, {...}]}`,
    `{"$and": [...]}`; nested fields with dots (`"source.name"`). Top-level keys are ANDed.

    Values compare only like with like: numbers with numbers (1 equals 1.0), strings with strings, booleans
    with booleans. So the string "1990" never matches `{"$gte": 2019}`, `"1"` is not `1`, `true` is not `1`,
    and a boolean never matches an order comparison ($gt $gte $lt $lte need a number or a string value).
    `None` (`$eq`/`$in`) matches a JSON null or an absent field; `$ne`/`$nin` match every document the
    equality does not (absent fields included). NaN and infinite filter values are rejected.
    """
    if not isinstance(flt, Mapping):
        raise ValueError(f"a filter must be a dict, got {type(flt).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond:
                raise ValueError(f"{key} needs a non-empty list of filters")
            subs = [compile_filter(c) for c in cond]
            clauses.append("(" + f" {key[1:].upper()} ".join(f"({s})" for s, _ in subs) + ")")
            params += [p for _, ps in subs for p in ps]
            continue
        ops = cond if isinstance(cond, Mapping) else ({"$in": cond} if isinstance(cond, (list, tuple)) else {"$eq": cond})
        if not ops:
            raise ValueError(f"empty condition for field {key!r}")
        sql, ps = _field_clause(key, ops)
        clauses.append(sql)
        params += ps
    return (" AND ".join(clauses) or "1"), params


def _required_fields(flt: Mapping[str, Any]) -> Iterator[str]:
    """Field names of a (valid) filter whose conditions only documents having the field can meet."""
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            for sub in cond:
                yield from _required_fields(sub)
            continue
        ops = cond if isinstance(cond, Mapping) else ({"$in": cond} if isinstance(cond, (list, tuple)) else {"$eq": cond})
        for op, value in ops.items():
            if op in ("$ne", "$nin") or (op == "$exists" and not value) or (op == "$eq" and value is None):
                continue
            if op == "$in" and (not value or any(v is None for v in value)):
                continue
            yield key
            break
