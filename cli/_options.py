"""Options and helpers shared by the `mbret` commands (model, batching, device, output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import status

ModelOpt = typer.Option(None, "--model", "-m", help="Hub id or local folder of the model. index: default "
                        "ModernBERT model for --kind (offline: packaged all-MiniLM-L6-v2); other commands: the "
                        "model recorded in the index.")
BatchOpt = typer.Option(None, "--batch-size", help="Maximum texts per encoder batch.")
TokensOpt = typer.Option(None, "--max-tokens", help="Token budget per encoder batch (padding included).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
DtypeOpt = typer.Option(None, "--dtype", help="Encoder precision: auto (default: bf16 on GPU and on CPUs with native "
                        "bf16, float32 elsewhere) | float32 | bfloat16 | float16.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def open_retriever(index_dir: Path, model: str | None, opts: dict[str, Any], hybrid: bool | None = None,
                   quiet: bool = False):
    """`Retriever.open` with the model it records (or `model`), behind a spinner; `hybrid`: this session only."""
    from mbert_retrieval.retriever import Retriever

    with status("loading index and model", enabled=not quiet):
        return Retriever.open(index_dir, model=model, hybrid=hybrid, model_options=opts)
