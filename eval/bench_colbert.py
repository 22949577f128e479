"""ColBERT search benchmark: our PLAID (torch) vs PyLate's PLAID vs fast-plaid, same vectors, one run.

    # once: fast-plaid in its own venv (it pins torch 2.11.0; several GB, benchmark only, never CI)
    python3 -m venv /work/venvs/fastplaid && /work/venvs/fastplaid/bin/pip install torch==2.11.0 fast-plaid==1.4.6.2110
    # the ColBERT head tuned on SciFact's train split (eval/train_proof.py, ~10 min on 2 cores), then the benchmark
    # (scifact + nfcorpus, 2 threads; embeddings, exact top-k and PyLate's compiled extensions are cached, so a
    # re-run only builds and searches)
    python -m mbert_retrieval.eval.train_proof --dataset ../shared/data/scifact --kind colbert
    python -m mbert_retrieval.eval.bench_colbert --colbert-model runs/train_proof-colbert/train/final \
        --workdir /work/cache/bench_colbert --threads 2 --fastplaid-python /work/venvs/fastplaid/bin/python --build-seeds 5 \
        --json runs/bench_colbert.json
    python -m mbert_retrieval.eval.bench_colbert --smoke        # tiny synthetic data, ours + exact only (CI)

Systems: ours-plaid2 (the default configuration), ours-plaid2-rerank ("exact-rerank PLAID": keep_full_vectors,
its candidates reranked with exact MaxSim over the float vectors; ours-plaid2 is searched on the same index with
the rerank off: one build for both), ours-plaid4 (--ours), ours-exact (the exact token
index: brute-force MaxSim), pylate-plaid2 (PyLate's PLAID with use_fast=False: the Stanford ColBERT code; its
default use_fast=True backend *is* fast-plaid, listed with that note), fast-plaid over a sweep of
(n_ivf_probe, n_full_scores) settings; QPS x is relative to its fastest setting within --match-tolerance of
our default row's nDCG@10 (fast-plaid tuned to our quality).

Per dataset and system: build s, bytes/token (ours: the PLAID files, plus the float chunk files when it reads
them: rerank, exact; PyLate and fast-plaid: their folder),
QPS with all queries in one call (best of up to 3 passes after a warm-up), latency p50/p99 of single-query
searches (ours-exact: the first 20), nDCG@10 (pytrec_eval) and its difference from exact MaxSim's in points
with a 95 % paired bootstrap interval over the queries (how much of a gap the query sample alone explains),
overlap@10 with exact MaxSim, and QPS x. With --build-seeds N our PLAID rows are built N times (k-means seeds
0..N-1) and their quality columns averaged over the builds (one build's delta swings by a few tenths of a point
with the seed); their timings are seed 0's.

Vectors: the documents and queries are encoded once with --colbert-model (default: `bench_index`'s
all-MiniLM-L6-v2 with a seeded random 128-d projection, whose NFCorpus nDCG@10 is 0.11 even for exact search:
too weak for quality comparisons) and cached in <workdir>/cache, so every system
and every run gets the same embeddings; exact MaxSim top-k is cached there too. fast-plaid runs in its own
venv through `bench_colbert_fastplaid.py`: the vectors go to <workdir>/exchange/<dataset>/*.npy, its
measurements and rankings come back as JSON; it is swept over --fastplaid-settings (n_ivf_probe:n_full_scores)
so that its QPS can be read at our nDCG@10.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from argparse import Namespace
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

# OpenMP keeps its default wait policy, as users have it: OMP_WAIT_POLICY=PASSIVE (which the other benchmarks set
# to run torch's and FAISS's runtimes side by side) halved our batched QPS on scifact, since every one of the
# small per-query torch ops then wakes its sleeping threads; fast-plaid's subprocess inherits the same setting.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

# ours: name -> (index type, settings); the first is the default configuration. "exact-rerank PLAID" keeps the
# float vectors and reranks its candidates with exact MaxSim; ours-exact is the exact token index (brute force).
OURS = {
    "ours-plaid2": ("plaid", {"nbits": 2}),
    "ours-plaid2-rerank": ("plaid", {"nbits": 2, "keep_full_vectors": True}),
    "ours-plaid4": ("plaid", {"nbits": 4}),
    "ours-exact": ("flat", {}),
}
DEFAULT_OURS = ["ours-plaid2", "ours-plaid2-rerank", "ours-exact"]
EXACT_LATENCY_QUERIES = 20  # the exact index scans every token per query: a smaller single-query sample
# PyLate's PLAID by default (use_fast=True) is fast-plaid itself (pylate/indexes/fast_plaid.py wraps
# fast_plaid.search.FastPlaid, n_ivf_probe=8, n_full_scores=8192): measured as the fast-plaid rows, in fast-plaid's
# venv. The pylate-plaid2 row is PyLate's other PLAID backend (use_fast=False: the Stanford ColBERT code).
PYLATE_FAST_NOTE = ("PyLate's default PLAID (use_fast=True) is fast-plaid (pylate.indexes.fast_plaid wraps fast_plaid.search.FastPlaid, "
                    "n_ivf_probe=8, n_full_scores=8192): see the fast-plaid rows; fast-plaid needs its own venv (it pins torch 2.11)")  # fmt: skip
FASTPLAID_SETTINGS = ["8:4096", "4:1024", "2:512", "2:256", "1:256", "1:128"]
FASTPLAID_SCRIPT = Path(__file__).with_name("bench_colbert_fastplaid.py")  # run by fast-plaid's python


@dataclass
class Row:
    dataset: str
    system: str
    params: str = ""
    build_s: float | None = None
    bytes_per_token: float | None = None
    qps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ndcg_at_10: float | None = None
    ndcg_delta: float | None = None  # nDCG@10 minus exact MaxSim's, in points (x 100), same queries
    ndcg_delta_ci: tuple[float, float] | None = None  # its 95 % paired bootstrap interval over the queries
    overlap_at_10: float | None = None
    qps_x: float | None = None
    error: str | None = None
    builds: int = 1  # index builds (k-means seeds) the quality columns are averaged over; timings: the first
    ndcg_delta_builds: list[float] | None = None  # each build's difference from exact, when more than one


# ------------------------------------------------------------------------------------------ measuring
def timed(search_many: Callable[[list], Any], search_one: Callable[[Any], Any], queries: list, n_latency: int,
          min_time: float = 5.0) -> tuple[Any, float, float, float]:  # fmt: skip
    """(results of all queries, QPS batched, p50 ms, p99 ms of single-query searches)."""
    from mbert_retrieval.eval.bench_index import timed_search

    out, qps = timed_search(search_many, queries, min_time)  # warm-up, then best of up to 3 passes (more while under min_time)
    lat = []
    for q in queries[:n_latency]:
        t = time.perf_counter()
        search_one(q)
        lat.append(time.perf_counter() - t)
    return out, qps, 1000 * float(np.percentile(lat, 50)), 1000 * float(np.percentile(lat, 99))


BOOTSTRAP_SAMPLES = 2000


def per_query_ndcg(qrels: dict, run: dict) -> dict[str, float]:
    from mbert_retrieval.eval.metrics import evaluate_run

    return {q: s["ndcg_at_10"] for q, s in evaluate_run(qrels, run, k_values=(10,), ignore_identical_ids=True).per_query.items()}


def paired_delta(ours: dict[str, float], reference: dict[str, float], seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean per-query difference (points) and its 95 % bootstrap interval (queries resampled, pairs kept): how
    far a row's nDCG@10 is from exact search's on these queries, and how much of that is query sampling."""
    diff = 100 * np.array([ours[q] - reference[q] for q in sorted(reference)])
    means = diff[np.random.default_rng(seed).integers(0, len(diff), (BOOTSTRAP_SAMPLES, len(diff)))].mean(1)
    return float(diff.mean()), (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def quality(row: Row, runs: dict | list[dict], exact: dict, qrels: dict) -> None:
    """nDCG@10, its paired difference from exact and overlap@10 of a run, or averaged over the runs of several
    builds (each query's nDCG@10 averaged over them, then the bootstrap over queries: the build-to-build
    swing of a k-means seed is a few tenths of a point on 300 queries, so one build is a noisy estimate)."""
    from mbert_retrieval.eval.metrics import ranked

    def top10(docs: dict) -> set:
        return {d for d, _ in ranked(docs)[:10]}

    runs = [runs] if isinstance(runs, dict) else runs
    reference = per_query_ndcg(qrels, exact)
    each = [per_query_ndcg(qrels, run) for run in runs]
    mine = {q: float(np.mean([m[q] for m in each])) for q in each[0]}
    row.ndcg_at_10 = float(np.mean(list(mine.values())))
    row.ndcg_delta, row.ndcg_delta_ci = paired_delta(mine, reference)
    row.overlap_at_10 = float(np.mean([len(top10(run.get(q, {})) & top10(e)) / max(1, min(10, len(e))) for run in runs for q, e in exact.items()]))
    row.builds = len(runs)
    row.ndcg_delta_builds = [paired_delta(m, reference)[0] for m in each] if len(runs) > 1 else None


def build_ours(path: Path, dim: int, doc_ids: list, D: list, index_type: str, settings: dict) -> float:
    """Build one of our indexes at `path`; the seconds it took."""
    from mbert_retrieval.index import Index

    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    index = Index.create(path, "colbert", index_type, model_id="bench/colbert", dim=dim, **settings)
    index.add([{"id": d, "text": ""} for d in doc_ids], vectors=D)
    index.finalize()
    seconds = time.perf_counter() - t
    index.close()
    return seconds


def _doc_run(index: Any, qids: list, scores: np.ndarray, iids: np.ndarray) -> dict:
    """{query id: {doc id: score}} of a search's (scores, internal ids)."""
    rows = index.docstore.get_by_iids(np.unique(iids[iids >= 0]).tolist())
    return {q: {rows[int(i)].doc_id: float(s) for s, i in zip(srow, irow) if i >= 0} for q, srow, irow in zip(qids, scores, iids)}


def search_ours(path: Path, Q: list, qids: list, k: int, overrides: dict) -> dict:
    """One untimed batched search of the index at `path` (the quality of a further build)."""
    from mbert_retrieval.index import Index

    with Index.open(path, verify=False) as index:
        return _doc_run(index, qids, *index.structure.search(Q, k, **overrides))


def bench_ours(row: Row, path: Path, D: list, Q: list, qids: list, k: int, index_type: str, settings: dict, n_latency: int,
               min_time: float = 5.0) -> dict:
    """Search the index at `path` (built with `settings`, or with keep_full_vectors on top of them: the rerank
    is then switched off per search, which leaves the same PLAID search)."""
    from mbert_retrieval.index import Index

    tokens = sum(len(d) for d in D)
    floats = index_type != "plaid" or settings.get("keep_full_vectors")  # exact search and rerank read the float chunks
    files = [*path.glob("*plaid*"), *(path.glob("chunks/*") if floats else [])]  # plaid.N.* or <part>.N.plaid.*
    row.bytes_per_token = sum(f.stat().st_size for f in files) / tokens
    overrides = {} if floats else {"rerank": False}
    with Index.open(path, verify=False) as index:
        if index_type == "plaid":
            cfg = index.structure.config
            shown = {n: getattr(cfg, n) for n in ("nbits", "nprobe", "ncandidates", "ndocs", "device", "dtype")}
            row.params = ", ".join(f"{n}={v}" for n, v in {**shown, "rerank": bool(floats)}.items())
        else:
            row.params = ", ".join(f"{n}={getattr(index.structure, n, '?')}" for n in ("device", "dtype"))
        structure = index.structure  # timed without the document store (the others hold no texts either)
        (scores, iids), row.qps, row.p50_ms, row.p99_ms = timed(
            lambda qs: structure.search(qs, k, **overrides), lambda q: structure.search([q], k, **overrides), Q, n_latency, min_time)
        return _doc_run(index, qids, scores, iids)


def bench_pylate(row: Row, path: Path, doc_ids: list, D: list, Q: list, qids: list, k: int, log: Path, n_latency: int,
                 min_time: float = 5.0) -> dict:
    import random
    from contextlib import redirect_stdout

    import torch
    from pylate import indexes, retrieve

    from mbert_retrieval.eval.bench_index import PYLATE_DEFAULTS

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").resolve()))
    with open(log, "a", encoding="utf-8") as fh, redirect_stdout(fh):
        random.seed(0)
        torch.manual_seed(0)
        t = time.perf_counter()
        index = indexes.PLAID(index_folder=str(path), index_name="index", override=True, use_fast=False, nbits=2,
                              embedding_size=int(D[0].shape[1]))  # fmt: skip
        index.add_documents(documents_ids=doc_ids, documents_embeddings=D)
        row.build_s = time.perf_counter() - t
        retriever = retrieve.ColBERT(index=index)
        res, row.qps, row.p50_ms, row.p99_ms = timed(lambda qs: retriever.retrieve(queries_embeddings=qs, k=k),
                                                     lambda q: retriever.retrieve(queries_embeddings=[q], k=k), Q, n_latency, min_time)
    row.bytes_per_token = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / sum(len(d) for d in D)
    row.params = ", ".join(f"{n}={v}" for n, v in {"nbits": 2, **PYLATE_DEFAULTS["plaid"]}.items())
    return {q: {str(r["id"]): float(r["score"]) for r in rs} for q, rs in zip(qids, res)}


def bench_fastplaid(name: str, python: str, exchange: Path, D: list, Q: list, args: Namespace) -> dict:
    """Write the vectors, run bench_colbert_fastplaid.py in fast-plaid's venv, read its JSON."""
    exchange.mkdir(parents=True, exist_ok=True)
    np.save(exchange / "docs.npy", np.concatenate(D).astype(np.float32))
    np.save(exchange / "doc_lengths.npy", np.array([len(d) for d in D], np.int64))
    np.save(exchange / "queries.npy", np.concatenate(Q).astype(np.float32))
    np.save(exchange / "query_lengths.npy", np.array([len(q) for q in Q], np.int64))
    out = exchange / "fastplaid.json"
    cmd = [python, str(FASTPLAID_SCRIPT), "--data", str(exchange), "--out", str(out),
           "--nbits", "2", "--k", str(args.k), "--latency-queries", str(args.fastplaid_latency_queries), "--min-time", str(args.min_time),
           "--settings", *args.fastplaid_settings]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"[{name}] fast-plaid: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------ data
def smoke_data(seed: int = 0) -> tuple[str, list, list, list, list, dict]:
    """Tiny synthetic ColBERT collection: (name, doc ids, doc token matrices, query ids, query matrices, qrels)."""
    rng = np.random.default_rng(seed)
    dim, n_docs, n_topics = 32, 300, 24
    centres = rng.standard_normal((n_topics, dim)).astype(np.float32)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    D = []
    for _ in range(n_docs):
        n = int(rng.integers(6, 30))
        D.append(unit(centres[rng.choice(rng.choice(n_topics, 2, replace=False), n)] + 0.4 * rng.standard_normal((n, dim))))
    picks = rng.choice(n_docs, 30, replace=False)
    Q = [unit(D[d][rng.choice(len(D[d]), 5)] + 0.2 * rng.standard_normal((5, dim))) for d in picks]
    doc_ids, qids = [f"d{i}" for i in range(n_docs)], [f"q{i}" for i in range(len(picks))]
    return "smoke", doc_ids, D, qids, Q, {q: {f"d{d}": 1} for q, d in zip(qids, picks)}


def real_data(spec: str, args: Namespace, model: Any) -> tuple[str, list, list, list, list, dict]:
    from mbert_retrieval.data import document_text
    from mbert_retrieval.eval.bench_index import encode, load_dataset

    name, docs, qids, qtexts, qrels = load_dataset(spec, args.max_docs, args.max_queries)
    doc_ids = [d.id for d in docs]
    D, _ = encode(model, doc_ids, [document_text(d) for d in docs], Path(args.workdir), queries=False)
    Q, _ = encode(model, qids, qtexts, Path(args.workdir), queries=True)
    return name, doc_ids, [np.asarray(d, np.float32) for d in D], qids, [np.asarray(q, np.float32) for q in Q], qrels


def exact(doc_ids: list, D: list, qids: list, Q: list, k: int, workdir: Path) -> dict:
    from mbert_retrieval.eval.bench_index import exact_run

    return exact_run("colbert", Q, D, doc_ids, qids, k, workdir)


# ------------------------------------------------------------------------------------------ one dataset
def run_dataset(data: tuple, args: Namespace) -> dict:
    from mbert_retrieval.eval.bench_index import ndcg10

    name, doc_ids, D, qids, Q, qrels = data
    workdir = Path(args.workdir)
    ex = exact(doc_ids, D, qids, Q, args.k, workdir)
    out: dict[str, Any] = {"name": name, "n_docs": len(D), "n_queries": len(Q), "n_tokens": int(sum(len(d) for d in D)),
                           "dim": int(D[0].shape[1]), "exact_ndcg_at_10": ndcg10(qrels, ex), "rows": []}  # fmt: skip
    rows: list[Row] = []
    n_latency = min(args.latency_queries, len(Q))

    def attempt(row: Row, fn: Callable[[Row], dict | list[dict]]) -> None:
        print(f"[{name}] {row.system} ...", file=sys.stderr, flush=True)
        try:
            quality(row, fn(row), ex, qrels)
        except Exception as err:  # noqa: BLE001 - a system that cannot run here is reported, the rest goes on
            row.error = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
        rows.append(row)

    builds: dict[tuple[str, int], tuple[Path, float]] = {}  # (build settings, seed) -> (index folder, build seconds)
    for system in args.ours:
        index_type, settings = OURS[system]
        settings = {**settings, **args.ours_params} if index_type == "plaid" else settings
        n_lat = n_latency if index_type == "plaid" else min(n_latency, EXACT_LATENCY_QUERIES)
        build = settings
        if index_type == "plaid" and not settings.get("keep_full_vectors"):  # searched on its rerank twin's index when that row runs too
            twin = {**settings, "keep_full_vectors": True}
            if any(OURS[s][0] == "plaid" and {**OURS[s][1], **args.ours_params} == twin for s in args.ours):
                build = twin
        key = json.dumps([index_type, build], sort_keys=True)

        def run_ours(row: Row, index_type: str = index_type, settings: dict = settings, build: dict = build, key: str = key,
                     n_lat: int = n_lat) -> list[dict]:  # fmt: skip
            def built(seed: int) -> tuple[Path, float]:
                if (key, seed) not in builds:
                    path = workdir / "indexes" / name / f"ours-{len(builds)}"
                    builds[key, seed] = (path, build_ours(path, out["dim"], doc_ids, D, index_type, {**build, **({"seed": seed} if seed else {})}))
                return builds[key, seed]

            path, row.build_s = built(0)
            runs = [bench_ours(row, path, D, Q, qids, args.k, index_type, settings, n_lat, args.min_time)]
            overrides = {} if index_type != "plaid" or settings.get("keep_full_vectors") else {"rerank": False}
            for seed in range(1, args.build_seeds if index_type == "plaid" else 1):  # further k-means seeds: quality only
                runs.append(search_ours(built(seed)[0], Q, qids, args.k, overrides))
            return runs

        attempt(Row(name, system), run_ours)
    if not args.keep_indexes:
        for path, _ in builds.values():
            shutil.rmtree(path, ignore_errors=True)
    if not args.no_pylate:
        path = workdir / "indexes" / name / "pylate-plaid2"
        attempt(Row(name, "pylate-plaid2"), lambda row: bench_pylate(row, path, doc_ids, D, Q, qids, args.k, workdir / "pylate.log", n_latency,
                                                                               args.min_time))
        shutil.rmtree(path, ignore_errors=True)
        rows.append(Row(name, "pylate-plaid2-fast", "use_fast=True", error=PYLATE_FAST_NOTE))
    if args.fastplaid_python:
        exchange = workdir / "exchange" / name
        try:
            fp = bench_fastplaid(name, args.fastplaid_python, exchange, D, Q, args)
            for r in fp["rows"]:
                row = Row(name, "fast-plaid", f"nbits=2, n_ivf_probe={r['n_ivf_probe']}, n_full_scores={r['n_full_scores']}",
                          fp["build_s"], fp["bytes_per_token"], r["qps"], r["p50_ms"], r["p99_ms"])  # fmt: skip
                run = {q: {doc_ids[i]: s for i, s in zip(ids, ss)} for q, ids, ss in zip(qids, r["ids"], r["scores"])}
                quality(row, run, ex, qrels)
                rows.append(row)
        except Exception as err:  # noqa: BLE001
            rows.append(Row(name, "fast-plaid", error=f"{type(err).__name__}: {err}"[:300]))
        shutil.rmtree(exchange, ignore_errors=True)
    ref = reference(rows, args.match_tolerance)
    for r in rows:
        r.qps_x = r.qps / ref.qps if ref and ref.qps and r.qps else None  # ref.qps is set: chosen for it
    out["reference"] = None if ref is None else f"{ref.system} ({ref.params})"
    out["rows"] = [asdict(r) for r in rows]
    return out


def reference(rows: list[Row], tolerance: float) -> Row | None:
    """The row QPS ratios are taken to: fast-plaid tuned to our default row's quality, i.e. its fastest setting
    with nDCG@10 at least ours minus `tolerance` (its best-nDCG setting when none reaches that); PyLate's
    PLAID when fast-plaid did not run."""
    fast = [r for r in rows if r.system == "fast-plaid" and r.qps and r.ndcg_at_10 is not None]
    ours = next((r for r in rows if r.system.startswith("ours-plaid") and r.ndcg_at_10 is not None), None)
    if fast:
        good = [r for r in fast if ours is None or r.ndcg_at_10 >= ours.ndcg_at_10 - tolerance]  # type: ignore[operator]
        return max(good, key=lambda r: r.qps or 0.0) if good else max(fast, key=lambda r: r.ndcg_at_10 or 0.0)
    return next((r for r in rows if r.system.startswith("pylate") and r.qps), None)


# ------------------------------------------------------------------------------------------ output
def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _delta(r: dict) -> str:
    if r.get("ndcg_delta") is None:
        return "-"
    lo, hi = r["ndcg_delta_ci"]
    return f"{r['ndcg_delta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def format_table(ds: dict) -> str:
    head = (f"{ds['name']}: {ds['n_docs']} docs, {ds['n_queries']} queries, {ds['n_tokens']} tokens (dim {ds['dim']}); "
            f"exact MaxSim nDCG@10 {ds['exact_ndcg_at_10']:.4f}; QPS x relative to {ds.get('reference') or '-'}")
    cols = ["system", "build s", "B/token", "QPS", "p50 ms", "p99 ms", "nDCG@10", "vs exact (95% CI)", "overlap@10", "QPS x", "params"]
    lines = []
    for r in ds["rows"]:
        if r["error"]:
            lines.append([r["system"], *["-"] * 9, r["error"] if r["system"] == "pylate-plaid2-fast" else f"failed: {r['error']}"])
            continue
        params = r["params"]
        if r.get("ndcg_delta_builds"):
            params += f"; quality: mean of {r['builds']} builds (k-means seeds), each vs exact " + " / ".join(f"{d:+.2f}" for d in r["ndcg_delta_builds"])
        lines.append([r["system"], _f(r["build_s"], ".2f"), _f(r["bytes_per_token"], ".1f"), _f(r["qps"], ".1f"), _f(r["p50_ms"], ".1f"),
                      _f(r["p99_ms"], ".1f"), _f(r["ndcg_at_10"], ".4f"), _delta(r), _f(r["overlap_at_10"], ".3f"), _f(r["qps_x"], ".2f"), params])
    widths = [max(len(c), *(len(x[i]) for x in lines)) if lines else len(c) for i, c in enumerate(cols)]
    fmt = lambda xs: " | ".join(x.ljust(w) if i in (0, len(cols) - 1) else x.rjust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
    return "\n".join([head, fmt(cols), "-+-".join("-" * w for w in widths), *map(fmt, lines)])


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.bench_colbert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"], help="BEIR folders or names in ../shared/data")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic data; ours only (no model, PyLate or fast-plaid)")
    p.add_argument("--max-docs", type=int)
    p.add_argument("--max-queries", type=int)
    p.add_argument("--colbert-model", help="ColBERT folder (default: bench_index's MiniLM + seeded random projection)")
    p.add_argument("--document-length", type=int, default=180)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--build-seeds", type=int, default=1, metavar="N",
                   help="build our PLAID indexes with N k-means seeds (0..N-1) and average the quality columns over them; timings: seed 0")
    p.add_argument("--ours", nargs="*", default=DEFAULT_OURS, choices=list(OURS), help="our rows (none: only the references)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="PLAID setting for all our rows, e.g. ndocs=128")
    p.add_argument("--no-pylate", action="store_true")
    p.add_argument("--fastplaid-python", help="python of fast-plaid's venv, e.g. /work/venvs/fastplaid/bin/python")
    p.add_argument("--fastplaid-settings", nargs="+", default=FASTPLAID_SETTINGS, metavar="PROBE:FULL")
    p.add_argument("--match-tolerance", type=float, default=0.002,
                   help="QPS x is relative to fast-plaid's fastest setting with nDCG@10 >= ours-plaid minus this")
    p.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--min-time", type=float, default=5.0,
                   help="batched QPS: best of 3 passes over all queries, fewer only once this many seconds are spent (every system)")
    p.add_argument("--fastplaid-latency-queries", type=int, default=10,
                   help="fast-plaid's single-query latency sample (each of its CPU searches takes seconds to start)")
    p.add_argument("--threads", type=int, help="torch / FAISS threads (default: theirs)")
    p.add_argument("--workdir", default="runs/bench_colbert", help="embedding + exact cache, index folders, exchange files")
    p.add_argument("--keep-indexes", action="store_true")
    p.add_argument("--json", help="write all results here")
    return p


def main(argv: list[str] | None = None) -> dict:
    from mbert_retrieval.eval._atomic import atomic_write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.ours_params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        try:
            args.ours_params[key] = json.loads(value)
        except json.JSONDecodeError:
            args.ours_params[key] = value
    if args.build_seeds < 1:
        raise SystemExit(f"--build-seeds must be at least 1, got {args.build_seeds}")
    if args.smoke:
        args.no_pylate, args.fastplaid_python = True, None
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": shlex.join(["python", "-m", "mbert_retrieval.eval.bench_colbert", *argv]), "datasets": []}
    datasets: Iterable[tuple[str, list, list, list, list, dict]]
    if args.smoke:
        datasets = [smoke_data()]
    else:
        from mbert_retrieval.eval.bench_index import load_models

        model = load_models(Namespace(kinds=["colbert-plaid2"], colbert_model=args.colbert_model, dense_model=None,
                                      document_length=args.document_length, seed=args.seed))["colbert"]  # fmt: skip
        datasets = (real_data(spec, args, model) for spec in args.datasets)
    print(f"$ {result['command']}")
    for data in datasets:
        result["datasets"].append(run_dataset(data, args))
        print("\n" + format_table(result["datasets"][-1]), flush=True)
        if args.json:
            atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
