"""Verdicts on the article's claims, computed from measured data -- never written by hand.

Every experiment reduces its measurements to *tests* -- an effect with a two-sided 95%
confidence interval, a p-value in the claimed direction, the number of seeds ``n`` and a
margin in the measure's own units -- and writes one row per test to its run folder's
``claims.csv`` (:func:`claim_row`, :func:`write_claims`). A row has a *role*:

``primary``    the test of a claim, declared in the experiment's module (its ``PRIMARY``
               table: measure, depth, direction, margin and the margin's reason) before any
               data; the claim's answer comes from these rows alone (:func:`claim_verdict`);
``secondary``  another view of the same data, reported, never voted;
``mechanism``  a row true by construction (a formula, BN before every weight layer): it checks
               the instrument and the mechanism, it is not evidence for an outcome.

Seeds are the unit of replication: V1 and V2 of a seed share the initialisation stream, the
batches and the augmentation, so V1 − V2 is tested paired by seed; nothing pools units or
steps as if they were independent samples (a per-unit quantity is first reduced per net).

Verdict rule (one test)
-----------------------
Inputs: effect, its two-sided 95% CI [lo, hi], the one-sided p-value in the claimed direction
(Holm-adjusted across the primary tests of one claim), n, a margin m >= 0, the direction.

0. A test the setting cannot answer (e.g. a generalization gap between nets that do not fit
   their training set) is *not testable here*, with the reason in its note.
1. If effect, lo, hi or p is NaN (too few samples, zero variance): inconclusive.
2. "greater" (effect > 0 claimed; "less" mirrors it):
   not supported  if hi < 0, or if m > 0 and hi <= m (at most negligible);
   supported      if lo > 0 and p < 0.05;
   inconclusive   otherwise.
3. "noninferior" (effect < m claimed, e.g. "V1 is not worse than V2 by more than m"):
   supported      if p < 0.05 for H0: effect >= m;
   not supported  if lo > m (worse by more than the margin);
   inconclusive   otherwise.
4. "two-sided": not supported if m > 0 and -m <= lo, hi <= m; supported if the CI excludes 0
   and p < 0.05; inconclusive otherwise.
5. "equivalent" (|effect| < m claimed, TOST): supported if -m <= lo, hi <= m and p < 0.05;
   not supported if lo > m or hi < -m; inconclusive otherwise.
Censored outcomes (an event a net never reached in the run) use a sign test over the pairs
whose order is known; when more than half the values are censored: inconclusive.

Claim rule (the answer of a claim, from its primary rows)
---------------------------------------------------------
not testable here  if every primary test is not testable here;
supported          if every testable primary test is supported;
not supported      if any testable primary test is not supported;
inconclusive       otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from resnet_lab.runs import write_table

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
NOT_TESTABLE = "not testable here"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE)
DIRECTIONS = ("greater", "less", "noninferior", "two-sided", "equivalent")
ROLES = ("primary", "secondary", "mechanism")
ALPHA = 0.05
CLAIMS_COLUMNS = ["claim", "role", "experiment", "measure", "depth", "effect", "ci_low",
                  "ci_high", "p_value", "n", "verdict"]
DETAIL_COLUMNS = ["p_holm", "direction", "margin", "margin_reason", "method", "note"]
CLAIMS_FILE = "claims.csv"
_NAN = math.nan

_DOC = __doc__ or ""
VERDICT_RULE = _DOC.split("Verdict rule (one test)\n-----------------------\n")[1].split("\n\nClaim rule")[0].strip()
CLAIM_RULE = _DOC.split("---------------------------------------------------------\n")[1].strip()


# --------------------------------------------------------------------------- the rule
def verdict(effect, ci_low, ci_high, p_value, *, direction="greater", margin=0.0) -> str:
    """The verdict of one test by the module's rule. Pure: same numbers, same word."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if margin is None or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    values = (effect, ci_low, ci_high, p_value)
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return INCONCLUSIVE
    effect, lo, hi, p = (float(v) for v in values)
    if direction in ("greater", "less"):
        if direction == "less":
            effect, lo, hi = -effect, -hi, -lo
        if hi < 0 or (margin > 0 and hi <= margin):
            return NOT_SUPPORTED
        return SUPPORTED if lo > 0 and p < ALPHA else INCONCLUSIVE
    if direction == "noninferior":
        if p < ALPHA and effect < margin:
            return SUPPORTED
        return NOT_SUPPORTED if lo > margin else INCONCLUSIVE
    inside = margin > 0 and -margin <= lo and hi <= margin
    if direction == "two-sided":
        if inside:
            return NOT_SUPPORTED
        return SUPPORTED if (lo > 0 or hi < 0) and p < ALPHA else INCONCLUSIVE
    if inside and p < ALPHA:
        return SUPPORTED
    return NOT_SUPPORTED if lo > margin or hi < -margin else INCONCLUSIVE


@dataclass(frozen=True)
class TestResult:
    """One test: effect with its two-sided 95% CI, p-value, n, and the rule's verdict."""
    __test__ = False  # not a pytest test class

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    verdict: str
    direction: str
    margin: float
    method: str
    note: str = ""


def _finish(effect, lo, hi, p, n, *, direction, margin, method, note=""):
    word = verdict(effect, lo, hi, p, direction=direction, margin=margin)
    return TestResult(float(effect), float(lo), float(hi), float(p), int(n), word, direction,
                      float(margin), method, note)


def not_testable(n: int, reason: str, *, direction="greater", margin=0.0, method="") -> TestResult:
    """A test this setting cannot answer, and why."""
    return TestResult(_NAN, _NAN, _NAN, _NAN, int(n), NOT_TESTABLE, direction, float(margin),
                      method, reason)


# --------------------------------------------------------------------------- the tests
def _finite(x):
    arr = np.asarray(x, dtype=float).ravel()
    return arr, bool(np.all(np.isfinite(arr)))


def _one_sided_p(d, direction, margin):
    """p of the one-sided t test of mean(d) in the claimed direction (noninferior: H0 mean >= m)."""
    if direction == "noninferior":
        return stats.ttest_1samp(d, margin, alternative="less").pvalue
    if direction == "equivalent":
        return max(stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
                   stats.ttest_1samp(d, margin, alternative="less").pvalue)
    return stats.ttest_1samp(d, 0.0, alternative=direction).pvalue


def _t_test_on(d, *, direction, margin, method):
    n = d.size
    effect = float(d.mean()) if n else _NAN
    if n < 2:
        return _finish(effect, _NAN, _NAN, _NAN, n, direction=direction, margin=margin,
                       method=method, note=f"n={n}: no interval")
    if np.ptp(d) == 0:
        return _finish(effect, effect, effect, _NAN, n, direction=direction, margin=margin,
                       method=method, note="zero variance: no test")
    lo, hi = stats.ttest_1samp(d, 0.0).confidence_interval(1 - ALPHA)
    return _finish(effect, lo, hi, _one_sided_p(d, direction, margin), n, direction=direction,
                   margin=margin, method=method)


def paired_difference(a, b, *, direction="greater", margin=0.0) -> TestResult:
    """Seed-paired t test of a − b (``a[i]``, ``b[i]`` from the same seed). A non-finite
    value makes the result inconclusive rather than being dropped (dropping it would favour
    the arm that survived; experiments impute declared values for diverged nets instead)."""
    a, ok_a = _finite(a)
    b, ok_b = _finite(b)
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    if not (ok_a and ok_b):
        return _finish(_NAN, _NAN, _NAN, _NAN, a.size, direction=direction, margin=margin,
                       method="paired t", note="non-finite values in input")
    return _t_test_on(a - b, direction=direction, margin=margin, method="paired t")


def one_sample(x, *, null=0.0, direction="greater", margin=0.0) -> TestResult:
    """Mean of ``x`` against ``null`` (one-sample t); the effect reported is mean − null."""
    x, ok = _finite(x)
    if not ok:
        return _finish(_NAN, _NAN, _NAN, _NAN, x.size, direction=direction, margin=margin,
                       method="one-sample t", note="non-finite values in input")
    return _t_test_on(x - float(null), direction=direction, margin=margin, method="one-sample t")


def independent_difference(a, b, *, direction="greater", margin=0.0) -> TestResult:
    """Unpaired test of mean(a) − mean(b): Welch's t (unequal variances)."""
    a, ok_a = _finite(a)
    b, ok_b = _finite(b)
    n = a.size + b.size
    kw = dict(direction=direction, margin=margin, method="Welch t")
    if not (ok_a and ok_b):
        return _finish(_NAN, _NAN, _NAN, _NAN, n, note="non-finite values in input", **kw)
    effect = float(a.mean() - b.mean()) if a.size and b.size else _NAN
    if a.size < 2 or b.size < 2:
        return _finish(effect, _NAN, _NAN, _NAN, n, note="fewer than 2 per group", **kw)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _finish(effect, effect, effect, _NAN, n, note="zero variance: no test", **kw)
    lo, hi = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - ALPHA)
    alternative = {"noninferior": "less", "equivalent": "two-sided"}.get(direction, direction)
    shift = margin if direction == "noninferior" else 0.0
    p = stats.ttest_ind(a - shift, b, equal_var=False, alternative=alternative).pvalue
    return _finish(effect, lo, hi, p, n, **kw)


def paired_censored(a, b, *, censored_a, censored_b, direction="greater", margin=0.0) -> TestResult:
    """Times to an event, paired by seed, censored at the end of the run (a censored value is
    the run's length: the event came later, if ever). The effect is the median of a − b with
    censored values at the run's length; the p-value a sign test over the pairs whose order
    is known (both observed, or one censored and the other not); the CI the distribution-free
    interval of the median from the order statistics. More than half the values censored:
    inconclusive."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ca, cb = np.asarray(censored_a, bool), np.asarray(censored_b, bool)
    n = a.size
    method = "sign test (censored)"
    if (ca.sum() + cb.sum()) > n:
        return _finish(_NAN, _NAN, _NAN, _NAN, n, direction=direction, margin=margin, method=method,
                       note=f"{int(ca.sum() + cb.sum())} of {2 * n} values censored: mostly censored")
    d = a - b
    known = ~(ca & cb) & (d != 0)
    later = int((d[known] > 0).sum())
    k = int(known.sum())
    alt = {"greater": "greater", "less": "less"}.get(direction, "two-sided")
    p = stats.binomtest(later, k, 0.5, alternative=alt).pvalue if k else _NAN
    lo, hi = _median_ci(np.sort(d))
    note = f"{int(ca.sum())} + {int(cb.sum())} censored; {later} of {k} ordered pairs a later"
    return _finish(float(np.median(d)), lo, hi, p, n, direction=direction, margin=margin,
                   method=method, note=note)


def _median_ci(sorted_d):
    """Order-statistic 95% CI of a median (NaN when n is too small for one)."""
    n = sorted_d.size
    lo_k = int(stats.binom.ppf(ALPHA / 2, n, 0.5))
    hi_k = n - lo_k - 1
    if lo_k < 1 or hi_k >= n:
        return (float(sorted_d[0]), float(sorted_d[-1])) if n >= 5 else (_NAN, _NAN)
    return float(sorted_d[lo_k - 1]), float(sorted_d[hi_k])


def fit_line(x, y, *, null=0.0, direction="two-sided", margin=0.0):
    """Least-squares line y = slope·x + intercept (scipy.stats.linregress), slope tested vs
    ``null``; returns (TestResult of slope − null, intercept, R²)."""
    x, ok_x = _finite(x)
    y, ok_y = _finite(y)
    if x.size != y.size:
        raise ValueError(f"x and y need equal lengths, got {x.size} and {y.size}")
    kw = dict(direction=direction, margin=margin, method="least squares")
    if not (ok_x and ok_y) or x.size < 3 or np.ptp(x) == 0:
        return _finish(_NAN, _NAN, _NAN, _NAN, x.size, note="need >= 3 finite points", **kw), _NAN, _NAN
    res = stats.linregress(x, y)
    se, effect = float(res.stderr), float(res.slope) - float(null)
    r2 = float(res.rvalue) ** 2
    if se == 0:
        return _finish(effect, effect, effect, _NAN, x.size, note="exact fit", **kw), res.intercept, r2
    dist = stats.t(x.size - 2)
    half = dist.ppf(1 - ALPHA / 2) * se
    if direction == "equivalent":
        p = max(dist.sf((effect + margin) / se), dist.cdf((effect - margin) / se))
    elif direction in ("greater", "less"):
        p = dist.sf(effect / se) if direction == "greater" else dist.cdf(effect / se)
    else:
        p = 2 * dist.sf(abs(effect) / se)
    return _finish(effect, effect - half, effect + half, p, x.size, **kw), float(res.intercept), r2


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, _NAN)
    idx = np.flatnonzero(np.isfinite(p))
    k = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (k - rank) * p[i]))
        out[i] = running
    return out


# --------------------------------------------------------------------------- rows and files
def claim_row(claim, role, experiment, measure, depth, result: TestResult, **extra) -> dict:
    """One claims.csv row: CLAIMS_COLUMNS, DETAIL_COLUMNS, then ``extra`` columns."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    r = result
    row = {"claim": claim, "role": role, "experiment": experiment, "measure": measure,
           "depth": _NAN if depth is None else depth, "effect": r.effect, "ci_low": r.ci_low,
           "ci_high": r.ci_high, "p_value": r.p_value, "n": r.n, "verdict": r.verdict,
           "p_holm": _NAN, "direction": r.direction, "margin": r.margin, "margin_reason": "",
           "method": r.method, "note": r.note}
    clash = set(extra) & set(CLAIMS_COLUMNS)
    if clash:
        raise ValueError(f"extra columns may not replace {sorted(clash)}")
    row.update(extra)
    return row


def apply_holm(rows: list[dict]) -> list[dict]:
    """Holm across the primary rows of each claim: ``p_holm`` and the verdict from it."""
    for claim in sorted({r["claim"] for r in rows if r["role"] == "primary"}):
        primary = [r for r in rows if r["claim"] == claim and r["role"] == "primary"
                   and r["verdict"] != NOT_TESTABLE]
        for row, adjusted in zip(primary, holm([r["p_value"] for r in primary])):
            row["p_holm"] = adjusted
            row["verdict"] = verdict(row["effect"], row["ci_low"], row["ci_high"], adjusted,
                                     direction=row["direction"], margin=row["margin"])
    return rows


def _validate(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in CLAIMS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing claims columns {missing}; "
                         f"required: {', '.join(CLAIMS_COLUMNS)}")
    bad = sorted(set(df["verdict"].dropna().astype(str)) - set(VERDICTS))
    if bad or df["verdict"].isna().any():
        raise ValueError(f"{where}: unknown verdicts {bad or ['<empty>']}; valid: {', '.join(VERDICTS)}")
    bad = sorted(set(df["role"].dropna().astype(str)) - set(ROLES))
    if bad:
        raise ValueError(f"{where}: unknown roles {bad}; valid: {', '.join(ROLES)}")
    return df


def read_claims(path) -> pd.DataFrame:
    """Read and validate one claims.csv (ValueError naming the file if it is malformed)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no claims file at {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable CSV ({exc})") from None
    return _validate(df, str(path))


def write_claims(run_dir, rows) -> Path:
    """Holm across each claim's primary rows, then ``run_dir/claims.csv`` (atomically)."""
    rows = apply_holm([dict(r) for r in rows])
    if not rows:
        raise ValueError("write_claims needs at least one row")
    df = _validate(pd.DataFrame(rows), "new rows")
    head = CLAIMS_COLUMNS + DETAIL_COLUMNS
    df = df[head + [c for c in df.columns if c not in head]]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return write_table(Path(run_dir) / CLAIMS_FILE, df)


def paired_rows(table, column, *, claim, role, experiment, measure, depths, direction="greater",
                margin=0.0, **extra) -> list[dict]:
    """One row per depth: ``column`` V1 − V2 paired by seed, in ``direction``; a depth where
    either version is missing from ``table`` is not testable here."""
    from .tables import paired
    rows = []
    for depth in depths:
        v1, v2, _ = paired(table, column, depth)
        result = paired_difference(v1, v2, direction=direction, margin=margin) if len(v1) else \
            not_testable(0, f"no V1/V2 pair at {depth} layers in this run", direction=direction,
                         margin=margin)
        rows.append(claim_row(claim, role, experiment, measure, int(depth), result, **extra))
    return rows


def claims_text(path, roles=("primary", "mechanism")) -> str:
    """A run's claims rows of ``roles``, one line each, for a script's summary."""
    claims = read_claims(path)
    claims = claims[claims["role"].isin(roles)]
    cols = ["claim", "role", "depth", "measure", "effect", "ci_low", "ci_high", "p_holm", "n", "verdict"]
    with pd.option_context("display.width", 250, "display.max_columns", 20,
                           "display.max_colwidth", 70, "display.float_format", "{:.3g}".format):
        return claims[[c for c in cols if c in claims.columns]].to_string(index=False)


# --------------------------------------------------------------------------- claims and C7
def claim_verdict(primary: pd.DataFrame) -> str:
    """A claim's answer from its primary rows, by the claim rule."""
    words = list(primary["verdict"])
    testable = [w for w in words if w != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    if all(w == SUPPORTED for w in testable):
        return SUPPORTED
    if NOT_SUPPORTED in testable:
        return NOT_SUPPORTED
    return INCONCLUSIVE


C7_RULE = """\
C7 ("V1 for shallow nets, V2 for deep ones") follows from two primary answers: C3 (deep V1 nets
train slowly at first: V2 is the better choice deep) and C5 (below about 164 layers V1 is not
worse than V2 by more than the margin: V1 is a fine choice shallow).
  supported          if C3 and C5 are both supported;
  not supported      if C3 or C5 is not supported;
  not testable here  if C3 or C5 is not testable here (and neither is not supported);
  inconclusive       otherwise (including a claim without data).
C6 (less overfitting) is reported beside it, not voted: in this suite it is testable only
where both versions fit their training set."""


def derive_c7(answers: dict) -> str:
    """C7 by ``C7_RULE`` from the answers of C3 and C5 ({claim: verdict})."""
    c3, c5 = answers.get("C3"), answers.get("C5")
    if NOT_SUPPORTED in (c3, c5):
        return NOT_SUPPORTED
    if NOT_TESTABLE in (c3, c5):
        return NOT_TESTABLE
    if c3 == SUPPORTED and c5 == SUPPORTED:
        return SUPPORTED
    return INCONCLUSIVE
