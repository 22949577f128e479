"""PLAID codec fidelity: how close decompressed ColBERT tokens stay to the float ones, per codec variant.

    python -m mbert_retrieval.eval.bench_codec --colbert-model runs/train_proof-colbert/train/final \
        --workdir /work/cache/bench_colbert --json runs/bench_codec.json

One k-means (the index's default centroid count for the corpus, `PlaidConfig.kmeans_niter` iterations) on a
token sample, then the residual code fitted four ways on the same centroids and sample: per-dimension buckets
with quantile cutoffs and mean weights (the codec of two releases ago), Lloyd-Max buckets, Lloyd-Max buckets over
each residual's direction with a float16 scale per token (the previous default), and a product quantizer (256
codewords per 4 dimensions at 2 bits: the same bytes) over the directions with the scale (the default). Measured on held-out tokens: mean 1 - cos to the float token, and
the RMSE of query-token . document-token scores (query tokens of the dataset's own queries), which is what
MaxSim adds up. Vectors come from bench_colbert's embedding cache (same --workdir, same model).
"""

from __future__ import annotations

import argparse
import json
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np


def fidelity(codec: Any, tokens: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    codes, rows = codec.compress(tokens)
    approx = codec.decompress(codes, rows)
    error = tokens @ queries.T - approx @ queries.T
    return {"bytes_per_token": float(rows.shape[1] + 2), "one_minus_cos": float(np.mean(1 - np.sum(approx * tokens, axis=1))),
            "score_rmse": float(np.sqrt(np.mean(error**2)))}  # fmt: skip


def run(D: list, Q: list, nbits: int, sample_size: int, test_size: int, seed: int) -> dict[str, Any]:
    from mbert_retrieval.index.codec import ResidualCodec
    from mbert_retrieval.index.plaid import PlaidConfig, default_n_centroids

    tokens = np.concatenate(D).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))
    sample, test = tokens[order[:sample_size]], tokens[order[sample_size : sample_size + test_size]]
    queries = np.concatenate(Q).astype(np.float32)
    queries = queries[rng.choice(len(queries), min(256, len(queries)), replace=False)]
    n_c = default_n_centroids(len(tokens), len(sample))
    scaled = ResidualCodec.train(sample, n_c, nbits, PlaidConfig().kmeans_niter, seed, quantizer="scalar")
    lloyd = ResidualCodec(scaled.centroids, scaled.cutoffs, scaled.weights, nbits)
    lloyd.fit_buckets(sample)
    quantile = ResidualCodec(scaled.centroids, scaled.cutoffs, scaled.weights, nbits)
    quantile.fit_buckets(sample, lloyd_iters=1)
    product = ResidualCodec(scaled.centroids, scaled.cutoffs, scaled.weights, nbits, scaled=True)
    product.fit_codebooks(sample, seed=seed)
    rows = {"buckets: quantile cutoffs, mean weights": fidelity(quantile, test, queries),
            "buckets: Lloyd-Max": fidelity(lloyd, test, queries),
            "buckets: Lloyd-Max over directions + float16 scale": fidelity(scaled, test, queries),
            "product quantizer over directions + float16 scale (default)": fidelity(product, test, queries)}
    return {"n_tokens": len(tokens), "n_centroids": n_c, "nbits": nbits, "sample": len(sample), "test": len(test), "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.bench_codec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    p.add_argument("--colbert-model", help="ColBERT folder (default: bench_index's MiniLM + random projection)")
    p.add_argument("--workdir", default="runs/bench_colbert", help="bench_colbert's workdir (its embedding cache)")
    p.add_argument("--nbits", type=int, default=2, choices=(2, 4))
    p.add_argument("--sample", type=int, default=262_144)
    p.add_argument("--test", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    from mbert_retrieval.eval import bench_colbert
    from mbert_retrieval.eval.bench_index import load_models

    model = load_models(Namespace(kinds=["colbert-plaid2"], colbert_model=args.colbert_model, dense_model=None,
                                  document_length=180, seed=42))["colbert"]  # fmt: skip
    data_args = Namespace(workdir=args.workdir, max_docs=None, max_queries=None)
    out: dict[str, Any] = {"datasets": {}}
    for spec in args.datasets:
        name, _, D, _, Q, _ = bench_colbert.real_data(spec, data_args, model)
        res = out["datasets"][name] = run(D, Q, args.nbits, args.sample, args.test, args.seed)
        print(f"\n{name}: {res['n_tokens']:,} tokens, {res['n_centroids']:,} centroids, {args.nbits}-bit; "
              f"k-means and residual codes on {res['sample']:,} tokens, measured on {res['test']:,} others")
        print(f"{'codec':<60} | bytes/token | 1 - cos  | score RMSE")
        for label, r in res["rows"].items():
            print(f"{label:<60} | {r['bytes_per_token']:>11.0f} | {r['one_minus_cos']:.5f}  | {r['score_rmse']:.5f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
