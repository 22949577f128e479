"""The README's two set-up commands are the ones CI and users run: keep them honest."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- quickstart -->", 2)[1]
    return [line.strip() for line in re.findall(r"```bash\n(.*?)```", block, flags=re.S)]


def test_exactly_two_setup_commands():
    cmds = _quickstart_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds), "each set-up command is one line"
    for c in cmds:
        assert c.index("torch==2.13.0") < c.index("-c constraints.txt"), "the pinned CPU torch comes first"


def test_main_job_indexes_and_searches_the_bundled_corpus():
    main = _quickstart_commands()[0]
    assert "mbret index" in main and "mbret search" in main and "examples/" in main
    corpus = re.search(r"mbret index (\S+)", main).group(1)
    assert (ROOT / corpus).exists(), f"{corpus} is not in the repository"


def test_ci_runs_the_readme_test_command():
    test_cmd = _quickstart_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    venv_free = test_cmd.split("&& ", 2)[-1] if test_cmd.startswith("python3 -m venv") else test_cmd
    assert venv_free in ci, "the .ci/run test line and the README's test command differ"
    assert "pytest" in test_cmd
