"""The scripts in examples/ run as a user would run them (with the packaged MiniLM model, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # where `mbret` is installed next to this Python
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def test_rag_example_retrieves_and_cites(tmp_path, minilm_path):
    cmd = [sys.executable, str(ROOT / "examples" / "rag.py"), "How do plants turn sunlight into food?",
           "--index", str(tmp_path / "rag-index"), "--model", minilm_path, "--k", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "building" in first.stdout and "[1] How plants make sugar (id: sci-photosynthesis)" in first.stdout
    assert "Question: How do plants turn sunlight into food?" in first.stdout
    again = subprocess.run(cmd[:2] + ["What happened in 1989?", "--index", str(tmp_path / "rag-index"),
                                      "--filter", "topic=history", "--k", "1"],
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "building" not in again.stdout and "(id: hist-" in again.stdout  # reopened, filtered


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_cli_flow_example(tmp_path, minilm_path):
    env = {**_env(), "MODEL": minilm_path, "INDEX": str(tmp_path / "cli-index")}
    r = subprocess.run(["bash", str(ROOT / "examples" / "cli_flow.sh")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "sci-photosynthesis" in r.stdout and "cook-sourdough" in r.stdout
    assert "deleted 1 document; the index now holds 51" in r.stdout
