"""The sweep machinery: progress (a bar on a terminal with the cells in progress, their step and
the time left; one line per cell otherwise), outcomes, cell names, merging in cell order."""
import io

import pandas as pd

from resnet_lab.runs import sweep
from resnet_lab.io.folders import RunDir
from resnet_lab.runs.sweep import Cell, CellResult, SweepProgress, outcome, run_sweep


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_names_the_cell_its_step_and_the_time_left(monkeypatch):
    monkeypatch.delenv("RESNET_LAB_NO_BAR", raising=False)
    screen = Terminal()
    monkeypatch.setattr(sweep.sys, "stderr", screen)
    cells = [Cell(20, "original", 0, 4), Cell(1001, "full_preact", 1, 4)]
    progress = SweepProgress(cells, cells, steps=10)
    progress.start(cells[1])
    progress.update(cells[1], 7)
    progress.finish(cells[0], {"status": "completed", "steps_done": 10, "seconds": 1.5})
    progress.close()
    text = screen.getvalue()
    assert cells[1].name in text and "step 7" in text and "1/2 cells" in text
    assert "<" in text                                  # elapsed<remaining: tqdm's estimate
    assert "[1/2] depth 20 V1 width 4 seed 0: completed, 10 steps in 1.5 s" in text


def test_without_a_terminal_one_line_per_cell(monkeypatch, capsys):
    cells = [Cell(20, "original", s, 4) for s in range(3)]
    progress = SweepProgress(cells, cells[1:], steps=5)          # one cell already done
    progress.start(cells[1])
    progress.update(cells[1], 3)
    progress.finish(cells[1], {"status": "diverged", "steps_done": 3, "seconds": 0.2})
    err = capsys.readouterr().err
    assert err == "[2/3] depth 20 V1 width 4 seed 1: diverged, 3 steps in 0.2 s\n"


def test_outcome_says_how_the_nets_ended():
    assert outcome(pd.DataFrame({"status": ["diverged"] * 4})) == "all 4 nets diverged"
    assert outcome(pd.DataFrame({"status": ["completed", "diverged", "completed"]})) == \
        "3 nets: 2 completed, 1 diverged"


def _work(cell, state, context, report):
    report(1)
    return CellResult({"t": pd.DataFrame({"x": [cell.seed * 10 + cell.depth]})}, steps_done=1)


def test_cells_merge_in_cell_order_and_finished_ones_are_skipped(tmp_path):
    run = RunDir.create("e", {}, out=tmp_path, run_id="r")
    cells = [Cell(d, "original", s, 4) for d in (20, 8) for s in (1, 0)]
    tables, status = run_sweep(run, "e", cells, _work, {})
    assert list(tables["t"]["x"]) == [30, 20, 18, 8]                 # the cells' order
    assert list(tables["t"]["depth"]) == [20, 20, 8, 8]               # labelled with the ids
    assert list(status["cell"]) == [c.name for c in cells]
    calls = []
    again, _ = run_sweep(run, "e", cells, lambda *a: calls.append(a) or _work(*a), {})
    assert calls == [] and again["t"].equals(tables["t"])             # nothing redone
