"""HTTP API over a `Retriever` (FastAPI). `mbret serve INDEX` runs it with uvicorn on 127.0.0.1.

    GET    /health      {"status": "ok", "documents": n}
    GET    /info        index description (model, kind, type, counts, settings)
    POST   /search      {"query": "..." | "queries": [...], "k": 10, "filter": {...}, "hybrid": null,
                         "params": {"nprobe": 32, ...}}   (index search settings, as `mbret search -p`)
    POST   /documents   {"documents": [{"id", "text", "title"?, "metadata"?}], "update": false}
    DELETE /documents   {"ids": [...]}   (or ?ids=a&ids=b)

Errors come back as {"detail": message}: 400 for bad input the index refuses (malformed filter, model
mismatch), 403 for writes on a read-only server, 409 when the index's state forbids the request (another
process is writing to it: then with Retry-After), 413 for a request body over `ServerLimits.max_body_bytes`, 422 for a request outside the
API's bounds (the message names the field), 500 otherwise. Every size and number a request carries is
bounded (`ServerLimits` and the `Field` bounds below), so no request can make the server allocate or
compute without limit. Searches never write into the index folder (a hybrid search of an index without
BM25 builds it in memory), so a `read_only` server leaves the folder untouched. Requests are served one at
a time against the index (a lock), which keeps writes and searches consistent.
"""

import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .data import DataError
from .index import IndexMismatchError, IndexStateError, IndexStoreError
from .retriever import Retriever

logger = logging.getLogger(__name__)

__all__ = ["create_app", "ServerLimits", "SearchRequest", "SearchParams", "DocumentIn", "DocumentsRequest",
           "DeleteRequest", "DEFAULT_HOST"]

DEFAULT_HOST = "127.0.0.1"  # `mbret serve` binds here unless told otherwise: no authentication
MAX_K = 1000
MAX_QUERIES = 1024
MAX_DOCUMENTS = 10_000
MAX_CANDIDATES = 10_000  # hybrid: depth of each list before fusion
MAX_IDS = 10_000


@dataclass
class ServerLimits:
    """What one request may carry (the hard bounds of every search setting are on `SearchParams`).

    `max_body_bytes`: request body (413 above it, refused before it is read when Content-Length says so);
    `max_query_chars` / `max_query_tokens`: one query (422; tokens counted with the model's tokenizer,
    None: not counted); `max_queries`: queries per search; `max_documents`: documents per POST /documents;
    `retry_after_s`: the Retry-After of a 409 answered while another process writes to the index."""

    max_body_bytes: int = 1 << 20
    max_query_chars: int = 4096
    max_query_tokens: int | None = 512
    max_queries: int = 256
    max_documents: int = 1000
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_query_chars", "max_queries", "max_documents", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be an integer >= 1, got {value!r}")
        if self.max_query_tokens is not None and (isinstance(self.max_query_tokens, bool) or not isinstance(
                self.max_query_tokens, int) or self.max_query_tokens < 1):
            raise ValueError(f"ServerLimits.max_query_tokens must be an integer >= 1 or None, "
                             f"got {self.max_query_tokens!r}")


# ---------------------------------------------------------------------------------------------- validation
def _encodable(value: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"), which no index can store or encode: refuse them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid text: lone surrogate {value[exc.start:exc.end]!r} at position {exc.start}") from None
    return value


def _encodable_tree(value: Any) -> Any:
    """Every string (keys included) in a JSON value passes `_encodable` (iterative: no recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _encodable(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


Text = Annotated[str, AfterValidator(_encodable)]
JsonObject = Annotated[Dict[str, Any], AfterValidator(_encodable_tree)]
Id = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_encodable)]
Int = Annotated[int, Field(strict=True)]


class SearchParams(BaseModel):
    """Per-request index search settings (as `mbret search -p`); unknown names and values outside the
    bounds are refused (422). Settings the index type does not take are refused by the index (422)."""

    model_config = ConfigDict(extra="forbid")

    nprobe: Int | None = Field(default=None, ge=1, le=65_536)
    ef_search: Int | None = Field(default=None, ge=1, le=65_536)
    rerank: bool | None = None
    rerank_factor: Int | None = Field(default=None, ge=1, le=100)
    exact_filter_threshold: Int | None = Field(default=None, ge=0, le=10_000_000)
    ncandidates: Int | None = Field(default=None, ge=1, le=1_000_000)
    ndocs: Int | None = Field(default=None, ge=1, le=100_000)
    centroid_score_threshold: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)
    candidates: Int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)

    def given(self) -> Dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class SearchRequest(BaseModel):
    query: Text | None = None
    queries: List[Text] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES)
    k: Int = Field(default=10, ge=1, le=MAX_K)
    filter: JsonObject | None = None
    hybrid: bool | None = None
    params: SearchParams = Field(default_factory=SearchParams)

    @model_validator(mode="after")
    def _one_of(self):
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' or 'queries'")
        return self


class DocumentIn(BaseModel):
    id: Id
    text: Text
    title: Text | None = None
    metadata: JsonObject = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    documents: List[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    update: bool = False


class DeleteRequest(BaseModel):
    ids: List[Id] = Field(min_length=1, max_length=MAX_IDS)


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=f"{field}: {message}")


def _field_name(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query")] or [str(p) for p in loc]
    return ".".join(parts) or "request"


def _lock_busy(exc: Exception) -> bool:
    """Whether an `IndexStateError` says that another process holds the index's writer lock."""
    return isinstance(exc.__cause__, (BlockingIOError, TimeoutError)) or "another process is writing" in str(exc)


class _BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, at once when its Content-Length says
    so (nothing is read), else as soon as the bytes read pass the limit (chunked uploads)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await JSONResponse(status_code=400, content={"detail": "invalid Content-Length header"})(
                    scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await JSONResponse(status_code=413, content={"detail": self._too_large()})(scope, receive, send)
                return
        seen = 0

        async def capped() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self._too_large())
            return message

        await self.app(scope, capped, send)


# ---------------------------------------------------------------------------------------------- app
def create_app(retriever: Retriever, read_only: bool = False, limits: ServerLimits | None = None) -> FastAPI:
    """A FastAPI app serving `retriever` (the caller keeps ownership: close it after the server stops).
    `read_only`: refuse POST / DELETE /documents (searches never write anyway). `limits`: request bounds."""
    limits = limits or ServerLimits()
    lock = threading.RLock()
    app = FastAPI(title="mbert-retrieval", version=_version(),
                  description="Dense / ColBERT (optionally hybrid BM25) search over one index folder.")
    app.state.retriever = retriever
    app.state.limits = limits
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)
    tokenizer = getattr(getattr(retriever.model, "encoder", None), "tokenizer", None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # the offending input is not echoed back: it may be huge, or not encodable (a lone surrogate)
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid")), "type": e.get("type")}
                  for e in exc.errors()[:20]]
        detail = "; ".join(f"{_field_name(e['loc'])}: {e['msg']}" for e in errors[:5])
        return JSONResponse(status_code=422, content={"detail": detail or "invalid request",
                                                      "errors": jsonable_encoder(errors)})

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: Exception):
        return JSONResponse(status_code=422, content={"detail": "request JSON is nested too deeply"})

    @app.exception_handler(DataError)
    @app.exception_handler(IndexMismatchError)
    @app.exception_handler(ValueError)
    async def _bad_input(request: Request, exc: Exception):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(IndexStateError)
    async def _busy(request: Request, exc: Exception):
        if _lock_busy(exc):
            return JSONResponse(status_code=409, headers={"Retry-After": str(limits.retry_after_s)},
                                content={"detail": f"{exc}: try again in a moment"})
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(IndexStoreError)
    async def _index_error(request: Request, exc: Exception):
        logger.error("index error on %s: %s", request.url.path, exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    def _writable() -> None:
        if read_only:
            raise HTTPException(status_code=403, detail="this server is read-only")

    def _check_queries(queries: List[str], field: str) -> None:
        """Count and length (characters) of the queries: before anything is tokenized or encoded."""
        if len(queries) > limits.max_queries:
            raise _unprocessable("queries", f"at most {limits.max_queries} queries per request, got {len(queries)}")
        for i, q in enumerate(queries):
            where = field if field == "query" else f"queries.{i}"
            if not q.strip():
                raise _unprocessable(where, "empty query")
            if len(q) > limits.max_query_chars:
                raise _unprocessable(where, f"query too long: {len(q)} characters, the limit is "
                                            f"{limits.max_query_chars}")

    def _check_tokens(queries: List[str], field: str) -> None:
        """Length in the model's tokens (call holding the lock: the tokenizer is shared with the model)."""
        if tokenizer is None or limits.max_query_tokens is None:
            return
        for i, q in enumerate(queries):
            n = len(tokenizer(q, add_special_tokens=False)["input_ids"])
            if n > limits.max_query_tokens:
                where = field if field == "query" else f"queries.{i}"
                raise _unprocessable(where, f"query too long: {n} tokens, the limit is {limits.max_query_tokens}")

    @app.get("/health")
    def health() -> Dict[str, Any]:
        with lock:
            return {"status": "ok", "documents": len(retriever)}

    @app.get("/info")
    def info() -> Dict[str, Any]:
        with lock:
            data = retriever.info()
        data["read_only"] = read_only
        return _plain(data)

    @app.post("/search")
    def search(req: SearchRequest) -> Dict[str, Any]:
        queries = [req.query] if req.query is not None else list(req.queries or [])
        field = "query" if req.query is not None else "queries"
        _check_queries(queries, field)
        params = req.params.given()
        with lock:
            _check_tokens(queries, field)
            try:
                results: Any = retriever.search(queries, k=req.k, filter=req.filter, hybrid=req.hybrid, **params)
            except TypeError as exc:  # a setting this index type does not take
                if not params:
                    raise
                raise _unprocessable("params", str(exc)) from None
        rows = [[r.to_dict() for r in row] for row in results]
        return {"results": rows[0]} if req.query is not None else {"results": rows}

    @app.post("/documents")
    def documents(req: DocumentsRequest) -> Dict[str, Any]:
        _writable()
        if len(req.documents) > limits.max_documents:
            raise _unprocessable("documents", f"at most {limits.max_documents} documents per request, "
                                              f"got {len(req.documents)}")
        docs = [d.model_dump() for d in req.documents]
        with lock:
            n = retriever.update(docs) if req.update else retriever.add(docs)
            total = len(retriever)
        return {"updated" if req.update else "added": n, "given": len(docs), "documents": total}

    @app.delete("/documents")
    def delete_documents(body: DeleteRequest | None = Body(default=None),
                         ids: List[Id] | None = Query(default=None, max_length=MAX_IDS)) -> Dict[str, Any]:
        _writable()
        todo = (body.ids if body is not None else []) + list(ids or [])
        if not todo:
            raise HTTPException(status_code=400, detail="give document ids: {\"ids\": [...]} or ?ids=...")
        with lock:
            n = retriever.delete(todo)
            total = len(retriever)
        return {"deleted": n, "documents": total}

    return app


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mbert-retrieval")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
