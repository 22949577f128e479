"""In-batch negatives gathered across 2 gloo processes on CPU give the single-process full-batch gradients."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mbert_retrieval.train.data import TrainExample, epoch_batches, link_positives
from mbert_retrieval.train.dist import all_reduce_gradients, gather_with_grad, rank_and_world
from mbert_retrieval.train.gradcache import grad_cache_step
from mbert_retrieval.train.losses import RetrievalLoss

N_EX, BS = 8, 4  # 8 examples: one global batch of 8 = 2 processes x 4


class ToyEncoder(torch.nn.Module):
    """Texts -> fixed random features -> a linear layer; ColBERT-style: one token per word."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.proj = torch.nn.Linear(8, 6)

    def _feat(self, word: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(sum(map(ord, word)) * 31 + len(word))
        return torch.randn(8, generator=g)

    def __call__(self, texts, is_query):
        if self.kind == "dense":
            return self.proj(torch.stack([sum(self._feat(w) for w in t.split()) for t in texts])), None
        mats = [torch.stack([self._feat(w) for w in t.split()]) for t in texts]
        width = max(m.shape[0] for m in mats)
        x = torch.zeros(len(mats), width, 8)
        mask = torch.zeros(len(mats), width, dtype=torch.bool)
        for i, m in enumerate(mats):
            x[i, : len(m)], mask[i, : len(m)] = m, True
        return torch.nn.functional.normalize(self.proj(x), dim=-1), mask


def _examples():
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    ex = [TrainExample(f"q {words[i]}", " ".join(words[i:i + 1 + i % 4]) + " doc", [f"neg {words[-1 - i]} x"])
          for i in range(N_EX)]
    ex[3].negatives = ["another alpha positive"]  # ... which is a second positive of query 0: masked for it
    extra = TrainExample("q alpha", "another alpha positive")
    return link_positives(ex + [extra])[:N_EX]


def _grads(kind, rank, world, mbs):
    enc = ToyEncoder(kind)
    batch = epoch_batches(_examples(), BS if world > 1 else BS * 2, 1, 0, 0, rank, world)[0]
    loss_fn = RetrievalLoss(kind, temperature=0.1 if kind == "dense" else 1.0)
    loss = grad_cache_step(enc, batch.queries, batch.documents, lambda q, d: loss_fn(q, d, batch), mbs)
    all_reduce_gradients(enc.parameters())
    return loss, enc.proj.weight.grad.clone()


def _worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        assert rank_and_world() == (rank, world)
        x = torch.tensor([[float(rank)]], requires_grad=True)
        g = gather_with_grad(x)
        (g * torch.tensor([[1.0], [2.0]])).sum().backward()  # every rank: d/dx = its row's weight, summed
        result = {"gather": g.detach(), "xgrad": x.grad.clone()}
        for kind in ("dense", "colbert"):
            for mbs in (None, 2):
                loss, grad = _grads(kind, rank, world, mbs)
                result[f"{kind}-{mbs}-grad"] = grad
                result[f"{kind}-{mbs}-loss"] = loss.clone()
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in result.items()}, os.path.join(out_dir, f"rank{rank}.safetensors"))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # gloo's threads sometimes abort in C++ static destructors at interpreter exit ("terminate called
    # without an active exception"); the results are written, so leave without running them
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_gather_two_processes_matches_single_process(tmp_path):
    from safetensors.torch import load_file

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0["gather"].flatten().tolist() == [0.0, 1.0]
    assert r0["xgrad"].item() == 2.0 and r1["xgrad"].item() == 4.0  # 1+1 and 2+2: gradients summed over ranks
    for kind in ("dense", "colbert"):
        for mbs in (None, 2):
            loss, grad = _grads(kind, 0, 1, mbs)
            key = f"{kind}-{mbs}"
            assert torch.allclose(r0[key + "-grad"], r1[key + "-grad"])  # averaged: identical on both ranks
            assert torch.allclose(r0[key + "-grad"], grad, atol=1e-6), key
            mean_loss = (r0[key + "-loss"] + r1[key + "-loss"]) / 2
            assert torch.allclose(mean_loss, loss, atol=1e-6), key


def test_single_process_helpers_are_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert rank_and_world() == (0, 1) and gather_with_grad(x) is x
