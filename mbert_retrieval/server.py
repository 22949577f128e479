"""HTTP API over a `Retriever` (FastAPI). `mbret serve INDEX` runs it with uvicorn on 127.0.0.1.

    GET    /health      {"status": "ok", "documents": n}
    GET    /info        index description (model, kind, type, counts, settings)
    POST   /search      {"query": "..." | "queries": [...], "k": 10, "filter": {...}, "hybrid": null,
                         "params": {"nprobe": 32, ...}}   (index search settings, as `mbret search -p`)
    POST   /documents   {"documents": [{"id", "text", "title"?, "metadata"?}], "update": false}
    DELETE /documents   {"ids": [...]}   (or ?ids=a&ids=b)

Errors come back as {"detail": message}: 400 for bad input (malformed document, bad filter, model
mismatch), 403 for writes on a read-only server, 500 otherwise. Requests are served one at a time
against the index (a lock), which keeps writes and searches consistent.
"""

import logging
import threading
from typing import Any, Dict, List, Optional

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from .data import DataError
from .index import IndexMismatchError, IndexStoreError
from .retriever import Retriever

logger = logging.getLogger(__name__)

__all__ = ["create_app", "SearchRequest", "DocumentIn", "DocumentsRequest", "DeleteRequest"]

MAX_K = 1000
MAX_QUERIES = 1024


class SearchRequest(BaseModel):
    query: Optional[str] = None
    queries: Optional[List[str]] = Field(default=None, max_length=MAX_QUERIES)
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: Optional[Dict[str, Any]] = None
    hybrid: Optional[bool] = None
    params: Dict[str, Any] = Field(default_factory=dict)  # nprobe, ef_search, ndocs, rerank, ...

    @model_validator(mode="after")
    def _one_of(self):
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' or 'queries'")
        return self


class DocumentIn(BaseModel):
    id: str = Field(min_length=1)
    text: str
    title: Optional[str] = None
    metadata: Dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    documents: List[DocumentIn] = Field(min_length=1)
    update: bool = False


class DeleteRequest(BaseModel):
    ids: List[str] = Field(min_length=1)


def create_app(retriever: Retriever, read_only: bool = False) -> FastAPI:
    """A FastAPI app serving `retriever` (the caller keeps ownership: close it after the server stops)."""
    lock = threading.RLock()
    app = FastAPI(title="mbert-retrieval", version=_version(),
                  description="Dense / ColBERT (optionally hybrid BM25) search over one index folder.")
    app.state.retriever = retriever

    @app.exception_handler(DataError)
    @app.exception_handler(IndexMismatchError)
    @app.exception_handler(ValueError)
    async def _bad_input(request: Request, exc: Exception):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(IndexStoreError)
    async def _index_error(request: Request, exc: Exception):
        logger.error("index error on %s: %s", request.url.path, exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    def _writable() -> None:
        if read_only:
            raise HTTPException(status_code=403, detail="this server is read-only")

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
        queries = [req.query] if req.query is not None else req.queries
        with lock:
            try:
                results = retriever.search(queries, k=req.k, filter=req.filter, hybrid=req.hybrid, **req.params)
            except TypeError as exc:
                if not req.params:
                    raise
                raise HTTPException(status_code=400, detail=f"params: {exc}") from None
        rows = [[r.to_dict() for r in row] for row in results]
        return {"results": rows[0]} if req.query is not None else {"results": rows}

    @app.post("/documents")
    def documents(req: DocumentsRequest) -> Dict[str, Any]:
        _writable()
        docs = [d.model_dump() for d in req.documents]
        with lock:
            n = retriever.update(docs) if req.update else retriever.add(docs)
            total = len(retriever)
        return {"updated" if req.update else "added": n, "given": len(docs), "documents": total}

    @app.delete("/documents")
    def delete_documents(body: Optional[DeleteRequest] = Body(default=None),
                         ids: Optional[List[str]] = Query(default=None)) -> Dict[str, Any]:
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
