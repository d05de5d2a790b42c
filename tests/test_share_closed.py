"""analysis.claims.share_closed: the share of V1's slow start an intervention closes, with
Fieller's bounds checked against a hand computation and against the t test they invert."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from analysis import claims as C

V1 = np.array([0.90, 0.85, 0.88])
V2 = np.array([0.65, 0.65, 0.58])
ARM = np.array([0.70, 0.60, 0.73])        # d = v1 − arm = .20, .25, .15; e = v1 − v2 = .25, .20, .30


def test_fieller_by_hand():
    r = C.share_closed(V1, ARM, V2)
    # by hand: d̄ = 0.2, ē = 0.25, s_dd = s_ee = 0.0025, s_de = −0.0025, n = 3, t = t_{.95, 2}
    t2 = 2.919985580353726 ** 2
    a = 0.25 ** 2 - t2 * 0.0025 / 3
    b = 0.2 * 0.25 + t2 * 0.0025 / 3
    c = 0.2 ** 2 - t2 * 0.0025 / 3
    lo, hi = (b - math.sqrt(b * b - a * c)) / a, (b + math.sqrt(b * b - a * c)) / a
    assert r.effect == pytest.approx(0.8, rel=1e-12)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-9)
    assert r.method.startswith("Fieller") and r.verdict == C.SUPPORTED
    assert r.p_value == pytest.approx(stats.ttest_1samp(V1 - ARM, 0, alternative="greater").pvalue)


def test_fieller_bounds_invert_the_t_test():
    rng = np.random.default_rng(4)
    v1 = 0.85 + 0.03 * rng.standard_normal(6)
    v2 = 0.30 + 0.05 * rng.standard_normal(6)
    arm = 0.50 + 0.08 * rng.standard_normal(6)
    r = C.share_closed(v1, arm, v2)
    crit = stats.t(5).ppf(0.95)
    d, e = v1 - arm, v1 - v2
    for bound in (r.ci_low, r.ci_high):       # at a bound, t of d − R e is exactly ±crit
        assert abs(stats.ttest_1samp(d - bound * e, 0).statistic) == pytest.approx(crit, rel=1e-7)
    inside = (r.ci_low + r.ci_high) / 2
    assert abs(stats.ttest_1samp(d - inside * e, 0).statistic) < crit
    assert r.ci_low < r.effect < r.ci_high


def test_unbounded_fieller_falls_back_to_the_paired_bootstrap():
    v1 = np.array([0.9, 0.9, 0.9])
    v2 = np.array([0.5, 1.2, 0.95])           # the V1 − V2 gap is not significant
    arm = np.array([0.8, 0.7, 0.85])
    assert math.isnan(C.fieller_bounds(v1 - arm, v1 - v2)[0])
    r = C.share_closed(v1, arm, v2)
    assert "bootstrap" in r.method
    d, e = v1 - arm, v1 - v2
    ratios = [d[list(i)].mean() / e[list(i)].mean() for i in itertools.product(range(3), repeat=3)
              if e[list(i)].mean() != 0]
    assert (r.ci_low, r.ci_high) == pytest.approx((np.quantile(ratios, 0.05),
                                                   np.quantile(ratios, 0.95)))
