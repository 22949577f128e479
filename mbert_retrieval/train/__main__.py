"""Command line: `python -m mbert_retrieval.train fit [--config FILE] [key=value ...]` and
`python -m mbert_retrieval.train mine --model M --dataset BEIR_DIR --output mined.jsonl [...]`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mbert_retrieval.train", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train a model (TrainConfig fields from --config and/or key=value)")
    fit.add_argument("--config", default=None, help=".json / .toml / .yaml file with TrainConfig fields")
    fit.add_argument("overrides", nargs="*", help="key=value, e.g. model=path data=a.jsonl,b lr=1e-5")
    fit.add_argument("--quiet", action="store_true")
    mine = sub.add_parser("mine", help="mine hard negatives for a BEIR split into JSONL")
    mine.add_argument("--model", required=True)
    mine.add_argument("--kind", choices=("dense", "colbert"), default="dense")
    mine.add_argument("--dataset", required=True)
    mine.add_argument("--split", default="train")
    mine.add_argument("--output", required=True)
    mine.add_argument("--num-negatives", type=int, default=8)
    mine.add_argument("--range", type=int, nargs=2, default=(10, 100), metavar=("MIN", "MAX"))
    mine.add_argument("--sampling", choices=("top", "random"), default="top")
    mine.add_argument("--cross-encoder", default=None)
    mine.add_argument("--ce-max-ratio", type=float, default=0.95)
    mine.add_argument("--teacher-scores", choices=("none", "retriever", "cross_encoder"), default="none")
    mine.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.command == "fit":
        from .config import load_config
        from .trainer import train

        print(train(load_config(args.config, args.overrides), show_progress=not args.quiet))
        return 0
    from .mining import mine_beir
    from .models import load_model

    model = load_model(args.model, args.kind)
    out = mine_beir(model, args.dataset, args.output, split=args.split, show_progress=not args.quiet,
                    num_negatives=args.num_negatives, range_min=args.range[0], range_max=args.range[1],
                    sampling=args.sampling, cross_encoder=args.cross_encoder, ce_max_ratio=args.ce_max_ratio,
                    teacher_scores=args.teacher_scores)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
