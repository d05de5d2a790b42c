"""docs/TUTORIAL.md runs: every ```python block, in order, in one namespace, in a temporary
working directory -- so the tutorial cannot rot. It starts with the install it needs, every
file it tells the reader to open exists when the blocks have run, and the install commands it
and docs/integrations.md give are ones that work from the checkout."""
import re
import tomllib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "TUTORIAL.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
OUTPUT = re.compile(r"results/runs/tutorial/[\w./-]*\w")     # what the reader is told to open


def python_blocks(text):
    return BLOCK.findall(text)


def test_blocks_are_found():
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 6 and all(b.strip() for b in blocks)
    assert "tap_model" in blocks[1] and "write_scalars" in "".join(blocks)


def test_tutorial_starts_with_its_install():
    language, first = FENCE.findall(TUTORIAL.read_text())[0]
    assert language == "bash" and "make install" in first


@pytest.mark.parametrize("doc", ["TUTORIAL.md", "integrations.md"])
def test_install_commands_work_from_the_checkout(doc):
    """resnet-lab is on no registry: `pip install resnet-lab[...]` cannot work; `pip install -e
    '.[extra]'` must name extras pyproject.toml has, and `make X` targets the Makefile has."""
    text = (ROOT / "docs" / doc).read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert "resnet-lab[" not in text and "resnet_lab[" not in text
    named = re.findall(r"pip install -e '\.\[([\w,]+)\]'", text)
    assert named and all(e in extras for e in ",".join(named).split(","))
    assert set(re.findall(r"`make ([\w-]+)", text)) <= targets


def test_tutorial_runs(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # a shared 2-core machine
    namespace = {"__name__": "__tutorial__"}
    text = TUTORIAL.read_text()
    try:
        for i, block in enumerate(python_blocks(text), 1):
            exec(compile(block, f"docs/TUTORIAL.md (python block {i})", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert namespace["written"] == len(namespace["df"]) > 0
    told = set(OUTPUT.findall(text))
    assert {"results/runs/tutorial/gradient_per_unit.png", "results/runs/tutorial/tensorboard"} <= told
    for path in told:                          # still there after the last block
        assert (tmp_path / path).exists(), path
    assert any((tmp_path / "results/runs/tutorial/tensorboard").glob("events.out.tfevents.*"))
