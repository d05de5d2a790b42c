"""Sweeps: one cell per net (depth x unit kind x seed ...), run in parallel, resumable, and
split over machines.

Every experiment runs the same loop: for each cell, a *work* function (the experiment's: build
the net from the cell's seed, train or measure it) returns the cell's tables; the sweep labels
them with the cell's identifying columns (DESIGN.md: ``experiment, unit_kind, version, depth,
width, seed``) and merges them, in cell order, into the run's tables.

Survival: each cell has its own folder ``<run>/cells/<cell name>/`` (``resnet_lab.runs.cellstore``);
its tables are written there (atomically) the moment it finishes, then ``done.json`` with
their checksums. Rerunning the same command (the same run folder: its id comes from the
settings) verifies and skips finished cells -- a cell whose tables changed is trained again --
and resumes an unfinished one from the checkpoint the training engine keeps in its folder. The
merged tables do not depend on the order cells finished in, nor on how many processes or
machines ran them: a cell is a pure function of its settings (one PyTorch thread per cell by
default).

Parallel: ``workers`` processes (``resnet_lab.runs.workers``; spawned, each with ``threads`` PyTorch
threads, each on its own GPU of ``devices``) take cells, most expensive first. Shards
(``resnet_lab.runs.shards``): ``share`` is the part of the cells this process runs; the others'
are run by other processes into the same folder (a per-cell lock keeps two from running one).
Signals (``resnet_lab.io.signals``): a stopped sweep checkpoints its nets in progress and says,
in one line, what finished and what will resume. A progress bar shows the cells being worked
on, their steps and the estimated time left (one line per finished cell when stderr is not a
terminal).
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ..engine.training import CHECKPOINT, CheckpointUnreadable
from ..io import signals
from ..io.errors import CellFailed, one_line
from ..io.folders import RunDir, check_writable_dir, read_table, write_table
from ..networks.families import NETWORK_OPTIONS, cifar_resnet
from ..networks.units import version_of
from .cellstore import CELL_COLUMNS, CellChanged, CellStore
from .costs import step_seconds
from .progress import SweepProgress
from .workers import run_in_workers

ID_COLUMNS = ["experiment", "unit_kind", "version", "depth", "width", "seed"]
CELL_STATUS = "done.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One net of a sweep. ``factors``: further identifying columns (e.g. the input data),
    as ((name, value), ...), kept in the cell's rows beside the ``ID_COLUMNS``."""
    depth: int
    unit_kind: str
    seed: int
    width: int = 16
    factors: tuple = ()

    @property
    def version(self):
        """1 for the original unit, 2 for full pre-activation, None for the other kinds."""
        return version_of(self.unit_kind)

    @property
    def name(self) -> str:
        """The cell's folder name: unique within a sweep."""
        extra = "".join(f"_{v}" for _, v in self.factors)
        return f"d{self.depth}_w{self.width}_{self.unit_kind}_s{self.seed}{extra}"

    def describe(self) -> str:
        kind = f"V{self.version}" if self.version else self.unit_kind
        extra = "".join(f" {v}" for _, v in self.factors)
        return f"depth {self.depth} {kind} width {self.width} seed {self.seed}{extra}"

    def ids(self, experiment: str) -> dict:
        return {"experiment": experiment, "unit_kind": self.unit_kind, "version": self.version,
                "depth": self.depth, "width": self.width, "seed": self.seed, **dict(self.factors)}

    @property
    def cost(self) -> float:
        """Predicted milliseconds of one training step on the reference GPU
        (``resnet_lab.runs.costs``): what schedules cells, balances shards and weighs the progress
        bar (a 1001-layer cell ~5x a 164-layer one)."""
        return 1000 * step_seconds(self.depth, self.width)

    def where(self) -> str:
        """The cell as an error names it."""
        return f"{self.describe()} (cells/{self.name})"


def with_ids(df: pd.DataFrame | None, experiment: str, cell: Cell) -> pd.DataFrame | None:
    """``df`` with the cell's identifying columns in front."""
    if df is None:
        return None
    front = pd.DataFrame({k: [v] * len(df) for k, v in cell.ids(experiment).items()}, index=df.index)
    return pd.concat([front, df.drop(columns=[c for c in front.columns if c in df.columns])], axis=1)


def build(cell: Cell, data) -> torch.nn.Module:
    """The cell's network, initialised from its seed (so V1 and V2 of a seed differ only in
    their units' arrangement, and repeat exactly).

    The cell's factors that name a network option (``networks.NETWORK_OPTIONS``: a shortcut
    variant, an after-addition function, ...) go to the builder, so a new variant is one
    factor of the experiment's cells; the other factors (the input data, ...) do not."""
    torch.manual_seed(cell.seed)
    options = {name: value for name, value in cell.factors if name in NETWORK_OPTIONS}
    return cifar_resnet(cell.depth, unit_kind=cell.unit_kind, width=cell.width,
                        num_classes=data.num_classes, in_channels=data.in_channels, **options)


# ---- running cells --------------------------------------------------------------------------

@dataclasses.dataclass
class CellResult:
    """What a cell's work returns: its tables ({name: DataFrame}, unlabelled) and status."""
    tables: dict
    status: str = "completed"
    steps_done: int | None = None
    peak_memory_bytes: int | None = None


def run_sweep(run: RunDir, experiment: str, cells, work, context, *, workers: int = 1,
              threads: int = 1, steps: int = 1, devices=None) -> tuple[dict, pd.DataFrame]:
    """Run every cell not yet done (``run_cells``) and merge them all (``merge_cells``):
    ({table name: merged, labelled DataFrame}, the cells table)."""
    run_cells(run, experiment, cells, work, context, workers=workers, threads=threads,
              steps=steps, devices=devices)
    return merge_cells(run.path / "cells", experiment, cells)


def run_cells(run: RunDir, experiment: str, cells, work, context, *, share=None,
              workers: int = 1, threads: int = 1, steps: int = 1, devices=None) -> list:
    """Run ``work(cell, cell_run, context, report) -> CellResult`` for every cell of
    ``share`` (default: every cell) that is not finished and verified, nor running in another
    process; returns the cells of ``cells`` still unfinished (another shard's).

    ``context``: what the work needs besides the cell (picklable: it travels to the worker
    processes). ``report(step)`` lets the work tell the progress bar where it is out of
    ``steps`` (a cell's steps, for the time estimate). ``workers`` > 1 runs cells in that
    many spawned processes with ``threads`` PyTorch threads each (each on one CUDA device of
    ``devices``); 1 runs them here, with ``threads`` threads too, so the numbers do not
    depend on ``workers``. A signal stops it with ``signals.Interrupted`` saying what
    finished and what will resume; a failed cell is ``CellFailed`` naming it.
    """
    cells = list(cells)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("a sweep's cells must be distinct (duplicated seeds or depths?)")
    share = cells if share is None else list(share)
    store = CellStore(run.path / "cells", experiment)
    store.make()
    retrain(store, store.verify(share))
    todo = [c for c in share if not store.is_done(c)]
    progress = SweepProgress(share, todo, steps)
    job = (work, experiment, context, str(store.root))
    signals.forget()
    try:
        if workers <= 1 or len(todo) <= 1:
            _run_here(todo, job, threads, devices, progress)
        else:
            with signals.polled():                     # the parent passes a signal on
                run_in_workers(todo, _cell_job, job, workers=workers, threads=threads,
                               devices=devices, progress=progress)
    except signals.Interrupted as err:
        sharded = len(share) < len(cells)
        raise signals.Interrupted(err.signum, stop_summary(err, store, share, sharded)) from None
    finally:
        progress.close()
    return [c for c in cells if not store.is_done(c)]


def retrain(store: CellStore, reasons: dict):
    """Forget the finished cells whose tables changed, saying which and why (one line each):
    the sweep then trains them again."""
    for name, why in reasons.items():
        print(f"cells/{name}: {why}; training the net again", file=sys.stderr, flush=True)
        store.discard(name)


def _run_here(todo, job, threads, devices, progress):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    if devices:
        torch.cuda.set_device(devices[0])
    try:
        for cell in todo:
            signals.raise_if_requested()            # a stop between two cells
            progress.start(cell)
            try:
                info = _cell_job(cell, lambda step, cell=cell: progress.update(cell, step), *job)
            except Exception as err:                 # noqa: BLE001 -- re-raised unless known
                message = one_line(err)
                if message is None:
                    raise
                raise CellFailed(cell.where(), message) from err
            progress.finish(cell, info) if info is not None else progress.skip(cell)
        signals.raise_if_requested()                    # a signal as the last net finished
    finally:
        torch.set_num_threads(previous)


def _cell_job(cell, report, work, experiment, context, root):
    return run_cell(work, cell, experiment, context, root, report)


def run_cell(work, cell, experiment, context, root, report) -> dict | None:
    """One cell: its lock, its work, its tables and ``done.json``; returns done.json, or
    None if another process holds the cell (or finished it meanwhile).

    The work gets ``<cell folder>/state/`` as its RunDir (the training engine keeps its
    checkpoint there, to resume a stopped or killed cell); the checkpoint goes once the cell
    is done."""
    store = CellStore(root, experiment)
    with store.claimed(cell) as mine:
        if not mine or store.is_done(cell):
            return None
        state = RunDir.at(store.folder(cell) / "state", cell=cell.name, **cell.ids(experiment))
        t0 = time.perf_counter()
        try:
            result = work(cell, state, context, report)
        except CheckpointUnreadable as err:        # cut off on disk: start the net afresh
            print(f"cells/{cell.name}: {err}".replace("; delete it to", "; deleted, to"),
                  file=sys.stderr, flush=True)
            (state.path / CHECKPOINT).unlink(missing_ok=True)
            result = work(cell, state, context, report)
        tables = {name: with_ids(df, experiment, cell) for name, df in result.tables.items()
                  if df is not None}
        info = {**cell.ids(experiment), "cell": cell.name, "status": result.status,
                "steps_done": result.steps_done, "seconds": round(time.perf_counter() - t0, 3),
                "peak_memory_bytes": result.peak_memory_bytes, "device": _device_label(),
                "host": platform.node()}
        record = store.save(cell, tables, info)
        (state.path / CHECKPOINT).unlink(missing_ok=True)
    return record


def _device_label() -> str:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


def stop_summary(err, store: CellStore, cells, sharded: bool) -> str:
    """One line: the signal, what finished, what resumes from a checkpoint, what starts over."""
    done = sum(store.is_done(c) for c in cells)
    resuming = [(c, store.resume_point(c)) for c in cells if not store.is_done(c)]
    resuming = [(c, step) for c, step in resuming if step]
    fresh = len(cells) - done - len(resuming)
    whose = " of this shard" if sharded else ""
    text = f"interrupted by {signals.name(err.signum)}: {done} of {len(cells)} nets{whose} finished"
    if resuming:
        listed = ", ".join(f"{c.name} at step {step}" for c, step in resuming[:3])
        more = f" and {len(resuming) - 3} more" if len(resuming) > 3 else ""
        whose = "its checkpoint" if len(resuming) == 1 else "their checkpoints"
        text += f", {len(resuming)} will resume from {whose} ({listed}{more})"
    if fresh:
        text += f", {fresh} will start from the beginning"
    return text


def merge_cells(root, experiment, cells) -> tuple[dict, pd.DataFrame]:
    """Every finished cell's tables, each verified against its checksum as it is read and
    concatenated in cell order, and the cells table (``CellChanged`` naming the cells whose
    tables changed since they finished)."""
    store = CellStore(root, experiment)
    tables, status, changed = {}, [], {}
    for cell in cells:
        if not store.is_done(cell):
            continue
        try:
            record, frames = store.read(cell)
        except CellChanged as err:
            changed.update(err.reasons)
            continue
        status.append({**{k: record.get(k) for k in cell.ids(experiment)},
                       **{k: record.get(k) for k in CELL_COLUMNS}})
        for stem, df in frames.items():
            tables.setdefault(stem, []).append(df)
    if changed:
        raise CellChanged(changed)
    merged = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    return merged, pd.DataFrame(status)


def outcome(cells: pd.DataFrame) -> str:
    """One line on how the cells ended: "12 nets: 10 completed, 2 diverged" or "all 12 nets
    diverged" (a diverged net is an outcome, not an error)."""
    counts = cells["status"].value_counts() if len(cells) else pd.Series(dtype=int)
    if len(counts) == 1:
        return f"all {len(cells)} nets {counts.index[0]}"
    return f"{len(cells)} nets: " + ", ".join(f"{n} {status}" for status, n in counts.items())


# ---- runs copied back from several machines (experiments/train.py --shard) ------------------

def merge_runs(run_dirs, out) -> list[Path]:
    """Merge run folders (e.g. copied back from the machines of a sharded sweep) into ``out``:
    each CSV name found in them concatenated with a leading ``run_id`` column, and ``runs.csv``
    with every run's id, status and arguments. Returns the files written."""
    out = check_writable_dir(out)
    tables, runs = {}, []
    for run in (RunDir(p) for p in run_dirs):
        config = run.config
        runs.append({"run_id": config.get("run_id", run.path.name), "status": config.get("status"),
                     "path": str(run.path), **config.get("args", {})})
        for csv in sorted(run.path.glob("*.csv*")):
            df = read_table(run.path, csv.name.split(".csv")[0])
            df.insert(0, "run_id", runs[-1]["run_id"])
            tables.setdefault(csv.name, []).append(df)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "runs.csv", pd.DataFrame(runs))
    for name, frames in tables.items():
        write_table(out / name, pd.concat(frames, ignore_index=True))
    return [out / "runs.csv"] + [out / name for name in tables]
