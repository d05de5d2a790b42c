"""The a-priori power analysis of the plan, from the exploratory seeds' spread.

For each primary of ``plans/plan.json`` (one depth each): the per-net values of the exploratory
references (``results/exploratory/<experiment>/summary.csv``, seeds 0-4), the sd of the paired
differences (or of the values, for a one-version measure), the expected effect -- He et al.'s
where they give one in the measure's units, otherwise the exploratory effect, said which --
its distance from the threshold on either side (what the test must resolve to reach a
verdict), the floor a fixed test set puts under the sd (``claims.test_set_sd``: it does not
average out over seeds), and the seeds needed for power 0.8 one-sided at 5%
(``claims.seeds_needed``). Then the CPU budget decides: each experiment gets the seeds its
testable primaries need (at least ``MIN_SEEDS``); an experiment left with no testable primary
runs for its secondary rows only, on what the budget leaves (down to ``FEWEST_SEEDS``); and
where the sum still does not fit the budget the primary that needs the most seeds is declared
untestable in the plan, before the data -- never after.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import claims as C
from .plan import ROOT, primary_of

# The exploratory references (seeds 0-4) the frozen plan's power was computed from: their
# config.json, summary.csv, claims.csv and controls.csv, kept once the confirmatory run has
# replaced them in results/paper, so the plan stays reproducible from committed files.
EXPLORATORY = ROOT / "results" / "exploratory"
MIN_SEEDS = 5           # every experiment runs at least the exploratory count (secondary rows)
# ...unless none of its primaries can be powered: then it answers secondary rows only, and the
# budget goes to the powered primaries first, down to the fewest seeds a paired CI is read from.
FEWEST_SEEDS = 3
# Confirmatory seeds start here, one block per experiment: fresh (the exploratory ones are
# 0-4), and disjoint, so no two experiments train the same net (T2 on nets of its own).
SEED_BLOCK = 100


def _values(summary: pd.DataFrame, entry: dict):
    """(a, b) per seed for a paired measure, or (values, None) for a one-version one."""
    depth = entry["depths"][0]
    at = summary[summary["depth"] == depth]
    if entry["measure"] not in at.columns:   # a measure the exploratory run did not record
        return np.array([]), None
    if "unit_kind" in at.columns:            # unit_ablation: full pre-activation − original
        wide = at.pivot(index="seed", columns="unit_kind", values=entry["measure"])
        wide = wide.reindex(columns=["full_preact", "original"]).dropna()
        return wide["full_preact"].to_numpy(float), wide["original"].to_numpy(float)
    if entry.get("version") is not None:
        x = at.loc[at["version"] == entry["version"], entry["measure"]].to_numpy(float)
        return x - float(entry.get("null", 0.0)), None
    wide = at.pivot(index="seed", columns="version", values=entry["measure"])
    wide = wide.reindex(columns=[1, 2]).dropna()
    return wide[1].to_numpy(float), wide[2].to_numpy(float)


def primary_power(entry: dict, summary: pd.DataFrame, n_test: int | None) -> dict:
    """The power record of one plan entry from the exploratory per-net table."""
    a, b = _values(summary, entry)
    d = a if b is None else a - b
    if d.size < 2:
        return {"exploratory_seeds": int(d.size), "seeds_needed": None, "sd_paired": None,
                "test_set_floor_sd": None, "expected_effect": None, "distance": None,
                "expected_from": (f"no exploratory {entry['measure']} (the references predate it)"
                                  if entry["measure"] not in summary.columns else
                                  f"no exploratory nets at {entry['depths'][0]} layers")}
    sd = float(np.std(d, ddof=1))
    floor = C.test_set_sd(a, b, n_test) if entry.get("on_test_set") and n_test and b is not None \
        else 0.0
    explored = float(np.mean(d)) if d.size else math.nan
    primary = primary_of({**entry, "untestable": "", "role": "primary"})
    if entry.get("paper_effect") is not None:
        expected, source = float(entry["paper_effect"]), "He et al."
    else:
        expected, source = explored, "exploratory (He et al. give no number in these units)"
    distance = primary.resolvable(expected)
    return {"exploratory_seeds": int(d.size), "exploratory_effect": _round(explored),
            "sd_paired": _round(sd), "test_set_floor_sd": _round(floor),
            "expected_effect": _round(expected), "expected_from": source,
            "threshold": C.threshold(entry["direction"], entry["margin"]),
            "distance": _round(distance),
            "seeds_needed": C.seeds_needed(sd, distance, floor)}


def power_at(record: dict, n: int) -> float:
    """The power of the one-sided 5% test with ``n`` seeds to resolve the record's distance
    (noncentral t with the test set's floor added to the mean's variance)."""
    sd, floor, dist = record["sd_paired"], record["test_set_floor_sd"], record["distance"]
    if n < 2 or not all(x is not None and math.isfinite(x) for x in (sd, floor, dist)):
        return None                     # nothing to plan with (JSON has no NaN)
    se = math.sqrt(sd ** 2 / n + floor ** 2)
    if se == 0:
        return 1.0
    crit = stats.t(n - 1).ppf(1 - C.ALPHA)
    return _round(float(stats.nct(n - 1, dist / se).sf(crit)))


def _round(x, digits=6):
    return x if x is None or not math.isfinite(x) else round(float(x), digits)


def allocate(needed: dict, budget: dict) -> tuple[dict, dict]:
    """({experiment: seeds}, {(experiment, index): why untestable}): each experiment gets the
    most seeds any of its testable primaries needs (at least MIN_SEEDS); one with no testable
    primary gives seeds back, down to FEWEST_SEEDS, before any primary is dropped; while the
    total cost still exceeds the budget, the primary needing the most seeds is declared
    untestable. ``needed``: {experiment: [(index, seeds needed or None), ...]}."""
    per_seed, fixed, total = budget["seconds_per_seed"], budget["fixed_seconds"], budget["seconds"]
    out = {k: [(i, n) for i, n in v] for k, v in needed.items()}
    dropped = {}
    for experiment, items in out.items():
        for i, n in items:
            if n is None:
                dropped[(experiment, i)] = "no number of seeds resolves it"

    def cost(seeds):
        return sum(fixed.values()) + sum(per_seed[e] * n for e, n in seeds.items())

    while True:
        testable = {e: [n for i, n in v if (e, i) not in dropped] for e, v in out.items()}
        seeds = {e: max([MIN_SEEDS] + testable[e]) for e in out}
        for e in sorted(out, key=lambda e: -per_seed[e]):     # the costliest gives back first
            while not testable[e] and seeds[e] > FEWEST_SEEDS and cost(seeds) > total:
                seeds[e] -= 1
        live = [(n * per_seed[e], e, i, n) for e, v in out.items() for i, n in v
                if (e, i) not in dropped and n > MIN_SEEDS]
        if cost(seeds) <= total or not live:
            return seeds, dropped
        _, e, i, n = max(live)
        dropped[(e, i)] = f"needs {n} seeds, more than the budget ({total / 3600:g} h) pays for"


def confirmatory_seeds(seeds: dict, order) -> dict:
    """Fresh seeds per experiment: block k (k = 1, 2, ...) starts at k * SEED_BLOCK."""
    return {name: list(range((k + 1) * SEED_BLOCK, (k + 1) * SEED_BLOCK + seeds[name]))
            for k, name in enumerate(order) if name in seeds}


def measured_costs(results, experiments, scaled, steps=None) -> tuple[dict, dict, str]:
    """({experiment: seconds per seed}, {experiment: seconds}, where from): each experiment's
    wall time as its exploratory reference measured it (``config.json``), per seed for the
    ``scaled`` ones (their nets scale with the seeds), whole for the others (their seed count
    is fixed); times ``steps[experiment]`` / the reference's updates where the confirmatory run
    trains longer or shorter (``steps``: {experiment: updates per net})."""
    per_seed, fixed, machines = {}, {}, set()
    for name in experiments:
        config = json.loads((Path(results) / name / "config.json").read_text())
        wall = config.get("wall_seconds")
        if not wall:
            raise ValueError(f"{results}/{name}/config.json records no wall_seconds: rerun "
                             f"experiments/{name}.py --preset quick --publish {results}/{name}")
        machines.add(config.get("machine", "?"))
        preset = config.get("preset") or {}
        if (steps or {}).get(name):
            wall *= steps[name] / preset["steps"]
        seeds = len(preset.get("seeds") or [1])
        if name in scaled:
            per_seed[name] = round(wall / seeds, 1)
        else:
            fixed[name] = round(wall)
    return per_seed, fixed, (f"each exploratory reference's wall time (its config.json; "
                             f"{', '.join(sorted(machines))}); cost linear in seeds and updates")


def read_reference(results, experiment) -> tuple[pd.DataFrame, int | None]:
    """An experiment's exploratory per-net table and its test-set size."""
    folder = Path(results) / experiment
    summary = pd.read_csv(folder / "summary.csv")
    config = json.loads((folder / "config.json").read_text())
    return summary, (config.get("data") or {}).get("test")
