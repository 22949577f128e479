"""`mbret search | info | serve`: querying and describing index folders (building them: `write_cmds`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, List

import typer

from ._checks import check_queries, require_finished, resume_command
from ._common import (BadInput, cli_errors, err, fail, model_options, note_fallback, out, parse_filters, parse_params,
                      plain_mapping, plural, print_json, progress)
from ._options import BatchOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, TokensOpt, open_retriever
from ._sharded import describe_encoding, sharded_build_started

_QUERY_BATCH = 256  # queries searched between two progress updates

def check_search_settings(retriever: Any, params: dict[str, Any]) -> None:
    """Per-query `-p` settings by name and type for this index (exit 2 before any search)."""
    from mbert_retrieval.index.structures import SettingError, check_search_params

    manifest = retriever.index.manifest
    try:
        check_search_params(manifest.kind, manifest.index_type, params)
    except SettingError as exc:
        raise BadInput(f"-p {exc}") from None


# ---------------------------------------------------------------------------------------------- search
def _result_rows(results) -> list[dict[str, Any]]:
    return [{"rank": i, **r.to_dict()} for i, r in enumerate(results, start=1)]


def _print_results(query: str, results, query_id: str | None = None) -> None:
    from rich.table import Table

    title = f"[bold]{query_id + ': ' if query_id else ''}{query}[/bold]"
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for col in ("#", "score"):
        table.add_column(col, justify="right", overflow="fold")
    for col in ("id", "title / text"):
        table.add_column(col, justify="left", overflow="fold")
    for i, r in enumerate(results, start=1):
        snippet = (r.title + " - " if r.title else "") + " ".join(r.text.split())
        table.add_row(str(i), f"{r.score:.4f}", r.id, snippet[:120] + ("..." if len(snippet) > 120 else ""))
    if not results:
        table.add_row("-", "-", "-", "no results")
    out.print(table)


def search_cmd(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    query: str | None = typer.Argument(None, help="Query text (or use --queries)."),
    queries_file: Path | None = typer.Option(None, "--queries", help="Queries file: .jsonl (_id/text), "
                                             ".tsv (id<TAB>text) or .txt (one per line)."),
    k: int = typer.Option(10, "-k", "--top-k", help="Results per query."),
    filters: List[str] | None = typer.Option(None, "--filter", "-f", help="Metadata filter, repeatable (ANDed): "
                                             "field=value, field!=value, year>=2020, lang='[\"en\",\"de\"]' or a "
                                             "JSON object like '{\"year\": {\"$lt\": 2000}}'."),
    hybrid: bool | None = typer.Option(None, "--hybrid/--no-hybrid", help="Fuse with BM25 (default: as indexed)."),
    param: List[str] | None = typer.Option(None, "--param", "-p", help="Search setting key=value "
                                           "(nprobe, ef_search, ndocs, rerank, ...)."),
    model: str | None = ModelOpt,
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
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
        queries = read_queries_file(queries_file) if queries_file is not None else {"": str(query)}
        if not queries:
            raise BadInput(f"{queries_file}: no queries")
        check_queries(queries, str(queries_file))
        require_finished(index_dir)
        retriever = open_retriever(index_dir, model, model_options(batch_size, max_tokens, device, dtype), quiet=json_out)
        with retriever:
            check_search_settings(retriever, params)
            ids, texts = list(queries), list(queries.values())
            results = []
            with progress("searching", len(texts), enabled=len(texts) > _QUERY_BATCH) as advance:
                for start in range(0, len(texts), _QUERY_BATCH):  # a file of queries: a bar on stderr
                    results += retriever.search(texts[start:start + _QUERY_BATCH], k=k, filter=flt, hybrid=hybrid,
                                                **params)
                    advance(len(texts[start:start + _QUERY_BATCH]))
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
    """Describe an index: model, kind, type, sizes, settings (a sharded build still encoding: its progress)."""
    from mbert_retrieval.distributed.legacy import check_not_legacy_sharded
    from mbert_retrieval.index import Index
    from mbert_retrieval.sidecar import RETRIEVER_FILE, read_sidecar

    with cli_errors():
        check_not_legacy_sharded(index_dir)
        if sharded_build_started(index_dir):
            info = describe_encoding(index_dir)
        else:
            with Index.open(index_dir, verify=verify) as index:  # no model needed to describe it
                info = plain_mapping(index.info())
            if verify:  # Index.open raised on any mismatch
                info["verified"] = ("sha256 of every structure and chunk file, every document row's checksum, "
                                    "the BM25 table and SQLite's integrity check")
            if info.get("state") != "ready":
                info["resume_hint"] = (f"this build was interrupted: re-run `{resume_command(Path(index_dir))}` "
                                       "(with the same corpus) to finish it")
        sidecar = read_sidecar(Path(index_dir))
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
        for key in ("kind", "index_type", "quantization", "model_id", "model_path", "dim", "n_shards", "n_shards_done", "n_documents",
                    "n_documents_done", "n_windows", "n_split_documents", "n_deleted", "n_vectors", "state", "hybrid",
                    "disk_bytes", "created_at", "updated_at"):
            if key in info:
                table.add_row(key, str(info[key]))
        settings = {k: v for k, v in (info.get("params") or {}).items() if k != "state"}
        table.add_row("params", ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
        out.print(table)
        if info.get("verified"):
            out.print(f"[green]verified:[/green] {info['verified']}: all ok")
        if info.get("resume_hint"):
            err.print(f"[yellow]note:[/yellow] {info['resume_hint']}")
        if info["fallback_model"]:
            note_fallback(f"this index was built with the offline fallback model {info['model_id']} "
                          f"(the default model could not be loaded; see {RETRIEVER_FILE})")


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
    hybrid: bool | None = typer.Option(None, "--hybrid/--no-hybrid", help="Default search mode."),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse POST/DELETE /documents."),
    model: str | None = ModelOpt,
    batch_size: int | None = BatchOpt,
    max_tokens: int | None = TokensOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
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
        require_finished(index_dir)
        retriever = open_retriever(index_dir, model, model_options(batch_size, max_tokens, device, dtype), hybrid)
        note_fallback(retriever.fallback_message)
        app = create_app(retriever, read_only=read_only)
        err.print(f"serving {index_dir} ({plural(len(retriever), 'document')}) on http://{host}:{port}  (docs: /docs)")
        try:
            uvicorn.run(app, host=host, port=port, log_level=log_level)
        finally:
            retriever.close()
