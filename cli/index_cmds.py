"""`mbret index | search | info | add | delete | serve`: building, querying and maintaining index folders."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, List, Optional

import typer

from ._common import (BadInput, cli_errors, err, fail, model_options, note_fallback, out, parse_filters, parse_params,
                      plain_mapping, print_json, progress, status)
from ._sharded import check_shard_options, describe_sharded, index_sharded, rank_device, sharded_build_started

KINDS = ("dense", "colbert")
INDEX_TYPES = ("flat", "ivfpq", "hnsw", "plaid")
FORMATS = ("auto", "beir", "jsonl", "text", "code")
_QUERY_BATCH = 256  # queries searched between two progress updates

ModelOpt = typer.Option(None, "--model", "-m", help="Hub id or local folder of the model. index: default "
                        "ModernBERT model for --kind (offline: packaged all-MiniLM-L6-v2); other commands: the "
                        "model recorded in the index.")
BatchOpt = typer.Option(None, "--batch-size", help="Maximum texts per encoder batch.")
TokensOpt = typer.Option(None, "--max-tokens", help="Token budget per encoder batch (padding included).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


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


def _open(index_dir: Path, model: str | None, opts: dict[str, Any], hybrid: bool | None = None, quiet: bool = False):
    from mbert_retrieval.retriever import Retriever

    with status("loading index and model", enabled=not quiet):
        return Retriever.open(index_dir, model=model, hybrid=hybrid, model_options=opts)


# ---------------------------------------------------------------------------------------------- index
def index_cmd(
    corpus: Path = typer.Argument(..., help="JSONL file, BEIR folder, text file, folder of text/markdown files "
                                  "or folder of source code."),
    index_dir: Path = typer.Argument(..., help="Index folder to create (or to resume)."),
    model: Optional[str] = ModelOpt,
    kind: Optional[str] = typer.Option(None, "--kind", help="dense | colbert (default: colbert for --index plaid, "
                                       "else dense)."),
    index_type: str = typer.Option("flat", "--index", help="flat | hnsw | ivfpq (dense), flat | plaid (colbert)."),
    corpus_format: str = typer.Option("auto", "--format", help="auto | beir | jsonl | text | code."),
    quantization: Optional[str] = typer.Option(None, "--quantization", help="Dense codes: int8 | binary."),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="Index setting key=value, repeatable "
                                              "(hnsw_m, nlist, pq_m, nprobe, nbits, n_centroids, ...)."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Also build a BM25 index; searches fuse both by RRF."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help="Documents per committed chunk (resume granularity)."),
    shards: Optional[int] = typer.Option(None, "--shards", help="Split the corpus into N shards: N embedding "
                                         "shards, one index per shard, searched in parallel and merged "
                                         "(read-only). Under torchrun the ranks share the encoding."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Encode the shards on a Ray cluster: ADDRESS "
                                      "(ray://host:10001), auto (the running cluster) or local (start one here). "
                                      "Needs --shards."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers (model replicas; default: one "
                                          "per GPU, else one per CPU). Needs --ray."),
    batch_size: Optional[int] = BatchOpt,
    max_tokens: Optional[int] = TokensOpt,
    device: Optional[str] = DeviceOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Encode a corpus into an index folder. Re-running the same command after an interruption resumes it."""
    from mbert_retrieval.retriever import Retriever, load_retrieval_model, normalize_documents
    from mbert_retrieval.retriever_sharded import is_sharded

    with cli_errors():
        kind = _check_types(kind, index_type)
        if corpus_format not in FORMATS:
            raise BadInput(f"--format must be one of {', '.join(FORMATS)}, got {corpus_format!r}")
        if chunk_size < 1:
            raise BadInput(f"--chunk-size must be >= 1, got {chunk_size}")
        backend = check_shard_options(shards, ray, workers)
        params = parse_params(param)
        if quantization:
            params["quantization"] = quantization
        _check_index_params(kind, index_type, params)  # before reading the corpus and loading the model
        if shards is None and is_sharded(index_dir):
            raise BadInput(f"{index_dir} holds a sharded index: re-run with the same --shards N to resume or "
                           "check it, or build into another folder")
        with status(f"reading {corpus}", enabled=not quiet):
            docs = normalize_documents(corpus, corpus_format)
        if not docs:
            raise BadInput(f"{corpus}: no documents found")
        opts = model_options(batch_size, max_tokens, device)
        if backend == "torchrun" and not device:
            opts.update(rank_device())
        with status("loading model", enabled=not quiet):
            loaded = load_retrieval_model(model, kind, **opts)
        note_fallback(getattr(getattr(loaded, "resolved", None), "message", None))
        if shards is not None:
            return index_sharded(corpus, index_dir, docs, loaded, kind, index_type, shards, backend, ray, workers,
                                  hybrid, {k: v for k, v in opts.items() if k != "device"}, json_out, quiet,
                                  chunk_size=chunk_size, **params)
        with progress(f"indexing ({kind}/{index_type})", len(docs), enabled=not quiet) as advance:
            retriever = Retriever.build(index_dir, docs, model=loaded, kind=kind, index_type=index_type,
                                        hybrid=hybrid, chunk_size=chunk_size, progress=advance, **params)
        with retriever:
            summary = {"index": str(index_dir), "documents": len(retriever), "corpus": str(corpus),
                       "resumed_from": retriever.resumed_from, "kind": kind, "index_type": index_type,
                       "model_id": loaded.model_id, "fallback_model": bool(retriever.fallback_message),
                       "hybrid": hybrid}
        if json_out:
            print_json(summary)
        else:
            if summary["resumed_from"]:
                err.print(f"resumed: {summary['resumed_from']} documents were already indexed")
            out.print(f"[green]indexed[/green] {summary['documents']} documents into {index_dir} "
                      f"({kind}/{index_type}, model {loaded.model_id})")


def _check_index_params(kind: str, index_type: str, params: dict[str, Any]) -> None:
    """Index settings are checked before the corpus is read and hours of encoding begin."""
    from mbert_retrieval.index.structures import make_config

    rest = {k: v for k, v in params.items() if k != "quantization"}
    try:
        make_config(kind, index_type, params.get("quantization"), rest)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"--param / --quantization: {exc}") from None


# ---------------------------------------------------------------------------------------------- search
def _result_rows(results) -> list[dict[str, Any]]:
    return [{"rank": i, **r.to_dict()} for i, r in enumerate(results, start=1)]


def _print_results(query: str, results, query_id: str | None = None) -> None:
    from rich.table import Table

    title = f"[bold]{query_id + ': ' if query_id else ''}{query}[/bold]"
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for col, just in (("#", "right"), ("score", "right"), ("id", "left"), ("title / text", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for i, r in enumerate(results, start=1):
        snippet = (r.title + " - " if r.title else "") + " ".join(r.text.split())
        table.add_row(str(i), f"{r.score:.4f}", r.id, snippet[:120] + ("..." if len(snippet) > 120 else ""))
    if not results:
        table.add_row("-", "-", "-", "no results")
    out.print(table)


def search_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    query: Optional[str] = typer.Argument(None, help="Query text (or use --queries)."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="Queries file: .jsonl (_id/text), "
                                                ".tsv (id<TAB>text) or .txt (one per line)."),
    k: int = typer.Option(10, "-k", "--top-k", help="Results per query."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", "-f", help="Metadata filter, repeatable (ANDed): "
                                                "field=value, field!=value, year>=2020, lang='[\"en\",\"de\"]' or a "
                                                "JSON object like '{\"year\": {\"$lt\": 2000}}'."),
    hybrid: Optional[bool] = typer.Option(None, "--hybrid/--no-hybrid", help="Fuse with BM25 (default: as indexed)."),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="Search setting key=value "
                                              "(nprobe, ef_search, ndocs, rerank, ...)."),
    model: Optional[str] = ModelOpt,
    batch_size: Optional[int] = BatchOpt,
    max_tokens: Optional[int] = TokensOpt,
    device: Optional[str] = DeviceOpt,
    json_out: bool = typer.Option(False, "--json", help="JSON on stdout: one object for a query; JSON Lines "
                                  "(one object per query) with --queries."),
) -> None:
    """Search an index with one query or a file of queries."""
    from mbert_retrieval.data import read_queries_file

    with cli_errors():
        if (query is None) == (queries_file is None):
            raise BadInput("give either a QUERY argument or --queries FILE")
        if k < 1:
            raise BadInput(f"-k must be >= 1, got {k}")
        flt = parse_filters(filters)
        params = parse_params(param)
        queries = read_queries_file(queries_file) if queries_file is not None else {"": query}
        if not queries:
            raise BadInput(f"{queries_file}: no queries")
        retriever = _open(index_dir, model, model_options(batch_size, max_tokens, device), hybrid, quiet=json_out)
        with retriever:
            ids, texts = list(queries), list(queries.values())
            try:
                results = []
                with progress("searching", len(texts), enabled=len(texts) > _QUERY_BATCH) as advance:
                    for start in range(0, len(texts), _QUERY_BATCH):  # a file of queries: a bar on stderr
                        results += retriever.search(texts[start:start + _QUERY_BATCH], k=k, filter=flt, **params)
                        advance(len(texts[start:start + _QUERY_BATCH]))
            except TypeError as exc:
                if not params:
                    raise
                raise BadInput(f"--param {' '.join(param or [])}: {exc}") from None
        if json_out:
            if queries_file is None:
                print_json({"query": query, "k": k, "filter": flt, "results": _result_rows(results[0])})
            else:
                for qid, text, res in zip(ids, texts, results):
                    print_json({"query_id": qid, "query": text, "results": _result_rows(res)}, indent=None)
            return
        for qid, text, res in zip(ids, texts, results):
            _print_results(text, res, qid or None)


# ---------------------------------------------------------------------------------------------- info
def info_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    json_out: bool = JsonOpt,
    verify: bool = typer.Option(False, "--verify", help="Also check every file's sha256 checksum."),
) -> None:
    """Describe an index: model, kind, type, sizes, settings (sharded: totals and one row per shard)."""
    from mbert_retrieval.index import Index
    from mbert_retrieval.retriever import RETRIEVER_FILE, _read_sidecar
    from mbert_retrieval.retriever_sharded import is_sharded

    with cli_errors():
        if is_sharded(index_dir) or sharded_build_started(index_dir):
            info = describe_sharded(index_dir, verify)
        else:
            with Index.open(index_dir, verify=verify) as index:  # no model needed to describe it
                info = plain_mapping(index.info())
        sidecar = _read_sidecar(Path(index_dir))
        info["model_path"] = sidecar.get("model_path")
        info["hybrid"] = bool(sidecar.get("hybrid", False))
        info["fallback_model"] = bool(sidecar.get("fallback", False))
        if json_out:
            print_json(info)
            return
        from rich.table import Table

        table = Table(title=f"index {index_dir}", title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key in ("kind", "index_type", "quantization", "model_id", "model_path", "dim", "n_shards", "n_documents",
                    "n_documents_done", "n_deleted", "n_vectors", "state", "hybrid", "disk_bytes", "created_at",
                    "updated_at"):
            if key in info:
                table.add_row(key, str(info[key]))
        settings = {k: v for k, v in (info.get("params") or {}).items() if k != "state"}
        table.add_row("params", ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
        out.print(table)
        if info.get("shards"):
            shard_table = Table(title="shards", title_justify="left")
            cols = {"name": "shard", "n_documents": "docs", "n_deleted": "deleted", "n_vectors": "vectors",
                    "state": "state", "disk_bytes": "bytes", "finished": "finished"}
            cols = {k: v for k, v in cols.items() if k in info["shards"][0]}
            for key, header in cols.items():
                shard_table.add_column(header, justify="left" if key in ("name", "state") else "right", no_wrap=True)
            for row in info["shards"]:
                shard_table.add_row(*(str(row.get(c)) for c in cols))
            out.print(shard_table)
        if info.get("resume_hint"):
            err.print(f"[yellow]note:[/yellow] {info['resume_hint']}")
        if info["fallback_model"]:
            note_fallback(f"this index was built with the offline fallback model {info['model_id']} "
                          f"(the default model could not be loaded; see {RETRIEVER_FILE})")


# ---------------------------------------------------------------------------------------------- add / delete
def add_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    corpus: Path = typer.Argument(..., help="Documents to add (any corpus format, see `mbret index`)."),
    update: bool = typer.Option(False, "--update", help="Replace documents whose id exists (default: skip them)."),
    corpus_format: str = typer.Option("auto", "--format", help="auto | beir | jsonl | text | code."),
    model: Optional[str] = ModelOpt,
    batch_size: Optional[int] = BatchOpt,
    max_tokens: Optional[int] = TokensOpt,
    device: Optional[str] = DeviceOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Add documents to an index (or replace them with --update)."""
    from mbert_retrieval.retriever import normalize_documents

    with cli_errors():
        if corpus_format not in FORMATS:
            raise BadInput(f"--format must be one of {', '.join(FORMATS)}, got {corpus_format!r}")
        docs = normalize_documents(corpus, corpus_format)
        retriever = _open(index_dir, model, model_options(batch_size, max_tokens, device), quiet=quiet)
        with retriever, progress("updating" if update else "adding", len(docs), enabled=not quiet) as advance:
            n = (retriever.update if update else retriever.add)(docs, progress=advance)
            total = len(retriever)
        summary = {"index": str(index_dir), "given": len(docs), "updated" if update else "added": n, "documents": total}
        if json_out:
            print_json(summary)
        else:
            verb = "updated (re-encoded)" if update else "added"
            out.print(f"{verb} {n} of {len(docs)} documents; the index now holds {total}")


def delete_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    ids: Optional[List[str]] = typer.Argument(None, help="Document ids to delete."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="File with one document id per line."),
    json_out: bool = JsonOpt,
) -> None:
    """Delete documents by id (unknown ids are reported, not an error)."""
    from mbert_retrieval.data import DataError

    with cli_errors():
        todo = list(ids or [])
        if ids_file is not None:
            if not ids_file.is_file():
                raise DataError("file not found", ids_file)
            todo += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not todo:
            raise BadInput("give document ids to delete (arguments or --ids-file)")
        retriever = _open(index_dir, None, {}, quiet=True)
        with retriever:
            present = {i for i, doc in zip(todo, retriever.get(todo)) if doc is not None}
            n = retriever.delete(todo)
            total = len(retriever)
        missing = [i for i in todo if i not in present]
        if json_out:
            print_json({"index": str(index_dir), "deleted": n, "not_found": missing, "documents": total})
        else:
            out.print(f"deleted {n} documents; the index now holds {total}")
            if missing:
                err.print(f"[yellow]not found:[/yellow] {', '.join(missing)}", markup=True)


# ---------------------------------------------------------------------------------------------- serve
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    hybrid: Optional[bool] = typer.Option(None, "--hybrid/--no-hybrid", help="Default search mode."),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse POST/DELETE /documents."),
    model: Optional[str] = ModelOpt,
    batch_size: Optional[int] = BatchOpt,
    max_tokens: Optional[int] = TokensOpt,
    device: Optional[str] = DeviceOpt,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve an index over HTTP (FastAPI): /health, /search, /documents, /info."""
    with cli_errors():
        try:
            import uvicorn

            from mbert_retrieval.server import create_app
        except ImportError as exc:
            fail(f"`mbret serve` needs the server extra: pip install 'mbert-retrieval[server]' ({exc})", 1)
        if not 0 < port < 65536:
            raise BadInput(f"--port must be in 1..65535, got {port}")
        if not _is_loopback(host):
            err.print(f"[bold yellow]warning:[/bold yellow] binding {host}: the API (including document writes"
                      f"{'' if not read_only else ', disabled by --read-only'}) is reachable from other machines "
                      "and has no authentication; put it behind a proxy with auth or use --read-only")
        retriever = _open(index_dir, model, model_options(batch_size, max_tokens, device), hybrid)
        note_fallback(retriever.fallback_message)
        if getattr(retriever.index, "read_only", False) and not read_only:
            read_only = True
            err.print("[yellow]note:[/yellow] a sharded index is read-only: serving it with --read-only")
        app = create_app(retriever, read_only=read_only)
        err.print(f"serving {index_dir} ({len(retriever)} documents) on http://{host}:{port}  (docs: /docs)")
        try:
            uvicorn.run(app, host=host, port=port, log_level=log_level)
        finally:
            retriever.close()
