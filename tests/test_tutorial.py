"""docs/TUTORIAL.md runs: every ```python block, in order, in one namespace, in a temporary
working directory -- so the tutorial cannot rot."""
import re
from pathlib import Path

import pytest
import torch

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "TUTORIAL.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text):
    return BLOCK.findall(text)


def test_blocks_are_found():
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 6 and all(b.strip() for b in blocks)
    assert "tap_model" in blocks[1] and "write_scalars" in "".join(blocks)


def test_tutorial_runs(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # a shared 2-core machine
    namespace = {"__name__": "__tutorial__"}
    try:
        for i, block in enumerate(python_blocks(TUTORIAL.read_text()), 1):
            exec(compile(block, f"docs/TUTORIAL.md (python block {i})", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert namespace["written"] == len(namespace["df"]) > 0
