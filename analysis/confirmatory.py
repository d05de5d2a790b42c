"""The confirmatory run as the plan (``plans/plan.json``) fixes it: each experiment's fresh seeds
and its settings beyond the quick preset, the experiments it leaves out, and whether a run was
made as the plan says.

``reproduce.py --confirmatory`` launches each experiment with :func:`confirmatory_args`; the
report answers a claim only from runs for which :func:`run_mismatch` is empty. Nothing here
makes a result: a run's settings are what its ``config.json`` records.
"""
from __future__ import annotations

from .plan import PLAN, plan_mismatch, read_plan, seeds, short


def settings(experiment: str, path=PLAN, plan: dict | None = None) -> dict:
    """The plan's settings of ``experiment``'s confirmatory run beyond its quick preset's
    (``plan["settings"][experiment]``, e.g. a longer warm-up), {option: value}; its
    ``reason`` is the plan's record, not an option."""
    plan = read_plan(path) if plan is None else plan
    chosen = (plan.get("settings") or {}).get(experiment) or {}
    return {k: v for k, v in chosen.items() if k != "reason"}


def exploratory_only(path=PLAN) -> dict:
    """{experiment: why}: the experiments the confirmatory run leaves out (they test no claim)."""
    return dict(read_plan(path).get("exploratory_only") or {})


def confirmatory_args(experiment: str, path=PLAN) -> list[str]:
    """The command-line options of ``experiment``'s confirmatory run: the plan's fresh seeds
    and its settings (``--warmup-steps 150``)."""
    args = ["--seeds", *map(str, seeds(experiment, path=path))]
    for option, value in settings(experiment, path).items():
        args += [f"--{option.replace('_', '-')}", str(value)]
    return args


def run_mismatch(config: dict, current: str, plan: dict | None = None,
                 experiment: str | None = None) -> str:
    """"" when ``config`` (a run's) was made under the plan of sha256 ``current``
    (``plan.plan_mismatch``) -- and, given the ``plan`` and the ``experiment``, with the plan's
    confirmatory seeds and settings (a quick-preset run made after the freeze records the plan
    too, with the exploratory seeds); else why the report will not answer from it."""
    why = plan_mismatch(config, current)
    if why or plan is None or experiment is None:
        return why
    run = config.get("preset") or {}
    want = {"seeds": list((plan["seeds"].get("confirmatory") or {}).get(experiment, [])),
            **settings(experiment, plan=plan)}
    differ = [f"{k} {run.get(k)} (the plan's: {v})" for k, v in want.items() if run.get(k) != v]
    return (f"not answered: run made under plan {short(current)} but not as it says: "
            f"{'; '.join(differ)}") if differ else ""
