"""Gradient caching gives the gradients of one big batch (bi-encoder and ColBERT), dropout included."""

import pytest
import torch

from mbert_retrieval.train.data import TrainExample, epoch_batches, link_positives
from mbert_retrieval.train.gradcache import concat_reps, grad_cache_step
from mbert_retrieval.train.losses import RetrievalLoss
from mbert_retrieval.train.models import TrainEncoder, load_model


def _batch(pairs):
    ex = link_positives([TrainExample(q, p, [pairs[(i + 2) % 8][1]]) for i, (q, p) in enumerate(pairs[:6])])
    return epoch_batches(ex, 6, 1, seed=0, epoch=0)[0]


def _grads(model, encode, batch, loss_fn, mbs, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = grad_cache_step(encode, batch.queries, batch.documents, lambda q, d: loss_fn(q, d, batch), mbs)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _no_cache_chunked(model, encode, batch, loss_fn, mbs, seed=0):
    """Reference for train mode: the same mini-batch forward passes, all kept in one graph."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    reps = []
    for texts, is_query in ((batch.queries, True), (batch.documents, False)):
        reps.append(concat_reps([encode(texts[s:s + mbs], is_query) for s in range(0, len(texts), mbs)]))
    loss = loss_fn(reps[0], reps[1], batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_gradcache_equals_big_batch(tiny_modernbert, pairs, kind):
    model = load_model(tiny_modernbert, kind, "cpu", max_doc_length=24, colbert_dim=16).eval()
    encode = TrainEncoder(model, max_query_length=16, max_doc_length=24)
    loss_fn = RetrievalLoss(kind, temperature=0.05 if kind == "dense" else 1.0)
    batch = _batch(pairs)
    loss_big, big = _grads(model, encode, batch, loss_fn, None)
    loss_gc, cached = _grads(model, encode, batch, loss_fn, 4)
    assert torch.allclose(loss_big, loss_gc, atol=1e-5)
    _assert_same(big, cached)


def test_gradcache_restores_dropout_rng(tiny_dropout_model, pairs):
    model = load_model(tiny_dropout_model, "dense", "cpu").train()
    encode = TrainEncoder(model, max_query_length=16, max_doc_length=24)
    loss_fn = RetrievalLoss("dense")
    batch = _batch(pairs)
    loss_ref, ref = _no_cache_chunked(model, encode, batch, loss_fn, 4)
    loss_gc, cached = _grads(model, encode, batch, loss_fn, 4)
    assert torch.allclose(loss_ref, loss_gc, atol=1e-6)
    _assert_same(ref, cached)
    loss_other, _ = _grads(model, encode, batch, loss_fn, 4, seed=1)
    assert not torch.allclose(loss_other, loss_gc)  # dropout is really on
