"""The verdict rule and the statistics behind it, on synthetic data with a known effect and
against independent computations (scipy, hand-derived Holm)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import claims as C
from analysis.claims import INCONCLUSIVE, NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED


def _arms(effect, n=5, noise=0.05, level=1.0, seed=0):
    """Seed-paired arms: b around ``level``, a = b + effect + paired noise."""
    rng = np.random.default_rng(seed)
    b = level + rng.normal(0, 0.1, n)
    return b + effect + rng.normal(0, noise, n), b


# --------------------------------------------------------------------------- verdict rule
@pytest.mark.parametrize("effect, expected", [(0.5, SUPPORTED), (-0.5, NOT_SUPPORTED)])
def test_paired_verdict_on_known_effect(effect, expected):
    a, b = _arms(effect)
    assert C.paired_difference(a, b, direction="greater").verdict == expected
    # the same data claimed the other way round mirror the verdict
    assert C.paired_difference(b, a, direction="less").verdict == expected


@pytest.mark.parametrize("direction, threshold", [("greater", 0.05), ("less", -0.05),
                                                  ("noninferior", 0.05)])
def test_one_threshold_decides_both_answers(direction, threshold):
    """An effect just beyond the threshold with a tight interval is supported, one just short
    of it not supported -- the same margin decides both, either side."""
    above = direction == "greater"
    for delta, expected in ((0.01, SUPPORTED), (-0.01, NOT_SUPPORTED)):
        shift = delta if above else -delta             # "beyond" is up for greater, down else
        a, b = _arms(threshold + shift, n=8, noise=0.001)
        res = C.paired_difference(a, b, direction=direction, margin=0.05)
        assert res.verdict == expected, (delta, res)
        # the bound on the claimed side and p agree: p < 0.05 exactly when that bound is beyond
        bound = res.ci_low if above else res.ci_high
        assert (res.p_value < 0.05) == ((bound > threshold) if above else (bound < threshold))


@pytest.mark.parametrize("args, direction, margin, expected", [
    ((0.3, 0.1, 0.5, 0.01), "greater", 0.05, SUPPORTED),
    ((0.3, -0.1, 0.7, 0.10), "greater", 0.05, INCONCLUSIVE),
    ((-0.3, -0.5, -0.1, 0.99), "greater", 0.05, NOT_SUPPORTED),
    ((0.01, -0.02, 0.04, 0.30), "greater", 0.05, NOT_SUPPORTED),        # short of the margin
    ((0.03, 0.01, 0.06, 0.20), "greater", 0.05, INCONCLUSIVE),          # above 0, not the margin
    ((-0.3, -0.5, -0.1, 0.01), "less", 0.05, SUPPORTED),
    ((0.0, -0.02, 0.02, 0.90), "less", 0.05, NOT_SUPPORTED),
    ((0.01, -0.02, 0.04, 0.01), "noninferior", 0.05, SUPPORTED),
    ((0.08, 0.06, 0.10, 0.99), "noninferior", 0.05, NOT_SUPPORTED),     # worse by > margin
    ((0.04, 0.00, 0.08, 0.20), "noninferior", 0.05, INCONCLUSIVE),
    ((0.01, -0.02, 0.04, 0.01), "equivalent", 0.05, SUPPORTED),
    ((0.09, 0.06, 0.12, 0.99), "equivalent", 0.05, NOT_SUPPORTED),
    ((math.nan, 0.1, 0.5, 0.01), "greater", 0.0, INCONCLUSIVE),
])
def test_verdict_rule_table(args, direction, margin, expected):
    assert C.verdict(*args, direction=direction, margin=margin) == expected


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid: greater"):
        C.verdict(1, 0, 2, 0.01, direction="two-sided")
    with pytest.raises(ValueError, match="margin"):
        C.verdict(1, 0, 2, 0.01, margin=-1)


def test_rules_are_published_from_the_module_text():
    assert "not supported" in C.VERDICT_RULE and "noninferior" in C.VERDICT_RULE
    assert C.CLAIM_RULE.startswith("not testable here") and "C3" in C.C7_RULE


# --------------------------------------------------------------------------- the tests
def test_paired_and_noninferior_match_scipy():
    a, b = _arms(0.02, n=6)
    res = C.paired_difference(a, b, direction="noninferior", margin=0.05)
    d = a - b
    assert res.effect == pytest.approx(d.mean())
    lo, hi = stats.ttest_1samp(d, 0).confidence_interval(0.90)    # two one-sided 95% bounds
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    assert res.p_value == pytest.approx(stats.ttest_1samp(d - 0.05, 0, alternative="less").pvalue)


def test_welch_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 0.2, 5), rng.normal(0.5, 0.4, 7)
    res = C.independent_difference(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert res.p_value == pytest.approx(ref.pvalue) and res.n == 12


def test_one_sample_reports_mean_minus_null():
    res = C.one_sample([0.05, 0.06, 0.04, 0.05, 0.055], null=0.01)
    assert res.effect == pytest.approx(0.041) and res.verdict == SUPPORTED
    assert C.one_sample([0.002, 0.003, 0.001, 0.002, 0.002], null=0.01).verdict == NOT_SUPPORTED


def test_fit_line_matches_linregress():
    x = np.arange(10.0)
    y = 0.5 * x + 1 + np.random.default_rng(0).normal(0, 0.1, 10)
    res, intercept, r2 = C.fit_line(x, y, null=0.5, direction="equivalent", margin=0.1)
    ref = stats.linregress(x, y)
    assert res.effect == pytest.approx(ref.slope - 0.5) and intercept == pytest.approx(ref.intercept)
    assert r2 == pytest.approx(ref.rvalue ** 2) and res.verdict == SUPPORTED


def test_degenerate_inputs_are_inconclusive_not_errors():
    assert C.paired_difference([1.0], [0.0]).verdict == INCONCLUSIVE
    assert C.paired_difference([1.0, 1.0], [0.0, 0.0]).verdict == INCONCLUSIVE   # zero variance
    assert C.paired_difference([1.0, math.nan, 2], [0.0, 0.0, 0]).verdict == INCONCLUSIVE


def test_holm_matches_a_hand_computation():
    p = [0.01, 0.04, 0.03, math.nan]
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(.., 2*0.03), max(.., 1*0.04)
    assert np.allclose(C.holm(p)[:3], [0.03, 0.06, 0.06]) and math.isnan(C.holm(p)[3])


def test_holm_turns_a_marginal_primary_test():
    rows = []
    for depth, effect in ((20, 0.30), (56, 0.30)):
        a, b = _arms(effect, n=5, noise=0.35, seed=depth)
        rows.append(C.claim_row("C9", "primary", "x", "m", depth, C.paired_difference(a, b)))
    rows.append(C.claim_row("C9", "secondary", "x", "m", 110, C.paired_difference(*_arms(0.3))))
    raw = [r["p_value"] for r in rows[:2]]
    C.apply_holm(rows)
    assert [r["p_holm"] for r in rows[:2]] == pytest.approx(list(C.holm(raw)))
    assert math.isnan(rows[2]["p_holm"])                     # secondary rows are not adjusted
    assert all(r["p_holm"] >= p for r, p in zip(rows, raw))


# --------------------------------------------------------------------------- power
def test_detectable_effect_matches_the_textbook_formula():
    sd, n = 0.02, 5
    by_hand = (stats.t(4).ppf(0.95) + stats.t(4).ppf(0.80)) * sd / math.sqrt(n)
    assert C.detectable_effect(sd, n) == pytest.approx(by_hand)
    a, b = _arms(0.3, n=5, noise=0.02)
    res = C.paired_difference(a, b)
    assert res.detectable == pytest.approx(C.detectable_effect(np.std(a - b, ddof=1), 5))
    # a floor (the test set's own noise) adds to the mean's variance, not divided by n
    sd = np.std(a - b, ddof=1)
    assert C.paired_difference(a, b, sd_floor=0.01).detectable == pytest.approx(
        (stats.t(4).ppf(0.95) + stats.t(4).ppf(0.80)) * math.sqrt(sd ** 2 / 5 + 0.01 ** 2))
    # ... so no number of seeds takes the detectable effect below (t_.95 + t_.80) * floor
    assert C.detectable_effect(0.02, 10**6, floor=0.01) > 0.0248


def test_seeds_needed_is_the_fewest_that_detect_the_distance():
    """Against a brute search over n with the textbook formula; None where the floor forbids."""
    for sd, distance in ((0.05, 0.03), (0.02, 0.05), (0.1, 0.02)):
        n = C.seeds_needed(sd, distance)
        z = lambda k: (stats.t(k - 1).ppf(0.95) + stats.t(k - 1).ppf(0.80)) * sd / math.sqrt(k)
        assert z(n) <= distance and (n == 3 or z(n - 1) > distance)
    assert C.seeds_needed(0.01, 0.0024, floor=0.0093) is None        # 2.49 x floor > distance
    assert C.seeds_needed(0.01, 0.0, floor=0.0) is None


def test_test_set_sd_is_the_binomial_sd_of_a_difference():
    assert C.test_set_sd([0.02] * 5, [0.04] * 5, 360) == pytest.approx(
        math.sqrt((0.02 * 0.98 + 0.04 * 0.96) / 360))


def _primary(**kw):
    base = dict(claim="C9", measure="m", text="m, V1 − V2", direction="greater", margin=0.0,
                margin_reason="r", depths=(56,), paper_effect=0.02, paper_source="s")
    return C.Primary(**{**base, **kw})


def _table(effect, noise, seed=0):
    a, b = _arms(effect, n=5, noise=noise, seed=seed)
    return pd.DataFrame([dict(depth=56, version=v, seed=s, m=x)
                         for s in range(5) for v, x in ((1, a[s]), (2, b[s]))])


def test_power_is_never_checked_after_the_data():
    """A noisy primary that the plan did not declare untestable is tested -- inconclusive,
    not dropped; one the plan declared untestable keeps its numbers, marked as the plan's."""
    clear = C.primary_rows(_table(0.02, 0.001), _primary(), experiment="x")[0]
    assert clear["verdict"] == SUPPORTED and clear["detectable"] < 0.02
    noisy = C.primary_rows(_table(0.02, 0.05), _primary(), experiment="x")[0]
    assert noisy["verdict"] != NOT_TESTABLE and noisy["detectable"] > 0.02
    declared = C.primary_rows(_table(0.02, 0.001), _primary(untestable="needs 64 seeds"),
                              experiment="x")[0]
    assert declared["verdict"] == NOT_TESTABLE and math.isfinite(declared["effect"])
    assert declared["note"] == f"{C.PLAN_UNTESTABLE}: needs 64 seeds"
    # the distance a test must resolve: from the expected effect to the threshold, either side
    assert _primary(margin=0.005).resolvable() == pytest.approx(0.015)
    assert _primary(direction="noninferior", margin=0.05, paper_effect=0.0).resolvable() == 0.05
    assert _primary(direction="noninferior", margin=0.05).resolvable(0.08) == pytest.approx(0.03)
    assert _primary(paper_effect=None).resolvable() is None


def test_a_failed_control_turns_its_dependent_primary_into_not_testable():
    table = _table(0.3, 0.01)
    needs = _primary(requires=("B",))
    failed = {"B": "V1-110: 2 of 5 nets fit"}
    row = C.primary_rows(table, needs, experiment="x", failed_controls=failed)[0]
    assert row["verdict"] == NOT_TESTABLE and row["note"] == "control B failed: V1-110: 2 of 5 nets fit"
    # a control the test does not need changes nothing
    other = C.primary_rows(table, _primary(requires=("A",)), experiment="x", failed_controls=failed)
    assert other[0]["verdict"] == SUPPORTED


def test_claim_rule_and_c7():
    frame = lambda *words: pd.DataFrame({"verdict": words, "note": [""] * len(words)})
    planned = f"{C.PLAN_UNTESTABLE}: the test set's own noise"
    assert C.claim_verdict(frame(SUPPORTED, SUPPORTED)) == SUPPORTED
    # only a primary the plan declared untestable in advance stays out of the vote ...
    assert C.claim_verdict(pd.DataFrame({"verdict": [SUPPORTED, NOT_TESTABLE],
                                         "note": ["", planned]})) == SUPPORTED
    # ... one not testable after the data (a failed control) makes the claim inconclusive
    assert C.claim_verdict(pd.DataFrame({"verdict": [SUPPORTED, NOT_TESTABLE],
                                         "note": ["", "control B failed: 2 of 5"]})) == INCONCLUSIVE
    assert C.claim_verdict(pd.DataFrame({"verdict": [NOT_TESTABLE], "note": [planned]})) == NOT_TESTABLE
    assert C.claim_verdict(frame(SUPPORTED, NOT_SUPPORTED)) == NOT_SUPPORTED
    assert C.claim_verdict(frame(SUPPORTED, INCONCLUSIVE)) == INCONCLUSIVE
    assert C.claim_verdict(frame(NOT_TESTABLE, NOT_TESTABLE)) == NOT_TESTABLE
    assert C.derive_c7({"C3": SUPPORTED, "C5": SUPPORTED}) == SUPPORTED
    assert C.derive_c7({"C3": SUPPORTED, "C5": NOT_SUPPORTED}) == NOT_SUPPORTED
    assert C.derive_c7({"C3": NOT_TESTABLE, "C5": SUPPORTED}) == NOT_TESTABLE
    assert C.derive_c7({"C3": INCONCLUSIVE, "C5": SUPPORTED}) == INCONCLUSIVE


def test_claims_file_round_trip_and_validation(tmp_path):
    rows = [C.claim_row("C3", "primary", "e", "m", 1001, C.paired_difference(*_arms(0.5)),
                        margin_reason="why", dataset="digits")]
    path = C.write_claims(tmp_path / "run", rows)
    back = C.read_claims(path)
    assert list(back.columns[:len(C.CLAIMS_COLUMNS)]) == C.CLAIMS_COLUMNS
    assert back.loc[0, "verdict"] == SUPPORTED and back.loc[0, "dataset"] == "digits"
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["claims.csv"]    # no temp file left
    path.write_text("claim,effect\nC3,1\n")
    with pytest.raises(ValueError, match="missing claims columns"):
        C.read_claims(path)
    with pytest.raises(ValueError, match="valid: primary"):
        C.claim_row("C3", "main", "e", "m", 1, C.paired_difference(*_arms(0.5)))
