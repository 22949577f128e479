"""Loading the model to train and turning texts into training representations (with gradients)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence, cast

import torch
from torch import nn

from .losses import Rep

if TYPE_CHECKING:
    from ..biencoder import BiEncoder
    from ..colbert import ColBERT

__all__ = ["load_model", "TrainEncoder", "parameter_groups"]

logger = logging.getLogger(__name__)


def load_model(path: str, kind: str, device: str | torch.device | None = None, max_query_length: int | None = None,
               max_doc_length: int | None = None, colbert_dim: int | None = None) -> BiEncoder | ColBERT:
    """A BiEncoder or ColBERT in float32 (mixed precision is autocast), ready to train."""
    overrides: dict = {"dtype": "float32"}
    model: BiEncoder | ColBERT
    if device is not None:
        overrides["device"] = str(device)
    if kind == "dense":
        from ..biencoder import BiEncoder

        model = BiEncoder.from_pretrained(path, **overrides)
    elif kind == "colbert":
        from ..colbert import ColBERT

        if max_query_length is not None:
            overrides["query_length"] = max_query_length
        if max_doc_length is not None:
            overrides["document_length"] = max_doc_length
        if colbert_dim is not None:
            overrides["dim"] = colbert_dim
        model = ColBERT.from_pretrained(path, **overrides)
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return model


class TrainEncoder:
    """`encode(texts, is_query) -> (vectors, mask)` with gradients, float32, for either model kind.

    Dense: (B, dim) vectors, mask None; texts truncated to max_query_length / max_doc_length (capped by the
    model's max_length). ColBERT: padded token matrices (B, L, dim) and their bool mask (lengths are the
    model's query_length / document_length, set at load time).
    """

    def __init__(self, model: BiEncoder | ColBERT, max_query_length: int | None = None, max_doc_length: int | None = None,
                 autocast: bool = False):
        self.model = model
        self.kind = getattr(model, "kind", "dense")
        self.max_query_length = max_query_length
        self.max_doc_length = max_doc_length
        self.autocast = autocast
        if self.kind == "dense":
            limit = cast("BiEncoder", model).encoder.config.max_length
            for name, value in (("max_query_length", max_query_length), ("max_doc_length", max_doc_length)):
                if value is not None and value > limit:
                    logger.warning("%s %d exceeds the model's max_length %d; texts are cut at %d",
                                   name, value, limit, limit)

    def __call__(self, texts: Sequence[str], is_query: bool) -> Rep:
        return self.encode(texts, is_query)

    def encode(self, texts: Sequence[str], is_query: bool) -> Rep:
        texts = list(texts)
        device = self.model.device
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if self.kind == "colbert":
                colbert = cast("ColBERT", self.model)
                vecs, mask = (colbert.forward_queries(texts) if is_query else colbert.forward_documents(texts))
                return vecs.float(), mask
            return self._dense(texts, is_query).float(), None

    def _dense(self, texts: list[str], is_query: bool) -> torch.Tensor:
        m = cast("BiEncoder", self.model)
        ids, prompt_len = m._tokenize(texts, is_query, self.max_query_length if is_query else self.max_doc_length)
        return m.embed_batch(m.encoder.forward_ids(ids), prompt_len)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay for biases and normalisation weights (deterministic order)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
