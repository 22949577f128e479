"""`DocumentEncoder`: texts -> the vectors an `Index` stores. The model and the way long documents are cut
into windows live here, on the retrieval side; the index only ever receives vectors (as PyLate's and
fast-plaid's indexes do), so `mbret delete`, `info` and `compact` never load a transformer.

An `Index` asks its encoder, one slice of documents at a time (after skipping the ones it already holds, so
a resumed build encodes nothing twice), for each document's vectors and window spans: `encode_documents`.
The `Retriever` owns one; `build_index` is the one-call form for scripts and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .windows import WindowConfig, model_window_limit, split_windows, structure_hint

__all__ = ["DocumentEncoder", "build_index", "LONG_SLICE"]

LONG_SLICE = 1024  # texts (windows) in one model call beyond which the call shows a progress bar of its own


class DocumentEncoder:
    """A bi-encoder or ColBERT model, as the index layer uses it: documents (with their windows) and queries
    to vectors. `model` needs `kind`, `model_id`, `dim`, `encode_documents` and `encode_queries`."""

    def __init__(self, model: Any) -> None:
        if isinstance(model, DocumentEncoder):
            model = model.model
        self.model: Any = model

    # the model's identity, recorded in (and checked against) the index manifest
    kind = property(lambda self: getattr(self.model, "kind", None))
    model_id = property(lambda self: getattr(self.model, "model_id", None))
    dim = property(lambda self: getattr(self.model, "dim", None))
    revision = property(lambda self: getattr(self.model, "revision", None))
    fingerprint = property(lambda self: getattr(self.model, "fingerprint", None))

    def window_limit(self) -> tuple[Any, int]:
        """(tokenizer, tokens per window): raises ValueError when the model cannot say (no tokenizer)."""
        return model_window_limit(self.model)

    def split(self, rows: Sequence[tuple], window: WindowConfig) -> list[list[tuple[int, int]] | None]:
        """Window spans of each document's text (None for a document that fits the model in one window).
        The title is prefixed to every window, so its tokens come off each window's budget."""
        tokenizer, limit = self.window_limit()
        limit = min(window.tokens or limit, limit)
        out: list[list[tuple[int, int]] | None] = []
        for _, text, title, metadata in rows:
            n_title = len(tokenizer(f"{title} ", add_special_tokens=False)["input_ids"]) if title else 0
            budget = limit - min(n_title, limit // 4)
            config = WindowConfig(tokens=None, overlap=window.overlap, structure=window.structure)
            spans = split_windows([text], tokenizer, config, budget, [structure_hint(metadata)])[0]
            out.append(spans if len(spans) > 1 else None)
        return out

    def encode_documents(self, rows: Sequence[tuple], given: Sequence[list[tuple[int, int]] | None], window: WindowConfig | None,
                         show_progress: bool = False) -> tuple[list[Any], list[list[tuple[int, int]] | None]]:  # fmt: skip
        """Vectors of `rows` (one model call) and their window spans (`given` by the caller, else cut by
        `window`): per document a dense (dim,) array or a ColBERT token matrix, or for a document split into
        n windows an (n, dim) array / n token matrices. `show_progress`: a slice of more than `LONG_SLICE`
        texts (a few very long documents: thousands of windows, minutes) gets the model's own bar."""
        spans = list(given)
        if window is not None and (todo := [i for i, g in enumerate(given) if g is None]):
            for i, found in zip(todo, self.split([rows[i] for i in todo], window)):
                spans[i] = found
        texts, owners = [], []
        for n, ((_, text, title, _), doc_spans) in enumerate(zip(rows, spans)):
            parts = [text] if doc_spans is None else [text[s:e] for s, e in doc_spans]
            texts += [f"{title} {part}" if title else part for part in parts]
            owners += [n] * len(parts)
        out = self.model.encode_documents(texts, show_progress=show_progress and len(texts) > LONG_SLICE)
        if self.kind == "dense":
            out = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)
        if all(s is None for s in spans):
            return list(out), spans
        bounds = np.searchsorted(np.asarray(owners), np.arange(len(rows) + 1))
        vectors = [out[a] if doc_spans is None else out[a:b] for a, b, doc_spans in zip(bounds[:-1], bounds[1:], spans)]
        return vectors, spans

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> Any:
        """Query vectors: a (n, dim) array (dense) or n token matrices (ColBERT)."""
        return self.model.encode_queries(list(texts), show_progress=show_progress)


def build_index(path: str | Path, docs: Iterable[Mapping[str, Any]], kind: str, index_type: str, model: Any, *,
                show_progress: bool = False, **params: Any) -> Any:  # fmt: skip
    """Create (or resume an interrupted build of) an index in `path`, encode and add `docs` with `model`
    and finalize it: `Index.build` with the encoding done here. Returns the open `Index`."""
    from .index import Index

    return Index.build(path, docs, kind, index_type, model, encoder=DocumentEncoder(model), show_progress=show_progress, **params)
