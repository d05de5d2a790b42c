"""The verdict rule and the statistics behind it, on synthetic data with a known effect."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import claims as C
from analysis.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED


def _arms(effect, n=5, noise=0.05, level=1.0, seed=0):
    """Seed-paired arms: b around ``level``, a = b + effect + paired noise."""
    rng = np.random.default_rng(seed)
    b = level + rng.normal(0, 0.1, n)
    return b + effect + rng.normal(0, noise, n), b


# --------------------------------------------------------------------------- verdict rule
@pytest.mark.parametrize("effect, expected", [(0.5, {SUPPORTED}),
                                              (0.0, {NOT_SUPPORTED, INCONCLUSIVE}),
                                              (-0.5, {NOT_SUPPORTED})])
def test_paired_verdict_on_known_effect(effect, expected):
    a, b = _arms(effect)
    assert C.paired_difference(a, b, alternative="greater").verdict in expected
    # the same data, claimed the other way round, mirror the verdict
    mirrored = C.paired_difference(b, a, alternative="less")
    assert mirrored.verdict == C.paired_difference(a, b, alternative="greater").verdict


def test_no_effect_with_tight_ci_is_not_supported():
    a, b = _arms(0.0, n=8, noise=0.005)
    res = C.paired_difference(a, b)
    assert res.ci_high <= res.margin and res.verdict == NOT_SUPPORTED


def test_tiny_significant_effect_below_margin_is_not_supported():
    a, b = _arms(0.01, n=8, noise=0.001)  # margin 5% of ~1 = 0.05
    res = C.paired_difference(a, b)
    assert res.ci_low > 0 and res.p_value < 0.05
    assert res.verdict == NOT_SUPPORTED
    assert C.paired_difference(a, b, margin=0).verdict == SUPPORTED


@pytest.mark.parametrize("args, direction, margin, n, expected", [
    ((1.0, 0.5, 1.5, 0.001), "greater", 0.0, 5, SUPPORTED),
    ((1.0, 0.5, 1.5, 0.2), "greater", 0.0, 5, INCONCLUSIVE),      # p too large
    ((0.2, -0.1, 0.5, 0.01), "greater", 0.0, 5, INCONCLUSIVE),    # CI covers 0
    ((-1.0, -1.5, -0.5, 0.99), "greater", 0.0, 5, NOT_SUPPORTED),  # opposite side
    ((0.01, -0.02, 0.04, 0.3), "greater", 0.05, 5, NOT_SUPPORTED),  # negligible
    ((0.01, -0.02, 0.04, 0.3), "greater", 0.05, 2, INCONCLUSIVE),   # too few for negligible
    ((-1.0, -1.5, -0.5, 0.001), "less", 0.0, 5, SUPPORTED),
    ((1.0, 0.5, 1.5, 0.99), "less", 0.0, 5, NOT_SUPPORTED),
    ((-1.0, -1.5, -0.5, 0.001), "two-sided", 0.0, 5, SUPPORTED),
    ((0.0, -0.01, 0.01, 0.9), "two-sided", 0.05, 5, NOT_SUPPORTED),
    ((0.0, -0.01, 0.01, 0.9), "two-sided", 0.0, 5, INCONCLUSIVE),
    ((0.0, -0.01, 0.01, 0.001), "equivalent", 0.05, 5, SUPPORTED),
    ((0.5, 0.3, 0.7, 0.9), "equivalent", 0.05, 5, NOT_SUPPORTED),
    ((0.04, 0.0, 0.08, 0.3), "equivalent", 0.05, 5, INCONCLUSIVE),
    ((math.nan, math.nan, math.nan, math.nan), "greater", 0.0, 1, INCONCLUSIVE),
    ((1.0, 1.0, 1.0, math.nan), "greater", 0.0, 5, INCONCLUSIVE),  # zero variance
])
def test_verdict_rule_table(args, direction, margin, n, expected):
    assert C.verdict(*args, direction=direction, margin=margin, n=n) == expected


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid: greater"):
        C.verdict(1, 0, 2, 0.01, direction="bigger")
    with pytest.raises(ValueError, match="margin"):
        C.verdict(1, 0, 2, 0.01, margin=-1)


def test_rule_text_is_published():
    assert "not supported" in C.VERDICT_RULE and "inconclusive" in C.VERDICT_RULE
    assert C.VERDICT_RULE in C.__doc__


# --------------------------------------------------------------------------- against scipy
def _t_ci(mean, se, df, alpha=0.05):
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return mean - half, mean + half


def test_paired_matches_independent_computation():
    a, b = _arms(0.2, n=6, noise=0.1, seed=3)
    res = C.paired_difference(a, b, alternative="greater")
    d = a - b
    lo, hi = _t_ci(d.mean(), d.std(ddof=1) / np.sqrt(d.size), d.size - 1)
    assert res.effect == pytest.approx(d.mean())
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    assert res.p_value == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue)
    assert res.n == 6


def test_welch_matches_independent_computation():
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.3, 0.2, 5), rng.normal(1.0, 0.5, 7)
    res = C.independent_difference(a, b, alternative="two-sided")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    lo, hi = _t_ci(a.mean() - b.mean(), np.sqrt(va + vb), df)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    assert res.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert res.n == 12


def test_one_sample_reports_mean_minus_null():
    x = np.array([0.31, 0.42, 0.37, 0.29, 0.40])
    res = C.one_sample(x, null=0.25, alternative="greater")
    lo, hi = _t_ci(x.mean() - 0.25, x.std(ddof=1) / np.sqrt(5), 4)
    assert res.effect == pytest.approx(x.mean() - 0.25)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    assert res.p_value == pytest.approx(stats.ttest_1samp(x, 0.25, alternative="greater").pvalue)


def test_fit_line_matches_polyfit_and_linregress():
    rng = np.random.default_rng(5)
    x = np.arange(12.0)
    y = 0.7 * x + 2 + rng.normal(0, 0.5, x.size)
    fit = C.fit_line(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    ref = stats.linregress(x, y)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept))
    assert fit.r2 == pytest.approx(ref.rvalue ** 2)
    assert fit.p_value == pytest.approx(ref.pvalue)
    assert (fit.ci_low, fit.ci_high) == pytest.approx(_t_ci(slope, ref.stderr, x.size - 2))
    assert fit.verdict == SUPPORTED
    flat = C.fit_line(x, 2 + rng.normal(0, 0.5, x.size), alternative="greater", margin=0.2)
    assert flat.verdict in (NOT_SUPPORTED, INCONCLUSIVE)


def test_bootstrap_ci_is_deterministic_and_covers_the_effect():
    a, b = _arms(0.3, n=8, noise=0.1)
    one = C.paired_difference(a, b, ci="bootstrap", n_resamples=999)
    two = C.paired_difference(a, b, ci="bootstrap", n_resamples=999)
    assert one == two and one.ci_low < one.effect < one.ci_high
    assert "bootstrap" in one.method
    welch = C.independent_difference(a, b, ci="bootstrap", n_resamples=999)
    assert welch.ci_low < welch.effect < welch.ci_high


def test_degenerate_inputs_are_inconclusive_not_errors():
    assert C.paired_difference([1.0], [0.0]).verdict == INCONCLUSIVE
    same = C.paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # identical differences
    assert same.verdict == INCONCLUSIVE and "zero variance" in same.note
    diverged = C.paired_difference([1.0, np.nan, 2.0], [0.5, 0.5, 0.5])
    assert diverged.verdict == INCONCLUSIVE and diverged.n == 3
    with pytest.raises(ValueError, match="equal lengths"):
        C.paired_difference([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------- rows and files
def test_claim_rows_append_atomically(tmp_path):
    a, b = _arms(0.5)
    rows = [C.claim_row("C3", "early_training", "loss@50", d, C.paired_difference(a, b),
                        dataset="digits") for d in (20, 1001)]
    path = C.append_claims(tmp_path / "run", rows)
    C.append_claims(tmp_path / "run", [C.claim_row("C3", "early_training", "auc", 20,
                                                   C.paired_difference(b, a))])
    df = C.read_claims(path)
    assert list(df.columns[:len(C.CLAIMS_COLUMNS)]) == C.CLAIMS_COLUMNS
    assert len(df) == 3 and "dataset" in df.columns
    assert list(df["verdict"]) == [SUPPORTED, SUPPORTED, NOT_SUPPORTED]
    assert sorted(p.name for p in path.parent.iterdir()) == ["claims.csv"]
    with pytest.raises(ValueError, match="valid: supported"):
        C.append_claims(tmp_path / "run", [{**rows[0], "verdict": "probably"}])
    with pytest.raises(ValueError, match="may not replace"):
        C.claim_row("C3", "e", "m", 20, C.paired_difference(a, b), verdict="supported")


# --------------------------------------------------------------------------- depth threshold
DEPTHS = [20, 56, 110, 164, 1001]


def test_depth_threshold_bracket():
    v = [NOT_SUPPORTED, SUPPORTED, INCONCLUSIVE, SUPPORTED, SUPPORTED]
    t = C.depth_threshold(DEPTHS, v)  # 56 alone does not count: 110 is not significant
    assert (t.depth, t.low, t.high) == (164, 110, 164)
    assert C.threshold_verdict(t, 164) == SUPPORTED
    every = C.depth_threshold(DEPTHS[::-1], [SUPPORTED] * 5)  # order of input is irrelevant
    assert (every.depth, every.low, every.high) == (20, 0, 20)
    assert C.threshold_verdict(every, 164) == NOT_SUPPORTED
    none = C.depth_threshold(DEPTHS, [SUPPORTED] * 4 + [INCONCLUSIVE])
    assert math.isnan(none.depth) and (none.low, none.high) == (1001, math.inf)
    assert C.threshold_verdict(none, 164) == NOT_SUPPORTED
    late = C.depth_threshold(DEPTHS, [NOT_SUPPORTED] * 4 + [SUPPORTED])
    assert C.threshold_verdict(late, 164) == INCONCLUSIVE  # (164, 1001]: could be 200 or 900


def test_depth_threshold_from_per_seed_data():
    rng = np.random.default_rng(0)
    gaps = {20: 0.0, 56: 0.0, 110: 0.0, 164: 1.0, 1001: 2.0}
    diffs = {d: g + rng.normal(0, 0.1, 5) for d, g in gaps.items()}
    verdicts = [C.one_sample(diffs[d], margin=0.2).verdict for d in DEPTHS]
    t = C.depth_threshold(DEPTHS, verdicts, differences=diffs, margin=0.2, n_boot=200)
    assert t.depth == 164 and t.boot_low == 164 and t.boot_high == 164 and t.boot_none == 0
    again = C.depth_threshold(DEPTHS, verdicts, differences=diffs, margin=0.2, n_boot=200)
    assert again == t
    row = C.threshold_row("C5", "early_training", "loss gap threshold", t, claimed_depth=164)
    assert row["verdict"] == SUPPORTED and math.isnan(row["depth"])
    assert (row["ci_low"], row["ci_high"]) == (110, 164)


# --------------------------------------------------------------------------- C7
def _c7_frame(shallow, deep, extra=()):
    rows = [{"claim": claim, "depth": depth, "verdict": word}
            for claim, depth, word in [("C3", 20, shallow), ("C6", 56, shallow),
                                       ("C3", 164, deep), ("C3", 1001, deep),
                                       ("C5", math.nan, NOT_SUPPORTED), *extra]]
    return pd.DataFrame(rows)


def test_derive_c7_follows_its_input():
    assert C.derive_c7(_c7_frame(NOT_SUPPORTED, SUPPORTED)).verdict == SUPPORTED
    assert C.derive_c7(_c7_frame(INCONCLUSIVE, SUPPORTED)).verdict == SUPPORTED
    assert C.derive_c7(_c7_frame(NOT_SUPPORTED, NOT_SUPPORTED)).verdict == NOT_SUPPORTED
    # V2 better everywhere contradicts "V1 for shallow nets"
    assert C.derive_c7(_c7_frame(SUPPORTED, SUPPORTED)).verdict == NOT_SUPPORTED
    assert C.derive_c7(_c7_frame(NOT_SUPPORTED, INCONCLUSIVE)).verdict == INCONCLUSIVE
    assert C.derive_c7(_c7_frame(NOT_SUPPORTED, SUPPORTED)[:0]).verdict == INCONCLUSIVE
    # the split depth is an argument: with deep_from=1001 the 164 row counts as shallow, and
    # one shallow row of three favouring V2 is neither "V1 fine" nor "V1 not fine"
    assert C.derive_c7(_c7_frame(NOT_SUPPORTED, SUPPORTED), deep_from=1001).verdict == INCONCLUSIVE


def test_derive_c7_skips_rows_marked_for_c7_false_and_is_deterministic():
    df = _c7_frame(NOT_SUPPORTED, SUPPORTED,
                   extra=[("C6", 20, SUPPORTED), ("C6", 56, SUPPORTED), ("C6", 110, SUPPORTED)])
    assert C.derive_c7(df).verdict == NOT_SUPPORTED
    df["for_c7"] = [True] * 5 + ["False"] * 3
    result = C.derive_c7(df)
    assert result.verdict == SUPPORTED
    assert result.row()["verdict"] == SUPPORTED and result.row()["n"] == 4
    assert result.reason == C.derive_c7(df.iloc[::-1]).reason
    assert list(result.by_depth["depth"]) == [20, 56, 164, 1001]
