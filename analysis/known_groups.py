"""The known-groups check: is a signal measure fit to answer a claim?

A measure that claims to tell good signal propagation from bad must first rank cases whose
answer is known. He et al. 2016 (Table 1, §3) show which shortcuts impede propagation: at 110
layers, scaling the shortcut by 0.5 (with the branch scaled by 1 or by 0.5) and dropping it out
with ratio 0.5 train worse than the identity shortcut or fail, and their eq. 7 says why -- a
shortcut scale lambda compounds to prod lambda over the units, exponentially small. So at
initialisation, at the deepest depth of a series, a measure must rank the identity shortcut
(the original unit) ahead of each of these three.

The rule, declared before any data (``KNOWN_GROUPS``, ``MEASURES`` of
``analysis.shortcut_variants``): for each measure, each series' deepest depth and each known
comparison, a one-sided paired-by-seed t test of identity − variant in the measure's "better"
direction (``analysis.claims.paired_difference``, margin 0) must be *supported*. A measure
passes when every one of its comparisons does. No multiplicity adjustment: the measure passes
only if each test rejects on its own (an intersection-union test, level 5% as it stands).

``known_groups.csv``: one row per measure, depth and comparison (``KNOWN_GROUPS_COLUMNS``).
``gate(...)``: what a claim whose measure failed reads instead of an answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims as C

KNOWN_GROUPS_FILE = "known_groups.csv"
KNOWN_GROUPS_EXPERIMENT = "shortcut_variants"
KNOWN_GROUPS_COLUMNS = ["measure", "better", "depth", "comparison", "effect", "ci_low", "ci_high",
                        "p_value", "n", "verdict", "passed", "measure_passed", "note", "reason",
                        "text"]
BETTER = ("higher", "lower")


@dataclass(frozen=True)
class Measure:
    """A per-net column and which way is better propagation."""
    name: str
    column: str
    better: str
    text: str

    def __post_init__(self):
        if self.better not in BETTER:
            raise ValueError(f"unknown direction {self.better!r}; valid: {', '.join(BETTER)}")


@dataclass(frozen=True)
class KnownGroup:
    """``good`` must rank ahead of ``bad`` (shortcut names), because of ``reason``."""
    good: str
    bad: str
    reason: str


def comparison_rows(table: pd.DataFrame, measure: Measure, group: KnownGroup, depth, *,
                    shortcut="shortcut") -> dict:
    """One known-groups test: ``table`` holds one row per net with columns ``depth``, ``seed``,
    ``shortcut`` and the measure's column."""
    part = table[table["depth"] == depth]
    wide = part.set_index(["seed", shortcut])[measure.column].unstack(shortcut)
    if not {group.good, group.bad} <= set(wide.columns):
        result = C.not_testable(0, f"no {group.good}/{group.bad} pair at {depth} layers")
    else:
        pair = wide[[group.good, group.bad]].dropna(how="all")
        direction = "greater" if measure.better == "higher" else "less"
        result = C.paired_difference(pair[group.good], pair[group.bad], direction=direction)
    return {"measure": measure.name, "better": measure.better, "depth": int(depth),
            "comparison": f"{group.good} − {group.bad}", "effect": result.effect,
            "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value,
            "n": result.n, "verdict": result.verdict, "passed": result.verdict == C.SUPPORTED,
            "note": result.note, "reason": group.reason, "text": measure.text}


def check(table: pd.DataFrame, measures, groups, depths, *, shortcut="shortcut") -> pd.DataFrame:
    """Every measure x depth x known comparison (``KNOWN_GROUPS_COLUMNS``); ``measure_passed``:
    the measure passed every one of its comparisons. ``shortcut``: the column naming a net's
    shortcut."""
    rows = [comparison_rows(table, m, g, d, shortcut=shortcut) for m in measures for d in depths
            for g in groups]
    out = pd.DataFrame(rows)
    out["measure_passed"] = out.groupby("measure")["passed"].transform("all")
    return out[KNOWN_GROUPS_COLUMNS]


def read_known_groups(path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable known-groups table ({exc})") from None
    missing = [c for c in KNOWN_GROUPS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; required: "
                         f"{', '.join(KNOWN_GROUPS_COLUMNS)}")
    return df


def summary(known: pd.DataFrame | None, measure: str) -> str:
    """The measure's known-groups result in words, e.g. "passed (3 of 3 comparisons at 110
    layers ...)" or "failed: identity − dropout_0.5 at 1001 layers inconclusive (...)"."""
    if known is None or known.empty:
        return "no known-groups check in these results"
    rows = known[known["measure"] == measure]
    if rows.empty:
        return f"{measure} is not one of the known-groups check's measures"
    ok = rows["passed"].astype(bool)
    where = ", ".join(str(int(d)) for d in sorted(rows["depth"].unique()))
    if ok.all():
        return f"passed ({len(rows)} of {len(rows)} comparisons supported at {where} layers)"
    failed = rows[~ok]
    parts = [f"{r['comparison']} at {int(r['depth'])} layers {r['verdict']} "
             f"({_num(r['effect'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
             + (f"; {r['note']}" if isinstance(r.get("note"), str) and r["note"] else "") + ")"
             for _, r in failed.iterrows()]
    return f"failed: {int((~ok).sum())} of {len(rows)} comparisons not supported: " + "; ".join(parts)


def passed(known: pd.DataFrame | None, measure: str) -> bool:
    if known is None or known.empty:
        return False
    rows = known[known["measure"] == measure]
    return bool(len(rows)) and bool(rows["passed"].astype(bool).all())


def gate(known: pd.DataFrame | None, measure: str) -> str:
    """"" if ``measure`` passed the known-groups check; else the reason a claim that rests on it
    is *not testable here*: "measure not validated: ..."."""
    if passed(known, measure):
        return ""
    return f"measure not validated: {measure} — {summary(known, measure)}"


def gated_rows(rows: pd.DataFrame, known: pd.DataFrame | None, column="known_group") -> pd.DataFrame:
    """Claims rows with a ``known_group`` (the measure they rest on): where that measure did
    not pass the check, the verdict becomes not testable here and the note says why (the
    numbers stay). Rows without one are unchanged."""
    if column not in rows.columns:
        return rows
    rows = rows.copy()
    for i, name in rows[column].items():
        if not isinstance(name, str) or not name:
            continue
        reason = gate(known, name)
        if reason and rows.at[i, "verdict"] != C.NOT_TESTABLE:
            rows.at[i, "verdict"] = C.NOT_TESTABLE
            rows.at[i, "note"] = reason
    return rows


def _num(x) -> str:
    x = float(x)
    return "—" if not np.isfinite(x) else f"{x:.3g}"
