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


def test_readme_commands_use_existing_options():
    """Every `mbret CMD ... --flag` in the README's code blocks names a command and options that exist."""
    import typer

    from mbert_retrieval.cli.main import app

    commands = typer.main.get_command(app).commands
    text = (ROOT / "README.md").read_text()
    seen = 0
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for segment in re.split(r"&&|\|", block.replace("\\\n", " ")):
            for line in segment.splitlines():
                m = re.match(r"\s*(?:mbret|torchrun .*? -m mbert_retrieval\.cli\.main) (\w+)(.*)", line)
                if not m:
                    continue
                assert m.group(1) in commands, f"README: unknown command in {line.strip()!r}"
                names = {o for p in commands[m.group(1)].params for o in (*p.opts, *p.secondary_opts)}
                for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", m.group(2).split("#")[0]):
                    assert flag in names, f"README: `mbret {m.group(1)}` has no option {flag} ({line.strip()!r})"
                seen += 1
    assert seen >= 10, seen
