"""A run folder read back in one call: ``load_run(path)`` -> its config and tables.

    from resnet_lab.runs.results import load_run
    run = load_run("results/paper/early_training")
    run.config["preset"]; run.summary.head(); run["claims"]
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..io.folders import RunDir, read_table
class _Tables(Mapping):
    """``{name: DataFrame}`` of a folder's tables, each read (``read_table``) when first
    asked for: a run's probe table can be large, and most uses read one or two tables."""

    def __init__(self, folder, names):
        self._folder, self._names, self._read = Path(folder), list(names), {}

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(f"no table {name!r} in {self._folder}; tables: {', '.join(self._names) or 'none'}")
        if name not in self._read:
            self._read[name] = read_table(self._folder, name)
        return self._read[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __repr__(self):
        return f"tables({', '.join(self._names)})"


class RunResults:
    """A run folder read back: ``.config`` (config.json as a dict), ``.tables`` (every
    ``*.csv`` / ``*.csv.gz`` by name without the suffix), and each table as ``run.probe`` or
    ``run["probe"]``."""

    def __init__(self, path, config: dict, tables: Mapping):
        self.path, self.config, self.tables = Path(path), config, tables

    @property
    def status(self) -> str:
        """completed, diverged, failed, interrupted (also: killed), or running (alive)."""
        return RunDir(self.path).status()

    def __getitem__(self, name):
        return self.tables[name]

    def __getattr__(self, name):
        tables = self.__dict__.get("tables")
        if tables is not None and name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or table {name!r}"
                             + (f"; tables: {', '.join(tables)}" if tables is not None else ""))

    def __repr__(self):
        return f"RunResults({str(self.path)!r}, tables: {', '.join(self.tables) or 'none'})"


def load_run(path) -> RunResults:
    """Read the run folder ``path``: its config.json and (lazily) all its tables.
    ValueError if the folder or its config.json is missing or unreadable."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path} not found: is {path} a run folder?")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: unreadable ({err})") from None
    stems = sorted(f.name[: -len(suffix)] for f in path.iterdir() if f.is_file()
                   for suffix in (".csv", ".csv.gz") if f.name.endswith(suffix))
    return RunResults(path, config, _Tables(path, dict.fromkeys(stems)))


# Columns and metrics that measure the machine, not the net: left out of comparisons.
TIMING_COLUMNS = ("seconds", "peak_memory_bytes")
TIMING_METRICS = ("seconds",)


def comparable(df):
    """``df`` without wall times and memory (columns, and rows of metric ``seconds``)."""
    if "metric" in df.columns:
        df = df[~df["metric"].isin(TIMING_METRICS)]
    return df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns]).reset_index(drop=True)


def compare_runs(a, b) -> list[str]:
    """The differences between the tables two run folders share (timing aside), as lines;
    empty when every shared table is equal, value for value."""
    import pandas as pd
    first, second = load_run(a), load_run(b)
    lines = [f"only in {p}: {name}" for p, x, y in ((a, first, second), (b, second, first))
             for name in x.tables if name not in y.tables]
    for name in sorted(set(first.tables) & set(second.tables)):
        x, y = comparable(first[name]), comparable(second[name])
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=True)
        except AssertionError as err:
            lines.append(f"{name}: " + " ".join(str(err).split())[:300])
    return lines
