"""analysis: each experiment in one module named after it -- its presets, cells, analysis,
claims and figures -- and what they share: tables, claim statistics, the report.

Imports flow one way: ``experiments/`` scripts -> ``analysis`` -> ``probes`` -> ``resnet_lab``.
Nothing here draws while it measures, nor measures while it draws: a module's
``draw_figures(run_dir)`` reads the run folder's CSVs alone.

``EXPERIMENTS`` is the registry: every experiment module, by name.
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from resnet_lab.runs import RunDir, git_commit, git_dirty, settings_id
from resnet_lab.sweep import outcome, run_sweep

EXPERIMENTS = ("grad_flow", "signal_propagation", "early_training", "full_training", "unit_ablation")
PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"
# Settings that change where or how fast a run goes, not its numbers: left out of its id.
_NOT_IN_ID = ("workers", "out", "publish")


def experiment(name: str):
    """The analysis module of experiment ``name`` (ValueError naming the valid ones)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"analysis.{name}")


def open_run(module, s: dict) -> RunDir:
    """The run folder of an experiment (its analysis ``module``) with settings ``s``: its id
    comes from the settings, so the same command reopens (and resumes) the same folder; the
    process holds its lock while it lives. Says what will run, and where."""
    key = {k: v for k, v in s.items() if k not in _NOT_IN_ID}
    run_id = f"{s['preset']}-{settings_id(key)}"
    run = RunDir.create(module.NAME, key, preset=key, out=s.get("out"), run_id=run_id, lock=True)
    # The code that analyses (and, for new cells, trains): the report marks a result whose
    # code differs from the checkout's.
    run.update_config(code_commit=git_commit(), code_dirty=git_dirty())
    print(f"{module.describe(s)}\n-> {run.path}", flush=True)
    return run


def sweep(module, s: dict, run: RunDir):
    """Every cell of the experiment (``module.cells``, done by ``module.WORK``) in
    ``s["workers"]`` processes; finished cells are skipped. Returns (tables, cells table)."""
    return run_sweep(run, module.NAME, module.cells(s), module.WORK, module.context(s),
                     workers=s["workers"], threads=s["threads"], steps=s.get("steps", 1))


def finish(module, run: RunDir, s: dict, cells, timing) -> int:
    """The run's last words: how its nets ended, the published copy, where it wrote."""
    print(outcome(cells))
    if s.get("publish") is not None:
        print(f"published to {publish(module, run.path, s['publish'])}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path}")
    return 0


def publish(module, run_dir, dest) -> Path:
    """Copy a run's reference files (``module.FILES``) to ``dest`` (e.g.
    results/paper/<experiment>), write the tables the figures and claims use
    (``module.published_tables(run_dir)``), and redraw the figures there from that copy."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in module.FILES:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    out = RunDir(dest)
    for name, df in module.published_tables(run_dir).items():
        out.write_csv(name, df)
    figures = dest / "figures"
    if figures.exists():
        for old in figures.glob("*"):
            old.unlink()
    module.draw_figures(dest)
    return dest
