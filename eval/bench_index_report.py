"""Output of the index benchmark (`bench_index`): rich tables for the terminal and Markdown for the README,
both from the result dicts the benchmark writes to its --json file."""

from __future__ import annotations

from typing import Any

__all__ = ["print_dataset", "to_markdown"]


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_dataset(ds: dict, command: str, console: Any) -> None:
    """One table per family, the exact command line on top."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"\n$ {command}", markup=False, highlight=False)
    for family, enc in ds["encode"].items():
        unit = "vec" if family == "dense" else "tok"
        title = (f"{ds['name']} / {family}: {ds['n_docs']} docs, {ds['n_queries']} queries, {enc['units']} {unit}s "
                 f"(dim {enc['dim']}), model {enc['model']}; encoding {_f(enc['docs_per_s'], '.1f')} docs/s, "
                 f"{_f(enc['ms_per_query'], '.1f')} ms/query; exact nDCG@10 {enc['exact_ndcg_at_10']:.4f}")
        rows = [r for r in ds["rows"] if r["family"] == family]
        if not rows:  # --encode-only
            console.print(title, markup=False, highlight=False)
            continue
        table = Table(title=escape(title), title_justify="left")
        for col in ("kind", "params", "build s", f"struct B/{unit}", f"index B/{unit}", f"total B/{unit}", "QPS",
                    "nDCG@10", "vs exact", "overlap@10", "build x", "size x", "QPS x"):
            table.add_column(col, justify="left" if col in ("kind", "params") else "right", overflow="fold",
                             max_width=56 if col == "params" else None)
        for r in rows:
            if r["error"]:
                table.add_row(r["kind"], escape(f"failed: {r['error']}"), *["-"] * 11)
                continue
            sizes = (_f(r[f"{b}_bytes_per_unit"], ".1f") for b in ("struct", "index", "total"))
            table.add_row(r["kind"], escape(r["params"]), _f(r["build_s"], ".2f"), *sizes, _f(r["qps"], ".1f"),
                          _f(r["ndcg_at_10"], ".4f"), _f(r["ndcg_rel_exact"], ".4f"), _f(r["overlap_at_10"], ".3f"),
                          _f(r["build_x"], ".2f"), _f(r["size_x"], ".2f"), _f(r["qps_x"], ".2f"))
        console.print(table)
    console.print("struct B: search structure files (FAISS index / PLAID arrays; exact ColBERT: its float chunks). "
                  "index B: the index folder without our SQLite document store (adds float chunks kept for exact "
                  "rerank). total B: with it (texts). PyLate: its whole folder in all three. x: ratio to the "
                  "(reference) row, size x on index B. QPS excludes query encoding ('-' encoding: cached). "
                  "overlap@10: share of the exact top 10 retrieved.", markup=False, highlight=False)


def to_markdown(result: dict) -> str:
    """The tables as Markdown (for the README): one table per dataset and family, the command on top."""
    lines = [f"`{result['command']}`", ""]
    for ds in result["datasets"]:
        for family, enc in ds["encode"].items():
            unit = "vector" if family == "dense" else "token"
            rows = [r for r in ds["rows"] if r["family"] == family and not r["error"]]
            if not rows:
                continue
            lines += [f"**{ds['name']}, {family}**: {ds['n_docs']:,} documents, {ds['n_queries']} queries, "
                      f"{enc['units']:,} {unit}s of dim {enc['dim']}; exact search nDCG@10 "
                      f"{enc['exact_ndcg_at_10']:.4f}", "",
                      f"| kind | build s | bytes/{unit} | QPS | nDCG@10 | vs exact | overlap@10 | build x | size x "
                      "| QPS x |", "|---|---|---|---|---|---|---|---|---|---|"]
            for r in rows:
                ref = " (ref.)" if "(reference)" in r["params"] else ""
                lines.append(f"| {r['kind']}{ref} | {_f(r['build_s'], '.1f')} | {_f(r['index_bytes_per_unit'], '.1f')} "
                             f"| {_f(r['qps'], ',.0f' if (r['qps'] or 0) >= 100 else '.1f')} | {_f(r['ndcg_at_10'], '.4f')} | {_f(r['ndcg_rel_exact'], '.3f')} "
                             f"| {_f(r['overlap_at_10'], '.3f')} | {_f(r['build_x'], '.2f')} | {_f(r['size_x'], '.2f')} "
                             f"| {_f(r['qps_x'], '.2f')} |")
            lines.append("")
    errors = [f"{r['dataset']} {r['kind']}: {r['error']}" for ds in result["datasets"] for r in ds["rows"] if r["error"]]
    if errors:
        lines += ["Kinds that failed: " + "; ".join(errors), ""]
    return "\n".join(lines)
