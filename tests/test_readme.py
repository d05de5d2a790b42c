"""README.md is the front page: its code runs, its commands are accepted as written, and its
claims table says what the committed report says -- so the page cannot drift from the code or
the results."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(language):
    return [body for lang, body in FENCE.findall(README) if lang == language]


def commands():
    """Every `python experiments/...` line of the README's bash blocks, comment removed."""
    lines = (line.split("#")[0].strip() for body in blocks("bash") for line in body.splitlines())
    return [[os.path.expanduser(word) for word in shlex.split(line)]     # as a shell would
            for line in lines if line.startswith("python experiments/")]


def test_python_blocks_run(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)                        # the README reads results/paper/ from here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    found = blocks("python")
    assert len(found) >= 2
    for i, body in enumerate(found, 1):
        exec(compile(body, f"README.md (python block {i})", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "grad_cut" not in printed and "verdict" in printed and "passed" in printed


def test_experiments_page_code_runs(capsys):
    text = (ROOT / "docs" / "EXPERIMENTS.md").read_text()
    found = [body for lang, body in FENCE.findall(text) if lang == "python"]
    assert found
    for i, body in enumerate(found, 1):
        exec(compile(body, f"docs/EXPERIMENTS.md (python block {i})", "exec"), {})
    assert capsys.readouterr().out.count("\n") == 54          # ResNet-164: 3 stages of 18 units


@pytest.mark.parametrize("argv", [c for c in commands() if c[1] != "experiments/report.py"],
                         ids=lambda c: " ".join(c[1:]))
def test_experiment_commands_are_accepted_as_written(argv):
    """`--plan 1` parses and checks every flag, then prints the plan and writes nothing."""
    script = ROOT / argv[1]
    assert script.is_file()
    done = subprocess.run([sys.executable, str(script), *argv[2:], "--plan", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert " nets" in done.stdout


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`?make ([\w-]+)", README))
    assert {"run", "test", "reproduce"} <= named <= targets


def test_claims_table_is_the_reports():
    start = README.index("| claim |")
    lines = []
    for line in README[start:].splitlines():
        if not line.startswith("|"):
            break
        lines.append([c.strip() for c in line.strip("|").split("|")])
    table = pd.DataFrame(lines[2:], columns=lines[0])
    report = pd.read_csv(ROOT / "results" / "paper" / "claims_summary.csv")
    assert list(table["claim"]) == list(report["claim"])
    assert list(table["answer"].str.strip("*")) == list(report["answer"])
    assert list(table["the article says"]) == list(report["article"])
