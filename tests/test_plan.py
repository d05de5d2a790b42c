"""The frozen plan (issue 37): one source for the primaries, fresh confirmatory seeds, the plan's
hash in every run, and the a-priori power analysis -- checked against numpy/scipy by hand and
against the committed references it was computed from."""
import copy
import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import EXPERIMENTS, PAPER
from analysis import claims as C
from analysis import early_training as ET
from analysis import full_training as FT
from analysis import unit_ablation as UA
from analysis import confirmatory as Q
from analysis import plan as P
from analysis import power as W
from resnet_lab.io.folders import RunDir

ROOT = P.ROOT


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_experiments_read_their_primaries_from_the_plan():
    plan = P.read_plan()
    assert ET.PRIMARY == P.primaries("early_training")
    assert FT.PRIMARY == P.primaries("full_training")
    assert list(UA.PRIMARY.values()) == P.primaries("unit_ablation")
    # every entry belongs to an experiment and says its window, role and power
    for e in plan["primaries"]:
        assert e["experiment"] in EXPERIMENTS and len(e["depths"]) == 1
        assert e["window"] and e["role"] in P.PLAN_ROLES and "seeds_needed" in e["power"]


def test_confirmatory_seeds_are_fresh_and_no_two_experiments_share_a_net():
    exploratory = set(P.seeds("early_training", "exploratory"))
    blocks = {name: set(P.seeds(name)) for name in EXPERIMENTS if name not in Q.exploratory_only(P.read_plan())}
    assert set(blocks) | set(Q.exploratory_only(P.read_plan())) == set(EXPERIMENTS)
    for name, seeds in blocks.items():
        assert seeds and not seeds & exploratory, name
    names = list(blocks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not blocks[a] & blocks[b], (a, b)
    # T2 on nets of its own: unit_ablation's original / full_preact nets at 110 layers are
    # full_training's V1 / V2 nets when their seeds coincide (the exploratory references did)
    assert not blocks["unit_ablation"] & blocks["full_training"]
    with pytest.raises(ValueError, match="valid: exploratory, confirmatory"):
        P.seeds("full_training", "pilot")


def test_a_run_records_the_plan_it_was_made_under(tmp_path):
    run = RunDir.create("x", {"a": 1}, out=tmp_path, run_id="r")
    P.record_plan(run)
    config = run.config
    assert config["plan_file"] == "plans/plan.json"
    assert config["plan_sha256"] == P.plan_hash() == \
        __import__("hashlib").sha256((ROOT / "plans" / "plan.json").read_bytes()).hexdigest()
    assert P.plan_mismatch(config, P.plan_hash()) == ""
    assert P.plan_mismatch(config, "f" * 64).startswith("not answered: run made under plan")
    assert "before any plan" in P.plan_mismatch({}, P.plan_hash())


def test_a_run_under_the_plan_answers_only_with_its_seeds_and_settings():
    """After the freeze, a quick-preset run records the current plan too: it answers only if it
    used the plan's confirmatory seeds and the plan's settings (a longer warm-up, say)."""
    plan = {"seeds": {"confirmatory": {"early_training": [400, 401, 402]}},
            "settings": {"early_training": {"warmup_steps": 150, "reason": "why"}}, "primaries": []}
    sha = "a" * 64
    good = {"plan_sha256": sha, "preset": {"seeds": [400, 401, 402], "warmup_steps": 150}}
    assert Q.run_differs(good, plan, "early_training") == ""
    exploratory = {"plan_sha256": sha, "preset": {"seeds": [0, 1, 2], "warmup_steps": 150}}
    why = Q.run_differs(exploratory, plan, "early_training")
    assert why.startswith("not answered") and "seeds [0, 1, 2] (the plan's: [400, 401, 402])" in why
    short_warmup = {"plan_sha256": sha, "preset": {"seeds": [400, 401, 402], "warmup_steps": 50}}
    assert "warmup_steps 50 (the plan's: 150)" in Q.run_differs(short_warmup, plan, "early_training")
    assert Q.settings("early_training", plan) == {"warmup_steps": 150}     # the reason is not an option


def test_every_run_records_the_plan_it_runs_under():
    source = (ROOT / "analysis" / "runner.py").read_text()
    body = source.split("def run_experiment")[1].split("\ndef ")[0]
    assert "record_plan(run)" in body


def test_a_bad_plan_is_refused(tmp_path):
    plan = P.read_plan()
    plan["primaries"][0]["direction"] = "bigger"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="valid: greater, less"):
        P.read_plan(path)
    with pytest.raises(ValueError, match="unreadable plan"):
        P.read_plan(tmp_path / "missing.json")


def _summary(gap, noise, test=0.02, n=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n):
        base = test + rng.normal(0, 0.002)
        for v in (1, 2):
            rows.append(dict(depth=110, version=v, seed=s,
                             test_error=base + (gap if v == 1 else 0) + rng.normal(0, noise),
                             err_late=0.1 + (gap if v == 1 else 0) + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def _entry(**kw):
    base = dict(claim="C9", experiment="full_training", measure="err_late", text="t",
                direction="greater", margin=0.0, margin_reason="r", depths=[110],
                paper_effect=None, paper_source="s", requires=[], on_test_set=False,
                version=None, null=0.0, untestable="", role="primary", window="w")
    return {**base, **kw}


def test_power_from_the_exploratory_spread_by_hand():
    table = _summary(0.03, 0.01)
    rec = W.primary_power(_entry(), table, None)
    wide = table.pivot(index="seed", columns="version", values="err_late")
    d = (wide[1] - wide[2]).to_numpy()
    assert rec["sd_paired"] == pytest.approx(np.std(d, ddof=1), abs=1e-6)
    assert rec["expected_effect"] == pytest.approx(d.mean(), abs=1e-6)
    assert rec["expected_from"].startswith("exploratory")
    n = rec["seeds_needed"]
    by_hand = lambda k: (stats.t(k - 1).ppf(0.95) + stats.t(k - 1).ppf(0.8)) * d.std(ddof=1) / math.sqrt(k)
    assert by_hand(n) <= abs(d.mean()) and (n == 3 or by_hand(n - 1) > abs(d.mean()))
    # He et al.'s effect, where they give one, is what the plan expects
    rec = W.primary_power(_entry(paper_effect=0.02), table, None)
    assert rec["expected_effect"] == 0.02 and rec["expected_from"] == "He et al."
    # power at n seeds: the noncentral t by hand
    se = rec["sd_paired"] / math.sqrt(7)
    assert W.power_at(rec, 7) == pytest.approx(stats.nct(6, 0.02 / se).sf(stats.t(6).ppf(0.95)),
                                               abs=1e-5)


def test_a_fixed_test_set_floors_the_power_whatever_the_seeds():
    """He et al.'s 0.24 points on 360 test images: no number of seeds resolves it (the floor
    sqrt(2 p (1 - p) / 360) is not divided by sqrt(seeds)); on a million images it can."""
    table = _summary(0.0, 0.0001)
    entry = _entry(measure="test_error", on_test_set=True, paper_effect=0.0024)
    small = W.primary_power(entry, table, 360)
    p = table["test_error"].mean()
    assert small["test_set_floor_sd"] == pytest.approx(math.sqrt(2 * p * (1 - p) / 360), rel=0.02)
    assert small["seeds_needed"] is None
    assert W.primary_power(entry, table, 10**7)["seeds_needed"] is not None


def test_the_budget_declares_the_costliest_primary_untestable():
    budget = {"seconds": 1000, "seconds_per_seed": {"a": 10, "b": 20}, "fixed_seconds": {"c": 100}}
    seeds, dropped = W.allocate({"a": [(0, 4), (1, 60)], "b": [(2, 12), (3, None)]}, budget)
    # a needs 60 (600 s) and b 12 (240 s) + 100 = 940 fits; 60 x 10 is the costliest when it does not
    assert seeds == {"a": 60, "b": 12} and set(dropped) == {("b", 3)}
    seeds, dropped = W.allocate({"a": [(0, 4), (1, 90)], "b": [(2, 12)]}, budget)
    assert seeds == {"a": W.MIN_SEEDS, "b": 12} and ("a", 1) in dropped
    assert "needs 90 seeds" in dropped[("a", 1)]


def test_an_experiment_with_no_testable_primary_gives_seeds_back_before_a_primary_is_dropped():
    budget = {"seconds": 950, "seconds_per_seed": {"a": 100, "b": 100}, "fixed_seconds": {}}
    # a needs 6 seeds (600 s); b tests nothing: its 5 would overrun (1100 s), 4 too, so it runs 3
    seeds, dropped = W.allocate({"a": [(0, 6)], "b": [(1, None)]}, budget)
    assert seeds == {"a": 6, "b": 3} and set(dropped) == {("b", 1)}
    # a primary needing 9 overruns even with b at 3 (1200 s): it goes, a keeps MIN_SEEDS for
    # its other primary, and b gives back to 4
    seeds, dropped = W.allocate({"a": [(0, 9), (2, 3)], "b": [(1, None)]}, budget)
    assert set(dropped) == {("a", 0), ("b", 1)} and seeds == {"a": W.MIN_SEEDS, "b": 4}
    # with room to spare nothing is given back
    seeds, _ = W.allocate({"a": [(0, 6)], "b": [(1, None)]}, {**budget, "seconds": 1100})
    assert seeds == {"a": 6, "b": W.MIN_SEEDS}


def test_the_committed_plan_is_what_plan_power_writes_from_the_references():
    """The frozen power analysis is reproducible: run on the committed plan and the exploratory
    references (results/exploratory: kept there once the confirmatory run replaces them in
    results/paper), plan_power writes the same plan."""
    plan = P.read_plan()
    again = _script("plan_power").power_plan(copy.deepcopy(plan), W.EXPLORATORY)
    assert json.dumps(again, sort_keys=True) == json.dumps(plan, sort_keys=True)
    cost = sum(again["budget"]["fixed_seconds"].values()) + sum(
        again["budget"]["seconds_per_seed"][n] * len(P.seeds(n))
        for n in again["budget"]["seconds_per_seed"])
    assert cost <= again["budget"]["seconds"] <= 3 * 3600       # make reproduce <= 3 h (issue 37)


def test_the_budget_costs_are_the_references_measured_wall_times(tmp_path):
    """Per seed for the experiments whose nets scale with the seeds, whole for the others;
    a reference without its wall time is refused, naming the command that remakes it."""
    for name, wall, seeds in (("a", 1000.0, [0, 1, 2, 3, 4]), ("b", 90.4, [0, 1, 2])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(
            {"wall_seconds": wall, "machine": "cpu X", "preset": {"seeds": seeds}}))
    per_seed, fixed, source = W.measured_costs(tmp_path, ["a", "b"], scaled={"a"})
    assert per_seed == {"a": 200.0} and fixed == {"b": 90} and "cpu X" in source
    (tmp_path / "a" / "config.json").write_text(json.dumps(
        {"wall_seconds": 1000.0, "preset": {"seeds": [0, 1, 2, 3, 4], "steps": 200}}))
    # the confirmatory run trains 300 updates where the reference trained 200: 1.5x the cost
    assert W.measured_costs(tmp_path, ["a", "b"], scaled={"a"}, steps={"a": 300})[0] == {"a": 300.0}
    (tmp_path / "b" / "config.json").write_text(json.dumps({"preset": {"seeds": [0]}}))
    with pytest.raises(ValueError, match="no wall_seconds: rerun experiments/b.py"):
        W.measured_costs(tmp_path, ["a", "b"], scaled={"a"})


def test_reproduce_confirmatory_runs_each_experiment_with_the_plans_seeds(tmp_path, monkeypatch):
    """``reproduce.py --confirmatory`` passes each experiment the plan's fresh seeds (the quick
    presets keep the exploratory ones); nothing is trained here: the runs are recorded."""
    reproduce = _script("reproduce")
    calls = []
    monkeypatch.setattr(reproduce, "run", lambda script, *args: calls.append((script, args)) or (0, 0.0))
    assert reproduce.main(["--confirmatory", "--paper", str(tmp_path)]) == 0
    left_out = Q.exploratory_only(P.read_plan())
    assert not [s for s, _ in calls if s[:-3] in left_out]      # calibration: exploratory seeds only
    for name in (n for n in EXPERIMENTS if n not in left_out):
        (args,) = [a for s, a in calls if s == f"{name}.py"]
        i = args.index("--seeds")
        assert [int(x) for x in args[i + 1:i + 1 + len(P.seeds(name))]] == P.seeds(name)
        for option, value in Q.settings(name, P.read_plan()).items():        # and the plan's settings
            flag = f"--{option.replace('_', '-')}"
            assert args[args.index(flag) + 1] == str(value)
    calls.clear()
    assert reproduce.main(["--paper", str(tmp_path)]) == 0
    assert not any("--seeds" in a for _, a in calls)
    # by default the confirmatory run publishes the references, the quick presets beside them
    for argv, folder in ((["--confirmatory"], PAPER), ([], W.EXPLORATORY)):
        calls.clear()
        assert reproduce.main(argv) == 0
        (args,) = [a for s, a in calls if s == "full_training.py"]
        assert args[args.index("--publish") + 1] == str(folder / "full_training")
