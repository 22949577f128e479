"""`mbret index | add | delete | compact`: building index folders and keeping them up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import typer

from ._checks import check_not_busy, check_output_folder, check_same_corpus, require_finished
from ._common import (RESUME_SAME, BadInput, cli_errors, err, model_options, note_fallback, out, parse_params, plural, print_json,
                      progress, status)
from ._corpus import CorpusOptions, TruncationCounter, count_truncated, print_read_summary, read_documents, read_summary
from ._options import BatchOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, QuietOpt, TokensOpt, open_retriever
from ._sharded import check_shard_options, index_sharded, rank_device

KINDS = ("dense", "colbert")
INDEX_TYPES = ("flat", "ivfpq", "hnsw", "plaid")


def _check_types(kind: str | None, index_type: str) -> str:
    from mbert_retrieval.index.manifest import INDEX_TYPES as ALLOWED

    if index_type not in INDEX_TYPES:
        raise BadInput(f"--index must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    kind = kind or ("colbert" if index_type == "plaid" else "dense")
    if kind not in KINDS:
        raise BadInput(f"--kind must be dense or colbert, got {kind!r}")
    if index_type not in ALLOWED[kind]:
        raise BadInput(f"--index {index_type} is not available for --kind {kind} "
                       f"(allowed: {', '.join(ALLOWED[kind])})")
    return kind


# ---------------------------------------------------------------------------------------------- index
def index_cmd(
    corpus: Path = typer.Argument(..., help="JSONL file, BEIR folder, text file, folder of text/markdown files "
                                  "or folder of source code."),
    index_dir: Path = typer.Argument(..., help="Index folder to create (or to resume)."),
    model: str | None = ModelOpt,
    kind: str | None = typer.Option(None, "--kind", help="dense | colbert (default: colbert for --index plaid, "
                                    "else dense)."),
    index_type: str = typer.Option("flat", "--index", help="flat | hnsw | ivfpq (dense), flat | plaid (colbert)."),
    corpus_format: str = CorpusOptions.format,
    text_column: str | None = CorpusOptions.text_column,
    id_column: str | None = CorpusOptions.id_column,
    title_column: str | None = CorpusOptions.title_column,
    txt_split: str = CorpusOptions.txt_split,
    max_file_bytes: int = CorpusOptions.max_file_bytes,
    quantization: str | None = typer.Option(None, "--quantization", help="Dense codes: int8 | binary."),
    param: List[str] | None = typer.Option(None, "--param", "-p", help="Index setting key=value, repeatable "
                                           "(hnsw_m, nlist, pq_m, nprobe, nbits, n_centroids, ...)."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Also build a BM25 index; searches fuse both by RRF."),
    window: int | None = typer.Option(None, "--window", help="Long documents: index rows (windows) of at most "
                                      "TOKENS tokens, cut at headings / code units / paragraphs where possible; a "
                                      "search returns each document once, with its best window. Default: the "
                                      "model's max length (documents that fit stay one row)."),
    overlap: int | None = typer.Option(None, "--overlap", help="Tokens shared by consecutive windows cut inside "
                                       "running text (default: 1/8 of the window, at most 64)."),
    no_windows: bool = typer.Option(False, "--no-windows", help="One row per document, truncated at the model's "
                                    "max length (the behaviour before windows)."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help="Documents per committed chunk (resume granularity)."),
    shards: int | None = typer.Option(None, "--shards", help="Split the encoding into N embedding shards, "
                                      "written by parallel workers (--ray, or the ranks under torchrun; resumable), "
                                      "then build one ordinary index from them."),
    ray: str | None = typer.Option(None, "--ray", help="Encode the shards on a Ray cluster: ADDRESS "
                                   "(ray://host:10001), auto (the running cluster) or local (start one here). "
                                   "Needs --shards."),
    workers: int | None = typer.Option(None, "--workers", help="Ray workers (model replicas; default: one "
                                       "per GPU, else one per CPU). Needs --ray."),
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder that holds no index."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Encode a corpus into an index folder. Re-running the same command after an interruption resumes it."""
    from mbert_retrieval.distributed.legacy import check_not_legacy_sharded
    from mbert_retrieval.retriever import Retriever, load_retrieval_model

    with cli_errors(RESUME_SAME):
        kind = _check_types(kind, index_type)
        if chunk_size < 1:
            raise BadInput(f"--chunk-size must be >= 1, got {chunk_size}")
        backend = check_shard_options(shards, ray, workers)
        params = parse_params(param)
        if quantization:
            params["quantization"] = quantization
        _check_index_params(kind, index_type, params)  # before reading the corpus and loading the model
        window_config = _window_config(window, overlap, no_windows)
        check_not_legacy_sharded(index_dir)
        check_output_folder(index_dir, force)
        check_not_busy(index_dir)
        with status(f"reading {corpus}", enabled=not quiet):
            docs, report = read_documents(corpus, corpus_format, text_column, id_column, title_column, txt_split,
                                          max_file_bytes)
            n_docs = len(docs)  # one streaming pass that checks every document: bad input is refused before anything is written
        check_same_corpus(index_dir, docs.ids())  # read only when the index is finished
        opts = model_options(batch_size, max_tokens, device, dtype)
        if backend == "torchrun" and not device:
            opts.update(rank_device())
        with status("loading model", enabled=not quiet):
            loaded = load_retrieval_model(model, kind, **opts)
        note_fallback(getattr(getattr(loaded, "resolved", None), "message", None))
        if shards is not None:  # the sharded build reads the corpus into a list
            read_info = read_summary(report, count_truncated(loaded, docs) if window_config is None else None)
            return index_sharded(corpus, index_dir, docs, loaded, kind, index_type, shards, backend, ray, workers,
                                  hybrid, {k: v for k, v in opts.items() if k != "device"}, json_out, quiet,
                                  read_info, chunk_size=chunk_size, window=window_config, **params)
        counter = TruncationCounter(loaded if window_config is None else None)  # counted as the corpus streams in
        with progress(f"indexing ({kind}/{index_type})", n_docs, enabled=not quiet) as advance:
            retriever = Retriever.build(index_dir, counter.wrap(docs), model=loaded, kind=kind, index_type=index_type,
                                        hybrid=hybrid, chunk_size=chunk_size, progress=advance, window=window_config,
                                        **params)
        read_info = read_summary(report, counter.result())  # complete now that the corpus has been read
        with retriever:
            rows = retriever.info()
            summary = {"index": str(index_dir), "documents": len(retriever), "corpus": str(corpus),
                       "windows": rows.get("n_windows", len(retriever)), "split_documents": rows.get("n_split_documents", 0),
                       "resumed_from": retriever.resumed_from, "kind": kind, "index_type": index_type,
                       "model_id": loaded.model_id, "fallback_model": bool(retriever.fallback_message),
                       "hybrid": hybrid, **read_info}
        if json_out:
            print_json(summary)
            return
        if summary["resumed_from"]:
            err.print(f"resumed: {plural(summary['resumed_from'], 'document')} already indexed")
        split = (f"; {plural(summary['split_documents'], 'long document')} split into windows, "
                 f"{plural(summary['windows'], 'row')} in all" if summary["split_documents"] else "")
        out.print(f"[green]indexed[/green] {plural(summary['documents'], 'document')} into {index_dir} "
                  f"({kind}/{index_type}, model {loaded.model_id}{split})")
        print_read_summary(read_info)


def _window_config(tokens: int | None, overlap: int | None, off: bool) -> Any:
    """The index's window setting from the flags: windows of the model's max length unless told otherwise
    (`--no-windows`); with `--shards` the workers split the documents the same way."""
    from mbert_retrieval.windows import WindowConfig

    if off:
        if tokens is not None or overlap is not None:
            raise BadInput("--no-windows cannot be combined with --window/--overlap")
        return None
    try:
        return WindowConfig(tokens=tokens, overlap=overlap)
    except ValueError as exc:
        raise BadInput(f"--window/--overlap: {exc}") from None


def _check_index_params(kind: str, index_type: str, params: dict[str, Any]) -> None:
    """Index settings are checked by name and type before the corpus is read, the model loaded or anything
    written (`make_config` does it for the Python API too)."""
    from mbert_retrieval.index.structures import SettingError, make_config

    rest = {k: v for k, v in params.items() if k != "quantization"}
    try:
        make_config(kind, index_type, params.get("quantization"), rest)
    except SettingError as exc:
        raise BadInput(f"-p {exc}") from None
    except (TypeError, ValueError) as exc:  # a value the config itself refuses (nbits=3, backend=x, ...)
        raise BadInput(f"{'--quantization' if 'quantization' in str(exc) else '-p'}: {exc}") from None


# ---------------------------------------------------------------------------------------------- add / delete
def add_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    corpus: Path = typer.Argument(..., help="Documents to add (any corpus format, see `mbret index`)."),
    update: bool = typer.Option(False, "--update", help="Replace documents whose id exists (default: skip them)."),
    corpus_format: str = CorpusOptions.format,
    text_column: str | None = CorpusOptions.text_column,
    id_column: str | None = CorpusOptions.id_column,
    title_column: str | None = CorpusOptions.title_column,
    txt_split: str = CorpusOptions.txt_split,
    max_file_bytes: int = CorpusOptions.max_file_bytes,
    model: str | None = ModelOpt,
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Add documents to an index (or replace them with --update)."""
    with cli_errors(RESUME_SAME):
        check_not_busy(index_dir)
        docs, report = read_documents(corpus, corpus_format, text_column, id_column, title_column, txt_split,
                                      max_file_bytes)
        n_docs = len(docs)  # one streaming pass that checks every document before the model loads or anything is written
        retriever = open_retriever(index_dir, model, model_options(batch_size, max_tokens, device, dtype), quiet=quiet)
        with retriever:
            counter = TruncationCounter(retriever.model, retriever.index)
            with progress("updating" if update else "adding", n_docs, enabled=not quiet) as advance:
                n = (retriever.update if update else retriever.add)(counter.wrap(docs), progress=advance)
            read_info = read_summary(report, counter.result())
            total = len(retriever)
        given = report.n_documents  # exact once the corpus has been read
        summary = {"index": str(index_dir), "given": given, "updated" if update else "added": n, "documents": total,
                   **read_info}
        if json_out:
            print_json(summary)
            return
        verb = "updated (re-encoded)" if update else "added"
        out.print(f"{verb} {n} of {plural(given, 'document')}; the index now holds {total}")
        if not update and n < given:
            err.print(f"{plural(given - n, 'document')} skipped: {'its id is' if given - n == 1 else 'their ids are'} "
                      "already in the index (`--update` replaces them)")
        print_read_summary(read_info)


def delete_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    ids: List[str] | None = typer.Argument(None, help="Document ids to delete."),
    ids_file: Path | None = typer.Option(None, "--ids-file", help="File with one document id per line."),
    json_out: bool = JsonOpt,
) -> None:
    """Delete documents by id (unknown ids are reported, not an error)."""
    from mbert_retrieval.data import DataError
    from mbert_retrieval.retriever import Retriever

    with cli_errors():
        todo = list(ids or [])
        if ids_file is not None:
            if not ids_file.is_file():
                raise DataError("file not found", ids_file)
            todo += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not todo:
            raise BadInput("give document ids to delete (arguments or --ids-file)")
        check_not_busy(index_dir)
        # no model: deleting needs none (the recorded model folder may be gone); BM25 is kept up to date
        with Retriever.open(index_dir, load_model=False) as retriever:
            present = {i for i, doc in zip(todo, retriever.get(todo)) if doc is not None}
            n = retriever.delete(todo)
            total = len(retriever)
        missing = [i for i in todo if i not in present]
        if json_out:
            print_json({"index": str(index_dir), "deleted": n, "not_found": missing, "documents": total})
        else:
            out.print(f"deleted {plural(n, 'document')}; the index now holds {total}")
            if missing:
                err.print(f"[yellow]not found:[/yellow] {', '.join(missing)}", markup=True)


# ---------------------------------------------------------------------------------------------- compact
def _counts(info: dict[str, Any]) -> dict[str, Any]:
    """What `mbret compact` reports of an index before and after: documents, deleted ones still stored,
    segments of the search structure (when the index has them) and bytes on disk."""
    structure = info.get("structure") or {}
    segments = info.get("n_segments", structure.get("segments") if isinstance(structure, dict) else None)
    return {"documents": info.get("n_documents"), "deleted": info.get("n_deleted"),
            "segments": segments if isinstance(segments, int) else None, "disk_bytes": info.get("disk_bytes")}


def compact_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    retrain: bool = typer.Option(False, "--retrain", help="Also train the shared quantizer / PLAID codec again on the "
                                 "current data (after a drift) and re-encode every row from the kept float vectors."),
    json_out: bool = JsonOpt,
) -> None:
    """Merge the index's segments into one and drop deleted documents for good (no model is loaded).

    --retrain: IVF-PQ, int8 and PLAID (built with -p keep_full_vectors=true) indexes learn their quantizer /
    centroids again from the vectors they hold now, then every row is re-encoded with it."""
    from mbert_retrieval.distributed.legacy import check_not_legacy_sharded
    from mbert_retrieval.index import Index

    with cli_errors():
        check_not_legacy_sharded(index_dir)
        require_finished(index_dir)
        check_not_busy(index_dir)
        with Index.open(index_dir, verify=False) as index:  # vectors only: no model, no torch for dense indexes
            before = _counts(index.info())
            index.compact(retrain=retrain, show_progress=not json_out)
            after = _counts(index.info())
        if json_out:
            print_json({"index": str(index_dir), "before": before, "after": after})
            return

        def line(c: dict[str, Any]) -> str:
            segments = "" if c["segments"] is None else f", {plural(c['segments'], 'segment')}"
            return (f"{plural(c['documents'] or 0, 'document')} ({c['deleted'] or 0} deleted still stored){segments}, "
                    f"{c['disk_bytes'] or 0:,} bytes")

        out.print(f"compacted {index_dir}")
        out.print(f"  before: {line(before)}")
        out.print(f"  after:  {line(after)}")
