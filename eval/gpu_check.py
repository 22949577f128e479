"""One-run GPU check: encoding throughput and MFU, dense search and PLAID search, CUDA next to CPU.

    bash eval/gpu_check.sh                                  # on a CUDA machine: installs, then runs this
    python -m mbert_retrieval.eval.gpu_check --out runs/gpu_check
    python -m mbert_retrieval.eval.gpu_check --smoke        # tiny sizes on the CPU, seconds (CI runs it)

Sections (each one reports its own error instead of stopping the run):
- encode: a ModernBERT-base-shaped model (ModernBertConfig base sizes, random weights: no download, and
  weights do not change speed) in bf16, padded batches vs varlen (flash-attn when installed; else rows packed
  behind an SDPA block mask), on short (~256 tokens, normal around 256) and long (~4096, normal around 4096)
  mixed lengths: tokens/s and MFU, next to the ModernBERT paper's RTX 4090 figures for base (147k tok/s short
  variable, 134k tok/s long variable).
- dense: the project's `DenseIndex` (flat, exact) with the faiss CPU backend vs faiss-gpu (when faiss has GPU
  support) and torch matmul top-k (on CUDA when present): queries/s, and overlap@10 with the CPU results.
- plaid: the project's PLAID index on synthetic ColBERT-like tokens, searched with device="cpu", "cuda" and
  "cuda" with the per-token arrays streamed from host memory (as for an index larger than the GPU's memory):
  queries/s (batched) and overlap@10 with the CPU results. fast-plaid on CUDA needs its own torch (see
  eval/bench_colbert_fastplaid.py): reported as not available here.

Writes `gpu_check.json` and `gpu_check.md` (date, device, versions, tables) under `--out`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import platform
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from mbert_retrieval.eval._atomic import atomic_write_text
from mbert_retrieval.eval.bench_encode import _cpu_name, flops_per_token

# ModernBERT paper (Warner et al. 2024, table 3): base model on one RTX 4090, tokens/s
PAPER_RTX4090_BASE = {"short": 147_000, "long": 134_000}
# dense bf16 tensor-core peaks (TFLOPS) for MFU; `--peak-tflops` overrides
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
               "RTX 4090": 165.2, "RTX 3090": 71.0, "T4": 65.0}


@dataclass(frozen=True)
class Sizes:
    """Model and workload sizes: full ones for a GPU, tiny ones for the CPU smoke run."""

    hidden: int = 768
    intermediate: int = 1152
    layers: int = 22
    heads: int = 12
    local_window: int = 128
    short_mean: int = 256
    long_mean: int = 4096
    n_short: int = 4096
    n_long: int = 256
    max_tokens: int = 65536
    dense_docs: int = 500_000
    dense_dim: int = 768
    dense_queries: int = 1024
    plaid_docs: int = 10_000
    plaid_queries: int = 512
    colbert_dim: int = 128
    doc_tokens: tuple[int, int] = (32, 256)


SMOKE = Sizes(hidden=32, intermediate=64, layers=2, heads=2, local_window=16, short_mean=32, long_mean=96,
              n_short=24, n_long=4, max_tokens=2048, dense_docs=2000, dense_dim=32, dense_queries=16,
              plaid_docs=100, plaid_queries=8, colbert_dim=16, doc_tokens=(8, 32))


def _section(fn: Callable[[], Any]) -> Any:
    """Run one section; an exception becomes {"error": ...} so the other sections still report."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a check script reports every failure and goes on
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def environment(device: torch.device) -> dict:
    faiss_gpu = False
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": name,
            "device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "flash_attn": importlib.util.find_spec("flash_attn") is not None, "faiss_gpu": faiss_gpu,
            "cpu": _cpu_name(), "cpu_threads": torch.get_num_threads(), "python": platform.python_version()}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in device_name.lower()), None)


# ------------------------------------------------------------------------------------------- encoding
def _lengths(n: int, mean: int, cap: int, seed: int) -> list[int]:
    """Normally distributed lengths (sd mean/4), within [8, cap]: the paper's "variable" inputs."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, mean / 4, n), 8, cap).astype(int).tolist()


def _modernbert(sizes: Sizes, attn: str, dtype: torch.dtype, device: torch.device):
    from transformers import ModernBertConfig, ModernBertModel

    config = ModernBertConfig(vocab_size=50368, hidden_size=sizes.hidden, intermediate_size=sizes.intermediate,
                              num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
                              local_attention=sizes.local_window, global_attn_every_n_layers=3,
                              max_position_embeddings=8192, pad_token_id=50283)
    torch.manual_seed(0)
    model = ModernBertModel._from_config(config, attn_implementation=attn, dtype=dtype)
    return model.to(device).eval()


def encode_section(sizes: Sizes, device: torch.device, peak: float | None, repeats: int) -> dict:
    """Padded vs varlen/packed tokens/s (and MFU) on short and long mixed lengths, one bf16 model."""
    from mbert_retrieval.encoder import Encoder, EncoderConfig, pick_attn_implementation

    dtype = torch.bfloat16 if device.type == "cuda" or sizes == SMOKE else torch.float32
    attn = pick_attn_implementation(device, None, dtype)
    model = _modernbert(sizes, attn, dtype, device)
    tokenizer = SimpleNamespace(pad_token_id=model.config.pad_token_id)  # ids are generated, never tokenized
    rows, check = [], {}
    for workload, mean, n in (("short", sizes.short_mean, sizes.n_short), ("long", sizes.long_mean, sizes.n_long)):
        lengths = _lengths(n, mean, 2 * mean, seed=1)
        rng = np.random.default_rng(2)
        ids = [rng.integers(5, 50000, size=k).tolist() for k in lengths]
        pooled = {}
        for packing in (False, True):
            config = EncoderConfig(max_length=8192, max_tokens_per_batch=sizes.max_tokens, packing=packing,
                                   device=str(device))
            enc = Encoder(model, tokenizer, config, model_id="random ModernBERT-base")
            mode = "padded" if not packing else ("varlen (flash-attn)" if attn == "flash_attention_2"
                                                 else f"packed ({attn} block mask)")
            enc.map(ids[: max(2, len(ids) // 16)], lambda b: [None] * len(b))  # warm-up
            best = float("inf")
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                out = enc.map(ids, lambda b: [h.mean(0) for h in b.split()])
                _sync(device)
                best = min(best, time.perf_counter() - start)
            pooled[packing] = torch.stack(out).float()
            tps = sum(lengths) / best
            mfu = tps * flops_per_token(model, float(np.mean(lengths))) / (peak * 1e12) if peak else None
            rows.append({"workload": workload, "mean_length": round(float(np.mean(lengths)), 1), "texts": n,
                         "tokens": int(sum(lengths)), "mode": mode, "seconds": best, "tokens_per_s": tps, "mfu": mfu,
                         "paper_rtx4090_tokens_per_s": PAPER_RTX4090_BASE[workload]})
        cos = torch.nn.functional.cosine_similarity(pooled[False], pooled[True], dim=1)
        check[workload] = float(cos.min())
    return {"attn_implementation": attn, "dtype": str(dtype).replace("torch.", ""), "peak_tflops": peak,
            "min_cosine_padded_vs_varlen": check, "rows": rows}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------- search
def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / max(1, len(set(x))) for x, y in zip(a.tolist(), b.tolist())]))


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up (GPU copy of the index, kernels)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def dense_section(sizes: Sizes, device: torch.device, gpu_faiss: bool, repeats: int, k: int = 10) -> dict:
    """The project's flat DenseIndex with each backend on the same vectors and queries."""
    from mbert_retrieval.index.dense import DenseConfig, DenseIndex
    from mbert_retrieval.index.vectors import VectorStore

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((sizes.dense_docs, sizes.dense_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(sizes.dense_docs, sizes.dense_queries)] + 0.1 * rng.standard_normal(
        (sizes.dense_queries, sizes.dense_dim), dtype=np.float32)
    iids = np.arange(sizes.dense_docs, dtype=np.int64)
    backends = ["faiss"] + (["faiss-gpu"] if gpu_faiss else []) + ["torch"]
    rows: list[dict[str, Any]] = []
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(tmp, "dense", sizes.dense_dim)
        store.register(store.write_chunk(0, iids, vectors))
        for backend in backends:
            index = DenseIndex(sizes.dense_dim, DenseConfig(backend=backend), store)
            index.add(iids, vectors)
            seconds, (_, ids) = _timed(partial(index.search, queries, k), repeats)
            reference = ids if reference is None else reference
            where = "cuda" if backend == "faiss-gpu" or (backend == "torch" and torch.cuda.is_available()) else "cpu"
            rows.append({"backend": backend, "device": where, "queries_per_s": len(queries) / seconds,
                         "overlap_at_10_vs_cpu": _overlap(ids, reference)})
    base = rows[0]["queries_per_s"]
    for r in rows:
        r["speedup_vs_cpu"] = r["queries_per_s"] / base
    return {"n_docs": sizes.dense_docs, "dim": sizes.dense_dim, "n_queries": sizes.dense_queries,
            "faiss_gpu": gpu_faiss, "rows": rows}


def _colbert_tokens(n_docs: int, dim: int, tokens: tuple[int, int], seed: int) -> list[np.ndarray]:
    """ColBERT-like documents: tokens around a few topic centres each (like the index tests' corpus)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n_docs // 50), dim), dtype=np.float32)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(*tokens))
        t = centres[rng.choice(len(centres), 2)][rng.integers(0, 2, n)] + 0.4 * rng.standard_normal((n, dim), dtype=np.float32)
        docs.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return docs


def plaid_section(sizes: Sizes, device: torch.device, repeats: int, k: int = 10) -> dict:
    """The project's PLAID index, searched on the CPU and on `device` (batched queries)."""
    from dataclasses import replace

    from mbert_retrieval.index.plaid import PlaidConfig, PlaidIndex
    from mbert_retrieval.index.vectors import VectorStore

    docs = _colbert_tokens(sizes.plaid_docs, sizes.colbert_dim, sizes.doc_tokens, seed=3)
    rng = np.random.default_rng(4)
    queries = []
    for d in rng.choice(len(docs), sizes.plaid_queries):
        q = docs[d][rng.integers(0, len(docs[d]), 32)] + 0.2 * rng.standard_normal((32, sizes.colbert_dim), dtype=np.float32)
        queries.append((q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    vectors = np.concatenate(docs)
    iids = np.arange(len(docs), dtype=np.int64)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(tmp, "colbert", sizes.colbert_dim)
        store.register(store.write_chunk(0, iids, vectors, offsets))
        index = PlaidIndex(sizes.colbert_dim, PlaidConfig(device="cpu"), store)
        start = time.perf_counter()
        index.train(store.sample(index.train_sample_size(len(vectors))), len(vectors))
        index.add(iids, vectors, offsets)
        build = time.perf_counter() - start
        for where in ["cpu"] + (["cuda", "cuda (streamed)"] if device.type == "cuda" else []):
            index.config = replace(index.config, device=where.split()[0])
            index._tensors = None  # the search tensors are made on the configured device on first search
            if where.endswith("(streamed)"):  # per-token arrays in host memory, as for an index too big for the GPU
                index._search_tensors(resident=False)
            seconds, (_, ids) = _timed(lambda: index.search(queries, k), repeats)
            reference = ids if reference is None else reference
            rows.append({"system": "ours (PLAID, 2-bit)", "device": where, "queries_per_s": len(queries) / seconds,
                         "overlap_at_10_vs_cpu": _overlap(ids, reference)})
    # TODO(fast-plaid): fast-plaid pins its own torch build; run eval/bench_colbert_fastplaid.py in its venv.
    rows.append({"system": "fast-plaid", "device": "cuda", "queries_per_s": None,
                 "note": "not available: needs its own venv (eval/bench_colbert_fastplaid.py)"})
    return {"n_docs": len(docs), "n_tokens": int(len(vectors)), "dim": sizes.colbert_dim,
            "n_queries": len(queries), "build_s": build, "rows": rows}


# ------------------------------------------------------------------------------------------- report
def _fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check — {env['device']} ({env['device_type']}), {env['date']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, flash-attn {env['flash_attn']}, faiss-gpu {env['faiss_gpu']}, "
             f"CPU {env['cpu']} ({env['cpu_threads']} threads){' — SMOKE sizes' if report['smoke'] else ''}", "",
             f"Command: `{report['command']}`", ""]
    enc = report["encode"]
    lines += ["## Encoding (ModernBERT-base shape, random weights)", ""]
    if "error" in enc:
        lines += [f"error: {enc['error']}", ""]
    else:
        lines += [f"attention {enc['attn_implementation']}, {enc['dtype']}, peak {enc['peak_tflops']} TFLOPS; "
                  f"min cosine padded vs varlen {enc['min_cosine_padded_vs_varlen']}", "",
                  "| workload | mean length | mode | tokens/s | MFU | paper, RTX 4090 |", "|---|---:|---|---:|---:|---:|"]
        for r in enc["rows"]:
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            lines.append(f"| {r['workload']} | {r['mean_length']:.0f} | {r['mode']} | {_fmt(r['tokens_per_s'])} | {mfu} "
                         f"| {_fmt(r['paper_rtx4090_tokens_per_s'])} |")
        lines.append("")
    dense = report["dense"]
    lines += ["## Dense search (flat, exact)", ""]
    if "error" in dense:
        lines += [f"error: {dense['error']}", ""]
    else:
        lines += [f"{dense['n_docs']:,} vectors x {dense['dim']}, {dense['n_queries']} queries, k=10", "",
                  "| backend | device | queries/s | vs CPU | overlap@10 vs CPU |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['backend']} | {r['device']} | {_fmt(r['queries_per_s'])} | {r['speedup_vs_cpu']:.1f}x "
                  f"| {r['overlap_at_10_vs_cpu']:.3f} |" for r in dense["rows"]]
        lines.append("")
    plaid = report["plaid"]
    lines += ["## PLAID search (synthetic ColBERT tokens)", ""]
    if "error" in plaid:
        lines += [f"error: {plaid['error']}", ""]
    else:
        lines += [f"{plaid['n_docs']:,} documents, {plaid['n_tokens']:,} tokens x {plaid['dim']}, "
                  f"{plaid['n_queries']} queries x 32 tokens, build {plaid['build_s']:.1f} s", "",
                  "| system | device | queries/s | overlap@10 vs CPU |", "|---|---|---:|---:|"]
        for r in plaid["rows"]:
            overlap = f"{r['overlap_at_10_vs_cpu']:.3f}" if "overlap_at_10_vs_cpu" in r else r.get("note", "-")
            lines.append(f"| {r['system']} | {r['device']} | {_fmt(r['queries_per_s'])} | {overlap} |")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    sizes = SMOKE if args.smoke else Sizes()
    if args.n_short or args.n_long:
        sizes = replace_sizes(sizes, args)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    env = environment(device)
    peak = peak_tflops(env["device"], args.peak_tflops) if device.type == "cuda" else None
    report = {"smoke": bool(args.smoke), "command": args.command, "environment": env,
              "sizes": asdict(sizes)}
    report["encode"] = _section(lambda: encode_section(sizes, device, peak, args.repeats))
    report["dense"] = _section(lambda: dense_section(sizes, device, env["faiss_gpu"], args.repeats))
    report["plaid"] = _section(lambda: plaid_section(sizes, device, args.repeats))
    out = Path(args.out)
    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "gpu_check.md", markdown(report) + "\n")
    return report


def replace_sizes(sizes: Sizes, args: argparse.Namespace) -> Sizes:
    from dataclasses import replace

    return replace(sizes, **{k: v for k, v in (("n_short", args.n_short), ("n_long", args.n_long)) if v})


def main(argv: list[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, seconds): checks that every section runs")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is there")
    p.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-short", type=int, help="short texts to encode (default 4096)")
    p.add_argument("--n-long", type=int, help="long texts to encode (default 256)")
    p.add_argument("--peak-tflops", type=float, help="device bf16 dense peak for MFU (default: from the device name)")
    args = p.parse_args(argv)
    args.command = "python -m mbert_retrieval.eval.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:])
    report = run(args)
    print(markdown(report))


if __name__ == "__main__":
    main()
