"""The confirmatory run as the plan (``plans/plan.json``, read by ``analysis.plan.read_plan``)
fixes it: each experiment's fresh seeds and its settings beyond the quick preset, the
experiments it leaves out, and whether a run was made as the plan says.

``reproduce.py --confirmatory`` launches each experiment with :func:`confirmatory_args`; the
report answers a claim only from runs made under the plan (``analysis.plan.plan_mismatch``) for
which :func:`run_differs` is empty. Nothing here makes a result: a run's settings are what its
``config.json`` records. Every function takes the plan as read (a dict).
"""
from __future__ import annotations


def settings(experiment: str, plan: dict) -> dict:
    """The plan's settings of ``experiment``'s confirmatory run beyond its quick preset's
    (``plan["settings"][experiment]``, e.g. a longer warm-up), {option: value}; its
    ``reason`` is the plan's record, not an option."""
    chosen = (plan.get("settings") or {}).get(experiment) or {}
    return {k: v for k, v in chosen.items() if k != "reason"}


def exploratory_only(plan: dict) -> dict:
    """{experiment: why}: the experiments the confirmatory run leaves out (they test no claim)."""
    return dict(plan.get("exploratory_only") or {})


def seeds(experiment: str, plan: dict) -> list[int]:
    """The plan's confirmatory seeds of ``experiment``."""
    return list((plan["seeds"].get("confirmatory") or {}).get(experiment, []))


def confirmatory_args(experiment: str, plan: dict) -> list[str]:
    """The command-line options of ``experiment``'s confirmatory run: the plan's fresh seeds
    and its settings (``--warmup-steps 150``)."""
    args = ["--seeds", *map(str, seeds(experiment, plan))]
    for option, value in settings(experiment, plan).items():
        args += [f"--{option.replace('_', '-')}", str(value)]
    return args


def run_differs(config: dict, plan: dict, experiment: str) -> str:
    """"" when ``config`` (a run made under ``plan``) used the plan's confirmatory seeds and
    settings for ``experiment`` (a quick-preset run made after the freeze records the plan too,
    with the exploratory seeds); else why the report will not answer from it."""
    run = config.get("preset") or {}
    want = {"seeds": seeds(experiment, plan), **settings(experiment, plan)}
    differ = [f"{k} {run.get(k)} (the plan's: {v})" for k, v in want.items() if run.get(k) != v]
    return ("not answered: run made under the current plan but not as it says: "
            + "; ".join(differ)) if differ else ""
