import math

import torch
import torch.nn.functional as F

from mbert_retrieval.train.data import TrainBatch
from mbert_retrieval.train.losses import (RetrievalLoss, colbert_scores, false_negative_mask, info_nce,
                                          kl_distillation, matryoshka_info_nce)


def test_info_nce_hand_made():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    c = 1 / math.sqrt(2)
    # row 0 cosines: [1, 0, c]; row 1: [0, 1, c]; temperature 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(2 * c)))
    assert math.isclose(info_nce(q, d, labels, 0.5).item(), expected, rel_tol=1e-5)
    exclude = torch.tensor([[False, False, True], [False, False, False]])
    ex0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert math.isclose(info_nce(q, d, labels, 0.5, exclude).item(), (ex0 + expected) / 2, rel_tol=1e-5)


def test_matryoshka_sums_truncated_renormalised():
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 2, 4])
    total = matryoshka_info_nce(q, d, labels, [8, 4, 2], 0.1)
    parts = [info_nce(F.normalize(q[:, :k], dim=-1), F.normalize(d[:, :k], dim=-1), labels, 0.1) for k in (8, 4, 2)]
    assert torch.allclose(total, sum(parts))


def test_colbert_scores_and_kl():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one query, 2 tokens
    d = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.6, 0.8], [0.0, 1.0]]])
    dm = torch.tensor([[True, False], [True, True]])
    assert torch.allclose(colbert_scores(q, d, None, dm), torch.tensor([[1.0, 0.6 + 1.0]]))
    s = torch.tensor([[2.0, 1.0, 0.0]])
    assert kl_distillation(s, s).item() < 1e-7
    t = torch.tensor([[0.0, 1.0, 2.0]])
    p, lq = F.softmax(t, -1), F.log_softmax(s, -1)
    assert math.isclose(kl_distillation(s, t).item(), float((p * (p.log() - lq)).sum()), rel_tol=1e-5)
    # min-max normalised student is invariant to shifting / scaling the student scores
    assert math.isclose(kl_distillation(3 * s + 7, t, normalize_scores=True).item(),
                        kl_distillation(s, t, normalize_scores=True).item(), rel_tol=1e-5)


def test_false_negative_mask_and_retrieval_loss():
    keys = torch.tensor([10, 11, 12, 10])  # doc 3 is a copy of doc 0 (query 0's positive)
    pos = torch.tensor([[10, 10], [12, 13]])
    labels = torch.tensor([0, 2])
    m = false_negative_mask(keys, pos, labels)
    assert m.tolist() == [[False, False, False, True], [False, False, False, False]]
    q, d = torch.randn(2, 4), torch.randn(4, 4)
    batch = TrainBatch(["a", "b"], ["p", "n", "p2", "n2"], 2, keys, pos, torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    loss = RetrievalLoss("dense", temperature=0.1)((q, None), (d, None), batch)
    assert torch.allclose(loss, info_nce(q, d, labels, 0.1, m))
    kd = RetrievalLoss("dense", loss="distill", temperature=0.1)((q, None), (d, None), batch)
    qn, dn = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    student = torch.stack([qn[0] @ dn[:2].T, qn[1] @ dn[2:].T])
    assert torch.allclose(kd, kl_distillation(student, batch.teacher_scores, 0.1))


def test_info_nce_equals_sentence_transformers_mnrl_with_hard_negatives():
    """Our InfoNCE (in-batch + hard negatives, cosine, temperature) is sentence-transformers'
    MultipleNegativesRankingLoss (scale = 1 / temperature) on the same embeddings: value and gradients."""
    import pytest

    losses = pytest.importorskip("sentence_transformers.losses")
    torch.manual_seed(0)
    q, pos, neg = (torch.randn(4, 16, requires_grad=True) for _ in range(3))
    mnrl = losses.MultipleNegativesRankingLoss(None, scale=20.0)
    theirs = mnrl.compute_loss_from_embeddings([q, pos, neg], torch.arange(4))
    ours = info_nce(q, torch.cat([pos, neg]), torch.arange(4), temperature=0.05)
    assert torch.allclose(ours, theirs, atol=1e-6)
    g_theirs = torch.autograd.grad(theirs, (q, pos, neg))
    g_ours = torch.autograd.grad(ours, (q, pos, neg))
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-6)
