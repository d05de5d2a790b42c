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


def test_an_effect_inside_the_margin_is_not_supported_even_when_significant():
    a, b = _arms(0.01, n=8, noise=0.001)
    res = C.paired_difference(a, b, margin=0.05)
    assert res.ci_low > 0 and res.p_value < 0.05 and res.ci_high <= 0.05
    assert res.verdict == NOT_SUPPORTED
    assert C.paired_difference(a, b, margin=0.0).verdict == SUPPORTED


@pytest.mark.parametrize("args, direction, margin, expected", [
    ((0.3, 0.1, 0.5, 0.01), "greater", 0.05, SUPPORTED),
    ((0.3, -0.1, 0.7, 0.10), "greater", 0.05, INCONCLUSIVE),
    ((-0.3, -0.5, -0.1, 0.99), "greater", 0.05, NOT_SUPPORTED),
    ((0.01, -0.02, 0.04, 0.30), "greater", 0.05, NOT_SUPPORTED),        # at most negligible
    ((0.01, -0.02, 0.04, 0.01), "noninferior", 0.05, SUPPORTED),
    ((0.08, 0.06, 0.10, 0.99), "noninferior", 0.05, NOT_SUPPORTED),     # worse by > margin
    ((0.04, 0.00, 0.08, 0.20), "noninferior", 0.05, INCONCLUSIVE),
    ((0.01, -0.02, 0.04, 0.01), "equivalent", 0.05, SUPPORTED),
    ((0.3, 0.1, 0.5, 0.01), "two-sided", 0.0, SUPPORTED),
    ((math.nan, 0.1, 0.5, 0.01), "greater", 0.0, INCONCLUSIVE),
])
def test_verdict_rule_table(args, direction, margin, expected):
    assert C.verdict(*args, direction=direction, margin=margin) == expected


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid: greater"):
        C.verdict(1, 0, 2, 0.01, direction="bigger")
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
    lo, hi = stats.ttest_1samp(d, 0).confidence_interval(0.95)
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


@pytest.mark.parametrize("a, b, ca, cb, expected", [
    ([300] * 5, [10, 12, 9, 15, 11], [True] * 5, [False] * 5, SUPPORTED),   # V1 never got there
    ([300] * 5, [300] * 5, [True] * 5, [True] * 5, INCONCLUSIVE),          # all censored
    ([300, 300, 300, 20, 30], [300, 300, 300, 10, 12], [True, True, True, False, False],
     [True, True, True, False, False], INCONCLUSIVE),                      # mostly censored
    ([10, 12, 9, 15, 11], [30, 40, 50, 60, 70], [False] * 5, [False] * 5, NOT_SUPPORTED),
])
def test_censored_sign_test(a, b, ca, cb, expected):
    res = C.paired_censored(a, b, censored_a=ca, censored_b=cb)
    assert res.verdict == expected, res


def test_claim_rule_and_c7():
    frame = lambda *words: pd.DataFrame({"verdict": words})
    assert C.claim_verdict(frame(SUPPORTED, SUPPORTED)) == SUPPORTED
    assert C.claim_verdict(frame(SUPPORTED, NOT_TESTABLE)) == SUPPORTED
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
