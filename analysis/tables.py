"""Summaries of probe tables (the DESIGN.md probe schema plus identifying columns), and the
raw tables every analysis writes first.

Every function takes tidy rows and returns tidy rows, so experiments, figures and tests
share one definition of, e.g., "the gradient at the first unit relative to the last".
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def select(df: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows whose columns equal the given values (a list means: any of them)."""
    mask = np.ones(len(df), dtype=bool)
    for column, value in where.items():
        mask &= df[column].isin(value).to_numpy() if isinstance(value, (list, tuple, set)) \
            else (df[column] == value).to_numpy()
    return df[mask]


def first_to_last(df: pd.DataFrame, keys, *, tap="input", direction="backward", stat="norm",
                  name=None) -> pd.DataFrame:
    """value at the first unit / value at the last unit, per group of ``keys`` (e.g. a run's
    depth, version, seed and step). With ``stat="norm"`` and ``tap="input"`` this is how much
    larger the gradient is where it arrives last (unit 0) than where it enters (last unit)."""
    rows = select(df, tap=tap, direction=direction, stat=stat)
    by = list(keys)
    first = rows.loc[rows.groupby(by)["unit"].idxmin()].set_index(by)["value"]
    last = rows.loc[rows.groupby(by)["unit"].idxmax()].set_index(by)["value"]
    return (first / last).rename(name or f"{stat}_first_over_last").reset_index()


def mean_over_units(df: pd.DataFrame, keys, *, stat, direction, tap="sum", name=None) -> pd.DataFrame:
    rows = select(df, tap=tap, direction=direction, stat=stat)
    return rows.groupby(list(keys))["value"].mean().rename(name or f"mean_{stat}").reset_index()


def forward_growth(df: pd.DataFrame, keys, *, stat="ch_var", name=None) -> pd.DataFrame:
    """Forward ``stat`` at the last unit's output over the first unit's input."""
    out = select(df, tap="output", direction="forward", stat=stat)
    inp = select(df, tap="input", direction="forward", stat=stat)
    by = list(keys)
    last = out.loc[out.groupby(by)["unit"].idxmax()].set_index(by)["value"]
    first = inp.loc[inp.groupby(by)["unit"].idxmin()].set_index(by)["value"]
    return (last / first).rename(name or f"{stat}_growth").reset_index()


def stage_boundaries(df: pd.DataFrame) -> list[int]:
    """Unit numbers where a new stage begins (for marking figures)."""
    units = df[["unit", "stage"]].drop_duplicates().sort_values("unit")
    starts = units[units["stage"].diff().fillna(0) != 0]
    return starts["unit"].tolist()


def version_label(df: pd.DataFrame) -> pd.DataFrame:
    """``version`` 1/2 as "V1"/"V2" (the labels of the figures' legends)."""
    df = df.copy()
    df["version"] = "V" + df["version"].astype(int).astype(str)
    return df


def spread(df: pd.DataFrame, index, columns, value: str = "value") -> pd.DataFrame:
    """Long to wide: one row per ``index``, one column per value of ``columns``. NaN values
    stay (``pivot_table`` would drop a diverged net's NaN losses with the net)."""
    index = [index] if isinstance(index, str) else list(index)
    columns = [columns] if isinstance(columns, str) else list(columns)
    return df.set_index(index + columns)[value].unstack(columns)


def paired(table: pd.DataFrame, column: str, depth, **where):
    """V1 and V2 values of ``column`` at ``depth`` (and ``where``), aligned by seed:
    (v1 array, v2 array, seeds); empty when either version is missing."""
    part = table[table["depth"] == depth]
    for key, value in where.items():
        part = part[part[key] == value]
    wide = spread(part, "seed", "version", column)
    if not {1, 2} <= set(wide.columns):
        return np.array([]), np.array([]), []
    return wide[1].to_numpy(float), wide[2].to_numpy(float), wide.index.tolist()


def per_net(df: pd.DataFrame, keys, value: str, how: str = "mean") -> pd.Series:
    """``value`` reduced per net (``keys``): units and steps are not independent samples, so
    every test first reduces them to one number per seed."""
    return df.groupby(list(keys))[value].agg(how)


def write_raw(run, data, cells_table, files: dict) -> None:
    """What every analysis writes first: the run's data in config.json, ``cells.csv`` and
    the merged raw tables ``files`` ({file name: table})."""
    run.update_config(data=data.describe())
    run.write_csv("cells.csv", cells_table)
    for name, table in files.items():
        run.write_csv(name, table)
