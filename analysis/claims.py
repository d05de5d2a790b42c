"""Verdicts on the article's claims, computed from measured data — never written by hand.

Every experiment reduces its measurements to a few *tests* (an effect with a 95% confidence
interval, a p-value and the number of samples ``n``), turns each into one row of its run
folder's ``claims.csv`` with :func:`claim_row` + :func:`append_claims`, and the report
(:mod:`analysis.report`) reads those rows back. All verdicts go through one rule,
:func:`verdict`, so a reader can check any row by hand from its numbers.

Sign convention: an effect is always "a − b" (or the fitted slope, or mean − null). Seeds
are the unit of replication; where V1 and V2 share a seed (same init stream, same data
order) use :func:`paired_difference`, otherwise :func:`independent_difference`.

Verdict rule
------------
Inputs: effect, its two-sided (1 − alpha) confidence interval [lo, hi], the test's p-value
(one-sided in the claimed direction; for "equivalent" the TOST p-value), n, a practical
margin m ≥ 0 in the effect's units, and the claimed direction:
"greater" (effect > 0), "less" (effect < 0), "two-sided" (effect ≠ 0) or
"equivalent" (|effect| is practically 0, i.e. smaller than m).

1. If the effect, lo, hi or p is NaN (too few samples, zero variance, non-finite data):
   inconclusive.
2. "greater" — flip signs for "less" (effect, lo, hi → −effect, −hi, −lo) and apply the same:
   not supported  if hi < 0 (the CI lies entirely on the opposite side), or
                  if n ≥ 3, m > 0 and hi ≤ m (the effect is at most negligible: the whole
                  CI lies below the margin; this takes precedence over significance);
   supported      if effect > 0, lo > 0 and p < alpha;
   inconclusive   otherwise.
3. "two-sided":
   not supported  if n ≥ 3, m > 0 and −m ≤ lo and hi ≤ m (CI inside the margin);
   supported      if lo > 0 or hi < 0, and p < alpha;
   inconclusive   otherwise.
4. "equivalent":
   supported      if n ≥ 3, m > 0, −m ≤ lo and hi ≤ m, and p < alpha;
   not supported  if lo > m or hi < −m (the CI lies entirely outside the margin);
   inconclusive   otherwise.

The CI is two-sided at level 1 − alpha even for one-sided claims, so "supported" is
conservative (it implies a one-sided p below alpha / 2). Default margin of the two-sample
tests: DEFAULT_REL_MARGIN (5%) of |mean(b)|, the reference arm's level — losses, errors and
variances are positive quantities whose scale the reference sets; pass ``margin=`` for an
absolute one, ``margin=0`` to switch the negligible-effect test off. One-sample tests and
line fits default to margin 0 unless their null is non-zero (then 5% of |null|).


Conventions for experiments (what :func:`derive_c7` relies on)
-----------------------------------------------------------------
* Every depth-wise row of claims C3, C4, C5 and C6 states a V2 advantage: its verdict is
  "supported" when V2 is measurably better than V1 at that depth. A row whose claimed
  direction is something else (e.g. He et al.'s "V2 ends with a *higher* train loss") sets
  the extra column ``for_c7=False``.
* C5's own verdict is the depth-threshold row (:func:`threshold_row`), written with an empty
  depth, so it does not count as a depth-wise row.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from resnet_lab.runs import write_table

CLAIMS_COLUMNS = ["claim", "experiment", "measure", "depth", "effect", "ci_low", "ci_high",
                  "p_value", "n", "verdict"]
# Written by claim_row after CLAIMS_COLUMNS, so a reader can see what exactly was tested.
DETAIL_COLUMNS = ["direction", "margin", "method", "note"]
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
DIRECTIONS = ("greater", "less", "two-sided", "equivalent")
DEFAULT_REL_MARGIN = 0.05
MIN_N = 3  # fewest samples for which "practically zero" may be concluded
CLAIMS_FILE = "claims.csv"
_NAN = math.nan

# The rule's text lives once, in this module's docstring; the report quotes it from here.
VERDICT_RULE = (__doc__.split("Verdict rule\n------------\n")[1].split("\n\n\n")[0].strip()
                if __doc__ else "see the docstring of analysis/claims.py")


# --------------------------------------------------------------------------- the rule
def _check_direction(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")


def verdict(effect, ci_low, ci_high, p_value, *, direction="greater", alpha=0.05, margin=0.0,
            n=None) -> str:
    """The verdict of one test by the module's rule (see ``VERDICT_RULE``).

    Pure: the same numbers always give the same word. ``n=None`` means "enough samples".
    """
    _check_direction(direction)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if margin is None or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    values = (effect, ci_low, ci_high, p_value)
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return INCONCLUSIVE
    effect, lo, hi, p = (float(v) for v in values)
    enough = n is None or n >= MIN_N
    inside = enough and margin > 0 and -margin <= lo and hi <= margin
    if direction in ("greater", "less"):
        if direction == "less":
            effect, lo, hi = -effect, -hi, -lo
        if hi < 0 or (enough and margin > 0 and hi <= margin):
            return NOT_SUPPORTED
        if effect > 0 and lo > 0 and p < alpha:
            return SUPPORTED
        return INCONCLUSIVE
    if direction == "two-sided":
        if inside:
            return NOT_SUPPORTED
        if (lo > 0 or hi < 0) and p < alpha:
            return SUPPORTED
        return INCONCLUSIVE
    # equivalent
    if inside and p < alpha:
        return SUPPORTED
    if lo > margin or hi < -margin:
        return NOT_SUPPORTED
    return INCONCLUSIVE


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TestResult:
    """One test: effect with its two-sided (1 − alpha) CI, p-value, n, and the rule's verdict."""
    __test__ = False  # not a pytest test class

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    verdict: str
    direction: str
    alpha: float
    margin: float
    method: str
    note: str = ""


@dataclass(frozen=True)
class LineFit(TestResult):
    """A least-squares line; the tested effect is the slope (``slope`` is an alias)."""
    intercept: float = math.nan
    r2: float = math.nan
    slope_stderr: float = math.nan
    intercept_stderr: float = math.nan

    @property
    def slope(self) -> float:
        return self.effect


def _finite_1d(x):
    arr = np.asarray(x, dtype=float).ravel()
    return arr, bool(np.all(np.isfinite(arr)))


def _resolve_margin(margin, reference):
    if margin is not None:
        return float(margin)
    reference = float(reference)
    return DEFAULT_REL_MARGIN * abs(reference) if math.isfinite(reference) else 0.0


def _finish(effect, lo, hi, p, n, *, direction, alpha, margin, method, note="", cls=TestResult,
            **more):
    word = verdict(effect, lo, hi, p, direction=direction, alpha=alpha, margin=margin, n=n)
    return cls(float(effect), float(lo), float(hi), float(p), int(n), word, direction, alpha,
               float(margin), method, note, **more)


def _t_test_on(d, *, direction, alpha, margin, ci, n_resamples, seed, method):
    """One-sample t machinery shared by the paired and one-sample tests (d = data − null)."""
    n = d.size
    effect = float(d.mean()) if n else _NAN
    if n < 2:
        return _finish(effect, _NAN, _NAN, _NAN, n, direction=direction, alpha=alpha,
                       margin=margin, method=method, note=f"n={n}: no interval")
    if np.ptp(d) == 0:
        return _finish(effect, effect, effect, _NAN, n, direction=direction, alpha=alpha,
                       margin=margin, method=method, note="zero variance: no test")
    two = stats.ttest_1samp(d, 0.0)
    lo, hi = two.confidence_interval(1 - alpha)
    if direction == "equivalent":
        p = max(stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
                stats.ttest_1samp(d, margin, alternative="less").pvalue)
    else:
        p = stats.ttest_1samp(d, 0.0, alternative=direction).pvalue
    if ci == "bootstrap":
        lo, hi = _bootstrap_ci((d,), lambda x, axis: x.mean(axis), alpha, n_resamples, seed)
        method += ", bootstrap CI"
    return _finish(effect, lo, hi, p, n, direction=direction, alpha=alpha, margin=margin,
                   method=method)


def _bootstrap_ci(samples, statistic, alpha, n_resamples, seed):
    """BCa bootstrap CI; falls back to percentile where BCa degenerates (tiny samples)."""
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns on degenerate resamples; handled below
            res = stats.bootstrap(samples, statistic, confidence_level=1 - alpha,
                                  n_resamples=n_resamples, method=method, vectorized=True,
                                  rng=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
        if math.isfinite(lo) and math.isfinite(hi):
            return float(lo), float(hi)
    return _NAN, _NAN


def _check_ci(ci):
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"unknown ci {ci!r}; valid: t, bootstrap")


def paired_difference(a, b, *, alternative="greater", alpha=0.05, margin=None, ci="t",
                      n_resamples=9999, seed=0) -> TestResult:
    """Seed-paired test of a − b (paired t-test; CI by t or bootstrap on the differences).

    ``a[i]`` and ``b[i]`` must come from the same seed. Non-finite values (a diverged run)
    make the result inconclusive rather than being dropped: dropping them would bias the
    comparison towards the arm that survived.
    """
    _check_direction(alternative)
    _check_ci(ci)
    a, ok_a = _finite_1d(a)
    b, ok_b = _finite_1d(b)
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    m = _resolve_margin(margin, np.mean(b) if b.size else _NAN)
    if not (ok_a and ok_b):
        return _finish(_NAN, _NAN, _NAN, _NAN, a.size, direction=alternative, alpha=alpha,
                       margin=m, method="paired t", note="non-finite values in input")
    return _t_test_on(a - b, direction=alternative, alpha=alpha, margin=m, ci=ci,
                      n_resamples=n_resamples, seed=seed, method="paired t")


def one_sample(x, *, null=0.0, alternative="greater", alpha=0.05, margin=None, ci="t",
               n_resamples=9999, seed=0) -> TestResult:
    """Mean of ``x`` against ``null`` (one-sample t); the effect reported is mean − null."""
    _check_direction(alternative)
    _check_ci(ci)
    x, ok = _finite_1d(x)
    m = _resolve_margin(margin, null)
    if not ok:
        return _finish(_NAN, _NAN, _NAN, _NAN, x.size, direction=alternative, alpha=alpha,
                       margin=m, method="one-sample t", note="non-finite values in input")
    return _t_test_on(x - float(null), direction=alternative, alpha=alpha, margin=m, ci=ci,
                      n_resamples=n_resamples, seed=seed, method="one-sample t")


def independent_difference(a, b, *, alternative="greater", alpha=0.05, margin=None, ci="t",
                           n_resamples=9999, seed=0) -> TestResult:
    """Unpaired test of mean(a) − mean(b): Welch's t (unequal variances), CI on the difference."""
    _check_direction(alternative)
    _check_ci(ci)
    a, ok_a = _finite_1d(a)
    b, ok_b = _finite_1d(b)
    m = _resolve_margin(margin, np.mean(b) if b.size else _NAN)
    n = a.size + b.size
    kw = dict(direction=alternative, alpha=alpha, margin=m, method="Welch t")
    if not (ok_a and ok_b):
        return _finish(_NAN, _NAN, _NAN, _NAN, n, note="non-finite values in input", **kw)
    effect = float(a.mean() - b.mean()) if a.size and b.size else _NAN
    if a.size < 2 or b.size < 2:
        return _finish(effect, _NAN, _NAN, _NAN, n, note="fewer than 2 per group", **kw)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _finish(effect, effect, effect, _NAN, n, note="zero variance: no test", **kw)
    two = stats.ttest_ind(a, b, equal_var=False)
    lo, hi = two.confidence_interval(1 - alpha)
    if alternative == "equivalent":
        p = max(stats.ttest_ind(a + m, b, equal_var=False, alternative="greater").pvalue,
                stats.ttest_ind(a - m, b, equal_var=False, alternative="less").pvalue)
    else:
        p = stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue
    if ci == "bootstrap":
        lo, hi = _bootstrap_ci((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), alpha,
                               n_resamples, seed)
        kw["method"] += ", bootstrap CI"
    return _finish(effect, lo, hi, p, n, **kw)


def fit_line(x, y, *, null=0.0, alternative="two-sided", alpha=0.05, margin=None) -> LineFit:
    """Least-squares line y = slope·x + intercept (scipy.stats.linregress), slope tested vs null.

    The slope's CI and p use Student's t with n − 2 degrees of freedom, as linregress does.
    """
    _check_direction(alternative)
    x, ok_x = _finite_1d(x)
    y, ok_y = _finite_1d(y)
    if x.size != y.size:
        raise ValueError(f"x and y need equal lengths, got {x.size} and {y.size}")
    m = _resolve_margin(margin, null)
    kw = dict(direction=alternative, alpha=alpha, margin=m, method="least squares",
              cls=LineFit)
    if not (ok_x and ok_y):
        return _finish(_NAN, _NAN, _NAN, _NAN, x.size, note="non-finite values in input", **kw)
    if x.size < 3 or np.ptp(x) == 0:
        return _finish(_NAN, _NAN, _NAN, _NAN, x.size, note="need >= 3 points at 2+ x values",
                       **kw)
    res = stats.linregress(x, y)
    df = x.size - 2
    se = float(res.stderr)
    effect = float(res.slope) - float(null)
    more = dict(intercept=float(res.intercept), r2=float(res.rvalue) ** 2, slope_stderr=se,
                intercept_stderr=float(res.intercept_stderr))
    if se == 0:
        return _finish(effect, effect, effect, _NAN, x.size, note="exact fit: no test", **kw,
                       **more)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    t_dist = stats.t(df)
    if alternative == "equivalent":
        p = max(t_dist.sf((effect + m) / se), t_dist.cdf((effect - m) / se))
    elif alternative == "greater":
        p = t_dist.sf(effect / se)
    elif alternative == "less":
        p = t_dist.cdf(effect / se)
    else:
        p = 2 * t_dist.sf(abs(effect) / se)
    note = "" if null == 0 else f"effect = slope - {null:g}"
    return _finish(effect, effect - half, effect + half, p, x.size, note=note, **kw, **more)


# --------------------------------------------------------------------------- rows and files
def claim_row(claim, experiment, measure, depth, test_result, **extra) -> dict:
    """One claims.csv row: CLAIMS_COLUMNS, then DETAIL_COLUMNS, then ``extra`` (e.g. unit_kind)."""
    r = test_result
    row = {"claim": claim, "experiment": experiment, "measure": measure,
           "depth": _NAN if depth is None else depth, "effect": r.effect, "ci_low": r.ci_low,
           "ci_high": r.ci_high, "p_value": r.p_value, "n": r.n, "verdict": r.verdict,
           "direction": r.direction, "margin": r.margin, "method": r.method, "note": r.note}
    clash = set(extra) & set(CLAIMS_COLUMNS)
    if clash:
        raise ValueError(f"extra columns may not replace {sorted(clash)}")
    row.update(extra)
    return row


def _validate(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in CLAIMS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing claims columns {missing}; "
                         f"required: {', '.join(CLAIMS_COLUMNS)}")
    bad = sorted(set(df["verdict"].dropna().astype(str)) - set(VERDICTS))
    if bad or df["verdict"].isna().any():
        raise ValueError(f"{where}: unknown verdicts {bad or ['<empty>']}; "
                         f"valid: {', '.join(VERDICTS)}")
    return df


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    head = CLAIMS_COLUMNS + [c for c in DETAIL_COLUMNS if c in df.columns]
    return df[head + [c for c in df.columns if c not in head]]


def read_claims(path) -> pd.DataFrame:
    """Read and validate one claims.csv (ValueError naming the file if it is malformed)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no claims file at {path}")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable CSV ({exc})") from None
    return _validate(df, str(path))


def append_claims(run_dir, rows) -> Path:
    """Append rows (dicts or a DataFrame) to ``run_dir/claims.csv`` (atomically); returns its
    path. One writer per run folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if new.empty:
        raise ValueError("append_claims needs at least one row")
    _validate(new, "new rows")
    path = run_dir / CLAIMS_FILE
    frames = [read_claims(path), new] if path.exists() else [new]
    return write_table(path, _ordered(pd.concat(frames, ignore_index=True, sort=False)))


# --------------------------------------------------------------------------- depth threshold
@dataclass(frozen=True)
class DepthThreshold:
    """Smallest depth from which the gap is significant at it and every deeper depth tested.

    The true threshold lies in the bracket (low, high]: ``low`` is the deepest depth below it
    where the gap was not significant (0 when every depth was), ``high`` = ``depth``. When the
    deepest depth is not significant there is no threshold: depth = NaN, bracket
    (deepest, inf). ``boot_*`` summarise a bootstrap over seeds, if per-seed data were given:
    the 2.5%/97.5% quantiles of the resampled threshold (inf = none) and the share with none.
    """
    depth: float
    low: float
    high: float
    depths: tuple
    boot_low: float = math.nan
    boot_high: float = math.nan
    boot_none: float = math.nan
    n_boot: int = 0


def _threshold_from(depths: Sequence[float], significant: Sequence[bool]):
    """(depth, low, high) for depths sorted ascending."""
    if not significant[-1]:
        return _NAN, float(depths[-1]), math.inf
    i = len(depths) - 1
    while i > 0 and significant[i - 1]:
        i -= 1
    return float(depths[i]), (float(depths[i - 1]) if i > 0 else 0.0), float(depths[i])


def depth_threshold(depths, verdicts, *, differences: Mapping | None = None,
                    direction="greater", alpha=0.05, margin=0.0, n_boot=1000,
                    seed=0) -> DepthThreshold:
    """Where V1's gap to V2 becomes significant ("supported") and stays so at every deeper depth.

    ``depths``/``verdicts``: one verdict per depth (the gap test at that depth).
    ``differences``: optional {depth: per-seed paired differences V1 − V2}; then seeds are
    resampled with replacement within each depth ``n_boot`` times, each depth re-tested with
    :func:`one_sample` (``direction``, ``alpha``, absolute ``margin``) and the threshold
    recomputed. With 3 seeds this is crude (few distinct resamples); it shows how fragile the
    point estimate is, not a calibrated interval.
    """
    if direction not in ("greater", "less", "two-sided"):
        raise ValueError(f"a gap threshold needs direction greater, less or two-sided, "
                         f"got {direction!r}")
    depths = [float(d) for d in depths]
    verdicts = list(verdicts)
    if len(depths) != len(verdicts) or not depths:
        raise ValueError("depth_threshold needs one verdict per depth, at least one depth")
    if len(set(depths)) != len(depths):
        raise ValueError(f"depths must be unique, got {depths}")
    bad = sorted(set(verdicts) - set(VERDICTS))
    if bad:
        raise ValueError(f"unknown verdicts {bad}; valid: {', '.join(VERDICTS)}")
    order = np.argsort(depths, kind="stable")
    ds = [depths[i] for i in order]
    sig = [verdicts[i] == SUPPORTED for i in order]
    depth, low, high = _threshold_from(ds, sig)
    if differences is None:
        return DepthThreshold(depth, low, high, tuple(ds))
    diffs = {float(k): np.asarray(v, dtype=float) for k, v in differences.items()}
    if set(diffs) != set(ds):
        raise ValueError(f"differences must have exactly the depths {ds}, got {sorted(diffs)}")
    rng = np.random.default_rng(seed)
    boot_sig = np.zeros((n_boot, len(ds)), dtype=bool)
    for j, d in enumerate(ds):
        x = diffs[d]
        draws = x[rng.integers(0, x.size, size=(n_boot, x.size))]
        boot_sig[:, j] = _vector_supported(draws, direction=direction, alpha=alpha,
                                           margin=margin)
    found = np.array([_threshold_from(ds, row)[0] for row in boot_sig])
    found = np.where(np.isnan(found), math.inf, found)
    return DepthThreshold(depth, low, high, tuple(ds),
                          float(np.quantile(found, 0.025, method="lower")),
                          float(np.quantile(found, 0.975, method="higher")),
                          float(np.mean(np.isinf(found))), n_boot)


def _vector_supported(draws, *, direction, alpha, margin):
    """Verdict == supported for each row of ``draws`` (one-sample t vs 0), vectorised."""
    n = draws.shape[1]
    out = np.zeros(draws.shape[0], dtype=bool)
    if n < 2:
        return out
    varied = np.ptp(draws, axis=1) > 0
    if not varied.any():
        return out
    sub = draws[varied]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = stats.ttest_1samp(sub, 0.0, axis=1)
        lo, hi = two.confidence_interval(1 - alpha)
        p = stats.ttest_1samp(sub, 0.0, axis=1, alternative=direction).pvalue
    means = sub.mean(axis=1)
    words = [verdict(e, l, h, q, direction=direction, alpha=alpha, margin=margin, n=n)
             for e, l, h, q in zip(means, lo, hi, p)]
    out[varied] = np.array(words) == SUPPORTED
    return out


def threshold_verdict(threshold: DepthThreshold, claimed_depth, *, factor=2.0) -> str:
    """Is the threshold "about ``claimed_depth``"? Interval logic, as in :func:`verdict`.

    "About D" is the range [D / factor, D · factor]. Supported if the bracket (low, high]
    lies inside it; not supported if the bracket lies entirely outside it (including "no
    threshold up to the deepest depth" beyond D · factor); inconclusive otherwise.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    lo_ok, hi_ok = claimed_depth / factor, claimed_depth * factor
    if threshold.low >= lo_ok and threshold.high <= hi_ok:
        return SUPPORTED
    if threshold.high < lo_ok or threshold.low >= hi_ok:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def threshold_row(claim, experiment, measure, threshold: DepthThreshold, *, claimed_depth,
                  factor=2.0, **extra) -> dict:
    """A claims.csv row for a depth threshold: effect = threshold depth, CI = its bracket.

    The depth column stays empty (the row is about all depths), p is NaN and n is the number
    of depths tested; the bootstrap summary, if any, goes to ``note``.
    """
    note = f"threshold in ({threshold.low:g}, {threshold.high:g}]"
    if threshold.n_boot:
        note += (f"; seed bootstrap ({threshold.n_boot}): 95% in [{threshold.boot_low:g}, "
                 f"{threshold.boot_high:g}], none in {threshold.boot_none:.0%}")
    row = {"claim": claim, "experiment": experiment, "measure": measure, "depth": _NAN,
           "effect": threshold.depth, "ci_low": threshold.low, "ci_high": threshold.high,
           "p_value": _NAN, "n": len(threshold.depths),
           "verdict": threshold_verdict(threshold, claimed_depth, factor=factor),
           "direction": f"about {claimed_depth:g} (×/÷{factor:g})", "margin": _NAN,
           "method": "depth threshold", "note": note}
    row.update(extra)
    return row


# --------------------------------------------------------------------------- C7
C7_SOURCES = ("C3", "C4", "C5", "C6")
C7_RULE = """\
C7 ("V1 for shallow nets, V2 for deep ones") is derived from the depth-wise rows of
C3, C4, C5 and C6 (rows with a depth; rows with for_c7=False left out), each of which
states a V2 advantage at its depth. Split them at deep_from (default 164, the article's
own boundary): deep = depth >= deep_from, shallow = depth < deep_from. Count the verdicts.
  V2 wins deep:    at least one deep row supported and more supported than not supported;
  V2 fails deep:   no deep row supported and at least one not supported;
  V1 fine shallow: at least one shallow row and none supported;
  V1 not fine:     more than half of the shallow rows supported (V2 better there too).
C7 is supported if "V2 wins deep" and "V1 fine shallow"; not supported if "V2 fails deep"
or "V1 not fine"; inconclusive otherwise (including no deep or no shallow rows)."""


@dataclass(frozen=True)
class C7Result:
    """C7's derived verdict, the verdict counts per depth it came from, and why."""
    verdict: str
    deep_from: float
    by_depth: pd.DataFrame = field(repr=False)
    reason: str = ""

    def row(self) -> dict:
        """The derived verdict as a claims row (experiment "derived", depth empty)."""
        return {"claim": "C7", "experiment": "derived",
                "measure": f"V2 advantage (C3-C6) at depth >= {self.deep_from:g}, none below",
                "depth": _NAN, "effect": _NAN, "ci_low": _NAN, "ci_high": _NAN,
                "p_value": _NAN, "n": int(self.by_depth["rows"].sum()) if len(self.by_depth)
                else 0, "verdict": self.verdict, "direction": "rule", "margin": _NAN,
                "method": "derive_c7", "note": self.reason}


def _wanted_for_c7(value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return str(value).strip().lower() not in ("false", "0", "no")


def derive_c7(claims: pd.DataFrame, *, deep_from=164) -> C7Result:
    """C7 by rule (``C7_RULE``) from the depth-wise verdicts of C3–C6. Deterministic."""
    df = claims[claims["claim"].isin(C7_SOURCES)].copy()
    df["depth"] = pd.to_numeric(df["depth"], errors="coerce")
    df = df[df["depth"].notna()]
    if "for_c7" in df.columns:
        df = df[[_wanted_for_c7(v) for v in df["for_c7"]]]
    if df.empty:
        empty = pd.DataFrame(columns=["depth", "group", *VERDICTS, "rows"])
        return C7Result(INCONCLUSIVE, float(deep_from), empty,
                        "no depth-wise rows of " + ", ".join(C7_SOURCES))
    counts = (df.assign(one=1).pivot_table(index="depth", columns="verdict", values="one",
                                           aggfunc="sum", fill_value=0)
              .reindex(columns=list(VERDICTS), fill_value=0))
    counts.columns = [str(c) for c in counts.columns]
    by_depth = counts.reset_index()
    by_depth["rows"] = by_depth[list(VERDICTS)].sum(axis=1)
    by_depth["group"] = np.where(by_depth["depth"] >= deep_from, "deep", "shallow")
    by_depth = by_depth[["depth", "group", *VERDICTS, "rows"]].sort_values("depth",
                                                                             kind="stable")
    by_depth = by_depth.reset_index(drop=True)

    def tally(group):
        part = by_depth[by_depth["group"] == group]
        return {v: int(part[v].sum()) for v in VERDICTS}, int(part["rows"].sum())

    deep, n_deep = tally("deep")
    shallow, n_shallow = tally("shallow")
    deep_wins = deep[SUPPORTED] >= 1 and deep[SUPPORTED] > deep[NOT_SUPPORTED]
    deep_fails = n_deep > 0 and deep[SUPPORTED] == 0 and deep[NOT_SUPPORTED] >= 1
    shallow_fine = n_shallow > 0 and shallow[SUPPORTED] == 0
    shallow_not_fine = n_shallow > 0 and shallow[SUPPORTED] > n_shallow / 2
    if deep_fails or shallow_not_fine:
        word = NOT_SUPPORTED
    elif deep_wins and shallow_fine:
        word = SUPPORTED
    else:
        word = INCONCLUSIVE

    def describe(name, tallies, n):
        if n == 0:
            return f"{name}: no rows"
        return f"{name}: " + ", ".join(f"{tallies[v]} {v}" for v in VERDICTS)

    reason = (f"{describe(f'deep (>= {deep_from:g})', deep, n_deep)}; "
              f"{describe(f'shallow (< {deep_from:g})', shallow, n_shallow)}")
    return C7Result(word, float(deep_from), by_depth, reason)
