"""A probed step's values as tidy rows (DESIGN.md's probe schema, plus ``layer``).

``step()`` leaves one record per probed step: its number, one flat float64 array (the step's
one host transfer) and the layout of that array -- a list of ``(kind, seen)`` parts:

* ``forward`` / ``backward``: len(TENSOR_STATS) x n_slots values; ``seen``: which slots had a
  tensor this step;
* ``cut``: the shortcut_cut numerator of every unit;
* ``weight_input``: len(WEIGHT_INPUT_STATS) x n_layers values; ``seen``: which layers ran;
* ``params``: every unit's parameter-gradient norm;
* ``path``: per stage, the sums of ``identity_path.SUMS``; ``seen``: per stage (first unit,
  last unit of its identity path, forward seen, backward seen), (-1, -1, 0, 0) without one.

Rows are built only when asked (``collect()``), so a probed step costs no pandas.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats as S
from .identity_path import SUMS as PATH_SUMS
from .tap_index import OUTPUT, PER_UNIT, TAP_INDEX

PROBE_COLUMNS = ["step", "unit", "stage", "index", "tap", "direction", "stat", "value", "layer"]
_DTYPES = ["int64", "int64", "int64", "int64", "object", "object", "object", "float64", "object"]


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(PROBE_COLUMNS, _DTYPES)})


class RowBuilder:
    """Turns records into rows, reporting only the probe's ``taps`` and ``stats``."""

    def __init__(self, index, taps, stats, weight_meta=()):
        self.meta = np.array(index.slot_meta, dtype=object)
        self.unit_meta = np.array([index.unit_meta(u, "params") for u in range(len(index.units))], dtype=object)
        self.weight_meta = np.array(weight_meta, dtype=object)
        self.taps, self.stats = taps, stats
        self.want_tap = np.isin(self.meta[:, 3], taps)

    def frame(self, step, host, layout) -> pd.DataFrame:
        """The rows of one record (see the module docstring)."""
        pieces, pos, parts = [], 0, {}
        for kind, seen in layout:
            size = len(seen) if kind == "path" else self._size(kind)
            parts[kind] = (host[pos: pos + size], None if seen is None else np.asarray(seen))
            pos += size
        for kind in ("forward", "backward"):
            if kind in parts:
                pieces += self._tensor_rows(kind, *parts[kind])
        if "weight_input" in parts:
            pieces += self._weight_input_rows(*parts["weight_input"])
        if "params" in parts:
            pieces.append(rows(self.unit_meta, "backward", "grad_norm", parts["params"][0]))
        pieces += self._cut_rows(parts)
        pieces += self._path_rows(parts)
        df = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=PROBE_COLUMNS)
        df.insert(0, "step", step)
        return df[PROBE_COLUMNS]

    def _size(self, kind):
        return {"forward": len(S.TENSOR_STATS) * len(self.meta), "backward": len(S.TENSOR_STATS) * len(self.meta),
                "cut": len(self.unit_meta), "params": len(self.unit_meta),
                "weight_input": len(S.WEIGHT_INPUT_STATS) * len(self.weight_meta)}[kind]

    def _tensor_rows(self, direction, values, seen):
        block = values.reshape(len(S.TENSOR_STATS), len(self.meta))
        keep = seen & self.want_tap
        return [rows(self.meta[keep], direction, stat, block[k][keep])
                for k, stat in enumerate(S.TENSOR_STATS) if stat in self.stats]

    def _weight_input_rows(self, values, seen):
        block = values.reshape(len(S.WEIGHT_INPUT_STATS), -1)
        return [rows(self.weight_meta[seen], "forward", stat, block[k][seen])
                for k, stat in enumerate(S.WEIGHT_INPUT_STATS) if stat in self.stats]

    def _cut_rows(self, parts):
        """The ``CUT`` statistics at every measured ``sum`` tap."""
        if "sum" not in self.taps:
            return []
        sum_slots = np.arange(TAP_INDEX["sum"], len(self.meta), PER_UNIT)
        slots_of = {tap: sum_slots - TAP_INDEX["sum"] + TAP_INDEX[tap] for tap in TAP_INDEX}
        pieces = []
        for stat in S.CUT:
            if stat.name not in self.stats or stat.direction not in parts \
                    or ("cut_energy" in stat.needs and "cut" not in parts):
                continue
            values, seen = parts[stat.direction]
            norm = values.reshape(len(S.TENSOR_STATS), len(self.meta))[S.TENSOR_STATS.index("norm")]
            keep = seen[sum_slots]
            for tap in stat.taps:
                keep = keep & seen[slots_of[tap]]
            units = S.UnitSums(lambda tap: norm[slots_of[tap]], parts.get("cut", (None,))[0])
            pieces.append(rows(self.meta[sum_slots][keep], stat.direction, stat.name, stat.formula(units)[keep]))
        return pieces


    def _path_rows(self, parts):
        """The ``PATH`` statistics of each stage with an identity path, at the ``output`` tap of
        its last unit."""
        if "path" not in parts or "output" not in self.taps:
            return []
        values, seen = parts["path"]
        values, seen = values.reshape(-1, len(PATH_SUMS)), seen.reshape(-1, 4)
        first, last, forward, backward = seen.T
        has = first >= 0
        meta = self.meta[last * PER_UNIT + OUTPUT]
        sums = dict(zip(PATH_SUMS, values.T))
        cut = self._grad_cut(parts.get("backward"))
        pieces = []
        for stat in S.PATH:
            if stat.name not in self.stats:
                continue
            keep = has & (forward > 0 if stat.direction == "forward" else backward > 0)
            chain_cut = ()
            if stat.name == "path_share_indep":    # every unit on the path measured backward
                keep = np.array([h and cut is not None and bool(cut[0][f: l + 1].all())
                                 for f, l, h in zip(first, last, has)], dtype=bool)
                chain_cut = [cut[1][f: l + 1] for f, l in zip(first[keep], last[keep])]
            path = S.PathSums(*(sums[name][keep] for name in PATH_SUMS), chain_cut=chain_cut)
            pieces.append(rows(meta[keep], stat.direction, stat.name, stat.formula(path)))
        return pieces

    def _grad_cut(self, backward):
        """(measured, grad_cut) of every unit from the backward norms at its sum and output
        taps, or None without a backward part."""
        if backward is None:
            return None
        values, seen = backward
        norm = values.reshape(len(S.TENSOR_STATS), len(self.meta))[S.TENSOR_STATS.index("norm")]
        slot = {tap: np.arange(TAP_INDEX[tap], len(self.meta), PER_UNIT) for tap in ("sum", "output")}
        units = S.UnitSums(lambda tap: norm[slot[tap]])
        return seen[slot["sum"]] & seen[slot["output"]], S.DECLARED["grad_cut"].formula(units)


def rows(meta, direction, stat, values) -> pd.DataFrame:
    """One statistic at the places ``meta`` lists (rows of unit, stage, index, tap, layer)."""
    return pd.DataFrame({"unit": meta[:, 0].astype(np.int64), "stage": meta[:, 1].astype(np.int64),
                         "index": meta[:, 2].astype(np.int64), "tap": meta[:, 3],
                         "direction": direction, "stat": stat,
                         "value": np.asarray(values, dtype=np.float64), "layer": meta[:, 4]})
