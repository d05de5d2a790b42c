"""Write the a-priori power analysis into the plan, before the confirmatory run.

    python experiments/plan_power.py                  # plans/plan.json from results/exploratory
    python experiments/plan_power.py --plan FILE --results DIR

For every primary of the plan: the sd of the paired differences over the exploratory seeds
(results/exploratory, seeds 0-4), the expected effect (He et al.'s, or the exploratory
one, said which), the test set's own floor, the seeds needed for 80% power one-sided at 5%
and the seeds the CPU budget allows (``make reproduce`` <= 3 h on 2 cores, each experiment's
cost as its exploratory reference measured it); a primary the
budget cannot power is declared untestable in the plan. Also the fresh confirmatory seeds per
experiment. The logic lives in analysis/power.py; the plan's hash changes with what this
writes, so run it before the confirmatory run, never after.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import EXPERIMENTS, experiment  # noqa: E402
from analysis.confirmatory import settings  # noqa: E402
from analysis.plan import PLAN, read_plan  # noqa: E402
from analysis.power import (EXPLORATORY, allocate, confirmatory_seeds,  # noqa: E402
                            measured_costs, power_at, primary_power, read_reference)
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402
from resnet_lab.io.folders import atomic_write  # noqa: E402

# The confirmatory run's CPU budget: the 3 h on 2 cores that `make reproduce` may take (issue
# 37). Each experiment's cost is what its exploratory reference measured (its config.json);
# each experiment publishes on its own, so the run may also be made one experiment at a time.
BUDGET_SECONDS, BUDGET_CORES = 3 * 3600, 2
# Experiments that test no claim and calibrate the instruments instead run on the exploratory
# seeds only, not in the confirmatory run.
CALIBRATION = {"shortcut_variants": "the known-groups check (He et al.'s Table 1 shortcuts) "
               "calibrates the signal measures and tests no claim: its comparisons were declared "
               "before its data (issue 36) and it runs once, on the exploratory seeds; the "
               "confirmatory seeds go to the claims"}


def power_plan(plan: dict, results) -> dict:
    """``plan`` with its power records, untestable declarations and confirmatory seeds."""
    references = {}
    needed = {}
    for i, entry in enumerate(plan["primaries"]):
        name = entry["experiment"]
        if name not in references:
            references[name] = read_reference(results, name)
        entry["power"] = primary_power(entry, *references[name])
        needed.setdefault(name, []).append((i, entry["power"]["seeds_needed"]))
    steps = {name: settings(name, plan).get("steps") for name in EXPERIMENTS}
    confirmatory = [name for name in EXPERIMENTS if name not in CALIBRATION]
    per_seed, fixed, source = measured_costs(results, confirmatory, scaled=needed, steps=steps)
    budget = {"seconds": BUDGET_SECONDS, "cores": BUDGET_CORES, "seconds_per_seed": per_seed,
              "fixed_seconds": fixed, "source": source}
    seeds, dropped = allocate(needed, budget)
    for i, entry in enumerate(plan["primaries"]):
        name = entry["experiment"]
        entry["power"]["seeds_allowed"] = seeds[name]
        entry["power"]["power_at_allowed"] = power_at(entry["power"], seeds[name])
        entry["untestable"] = dropped.get((name, i), "")
        if entry["untestable"] == "no number of seeds resolves it":
            entry["untestable"] = _why_unresolvable(entry["power"])
    # an experiment without primaries keeps its quick preset's count (its cost is fixed above)
    counts = {name: seeds.get(name, len(experiment(name).presets["quick"]["seeds"]))
              for name in confirmatory}
    cost = sum(fixed.values()) + sum(per_seed[n] * k for n, k in seeds.items())
    plan["budget"] = {**budget, "planned_seconds": round(cost)}
    plan["seeds"]["confirmatory"] = confirmatory_seeds(counts, EXPERIMENTS)
    plan["exploratory_only"] = dict(CALIBRATION)
    return plan


def _why_unresolvable(power: dict) -> str:
    if power["sd_paired"] is None:
        return f"{power['expected_from']}: nothing to plan its power from"
    if power["test_set_floor_sd"] and power["distance"] is not None:
        return (f"the test set's own sd {power['test_set_floor_sd']:.2g} (no number of seeds "
                f"averages it out) cannot resolve {power['distance']:.2g}")
    return "the expected effect lies on the threshold: no number of seeds resolves it"


def main(argv=None) -> int:
    parser = Parser(prog="experiments/plan_power.py", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=PLAN, help="plan file (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=EXPLORATORY,
                        help="the exploratory references (default: %(default)s)")
    args = parser.parse_args(argv)
    plan = power_plan(read_plan(args.plan), args.results)
    atomic_write(args.plan, json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
    for e in plan["primaries"]:
        p = e["power"]
        print(f"{e['claim']} {e['measure']} {e['depths'][0]}: sd {p['sd_paired']}, floor "
              f"{p['test_set_floor_sd']}, expected {p['expected_effect']} "
              f"({p['expected_from'].split(' ')[0]}), needs {p['seeds_needed']}, gets "
              f"{p['seeds_allowed']}, power {p['power_at_allowed']}"
              + (f" -- UNTESTABLE: {e['untestable']}" if e["untestable"] else ""))
    print(f"seeds: {plan['seeds']['confirmatory']}; planned {plan['budget']['planned_seconds']} s")
    print(f"wrote {args.plan}")
    return 0


if __name__ == "__main__":
    run_main(main)
