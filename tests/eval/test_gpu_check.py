"""The GPU check script (`eval/gpu_check.sh` -> `python -m mbert_retrieval.eval.gpu_check`) in its CPU smoke
mode: every section runs on tiny sizes and the JSON and Markdown reports are written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mbert_retrieval.eval import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_on_cpu(tmp_path, capsys):
    gpu_check.main(["--smoke", "--cpu", "--repeats", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    md = (tmp_path / "gpu_check.md").read_text()
    assert report["smoke"] and report["environment"]["device_type"] == "cpu" and report["environment"]["date"]
    for section in ("encode", "dense", "plaid"):
        assert "error" not in report[section], report[section]
    enc = report["encode"]
    assert {(r["workload"], r["mode"].split()[0]) for r in enc["rows"]} == {
        (w, m) for w in ("short", "long") for m in ("padded", "packed")}
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None for r in enc["rows"])  # no MFU without a GPU peak
    assert min(enc["min_cosine_padded_vs_varlen"].values()) > 0.999  # both paths encode the same
    assert [r["backend"] for r in report["dense"]["rows"]] == ["faiss", "torch"]  # no faiss-gpu here
    assert all(r["overlap_at_10_vs_cpu"] == 1.0 for r in report["dense"]["rows"])  # exact search agrees
    plaid = report["plaid"]["rows"]
    assert plaid[0]["device"] == "cpu" and plaid[0]["queries_per_s"] > 0
    assert plaid[-1]["system"] == "fast-plaid" and plaid[-1]["queries_per_s"] is None
    assert "147,000" in md and "## PLAID search" in md and report["environment"]["device"] in md
    assert "# GPU check" in capsys.readouterr().out


def test_section_errors_are_reported_not_raised():
    def broken():
        raise RuntimeError("no GPU today")

    assert gpu_check._section(broken) == {"error": "RuntimeError: no GPU today"}


def test_peak_tflops_by_device_name():
    assert gpu_check.peak_tflops("NVIDIA H200", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA GeForce RTX 4090", None) == 165.2
    assert gpu_check.peak_tflops("Some future GPU", None) is None
    assert gpu_check.peak_tflops("NVIDIA H200", 500.0) == 500.0


def test_shell_wrapper_is_valid_bash():
    script = ROOT / "eval" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "mbert_retrieval.eval.gpu_check" in script.read_text()
