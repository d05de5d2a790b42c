"""SignalProbe rows as TensorBoard scalars and histograms.

    from probes.adapters.tensorboard import write_scalars
    write_scalars("runs/probe", probe.collect())      # a log folder, or a SummaryWriter
    # tensorboard --logdir runs/probe

Scalars: one tag per direction, tap, statistic and unit, at the rows' ``step``:
``probe/<direction>/<tap>/<stat>/unit_<NNN>`` (e.g. ``probe/backward/input/norm/unit_003``;
weight-layer inputs are named by their layer: ``probe/forward/weight_input/in_var_mean/fc``).
A unit's profile over training reads best there.

Histograms: one per direction, tap, statistic and step, of the values over the units
(``probe_units/backward/input/norm``): how the units spread, step after step, in the
histogram and distribution dashboards.

A writer given is used as it is (anything with ``add_scalar`` / ``add_histogram``, e.g.
``torch.utils.tensorboard.SummaryWriter``, tensorboardX's, or a Lightning TensorBoardLogger's
``.experiment``); a folder needs the ``tensorboard`` package (``pip install tensorboard``, or
in the checkout ``pip install -e '.[tensorboard]'``), imported only then.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SCALAR_PREFIX = "probe"
HISTOGRAM_PREFIX = "probe_units"


def scalar_tags(df: pd.DataFrame) -> pd.Series:
    """The scalar tag of every probe row (see the module docstring)."""
    width = max(3, len(str(int(df["unit"].max())))) if len(df) else 3
    units = "unit_" + df["unit"].astype(int).astype(str).str.zfill(width)
    where = units.where(df["tap"] != "weight_input", df["layer"].astype(str))
    return SCALAR_PREFIX + "/" + df["direction"] + "/" + df["tap"] + "/" + df["stat"] + "/" + where


def _summary_writer(logdir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("probes.adapters.tensorboard needs TensorBoard to write a log folder: "
                          "pip install tensorboard (or, in the resnet-lab checkout, "
                          "pip install -e '.[tensorboard]')") from None
    return SummaryWriter(str(logdir))


def write_scalars(writer_or_logdir, df: pd.DataFrame, histograms: bool = True) -> int:
    """Write ``df`` (``SignalProbe.collect()`` rows) to TensorBoard; returns the number of
    scalars written. A folder gets a new event file, closed at the end; a writer is flushed
    and left open."""
    own = isinstance(writer_or_logdir, (str, Path))
    writer = _summary_writer(writer_or_logdir) if own else writer_or_logdir
    try:
        tags = scalar_tags(df)
        for tag, step, value in zip(tags, df["step"].astype(int), df["value"].astype(float)):
            writer.add_scalar(tag, value, global_step=int(step))
        if histograms:
            _write_histograms(writer, df)
        writer.flush()
    finally:
        if own:
            writer.close()
    return len(df)


def _write_histograms(writer, df: pd.DataFrame):
    """One histogram per (direction, tap, stat) and step over the units' finite values."""
    for (direction, tap, stat, step), rows in df.groupby(["direction", "tap", "stat", "step"], sort=False):
        values = rows["value"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]       # e.g. grad_cut where no gradient arrived
        if len(values) > 1:
            writer.add_histogram(f"{HISTOGRAM_PREFIX}/{direction}/{tap}/{stat}", values,
                                 global_step=int(step))
