"""Sweeps: train one CIFAR ResNet per cell (depth x unit kind x seed) with the engine.

Every experiment that trains runs the same loop: build the net of a cell from its seed, train
it with the paper's recipe (``resnet_lab.training.train``), label its rows with the cell's
identifying columns (DESIGN.md: ``experiment, unit_kind, version, depth, width, seed``), and
save the tables after each cell, atomically, so a killed sweep keeps every finished cell.
A diverged cell is recorded with its status and the sweep goes on.
"""
from __future__ import annotations

import dataclasses
import sys
import time

import pandas as pd
import torch

from .networks import cifar_resnet
from .training import train
from .units import VERSIONS

ID_COLUMNS = ["experiment", "unit_kind", "version", "depth", "width", "seed"]
_VERSION_OF = {kind: v for v, kind in VERSIONS.items()}


@dataclasses.dataclass(frozen=True)
class Cell:
    depth: int
    unit_kind: str
    seed: int
    width: int = 16

    @property
    def version(self):
        """1 for the original unit, 2 for full pre-activation, None for the other kinds."""
        return _VERSION_OF.get(self.unit_kind)

    def label(self) -> str:
        kind = f"V{self.version}" if self.version else self.unit_kind
        return f"depth {self.depth} {kind} width {self.width} seed {self.seed}"


def label(df: pd.DataFrame | None, experiment: str, cell: Cell, **extra) -> pd.DataFrame | None:
    """``df`` with the identifying columns (and ``extra`` ones) in front."""
    if df is None:
        return None
    columns = {"experiment": experiment, "unit_kind": cell.unit_kind, "version": cell.version,
               "depth": cell.depth, "width": cell.width, "seed": cell.seed, **extra}
    front = pd.DataFrame({k: [v] * len(df) for k, v in columns.items()}, index=df.index)
    return pd.concat([front, df], axis=1)


def build(cell: Cell, data) -> torch.nn.Module:
    """The cell's network, initialised from its seed (so V1 and V2 of a seed differ only in
    their units' arrangement, and repeat exactly)."""
    torch.manual_seed(cell.seed)
    return cifar_resnet(cell.depth, unit=cell.unit_kind, width=cell.width,
                        num_classes=data.num_classes, in_channels=data.in_channels)


# Rewriting the growing probe table after every cell made the quick grad_flow run spend
# ~35 s of its ~190 s in CSV formatting and gzip (30 cells, 71 MB of text at the end).
PROBE_SAVE_SECONDS = 60


def run_cells(run, experiment: str, cells, data, *, steps: int, probe_factory=None,
              probe_every: int = 1, on_cell=None, **train_kw):
    """Train every cell; returns (metrics, probe rows, one status row per cell).

    ``run``: the RunDir the tables go to (``train.csv``, ``probe.csv.gz``, ``cells.csv``),
    rewritten after each cell -- the probe table, by far the largest, at most once every
    ``PROBE_SAVE_SECONDS`` and after the last cell; ``None`` writes nothing. ``train_kw`` go to ``train`` (batch
    size, device, schedule, eval_every, ...). ``on_cell(cell, result)`` is called after each
    cell (e.g. to probe the trained net further).
    """
    cells = list(cells)
    metrics, probes, status = [], [], []
    probe_saved = time.perf_counter()
    for i, cell in enumerate(cells, start=1):
        t0 = time.perf_counter()
        model = build(cell, data)
        result = train(model, data, None, steps=steps, seed=cell.seed, probe_factory=probe_factory,
                       probe_every=probe_every, quiet=True, **train_kw)
        seconds = time.perf_counter() - t0
        metrics.append(label(result.metrics, experiment, cell))
        if result.probe is not None:
            probes.append(label(result.probe, experiment, cell))
        train_loss = result.metrics.query("split == 'train' and metric == 'loss'")["value"]
        status.append({**dict(zip(ID_COLUMNS, (experiment, cell.unit_kind, cell.version, cell.depth,
                                               cell.width, cell.seed))),
                       "status": result.status, "steps_done": result.step, "seconds": seconds,
                       "peak_memory_bytes": result.peak_memory_bytes})
        first, last = (train_loss.iloc[0], train_loss.iloc[-1]) if len(train_loss) else (float("nan"),) * 2
        print(f"[{i}/{len(cells)}] {cell.label()}: {result.status}, {result.step} steps in "
              f"{seconds:.1f} s, train loss {first:.3f} -> {last:.3f}", file=sys.stderr, flush=True)
        if on_cell is not None:
            on_cell(cell, result)
        tables = _tables(metrics, probes, status)
        if run is not None:
            run.write_csv("train.csv", tables[0])
            if tables[1] is not None and (i == len(cells)
                                          or time.perf_counter() - probe_saved >= PROBE_SAVE_SECONDS):
                run.write_csv("probe.csv.gz", tables[1])
                probe_saved = time.perf_counter()
            run.write_csv("cells.csv", tables[2])
    return _tables(metrics, probes, status)


def _tables(metrics, probes, status):
    return (pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(),
            pd.concat(probes, ignore_index=True) if probes else None,
            pd.DataFrame(status))
