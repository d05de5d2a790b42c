"""Positive controls: He et al.'s own baselines, checked in the very setting a claim uses.

A recipe copied by its words from a CIFAR paper can mean something else on other data (lr 0.1
on 8x8 digits blows V1-56 up). So before a claim is answered, its setting must reproduce the
paper's baselines: V1-56 trains at the main lr, V1-110 trains after the warm-up and ends no
worse than V1-56, the same for V2, and V2-1001 trains. Each experiment declares its controls
(:class:`Control`), measures them on the nets it trained and writes one row per control to
``controls.csv`` (numbers and pass/fail); a primary test that requires a failed control is
*not testable here (control X failed: numbers)* (``analysis.claims.primary_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_lab.io.folders import write_table

CONTROLS_FILE = "controls.csv"
FIT_ERROR = 0.02             # eval-mode training error at or below which a net fits its data
CONTROLS_COLUMNS = ["control", "experiment", "check", "he_et_al", "depth", "version", "passed",
                    "numbers"]


@dataclass(frozen=True)
class Control:
    """One baseline: ``check`` says what must hold here, ``he_et_al`` what the paper saw."""
    id: str
    check: str
    he_et_al: str


def control_row(control: Control, experiment: str, depth, version, passed: bool,
                numbers: str) -> dict:
    return {"control": control.id, "experiment": experiment, "check": control.check,
            "he_et_al": control.he_et_al, "depth": depth, "version": version,
            "passed": bool(passed), "numbers": numbers}


def missing_row(control: Control, experiment: str, depth, version, why: str) -> dict:
    """A control the run has no nets for: it fails (a claim that needs it is not testable)."""
    return control_row(control, experiment, depth, version, False, f"not measured: {why}")


def _nets(table, depth, version):
    return table[(table["depth"] == depth) & (table["version"] == version)]


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def all_below(control: Control, experiment: str, table: pd.DataFrame, *, depth, version,
              column, limit, what) -> dict:
    """Passes when every net (seed) of ``depth`` and ``version`` has ``column`` <= ``limit``
    (e.g. "fits its training set": eval-mode training error at most 2%)."""
    nets = _nets(table, depth, version)
    if nets.empty:
        return missing_row(control, experiment, depth, version, f"no V{version}-{depth} nets")
    values = nets[column].to_numpy(float)
    ok = np.isfinite(values) & (values <= limit)
    numbers = (f"V{version}-{depth}: {int(ok.sum())} of {len(values)} nets with {what} <= "
               f"{_pct(limit)} ({_pct(np.nanmin(values))}-{_pct(np.nanmax(values))})")
    return control_row(control, experiment, depth, version, bool(ok.all()), numbers)


def no_worse(control: Control, experiment: str, table: pd.DataFrame, *, deep, shallow, version,
             column, margin, what) -> dict:
    """Passes when the deeper net's ``column``, mean over seeds, is no worse than the shallower
    one's by more than ``margin`` (He et al.: no degradation)."""
    a, b = _nets(table, deep, version), _nets(table, shallow, version)
    if a.empty or b.empty:
        return missing_row(control, experiment, deep, version,
                           f"needs V{version} nets at {shallow} and {deep} layers")
    diff = float(a[column].mean() - b[column].mean())
    numbers = (f"V{version} {what}: {deep} layers {_pct(a[column].mean())}, {shallow} layers "
               f"{_pct(b[column].mean())} (difference {100 * diff:+.1f} points, margin "
               f"{100 * margin:.1f})")
    return control_row(control, experiment, deep, version, bool(np.isfinite(diff) and diff <= margin),
                       numbers)


def write_controls(run_dir, rows) -> Path:
    df = pd.DataFrame(rows, columns=CONTROLS_COLUMNS)
    return write_table(Path(run_dir) / CONTROLS_FILE, df)


def read_controls(path) -> pd.DataFrame:
    """One controls.csv (ValueError naming the file when it is not one)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable controls table ({exc})") from None
    missing = [c for c in CONTROLS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; required: {', '.join(CONTROLS_COLUMNS)}")
    return df


def failed(rows) -> dict:
    """{control id: its numbers} of the controls that failed (a control measured on several
    rows fails if any row does)."""
    out = {}
    for row in rows:
        if not row["passed"]:
            out[row["control"]] = "; ".join(filter(None, [out.get(row["control"]), row["numbers"]]))
    return out


def controls_text(run_dir) -> str:
    """A run's controls, one line each, for a script's summary."""
    table = read_controls(Path(run_dir) / CONTROLS_FILE)
    return "\n".join(f"control {r.control} {'passed' if r.passed else 'FAILED'}: {r.numbers}"
                     for r in table.itertuples())
