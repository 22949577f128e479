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
