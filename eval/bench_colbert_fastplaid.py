"""fast-plaid side of `bench_colbert`: runs in fast-plaid's own virtual environment, reads embeddings from
files, writes measurements and rankings as JSON. Imports nothing from this project.

fast-plaid wheels pin one torch (fast-plaid 1.4.6.2110 <-> torch 2.11.0) and crash with others, so it gets
its own venv (several GB; benchmark only, never CI):

    python3 -m venv /work/venvs/fastplaid
    /work/venvs/fastplaid/bin/pip install torch==2.11.0 fast-plaid==1.4.6.2110

`bench_colbert` writes the inputs and calls this script for you (`--fastplaid-python`); by hand:

    /work/venvs/fastplaid/bin/python eval/bench_colbert_fastplaid.py --data DIR --out results.json \
        --nbits 2 --threads 2 --settings 8:4096 2:256

DIR holds docs.npy (all document tokens, float32 (T, dim)), doc_lengths.npy (int64, one per document),
queries.npy and query_lengths.npy the same for queries. Output: build seconds, index bytes per token and,
per (n_ivf_probe, n_full_scores) setting, QPS of all queries in one call (best of up to 3 passes), latency
p50/p99 of queries searched one at a time, and the top-k document positions and scores of every query.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np


def _split(tokens: np.ndarray, lengths: np.ndarray) -> list:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(m)) for m in np.split(tokens, np.cumsum(lengths)[:-1])]


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with docs.npy, doc_lengths.npy, queries.npy, query_lengths.npy")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--index", help="index folder (default: <data>/fastplaid-index, rebuilt)")
    p.add_argument("--nbits", type=int, default=2)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--settings", nargs="+", default=["8:4096"], metavar="PROBE:FULL",
                   help="n_ivf_probe:n_full_scores pairs (fast-plaid's default is 8:4096)")
    p.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--min-time", type=float, default=5.0, help="best of 3 passes, fewer once this many seconds are spent")
    args = p.parse_args(argv)

    import torch
    from fast_plaid import search as fp_search

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    docs = _split(np.load(data / "docs.npy"), np.load(data / "doc_lengths.npy"))
    queries = _split(np.load(data / "queries.npy"), np.load(data / "query_lengths.npy"))
    n_tokens = sum(len(d) for d in docs)
    index_dir = Path(args.index or data / "fastplaid-index")
    shutil.rmtree(index_dir, ignore_errors=True)
    t = time.perf_counter()
    index = fp_search.FastPlaid(index=str(index_dir), device="cpu")
    index.create(documents_embeddings=docs, nbits=args.nbits)
    build_s = time.perf_counter() - t
    out = {"system": "fast-plaid", "version": _version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "nbits": args.nbits, "build_s": build_s, "bytes_per_token": _folder_bytes(index_dir) / n_tokens, "rows": []}
    for setting in args.settings:
        probe, full = (int(x) for x in setting.split(":"))

        def search(qs, probe=probe, full=full):
            return index.search(queries_embeddings=qs, top_k=args.k, n_ivf_probe=probe, n_full_scores=full, show_progress=False)

        search(queries[:2])  # warm-up
        best, spent = float("inf"), 0.0
        for _ in range(3):
            t = time.perf_counter()
            res = search(queries)
            dt = time.perf_counter() - t
            best, spent = min(best, dt), spent + dt
            if spent >= args.min_time:
                break
        lat = []
        for q in queries[: args.latency_queries]:
            t = time.perf_counter()
            search([q])
            lat.append(time.perf_counter() - t)
        out["rows"].append({
            "n_ivf_probe": probe, "n_full_scores": full, "qps": len(queries) / best,
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "ids": [[int(i) for i, _ in r] for r in res], "scores": [[float(s) for _, s in r] for r in res],
        })  # fmt: skip
        print(f"fast-plaid n_ivf_probe={probe} n_full_scores={full}: {out['rows'][-1]['qps']:.1f} QPS", flush=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, args.out)
    return out


def _version() -> str:
    from importlib.metadata import version

    return version("fast-plaid")


if __name__ == "__main__":
    main()
