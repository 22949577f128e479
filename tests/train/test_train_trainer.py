"""Training loop: the loss goes down, checkpoint + resume reproduces an uninterrupted run, outputs load back."""

import json

import pytest
import torch

from mbert_retrieval.train import Trainer, TrainConfig, latest_checkpoint, train
from mbert_retrieval.train.data import epoch_batches


def _cfg(model, data, out, **kw):
    base = dict(model=model, data=[str(data)], output_dir=str(out), batch_size=4, lr=1e-3, warmup_ratio=0.0,
                max_query_length=16, max_doc_length=24, colbert_dim=16, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _eval_loss(trainer) -> float:
    trainer.model.eval()
    batch = epoch_batches(trainer.examples, 8, 0, 0, 0)[0]
    with torch.no_grad():
        q = trainer.encoder(batch.queries, True)
        d = trainer.encoder(batch.documents, False)
        return float(trainer.loss_fn(q, d, batch))


def test_few_steps_reduce_the_loss(tiny_modernbert, triples_file, tmp_path):
    trainer = Trainer(_cfg(tiny_modernbert, triples_file, tmp_path / "run", max_steps=12, temperature=0.1))
    before = _eval_loss(trainer)
    final = trainer.run(show_progress=False)
    after = _eval_loss(trainer)
    assert after < before - 0.1, (before, after)
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    from mbert_retrieval import BiEncoder

    reloaded = BiEncoder.from_pretrained(str(final))
    texts = ["what color is the sky"]
    assert torch.allclose(torch.from_numpy(reloaded.encode_queries(texts)),
                          torch.from_numpy(trainer.model.encode_queries(texts)), atol=1e-5)


@pytest.mark.parametrize("kind,extra", [("dense", {"n_hard_negatives": 1, "mini_batch_size": 2}),
                                        ("colbert", {"n_hard_negatives": 1, "loss": "distill"})])
def test_resume_equals_uninterrupted(tiny_dropout_model, triples_file, tmp_path, kind, extra):
    kw = dict(kind=kind, max_steps=4, save_steps=2, **extra)
    full = Trainer(_cfg(tiny_dropout_model, triples_file, tmp_path / "full", **kw))
    full.run(show_progress=False)
    assert (tmp_path / "full" / "checkpoint-2").is_dir() and (tmp_path / "full" / "final").is_dir()

    first = Trainer(_cfg(tiny_dropout_model, triples_file, tmp_path / "split", **kw))
    ckpt = first.run(show_progress=False, stop_after=2)
    assert ckpt == latest_checkpoint(tmp_path / "split") and ckpt.name == "checkpoint-2"
    assert not list(ckpt.rglob("*.bin")) and not list(ckpt.rglob("*.pt"))  # safetensors + JSON only
    second = Trainer(_cfg(tiny_dropout_model, triples_file, tmp_path / "split", resume=True, **kw))
    assert second.step == 2
    second.run(show_progress=False)
    assert [h["loss"] for h in second.history] == pytest.approx([h["loss"] for h in full.history[2:]], abs=1e-6)
    a, b = full.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_colbert_final_is_pylate_format(tiny_modernbert, triples_file, tmp_path):
    final = train(_cfg(tiny_modernbert, triples_file, tmp_path / "cb", kind="colbert", max_steps=2), show_progress=False)
    modules = json.loads((final / "modules.json").read_text())
    assert modules[-1]["type"] == "pylate.models.Dense.Dense"
    from mbert_retrieval.colbert import ColBERT

    reloaded = ColBERT.from_pretrained(str(final))
    assert reloaded.dim == 16


_TORCHRUN_SCRIPT = """
import json
import sys
import torch
from safetensors.torch import save_file
from mbert_retrieval.train import TrainConfig, Trainer

model, data, out, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
cfg = TrainConfig(model=model, data=[data], output_dir=out, batch_size=bs, max_steps=3, lr=1e-3, warmup_ratio=0.0,
                  max_query_length=16, max_doc_length=24, seed=3, drop_last=True, temperature=0.1)
t = Trainer(cfg)
t.run(show_progress=False)
with open(f"{out}/rank-{t.rank}.json", "w") as f:  # one file per process: their stdout interleaves
    json.dump({"rank": t.rank, "world": t.world, "losses": [h["loss"] for h in t.history]}, f)
if t.rank == 0:
    save_file({k: v.contiguous() for k, v in t.model.state_dict().items()}, out + "/weights.safetensors")
"""


def _ranks(out) -> dict[int, dict]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob("rank-*.json")}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_processes_equal_one_process_with_the_global_batch(tiny_modernbert, triples_file, tmp_path):
    """`torchrun --nproc-per-node 2` with batch 4 per process trains like one process with batch 8: same
    losses (negatives gathered across processes), same weights (gradients averaged); only rank 0 writes."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    script = tmp_path / "fit.py"
    script.write_text(_TORCHRUN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [str(tiny_modernbert), str(triples_file)]
    one = subprocess.run([sys.executable, str(script), *args, str(tmp_path / "one"), "8"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), *args,
                          str(tmp_path / "two"), "4"], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    ranks, single = _ranks(tmp_path / "two"), _ranks(tmp_path / "one")
    assert {r: v["world"] for r, v in ranks.items()} == {0: 2, 1: 2} and single[0]["world"] == 1
    assert ranks[0]["losses"] == pytest.approx(single[0]["losses"], abs=1e-4)  # the loss is averaged over ranks
    log = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 3  # rank 0 alone writes the log (and final/)
    w1, w2 = load_file(str(tmp_path / "one" / "weights.safetensors")), load_file(str(tmp_path / "two" / "weights.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert (tmp_path / "two" / "final").is_dir()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_matryoshka_training(tiny_modernbert, triples_file, tmp_path):
    """matryoshka_dims adds the loss of truncated prefixes: with the full size among them, the first step's
    loss is the plain loss plus the 8-dim one (same seed, same batch), and the run trains and saves."""
    plain = Trainer(_cfg(tiny_modernbert, triples_file, tmp_path / "plain", max_steps=1, temperature=0.1))
    plain.run(show_progress=False)
    mat = Trainer(_cfg(tiny_modernbert, triples_file, tmp_path / "mat", max_steps=3, temperature=0.1,
                       matryoshka_dims=[32, 8]))
    final = mat.run(show_progress=False)
    assert mat.history[0]["loss"] > plain.history[0]["loss"] + 0.1
    from mbert_retrieval import BiEncoder

    small = BiEncoder.from_pretrained(str(final), truncate_dim=8)
    v = small.encode_documents(["the sky is blue on a clear day"])
    assert v.shape == (1, 8) and abs(float((v ** 2).sum()) - 1.0) < 1e-5
