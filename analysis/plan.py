"""The plan: every primary test, frozen in one committed file before the confirmatory data.

``plans/plan.json`` is the one source of the primary tests (claim, experiment, measure, window,
depths, direction, margin and its reason, He et al.'s effect, the controls it needs, its role),
of the seeds (the exploratory ones that chose the design, the fresh confirmatory ones per
experiment) and of the a-priori power analysis (``experiments/plan_power.py`` writes it from
the exploratory seeds' spread). The experiments build their :class:`analysis.claims.Primary`
declarations from it (:func:`primaries`), so a margin is written once; each run records the
plan's path and sha256 in its config.json (:func:`record_plan`), and the report answers a claim
only from runs made under the current plan (:func:`plan_mismatch`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .claims import DIRECTIONS, Primary

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "plans" / "plan.json"
PLAN_ROLES = ("primary", "secondary")
# The fields of a plan entry that make its Primary (the rest -- experiment, window, role,
# power -- are the plan's own record).
_PRIMARY_FIELDS = ("claim", "measure", "text", "direction", "margin", "margin_reason", "depths",
                   "paper_effect", "paper_source", "requires", "on_test_set", "version", "null",
                   "untestable", "role", "window")


def read_plan(path=PLAN) -> dict:
    """The plan at ``path`` (ValueError naming the file when it is not one)."""
    path = Path(path)
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable plan ({exc})") from None
    for key in ("primaries", "seeds"):
        if key not in plan:
            raise ValueError(f"{path}: the plan has no {key!r}")
    for entry in plan["primaries"]:
        if entry.get("direction") not in DIRECTIONS:
            raise ValueError(f"{path}: {entry.get('claim')} {entry.get('measure')}: direction "
                             f"{entry.get('direction')!r}; valid: {', '.join(DIRECTIONS)}")
        if entry.get("role", "primary") not in PLAN_ROLES:
            raise ValueError(f"{path}: {entry.get('claim')}: role {entry.get('role')!r}; valid: "
                             f"{', '.join(PLAN_ROLES)}")
    return plan


def plan_hash(path=PLAN) -> str:
    """sha256 of the plan file's bytes: what a run records and the report compares."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def short(sha: str | None) -> str:
    return (sha or "none")[:10]


def primary_of(entry: dict) -> Primary:
    """One plan entry as the :class:`Primary` the experiment tests."""
    kw = {k: entry[k] for k in _PRIMARY_FIELDS if k in entry}
    kw["depths"] = tuple(int(d) for d in kw["depths"])
    kw["requires"] = tuple(kw.get("requires", ()))
    return Primary(**kw)


def primaries(experiment: str, path=PLAN) -> list[Primary]:
    """The plan's primary tests of ``experiment``, in the plan's order."""
    return [primary_of(e) for e in read_plan(path)["primaries"] if e["experiment"] == experiment]


def seeds(experiment: str, kind: str = "confirmatory", path=PLAN) -> list[int]:
    """The plan's ``kind`` seeds (exploratory or confirmatory) of ``experiment``."""
    table = read_plan(path)["seeds"]
    if kind not in table:
        raise ValueError(f"unknown kind of seeds {kind!r}; valid: {', '.join(table)}")
    chosen = table[kind]
    return list(chosen[experiment] if isinstance(chosen, dict) else chosen)


def record_plan(run, path=PLAN) -> None:
    """Record in the run's config.json the plan it is made under: path and sha256."""
    path = Path(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    run.update_config(plan_file=str(shown), plan_sha256=plan_hash(path))


def plan_mismatch(config: dict, current: str) -> str:
    """"" when ``config`` (a run's) was made under the plan of sha256 ``current``; else why
    the report will not answer from it."""
    made = config.get("plan_sha256")
    if made == current:
        return ""
    if not made:
        return (f"not answered: run made before any plan (exploratory), current plan "
                f"{short(current)}")
    return f"not answered: run made under plan {short(made)}, current plan {short(current)}"
