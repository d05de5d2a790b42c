"""Sweeps: one cell per net (depth x unit kind x seed ...), run in parallel, resumable.

Every experiment runs the same loop: for each cell, a *work* function (the experiment's: build
the net from the cell's seed, train or measure it) returns the cell's tables; the sweep labels
them with the cell's identifying columns (DESIGN.md: ``experiment, unit_kind, version, depth,
width, seed``) and merges them, in cell order, into the run's tables.

Survival: each cell has its own folder ``<run>/cells/<cell name>/``; its tables are written
there (atomically) the moment it finishes, with ``done.json``. Rerunning the same command
(the same run folder: its id comes from the settings) skips finished cells and resumes an
unfinished one from the checkpoint the training engine keeps in its folder. The merged tables
do not depend on the order cells finished in, nor on how many processes ran them: a cell is
a pure function of its settings (one PyTorch thread per cell by default).

Parallel: ``workers`` processes (spawned, each with ``threads`` PyTorch threads) take cells
from the queue, most expensive first. A progress bar shows the cells being worked on, their
steps and the estimated time left (one line per finished cell when stderr is not a terminal).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import queue
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from .networks import cifar_resnet
from .runs import RunDir, atomic_write, check_writable_dir, read_table, write_table
from .training import CHECKPOINT
from .units import version_of

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
        """Relative cost of a step (for scheduling and the time estimate): depth x width."""
        return float(self.depth * self.width)


def with_ids(df: pd.DataFrame | None, experiment: str, cell: Cell) -> pd.DataFrame | None:
    """``df`` with the cell's identifying columns in front."""
    if df is None:
        return None
    front = pd.DataFrame({k: [v] * len(df) for k, v in cell.ids(experiment).items()}, index=df.index)
    return pd.concat([front, df.drop(columns=[c for c in front.columns if c in df.columns])], axis=1)


def build(cell: Cell, data) -> torch.nn.Module:
    """The cell's network, initialised from its seed (so V1 and V2 of a seed differ only in
    their units' arrangement, and repeat exactly)."""
    torch.manual_seed(cell.seed)
    return cifar_resnet(cell.depth, unit_kind=cell.unit_kind, width=cell.width,
                        num_classes=data.num_classes, in_channels=data.in_channels)


# ---- running cells --------------------------------------------------------------------------

@dataclasses.dataclass
class CellResult:
    """What a cell's work returns: its tables ({name: DataFrame}, unlabelled) and status."""
    tables: dict
    status: str = "completed"
    steps_done: int | None = None
    peak_memory_bytes: int | None = None


def run_sweep(run: RunDir, experiment: str, cells, work, context, *, workers: int = 1,
              threads: int = 1, steps: int = 1) -> tuple[dict, pd.DataFrame]:
    """Run ``work(cell, cell_run, context, report) -> CellResult`` for every cell not yet
    done; returns ({table name: merged, labelled DataFrame}, the cells table).

    ``context``: what the work needs besides the cell (picklable: it travels to the worker
    processes). ``report(step)`` lets the work tell the progress bar where it is out of
    ``steps`` (a cell's steps, for the time estimate). ``workers`` > 1 runs cells in that
    many spawned processes with ``threads`` PyTorch threads each; 1 runs them here, with
    ``threads`` threads too, so the numbers do not depend on ``workers``.
    """
    cells = list(cells)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("a sweep's cells must be distinct (duplicated seeds or depths?)")
    root = run.path / "cells"
    root.mkdir(exist_ok=True)
    todo = [c for c in cells if not (root / c.name / CELL_STATUS).is_file()]
    progress = SweepProgress(cells, todo, steps)
    try:
        if workers <= 1 or len(todo) <= 1:
            _run_here(todo, experiment, work, context, root, threads, progress)
        else:
            _run_pool(todo, experiment, work, context, root, workers, threads, progress)
    finally:
        progress.close()
    return merge_cells(root, experiment, cells)


def _run_here(todo, experiment, work, context, root, threads, progress):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for cell in todo:
            progress.start(cell)
            info = run_cell(work, cell, experiment, context, root,
                            lambda step, cell=cell: progress.update(cell, step))
            progress.finish(cell, info)
    finally:
        torch.set_num_threads(previous)


def _run_pool(todo, experiment, work, context, root, workers, threads, progress):
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    order = sorted(todo, key=lambda c: -c.cost)            # longest first: less idle at the end
    with ctx.Pool(min(workers, len(order)), initializer=_init_worker,
                  initargs=(threads, messages)) as pool:
        pending = {c.name: (c, pool.apply_async(_worker_cell, (work, c, experiment, context, root)))
                   for c in order}
        while pending:
            try:
                kind, name, value = messages.get(timeout=0.5)
                cell = pending[name][0] if name in pending else None
                if cell is not None:
                    progress.start(cell) if kind == "start" else progress.update(cell, value)
            except queue.Empty:
                pass
            for name, (cell, result) in list(pending.items()):
                if result.ready():
                    progress.finish(cell, result.get())      # re-raises a worker's error
                    del pending[name]


_MESSAGES = None


def _init_worker(threads, messages):
    global _MESSAGES
    torch.set_num_threads(threads)
    _MESSAGES = messages


def _worker_cell(work, cell, experiment, context, root):
    _MESSAGES.put(("start", cell.name, 0))
    last = [0.0]

    def report(step):
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            _MESSAGES.put(("step", cell.name, step))
    return run_cell(work, cell, experiment, context, root, report)


def run_cell(work, cell, experiment, context, root, report) -> dict:
    """One cell: its folder, its work, its tables and ``done.json``; returns done.json.

    The work gets ``<cell folder>/state/`` as its RunDir (the training engine keeps its
    checkpoint there, to resume a killed cell); the checkpoint goes once the cell is done."""
    folder = Path(root) / cell.name
    state = RunDir.at(folder / "state", cell=cell.name, **cell.ids(experiment))
    t0 = time.perf_counter()
    result = work(cell, state, context, report)
    for name, df in result.tables.items():
        if df is not None:
            write_table(folder / f"{name}.csv.gz", with_ids(df, experiment, cell))
    info = {**cell.ids(experiment), "cell": cell.name, "status": result.status,
            "steps_done": result.steps_done, "seconds": round(time.perf_counter() - t0, 3),
            "peak_memory_bytes": result.peak_memory_bytes}
    atomic_write(folder / CELL_STATUS, json.dumps(info, indent=1) + "\n")
    (state.path / CHECKPOINT).unlink(missing_ok=True)
    return info


def merge_cells(root, experiment, cells) -> tuple[dict, pd.DataFrame]:
    """Every finished cell's tables, concatenated in cell order, and the cells table."""
    tables, status = {}, []
    for cell in cells:
        folder = Path(root) / cell.name
        if not (folder / CELL_STATUS).is_file():
            continue
        status.append(json.loads((folder / CELL_STATUS).read_text()))
        for path in sorted(folder.glob("*.csv.gz")):
            stem = path.name[: -len(".csv.gz")]
            tables.setdefault(stem, []).append(read_table(folder, stem))
    merged = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    return merged, pd.DataFrame(status)


def outcome(cells: pd.DataFrame) -> str:
    """One line on how the cells ended: "12 nets: 10 completed, 2 diverged" or "all 12 nets
    diverged" (a diverged net is an outcome, not an error)."""
    counts = cells["status"].value_counts() if len(cells) else pd.Series(dtype=int)
    if len(counts) == 1:
        return f"all {len(cells)} nets {counts.index[0]}"
    return f"{len(cells)} nets: " + ", ".join(f"{n} {status}" for status, n in counts.items())


# ---- progress -------------------------------------------------------------------------------

class SweepProgress:
    """The sweep's progress: a tqdm bar over the cells' work (steps x cost) with the cells in
    progress and their step, and tqdm's estimate of the time left; when stderr is not a
    terminal, one line per finished cell."""

    def __init__(self, cells, todo, steps):
        self.steps = max(1, steps)
        self.total = len(cells)
        self.done = len(cells) - len(todo)
        self.active = {}
        self.bar = None
        if todo and sys.stderr.isatty() and os.environ.get("RESNET_LAB_NO_BAR") is None:
            from tqdm import tqdm
            self.bar = tqdm(total=round(sum(c.cost for c in todo) * self.steps), unit="work",
                            dynamic_ncols=True, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        self._credited = {}

    def start(self, cell):
        self.active[cell.name] = 0
        self._show()

    def update(self, cell, step):
        self.active[cell.name] = step
        self._credit(cell, step)
        self._show()

    def _credit(self, cell, step):
        if self.bar is not None:
            new = round(cell.cost * min(step, self.steps))
            self.bar.update(new - self._credited.get(cell.name, 0))
            self._credited[cell.name] = new

    def finish(self, cell, info):
        self.active.pop(cell.name, None)
        self._credit(cell, self.steps)
        self.done += 1
        line = (f"[{self.done}/{self.total}] {cell.describe()}: {info['status']}, "
                f"{info.get('steps_done') or ''}{' steps ' if info.get('steps_done') else ''}"
                f"in {info['seconds']:.1f} s")
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self._show()
        else:
            print(line, file=sys.stderr, flush=True)

    def _show(self):
        if self.bar is not None:
            now = ", ".join(f"{name} step {step}" for name, step in self.active.items())
            self.bar.set_postfix_str(f"{self.done}/{self.total} cells; {now}", refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---- sweeps over several machines (experiments/train.py --shard) -----------------------------

def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1), the whole sweep."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def select_shard(configs, shard) -> list:
    """Every n-th run config starting at the i-th: the share of machine i of n.
    ``shard`` is "i/n", (i, n) or None (everything)."""
    i, n = parse_shard(shard) if shard is None or isinstance(shard, str) else shard
    return list(configs)[i::n]


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
