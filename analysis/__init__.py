"""analysis: each experiment in one module named after it -- its presets, cells, analysis,
claims and figures -- and what they share: tables, claim statistics, the report.

Imports flow one way: ``experiments/`` scripts -> ``analysis`` -> ``probes`` -> ``resnet_lab``.
Nothing here draws while it measures, nor measures while it draws: a module's
``draw_figures(run_dir)`` reads the run folder's CSVs alone.

``EXPERIMENTS`` is the registry: every experiment module, by name.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import tempfile
from pathlib import Path

from analysis.preflight import publish_problem, refusal
from resnet_lab.io.folders import (DEFAULT_ROOT, PAPER_ROOT, RunDir, atomic_write, cpu_model,
                                   git_commit, git_dirty, now, read_config, record_table,
                                   settings_id)
from resnet_lab.runs.cellstore import CellChanged, CellStore
from resnet_lab.runs.shards import share
from resnet_lab.runs.sweep import merge_cells, outcome, retrain, run_cells

EXPERIMENTS = ("grad_flow", "signal_propagation", "early_training", "full_training", "unit_ablation")
PAPER = PAPER_ROOT
# Settings that change where or how fast a run goes, not its numbers: left out of its id.
_NOT_IN_ID = ("workers", "out", "publish", "publish_over", "shard", "analyse", "devices", "plan")


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
        print(f"published to {publish(module, run.path, s['publish'], s.get('publish_over'))}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path}")
    return 0


def publish(module, run_dir, dest, over=False) -> Path:
    """Copy a run's reference files (``module.FILES``) to ``dest`` (e.g.
    results/paper/<experiment>), write the tables the figures and claims use
    (``module.published_tables(run_dir)``), and redraw the figures there from that copy.

    Atomic: everything is written into a new folder beside ``dest`` (under ``.publishing/``,
    where no reader looks), and swapped in only when complete; a failure (a full disk, a
    figure that cannot be drawn) leaves the old references as they were. Refused
    (``preflight.publish_problem``) over another experiment's or another preset's references
    unless ``over``. Every table is listed with its checksum in the copy's tables.json."""
    run_dir, dest = Path(run_dir), Path(dest)
    args = read_config(run_dir / "config.json").get("args") or {}
    why = publish_problem(dest, module.NAME, args.get("preset") if isinstance(args, dict) else None)
    if why and not over:                       # checked before work too; another may have since
        raise ValueError(refusal(dest, why))
    staging = dest.parent / ".publishing"
    staging.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=staging, prefix=f"{dest.name}.new-"))
    try:
        os.chmod(new, 0o777 & ~_umask())
        names = ["config.json", *(n for n in module.FILES if n != "config.json")]
        for name in names:                     # config.json first: it makes the folder a record
            if (run_dir / name).is_file():
                data = (run_dir / name).read_bytes()
                atomic_write(new / name, data)
                if name.endswith((".csv", ".csv.gz")):
                    record_table(new / name, data)
        out = RunDir(new)
        for name, df in module.published_tables(run_dir).items():
            out.write_csv(name, df)
        (new / "figures").mkdir()
        module.draw_figures(new)
        if dest.is_dir():                      # a note kept beside the references stays; an old
            for old in dest.iterdir():         # table or figure does not mix with the new ones
                if old.is_file() and not old.name.endswith((".csv", ".csv.gz", ".json")) \
                        and not (new / old.name).exists():
                    shutil.copy2(old, new / old.name)
        _swap(new, dest, staging)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            staging.rmdir()                    # empty unless another publish is under way
    return dest


def _swap(new: Path, dest: Path, staging: Path):
    """Put the complete folder ``new`` at ``dest``: two renames in one file system (the old
    folder, moved aside, comes back if the second fails), then the old one is removed."""
    if not dest.exists():
        os.rename(new, dest)
        return
    aside = Path(tempfile.mkdtemp(dir=staging, prefix=f"{dest.name}.old-"))
    os.rename(dest, aside / dest.name)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(aside / dest.name, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
