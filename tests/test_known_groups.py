"""The known-groups rule (analysis.known_groups) on synthetic nets whose answer is known, and
the gate a claim goes through when its measure failed."""
import numpy as np
import pandas as pd

from analysis import claims as C
from analysis import known_groups as G

GROUPS = [G.KnownGroup("identity", "scaled", "known bad"),
          G.KnownGroup("identity", "dropped", "known bad")]
GOOD = G.Measure("good", "good", "higher", "ranks identity first")
WRONG = G.Measure("wrong", "wrong", "lower", "lower is better, but identity is higher")
BLIND = G.Measure("blind", "blind", "higher", "cannot tell them apart")


def _nets(seeds=5, depth=110):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for shortcut, level in (("identity", 0.0), ("scaled", -3.0), ("dropped", -6.0)):
            rows.append({"depth": depth, "seed": seed, "shortcut": shortcut,
                         "good": level + 0.1 * rng.standard_normal(),
                         "wrong": level + 0.1 * rng.standard_normal(),
                         "blind": rng.standard_normal()})
    return pd.DataFrame(rows)


def test_the_rule_passes_a_measure_that_ranks_the_known_groups_and_fails_the_others():
    known = G.check(_nets(), [GOOD, WRONG, BLIND], GROUPS, [110])
    assert list(known.columns) == G.KNOWN_GROUPS_COLUMNS and len(known) == 6
    by = known.groupby("measure")["measure_passed"].first()
    assert by["good"] and not by["wrong"] and not by["blind"]
    wrong = known[known["measure"] == "wrong"]
    assert (wrong["verdict"] == C.NOT_SUPPORTED).all()          # the ranking is reversed
    assert (known.loc[known["measure"] == "good", "effect"] > 2.5).all()
    assert G.passed(known, "good") and G.gate(known, "good") == ""
    assert G.gate(known, "wrong").startswith("measure not validated: wrong — failed: 2 of 2")


def test_a_missing_comparison_or_check_fails_the_measure():
    nets = _nets()
    known = G.check(nets[nets["shortcut"] != "dropped"], [GOOD], GROUPS, [110])
    assert not G.passed(known, "good")
    assert known.loc[known["comparison"] == "identity − dropped", "verdict"].item() == C.NOT_TESTABLE
    assert G.gate(None, "good") == "measure not validated: good — no known-groups check in these results"


def test_the_gate_turns_a_claim_on_an_unvalidated_measure_into_not_testable():
    known = G.check(_nets(), [GOOD, WRONG], GROUPS, [110])
    rows = pd.DataFrame([
        {"claim": "C2", "role": "primary", "verdict": C.SUPPORTED, "note": "", "known_group": "good",
         "effect": -1.0},
        {"claim": "C4", "role": "primary", "verdict": C.SUPPORTED, "note": "", "known_group": "wrong",
         "effect": 0.1},
        {"claim": "C3", "role": "primary", "verdict": C.SUPPORTED, "note": "", "known_group": np.nan,
         "effect": 0.2}])
    out = G.gated_rows(rows, known)
    assert list(out["verdict"]) == [C.SUPPORTED, C.NOT_TESTABLE, C.SUPPORTED]
    assert out.loc[1, "note"].startswith("measure not validated: wrong")
    assert out.loc[1, "effect"] == 0.1                          # the numbers stay
    assert C.claim_verdict(out[out["claim"] == "C4"]) == C.NOT_TESTABLE
