"""analysis: each experiment in one module named after it -- its presets, cells, analysis,
claims and figures -- and what they share: tables, claim statistics, the report.

Imports flow one way: ``experiments/`` scripts -> ``analysis`` -> ``probes`` -> ``resnet_lab``.
Nothing here draws while it measures, nor measures while it draws: a module's
``draw_figures(run_dir)`` reads the run folder's CSVs alone.

``EXPERIMENTS`` is the registry: every experiment module, by name.
"""
from __future__ import annotations

import importlib
import platform
import shutil
from pathlib import Path

from resnet_lab.runs.cellstore import CellChanged, CellStore
from resnet_lab.io.folders import (DEFAULT_ROOT, PAPER_ROOT, RunDir, cpu_model, git_commit, git_dirty,
                             now, settings_id)
from resnet_lab.runs.shards import share
from resnet_lab.runs.sweep import merge_cells, outcome, retrain, run_cells

EXPERIMENTS = ("grad_flow", "signal_propagation", "shortcut_variants", "early_training",
               "full_training", "unit_ablation")
PAPER = PAPER_ROOT
# Settings that change where or how fast a run goes, not its numbers: left out of its id.
_NOT_IN_ID = ("workers", "out", "publish", "shard", "analyse", "devices", "plan")


def experiment(name: str):
    """The analysis module of experiment ``name`` (ValueError naming the valid ones)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"analysis.{name}")


def run_key(s: dict) -> tuple[dict, str]:
    """(the settings that identify a run, its id): the same command gets the same folder,
    whichever process, GPU or shard runs it."""
    key = {k: v for k, v in s.items() if k not in _NOT_IN_ID}
    return key, f"{s['preset']}-{settings_id(key)}"


def run_path(module, s: dict) -> Path:
    """Where the run folder of these settings is (or will be)."""
    return Path(s.get("out") or DEFAULT_ROOT) / module.NAME / run_key(s)[1]


def open_run(module, s: dict) -> RunDir:
    """The run folder of an experiment (its analysis ``module``) with settings ``s``: its id
    comes from the settings, so the same command reopens (and resumes) the same folder; the
    process holds its lock while it lives (shared with the other shards of a sharded sweep).
    Records where it runs; says what will run, and where."""
    key, run_id = run_key(s)
    i, n = s["shard"]
    shared = n > 1 or s["analyse"]
    where = {"host": platform.node(), "devices": describe_devices(s), "workers": s["workers"]}
    run = RunDir.create(module.NAME, key, preset=key, out=s.get("out"), run_id=run_id,
                        lock="shared" if shared else True,
                        note={"shard": f"{i}/{n}", **where} if shared else None)
    # The code that analyses (and, for new cells, trains): the report marks a result whose
    # code differs from the checkout's.
    run.update_config(code_commit=git_commit(), code_dirty=git_dirty())
    if n > 1:
        run.record_part("shards", f"{i}/{n}", {**where, "started": now()})
    else:
        run.update_config(devices=where["devices"])
    print(f"{module.describe(s)}\n-> {run.path}", flush=True)
    return run


def describe_devices(s: dict) -> list:
    """What the workers compute on: each GPU of ``devices`` by name, or the CPU."""
    if not s.get("devices"):
        return [f"cpu ({cpu_model()})"]
    import torch
    return [f"cuda:{k} ({torch.cuda.get_device_name(k)})" for k in s["devices"]]


def sweep(module, s: dict, run: RunDir) -> list:
    """This process's share of the experiment's cells (``module.cells``, done by
    ``module.WORK``; every cell unless sharded) in ``s["workers"]`` processes; finished cells
    are verified and skipped. Returns the cells still unfinished (other shards')."""
    cells = module.cells(s)
    return run_cells(run, module.NAME, cells, module.WORK, module.context(s),
                     share=share(cells, s["shard"]), workers=s["workers"], threads=s["threads"],
                     steps=s.get("steps", 1), devices=s.get("devices"))


def merged(module, s: dict, run: RunDir):
    """(tables, cells table) of every cell, each verified as it is read; a cell whose tables
    changed since it finished is named and trained again first."""
    cells = module.cells(s)
    try:
        return merge_cells(run.path / "cells", module.NAME, cells)
    except CellChanged as err:
        retrain(CellStore(run.path / "cells", module.NAME), err.reasons)
        run_cells(run, module.NAME, cells, module.WORK, module.context(s),
                  share=[c for c in cells if c.name in err.reasons], workers=s["workers"],
                  threads=s["threads"], steps=s.get("steps", 1), devices=s.get("devices"))
        return merge_cells(run.path / "cells", module.NAME, cells)


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
