"""`mbret mine`: hard negatives from exact search and from an index folder, same result; bad options exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mbert_retrieval.cli.main import app

runner = CliRunner()


def _beir(tmp: Path) -> Path:
    folder = tmp / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = [f"document {i} about subject {i % 4}" for i in range(12)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                                 for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"subject {i}"}) + "\n"
                                                  for i in range(3)))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\nq1\td5\t1\n"
                                                "q2\td2\t1\n")
    return folder


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mine_exact_and_with_index_agree(tmp_path, tiny_modernbert):
    beir = _beir(tmp_path)
    res = runner.invoke(app, ["mine", str(beir), str(tmp_path / "exact.jsonl"), "--model", str(tiny_modernbert),
                              "-n", "3", "--range", "0", "8", "--json", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    rows = _rows(tmp_path / "exact.jsonl")
    assert summary["examples"] == len(rows) == 4  # one example per (query, positive)
    for row in rows:
        assert len(row["negatives"]) == 3 and row["positive_id"] not in row["negative_ids"]
        assert not {"d1", "d5"} & set(row["negative_ids"]) or row["query_id"] != "q1"  # positives skipped

    res = runner.invoke(app, ["index", str(beir), str(tmp_path / "idx"), "--model", str(tiny_modernbert), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["mine", str(beir), str(tmp_path / "indexed.jsonl"), "--index", str(tmp_path / "idx"),
                              "-n", "3", "--range", "0", "8", "-q"])
    assert res.exit_code == 0, res.output
    assert [r["negative_ids"] for r in _rows(tmp_path / "indexed.jsonl")] == [r["negative_ids"] for r in rows]


def test_mine_bad_options_exit_2(tmp_path, tiny_modernbert):
    beir = _beir(tmp_path)
    for extra in (["--range", "5", "2"], ["--sampling", "best"], ["-n", "0"]):
        res = runner.invoke(app, ["mine", str(beir), str(tmp_path / "x.jsonl"), "--model", str(tiny_modernbert),
                                  *extra])
        assert res.exit_code == 2, (extra, res.output)
    res = runner.invoke(app, ["mine", str(tmp_path / "missing"), str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2
