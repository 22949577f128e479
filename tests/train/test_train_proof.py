"""The proof script end to end on a tiny BEIR folder with the tiny model (seconds; the real run is manual)."""

import json

import pytest


def _beir(root, pairs):
    (root / "qrels").mkdir(parents=True)
    docs = [p for _, p in pairs] + [f"filler document about topic {i}" for i in range(12)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                for i, (q, _) in enumerate(pairs)))
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(head + "".join(f"q{i}\td{i}\t1\n" for i in range(6)))
    (root / "qrels" / "test.tsv").write_text(head + "".join(f"q{i}\td{i}\t1\n" for i in range(6, 8)))
    return root


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_train_proof_runs(tiny_modernbert, pairs, tmp_path, kind, capsys):
    from mbert_retrieval.eval.train_proof import main

    data = _beir(tmp_path / "beir", pairs)
    args = ["--dataset", str(data), "--kind", kind, "--model", tiny_modernbert, "--output-dir", str(tmp_path / "o"),
            "--batch-size", "2", "--mine-range", "0", "5", "--colbert-dim", "16", "--quiet", "--max-doc-length", "32"]
    res = main(args)
    assert set(res["untuned"]) == {"ndcg@10", "recall@100"} and 0 <= res["tuned"]["ndcg@10"] <= 1
    assert "untuned" in capsys.readouterr().out
    mined = [json.loads(x) for x in (tmp_path / "o" / "mined.jsonl").read_text().splitlines()]
    assert len(mined) == 6 and all(len(m["negatives"]) == 1 for m in mined)
    res2 = main(args)  # the untuned phase is reused
    assert res2["untuned"] == res["untuned"] and "reused" in capsys.readouterr().out


def test_cli_mine_then_fit(tiny_modernbert, pairs, tmp_path):
    from mbert_retrieval.train.__main__ import main

    data = _beir(tmp_path / "beir", pairs)
    mined = tmp_path / "mined.jsonl"
    assert main(["mine", "--model", tiny_modernbert, "--dataset", str(data), "--output", str(mined),
                 "--num-negatives", "2", "--range", "0", "6", "--teacher-scores", "retriever", "--quiet"]) == 0
    assert len(mined.read_text().splitlines()) == 6
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'model = "{tiny_modernbert}"\nbatch_size = 3\nloss = "distill"\nn_hard_negatives = 2\n')
    assert main(["fit", "--config", str(cfg), f"data={mined}", f"output_dir={tmp_path / 'out'}", "max_steps=2",
                 "--quiet"]) == 0
    assert (tmp_path / "out" / "final" / "modules.json").is_file()
