"""Output of the index cost-curve benchmark (`bench_scale`): the same tables as aligned text for the terminal or
as Markdown for the README, from the result dict the benchmark writes to its --json file."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["index_table", "stream_table", "print_report", "to_markdown"]

MB = 1024 * 1024
Column = tuple[str, Callable[[dict], str]]


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:,.1f}"


def _size(x: float | None) -> str:
    """Bytes in B / KB / MB, whichever reads best."""
    if x is None:
        return "-"
    return f"{x:,.0f} B" if x < 10_000 else f"{x / 1024:,.0f} KB" if x < 10 * MB else f"{x / MB:,.1f} MB"


def _run(r: dict) -> str:
    return f"{_f(r.get('wall_s'), '.0f')} ({_f(r.get('cpu_s'), '.0f')})"


INDEX_COLUMNS: list[Column] = [
    (
        "kind",
        lambda r: r["kind"] + ("" if r.get("effective_index_type") in (None, r["kind"].split("-", 1)[1]) else f" ({r['effective_index_type']})"),
    ),
    ("docs", lambda r: f"{r['n_docs']:,}"),
    ("build s", lambda r: _f(r.get("build_s"), ".2f")),
    ("open s", lambda r: _f(r.get("open_s"), ".3f")),
    ("index MB", lambda r: _mb(r.get("index_bytes"))),
    ("QPS", lambda r: _f(r.get("qps"), ",.0f" if (r.get("qps") or 0) >= 100 else ".1f")),
    ("self@k", lambda r: _f(r.get("self_at_k"), ".2f")),
    ("add s", lambda r: _f(r.get("add_s"), ".3f")),
    ("add files written", lambda r: _size(r.get("add_written_bytes"))),
    ("rewrite %", lambda r: _f(None if r.get("add_rewrite_fraction") is None else 100 * r["add_rewrite_fraction"], ".1f")),
    ("add wchar", lambda r: _size(r.get("add_io_wchar"))),
    ("wchar %", lambda r: _f(None if r.get("add_io_wchar") is None else 100 * r["add_io_wchar"] / max(1, r["index_bytes"]), ".2f")),
    ("add write_bytes", lambda r: _size(r.get("add_io_write_bytes"))),
    ("found", lambda r: "-" if r.get("add_found") is None else f"{r['add_found']}/{r['add_docs']}"),
    ("RSS MB start", lambda r: _mb(r.get("rss_start"))),
    ("peak MB build", lambda r: _mb(r.get("peak_rss_build"))),
    ("peak MB search", lambda r: _mb(r.get("peak_rss_search"))),
    ("peak MB add", lambda r: _mb(r.get("peak_rss_add"))),
    ("run s (cpu)", lambda r: _run(r)),
]
STREAM_COLUMNS: list[Column] = [
    ("kind", lambda r: r["kind"]),
    ("docs", lambda r: f"{r['n_docs']:,}"),
    ("dim", lambda r: str(r.get("dim", "-"))),
    ("add s", lambda r: _f(r.get("add_s"), ".1f")),
    ("docs/s", lambda r: _f(r.get("docs_per_s"), ",.0f")),
    ("vectors MB", lambda r: _mb(r.get("vector_bytes"))),
    ("RSS MB start", lambda r: _mb(r.get("rss_start"))),
    ("peak MB add", lambda r: _mb(r.get("peak_rss_add"))),
    ("add growth MB", lambda r: "-" if r.get("peak_rss_add") is None or r.get("rss_start") is None else _mb(r["peak_rss_add"] - r["rss_start"])),
    ("finalize s", lambda r: _f(r.get("finalize_s"), ".1f")),
    ("peak MB finalize", lambda r: _mb(r.get("peak_rss_finalize"))),
    ("index MB", lambda r: _mb(r.get("index_bytes"))),
    ("run s (cpu)", lambda r: _run(r)),
]
NOTES = (
    "build s: create + add + finalize, data generation excluded. self@k: share of queries (perturbed copies of "
    "indexed documents) whose source is in the top k. add: the given number of documents added to the ready "
    "index; 'add files written' = sizes of the files it created, replaced or changed in place (SQLite: counted "
    "whole, an upper bound); rewrite % = that / the index's bytes; wchar / write_bytes: /proc/self/io deltas "
    "(bytes passed to write calls / sent to the block layer); wchar % = wchar / the index's bytes. found: added documents returned by a search with "
    "their own vectors. Memory: RSS before the build and peak RSS (getrusage) of a fresh process per row. "
    "run s (cpu): wall and CPU seconds of that process (start, data generation and every phase)."
)
STREAM_NOTES = (
    "Streaming ingest: Index.add fed by generators (no model, no list of the corpus), then finalize; "
    "add growth = peak RSS during the add minus RSS before it; vectors MB = N x dim x 4 bytes."
)


def _rows(rows: list[dict], columns: list[Column]) -> tuple[list[list[str]], list[str]]:
    ok = [[fn(r) for _, fn in columns] for r in rows if not r.get("error")]
    failed = [f"{r['kind']} N={r['n_docs']:,}: {r['error']}" for r in rows if r.get("error")]
    return ok, failed


def index_table(rows: list[dict], markdown: bool, streaming: bool = False) -> str:
    """One table (index rows or streaming rows) as Markdown or aligned text; failed rows listed below it."""
    columns = STREAM_COLUMNS if streaming else INDEX_COLUMNS
    body, failed = _rows(rows, columns)
    heads = [name for name, _ in columns]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
        lines = [fmt(heads), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    return "\n".join(lines + ([""] + [f"failed: {f}" for f in failed] if failed else []))


def stream_table(rows: list[dict], markdown: bool) -> str:
    return index_table(rows, markdown, streaming=True)


def _header(result: dict, markdown: bool) -> list[str]:
    s = result["settings"]
    desc = (
        f"dense dim {s['dim']}, ColBERT {s['tokens'][0]}-{s['tokens'][1]} tokens x {s['colbert_dim']}, "
        f"{s['queries']} queries per batch (PLAID {s.get('plaid_queries')}), k={s['k']}, add {s['add']} documents; "
        f"engine {result.get('engine') or '?'}, "
        f"{result['machine']['cpus']} CPUs; total {_f(result.get('total_s'), '.0f')} s"
    )
    params = "; ".join(f"{k}: " + ", ".join(f"{n}={v}" for n, v in p.items()) for k, p in s.get("params", {}).items() if p)
    return [f"`{result['command']}`" if markdown else f"$ {result['command']}", "", desc + (f"; settings {params}" if params else ""), ""]


def to_markdown(result: dict) -> str:
    lines = _header(result, True) + [index_table(result["rows"], True), "", NOTES, ""]
    if result.get("stream"):
        lines += [stream_table(result["stream"], True), "", STREAM_NOTES, ""]
    return "\n".join(lines)


def print_report(result: dict, file: Any = None) -> None:
    lines = _header(result, False) + [index_table(result["rows"], False), "", NOTES, ""]
    if result.get("stream"):
        lines += [stream_table(result["stream"], False), "", STREAM_NOTES]
    print("\n".join(lines), file=file, flush=True)
