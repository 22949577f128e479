"""`mbret train | mine | eval | bench`: thin front ends over `mbert_retrieval.train`, `mbert_retrieval.eval` and
the `mbert_retrieval.eval.bench_*` scripts."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, List

import typer

from ._common import (RESUME_SAME, BadInput, cli_errors, err, model_options, note_fallback, out, parse_params, plain_mapping,
                      print_json, quiet_transformers, status)
from ._options import BatchOpt, DeviceOpt, DtypeOpt, JsonOpt, QuietOpt, TokensOpt


KindOpt = typer.Option(None, "--kind", help="dense | colbert (default: detected from the model).")


# ---------------------------------------------------------------------------------------------- train
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help=".json / .toml / .yaml file with "
                                       "TrainConfig fields (flags below override it)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model to fine-tune (default: the default "
                                     "model for --kind; offline: packaged all-MiniLM-L6-v2)."),
    data: List[str] | None = typer.Option(None, "--data", "-d", help="BEIR folder or JSONL training file, "
                                          "repeatable."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Where checkpoints and the final "
                                           "model go."),
    kind: str | None = typer.Option(None, "--kind", help="dense | colbert."),
    epochs: int | None = typer.Option(None, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Queries per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    resume: bool | None = typer.Option(None, "--resume/--no-resume", help="Continue from the newest checkpoint."),
    overrides: List[str] | None = typer.Option(None, "--set", "-s", help="Any TrainConfig field as key=value, "
                                               "repeatable (e.g. --set n_hard_negatives=1 --set save_steps=100)."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Fine-tune a dense or ColBERT model (contrastive or distillation) — see mbert_retrieval.train.TrainConfig."""
    with cli_errors("re-run with --resume to continue from the last checkpoint"):
        quiet_transformers()
        from mbert_retrieval.train import load_config, train
        from mbert_retrieval.train.config import parse_overrides

        values: dict[str, Any] = parse_overrides(list(overrides or []))
        flags = {"model": model, "output_dir": None if output_dir is None else str(output_dir), "kind": kind,
                 "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "resume": resume}
        values.update({k: v for k, v in flags.items() if v is not None})
        if data:
            values["data"] = list(data)
        cfg = load_config(config, values)
        if not cfg.model:
            from mbert_retrieval.hub import resolve_model

            resolved = resolve_model(None, cfg.kind)
            note_fallback(resolved.message if resolved.fallback else None)
            cfg.model = resolved.path
        final = train(cfg, show_progress=not quiet)
        if json_out:
            print_json({"model": str(final), "output_dir": cfg.output_dir, "config": cfg.to_dict()})
        else:
            out.print(f"[green]trained[/green]: final model in {final}")


# ---------------------------------------------------------------------------------------------- mine
def mine_cmd(
    dataset: Path = typer.Argument(..., help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."),
    output: Path = typer.Argument(..., help="JSONL to write (query, positive, negatives[, scores]) for `mbret train`."),
    model: str | None = typer.Option(None, "--model", "-m", help="Retriever that ranks the candidates (default: "
                                     "the model of --index, else the default model for --kind)."),
    kind: str | None = KindOpt,
    index_dir: Path | None = typer.Option(None, "--index", help="Index folder of this corpus to rank with (its "
                                          "own search); default: exact search over a temporary flat index."),
    split: str = typer.Option("train", "--split"),
    num_negatives: int = typer.Option(8, "--num-negatives", "-n", help="Negatives per (query, positive)."),
    rank_range: tuple[int, int] = typer.Option((10, 100), "--range", help="Ranks [MIN, MAX) the negatives come "
                                               "from (0-based, positives skipped)."),
    sampling: str = typer.Option("top", "--sampling", help="top | random (seeded) within the range."),
    cross_encoder: str | None = typer.Option(None, "--cross-encoder", help="Drop candidates this cross-encoder "
                                             "scores above --ce-max-ratio x the positive (likely unlabelled "
                                             "positives)."),
    ce_max_ratio: float = typer.Option(0.95, "--ce-max-ratio"),
    teacher_scores: str = typer.Option("none", "--teacher-scores", help="none | retriever | cross_encoder: write "
                                       "scores for ColBERT distillation."),
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Mine hard negatives for a BEIR split with a retriever: skip the positives, keep a rank range,
    optionally filter with a cross-encoder. The output trains with `mbret train --data`."""
    with cli_errors():
        from mbert_retrieval.train.mining import mine_beir

        if kind is not None and kind not in ("dense", "colbert"):
            raise BadInput(f"--kind must be dense or colbert, got {kind!r}")
        if sampling not in ("top", "random"):
            raise BadInput(f"--sampling must be top or random, got {sampling!r}")
        if teacher_scores not in ("none", "retriever", "cross_encoder"):
            raise BadInput(f"--teacher-scores must be none, retriever or cross_encoder, got {teacher_scores!r}")
        if not 0 <= rank_range[0] < rank_range[1]:
            raise BadInput(f"--range needs 0 <= MIN < MAX, got {rank_range[0]} {rank_range[1]}")
        if num_negatives < 1:
            raise BadInput(f"--num-negatives must be >= 1, got {num_negatives}")
        if not dataset.is_dir():
            raise BadInput(f"{dataset}: not a BEIR folder")
        opts = model_options(batch_size, max_tokens, device, dtype)
        with status("loading model", enabled=not quiet):
            if index_dir is not None:
                from mbert_retrieval.retriever import Retriever

                from ._checks import require_finished

                require_finished(index_dir)
                with Retriever.open(index_dir, model=model, model_options=opts) as retriever:
                    loaded = retriever.model
            else:
                loaded = _load_model(model, kind, opts)
        note_fallback(getattr(getattr(loaded, "resolved", None), "message", None))
        path = mine_beir(loaded, dataset, output, split=split, show_progress=not quiet, index=index_dir,
                         num_negatives=num_negatives, range_min=rank_range[0], range_max=rank_range[1],
                         sampling=sampling, cross_encoder=cross_encoder, ce_max_ratio=ce_max_ratio,
                         teacher_scores=teacher_scores)
        n = sum(1 for _ in open(path, encoding="utf-8"))
        if json_out:
            print_json({"output": str(path), "examples": n, "dataset": str(dataset), "split": split,
                        "model_id": loaded.model_id, "index": None if index_dir is None else str(index_dir)})
        else:
            out.print(f"[green]mined[/green] {n} training examples into {path}")


# ---------------------------------------------------------------------------------------------- eval
def eval_cmd(
    datasets: List[str] = typer.Argument(..., help="BEIR folders, BEIR names (scifact, nfcorpus, ...), "
                                         "coir/<name> or owner/name hub datasets."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model to evaluate (default: the default "
                                     "model for --kind, or the model of --index)."),
    kind: str | None = KindOpt,
    index_dir: Path | None = typer.Option(None, "--index", help="Search this index folder instead of exact "
                                          "search (its corpus must be the dataset's)."),
    split: str = typer.Option("test", "--split"),
    k: int = typer.Option(100, "-k", "--top-k", help="Retrieval depth."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="results.json (MTEB shape), "
                                           "run.trec and per_query.json per dataset."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache corpus embeddings (resumable) "
                                          "and downloads here."),
    option: List[str] | None = typer.Option(None, "--option", help="EvalConfig field key=value, repeatable."),
    hybrid: bool | None = typer.Option(None, "--hybrid/--no-hybrid", help="With --index: fuse with BM25 or not "
                                       "(default: the index's own default; nothing is written to the index)."),
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Evaluate a model (exact search) or an index on retrieval datasets: nDCG@10, Recall@100, MAP, MRR."""
    with cli_errors(RESUME_SAME if cache_dir is not None else None):
        from mbert_retrieval.eval.evaluate import evaluate_model

        if k < 1:
            raise BadInput(f"-k must be >= 1, got {k}")
        if kind is not None and kind not in ("dense", "colbert"):
            raise BadInput(f"--kind must be dense or colbert, got {kind!r}")
        if hybrid is not None and index_dir is None:
            raise BadInput("--hybrid / --no-hybrid choose how an index is searched: use them with --index")
        opts = model_options(batch_size, max_tokens, device, dtype)
        extra = _eval_options(option)
        search_factory = None
        retriever = None
        if index_dir is not None:
            from mbert_retrieval.retriever import Retriever

            from ._checks import require_finished

            require_finished(index_dir)

            with status("loading index and model", enabled=not quiet):
                retriever = Retriever.open(index_dir, model=model, model_options=opts, hybrid=hybrid)
            loaded = retriever.model

            from mbert_retrieval.eval.evaluate import retriever_search_factory

            search_factory = retriever_search_factory(retriever)
        else:
            with status("loading model", enabled=not quiet):
                loaded = _load_model(model, kind, opts)
            note_fallback(getattr(getattr(loaded, "resolved", None), "message", None))
        try:
            report = evaluate_model(loaded, list(datasets), split=split, k=k, cache_dir=cache_dir,
                                    output_dir=output_dir, show_progress=not quiet, search_factory=search_factory,
                                    index_type="exact" if search_factory is None else "index", print_table=False,
                                    **extra)
        finally:
            if retriever is not None:
                retriever.close()
        if not json_out and not quiet:
            out.print(report.table())  # the results are the output: stdout (progress and notes go to stderr)
        if json_out:
            print_json(plain_mapping({
                "model": report.model_name, "revision": report.model_revision, "split": split, "k": k,
                "datasets": {n: {"num_queries": r.result.num_queries, "scores": r.result.scores,
                                 "files": {key: str(p) for key, p in r.files.items()}}
                             for n, r in report.datasets.items()},
                "average": report.average,
                "files": {key: str(p) for key, p in report.files.items()}}))
        elif quiet:
            for name, r in report.datasets.items():
                out.print(f"{name}: nDCG@10={r.result.scores.get('ndcg_at_10', float('nan')):.4f}")


# EvalConfig fields that `mbret eval` sets from its own options (not through --option)
_EVAL_OWN = {"split": "--split", "k": "-k", "index_type": "--index", "cache_dir": "--cache-dir",
             "output_dir": "--output-dir", "show_progress": "--quiet", "print_table": "--json / --quiet"}


def _eval_options(items: List[str] | None) -> dict[str, Any]:
    """`--option key=value` -> EvalConfig fields, checked by name (close-match hint) and type: exit 2."""
    from mbert_retrieval.eval.evaluate import OPTION_FIELDS, check_options
    from mbert_retrieval.index.structures import SettingError

    extra = parse_params(items, "--option")
    for name in extra:
        if name in _EVAL_OWN:
            raise BadInput(f"--option {name}: set by mbret eval's own option {_EVAL_OWN[name]}")
    try:
        return check_options(extra, tuple(f for f in OPTION_FIELDS if f not in _EVAL_OWN))
    except SettingError as exc:
        raise BadInput(f"--option {exc}") from None


def _load_model(model: str | None, kind: str | None, opts: dict[str, Any]):
    """The default model for `kind` (dense when unset), or `model` with its kind detected unless given."""
    from mbert_retrieval.retrieval_model import absolute_if_dir as _absolute_if_dir, load_retrieval_model

    if model is None or kind is not None:
        return load_retrieval_model(model, kind or "dense", **opts)
    from mbert_retrieval.hub import load_model

    return load_model(_absolute_if_dir(model), kind=None, **opts)


# ---------------------------------------------------------------------------------------------- bench
def _bench_scripts() -> dict[str, str]:
    import mbert_retrieval.eval as pkg

    return {m.name[len("bench_"):]: f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
            if m.name.startswith("bench_")}


def bench_cmd(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Benchmark to run (see --list), e.g. `encode`."),
    list_: bool = typer.Option(False, "--list", help="List the available benchmarks."),
) -> None:
    """Run a benchmark script from mbert_retrieval.eval (bench_<name>.py); extra arguments go to the script."""
    with cli_errors():
        scripts = _bench_scripts()
        if list_ or name is None:
            for short, module in sorted(scripts.items()):
                doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()
                out.print(f"[bold]{short}[/bold]  {doc[0] if doc else ''}  (python -m {module})")
            if not scripts:
                err.print("no benchmark scripts found in mbert_retrieval.eval")
            return
        key = name[len("bench_"):] if name.startswith("bench_") else name
        if key not in scripts:
            raise BadInput(f"unknown benchmark {name!r}; available: {', '.join(sorted(scripts)) or 'none'}")
        script = importlib.import_module(scripts[key])
        if not hasattr(script, "main"):
            raise BadInput(f"{scripts[key]} has no main(argv) function")
        try:
            rc = script.main(list(ctx.args))
        except SystemExit as exc:  # argparse errors / --help inside the script
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
            raise typer.Exit(code) from None
        if isinstance(rc, int) and rc:
            raise typer.Exit(rc)
