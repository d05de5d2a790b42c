"""Verdicts on the article's claims, computed from measured data -- never written by hand.

Every experiment reduces its measurements to *tests* -- an effect, its one-sided bounds, a
p-value, the number of seeds ``n`` and a margin in the measure's own units -- and writes one
row per test to its run folder's ``claims.csv`` (:func:`claim_row`, :func:`write_claims`). A
row has a *role*:

``primary``    the test of a claim, declared in the experiment's module as a :class:`Primary`
               (measure, depths, direction, margin and its reason, He et al.'s effect for the
               same comparison, the positive controls it needs) before any data; the claim's
               answer comes from these rows alone (:func:`claim_verdict`);
``secondary``  another view of the same data, reported, never voted;
``mechanism``  a row true by construction (a formula, BN before every weight layer): it checks
               the instrument and the mechanism, it is not evidence for an outcome.

Seeds are the unit of replication: V1 and V2 of a seed share the initialisation stream, the
batches and the augmentation, so V1 − V2 is tested paired by seed; nothing pools units or
steps as if they were independent samples (a per-unit quantity is first reduced per net).

Verdict rule (one test)
-----------------------
A claim puts the effect beyond a threshold t set by its direction and margin m >= 0 (in the
measure's units, no larger than the effect He et al. report for the comparison):
  greater      effect > t = +m        less         effect < t = -m
  noninferior  effect < t = +m        equivalent   -m < effect < +m
The interval [lo, hi] holds two one-sided 95% bounds (together a 90% interval); p is the
one-sided p-value of H0 "the effect is not beyond t" from the same t distribution (Holm-
adjusted across the primary tests of one claim), so p < 0.05 exactly when the bound on the
claimed side is beyond t.
0. not testable here  when the setting cannot answer: the plan declared the test untestable
                      in advance (its power analysis: these seeds and this test set cannot
                      resolve the expected effect), a positive control the test depends on
                      failed, or the data are missing; the reason is in the row's note.
1. inconclusive       when effect, lo, hi or p is not a number (too few seeds, zero variance).
2. supported          when the bound on the claimed side is beyond t and p < 0.05
                      (equivalent: -m < lo and hi < m);
   not supported      when the other bound is beyond t on the other side
                      (equivalent: lo > m or hi < -m);
   inconclusive       otherwise.
One threshold decides both answers: an effect just beyond t with a tight interval is
supported, one just short of it is not supported.

Power is decided in advance, never after the data: ``plans/plan.json`` holds each primary's
power analysis from the exploratory seeds (``experiments/plan_power.py``) and declares the
primaries the budget cannot power untestable before the confirmatory run. The ``detectable``
column of a row only describes the test: the smallest distance from t that its seeds detect
one-sided at 5% with power 80%, (t_0.95 + t_0.80) * sqrt(sd^2 / n + floor^2) (sd of the paired
differences; floor: the sd a fixed test set's size alone implies, which does not average out
over seeds).

Claim rule (the answer of a claim, from its primary rows)
---------------------------------------------------------
not testable here  if every primary test is not testable here;
not supported      if any primary test is not supported;
supported          if every primary test is supported, but those the plan declared
                   untestable in advance;
inconclusive       otherwise: a primary that ends inconclusive, or not testable after the
                   data (a failed control, missing nets), makes the claim inconclusive --
                   nothing is dropped from Holm or from the vote after the data.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from resnet_lab.io.folders import table_problem, write_table

from .tables import paired

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
NOT_TESTABLE = "not testable here"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE)
DIRECTIONS = ("greater", "less", "noninferior", "equivalent")
ROLES = ("primary", "secondary", "mechanism")
ALPHA = 0.05
POWER = 0.80
CLAIMS_COLUMNS = ["claim", "role", "experiment", "measure", "depth", "effect", "ci_low",
                  "ci_high", "p_value", "n", "verdict"]
DETAIL_COLUMNS = ["p_holm", "direction", "margin", "margin_reason", "detectable", "paper_effect",
                  "method", "note"]
CLAIMS_FILE = "claims.csv"
_NAN = math.nan

_DOC = __doc__ or ""
VERDICT_RULE = _DOC.split("Verdict rule (one test)\n-----------------------\n")[1].split("\n\nClaim rule")[0].strip()
CLAIM_RULE = _DOC.split("---------------------------------------------------------\n")[1].strip()


# --------------------------------------------------------------------------- the rule
def threshold(direction: str, margin: float) -> float:
    """The value t the claim puts the effect beyond (see the rule)."""
    return -margin if direction == "less" else margin


def _claims_above(direction: str) -> bool:
    return direction == "greater"


def verdict(effect, ci_low, ci_high, p_value, *, direction="greater", margin=0.0) -> str:
    """The verdict of one test by the module's rule. Pure: same numbers, same word."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if margin is None or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    values = (effect, ci_low, ci_high, p_value)
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return INCONCLUSIVE
    lo, hi, p = float(ci_low), float(ci_high), float(p_value)
    if direction == "equivalent":
        if -margin < lo and hi < margin and p < ALPHA:
            return SUPPORTED
        return NOT_SUPPORTED if lo > margin or hi < -margin else INCONCLUSIVE
    t = threshold(direction, margin)
    if _claims_above(direction):
        beyond, short = lo > t, hi < t
    else:
        beyond, short = hi < t, lo > t
    if beyond and p < ALPHA:
        return SUPPORTED
    return NOT_SUPPORTED if short else INCONCLUSIVE


@dataclass(frozen=True)
class TestResult:
    """One test: effect, its one-sided 95% bounds, p-value, n, the rule's verdict and the
    smallest effect these seeds could detect beyond the threshold (``detectable``)."""
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
    detectable: float = _NAN


def _finish(effect, lo, hi, p, n, *, direction, margin, method, note="", detectable=_NAN):
    word = verdict(effect, lo, hi, p, direction=direction, margin=margin)
    return TestResult(float(effect), float(lo), float(hi), float(p), int(n), word, direction,
                      float(margin), method, note, float(detectable))


def not_testable(n: int, reason: str, *, direction="greater", margin=0.0, method="",
                 result: TestResult | None = None) -> TestResult:
    """A test this setting cannot answer, and why; ``result``'s numbers are kept if given
    (a test the plan declared untestable still shows what it measured)."""
    if result is not None:
        return dataclasses.replace(result, verdict=NOT_TESTABLE, note=reason)
    return TestResult(_NAN, _NAN, _NAN, _NAN, int(n), NOT_TESTABLE, direction, float(margin),
                      method, reason)


# --------------------------------------------------------------------------- the tests
def _finite(x):
    arr = np.asarray(x, dtype=float).ravel()
    return arr, bool(np.all(np.isfinite(arr)))


def _one_sided_p(d, direction, margin):
    """p of H0 "mean(d) is not beyond the threshold", one-sample t."""
    if direction == "equivalent":
        return max(stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
                   stats.ttest_1samp(d, margin, alternative="less").pvalue)
    alternative = "greater" if _claims_above(direction) else "less"
    return stats.ttest_1samp(d, threshold(direction, margin), alternative=alternative).pvalue


def detectable_effect(sd: float, n: int, floor: float = 0.0) -> float:
    """The smallest true distance from the threshold a one-sided t test over ``n`` seeds
    detects at level ALPHA with power POWER, for differences of standard deviation ``sd`` and
    a fixed test set whose noise has sd ``floor`` (not divided by sqrt(n))."""
    if n < 2 or not math.isfinite(sd):
        return _NAN
    dist = stats.t(n - 1)
    return float((dist.ppf(1 - ALPHA) + dist.ppf(POWER)) * math.sqrt(sd ** 2 / n + floor ** 2))


def seeds_needed(sd: float, distance: float, floor: float = 0.0, *, most: int = 10_000):
    """The fewest seeds (>= 3) whose detectable effect is at most ``distance``; None when no
    number of seeds up to ``most`` reaches it (the test set's floor alone can forbid it)."""
    if not (math.isfinite(sd) and math.isfinite(distance)) or distance <= 0:
        return None
    z = stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(POWER)
    if z * floor >= distance:           # even infinitely many seeds leave the floor
        return None
    if detectable_effect(sd, most, floor) > distance:
        return None
    lo, hi = 2, 3                        # detectable(lo) > distance >= detectable(hi)
    while detectable_effect(sd, hi, floor) > distance:
        lo, hi = hi, min(2 * hi, most)
    while hi - lo > 1:                   # the detectable effect falls with n: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if detectable_effect(sd, mid, floor) > distance else (lo, mid)
    return hi


def _t_test_on(d, *, direction, margin, method, sd_floor=0.0):
    n = d.size
    effect = float(d.mean()) if n else _NAN
    if n < 2:
        return _finish(effect, _NAN, _NAN, _NAN, n, direction=direction, margin=margin,
                       method=method, note=f"n={n}: no interval")
    detectable = detectable_effect(float(d.std(ddof=1)), n, sd_floor)
    if np.ptp(d) == 0:
        return _finish(effect, effect, effect, _NAN, n, direction=direction, margin=margin,
                       method=method, note="zero variance: no test", detectable=detectable)
    lo, hi = stats.ttest_1samp(d, 0.0).confidence_interval(1 - 2 * ALPHA)
    return _finish(effect, lo, hi, _one_sided_p(d, direction, margin), n, direction=direction,
                   margin=margin, method=method, detectable=detectable)


def paired_difference(a, b, *, direction="greater", margin=0.0, sd_floor=0.0) -> TestResult:
    """Seed-paired t test of a − b (``a[i]``, ``b[i]`` from the same seed). A non-finite
    value makes the result inconclusive rather than being dropped (dropping it would favour
    the arm that survived; experiments impute declared values for diverged nets instead).
    ``sd_floor``: the test set's own sd (the ``detectable`` column, see the rule)."""
    a, ok_a = _finite(a)
    b, ok_b = _finite(b)
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    if not (ok_a and ok_b):
        return _finish(_NAN, _NAN, _NAN, _NAN, a.size, direction=direction, margin=margin,
                       method="paired t", note="non-finite values in input")
    return _t_test_on(a - b, direction=direction, margin=margin, method="paired t",
                      sd_floor=sd_floor)


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
    lo, hi = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - 2 * ALPHA)
    if direction == "equivalent":
        p = max(stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue,
                stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue)
    else:
        alternative = "greater" if _claims_above(direction) else "less"
        p = stats.ttest_ind(a - threshold(direction, margin), b, equal_var=False,
                            alternative=alternative).pvalue
    return _finish(effect, lo, hi, p, n, **kw)


def fit_line(x, y, *, null=0.0, direction="greater", margin=0.0):
    """Least-squares line y = slope·x + intercept (scipy.stats.linregress), slope − ``null``
    tested by the rule; returns (TestResult, intercept, R²)."""
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
    half = dist.ppf(1 - ALPHA) * se
    if direction == "equivalent":
        p = max(dist.sf((effect + margin) / se), dist.cdf((effect - margin) / se))
    else:
        t = threshold(direction, margin)
        p = dist.sf((effect - t) / se) if _claims_above(direction) else dist.cdf((effect - t) / se)
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


# --------------------------------------------------------------------------- primary tests
@dataclass(frozen=True)
class Primary:
    """A claim's primary test, declared before the data.

    Built from ``plans/plan.json`` (``analysis.plan.primaries``). ``measure``: the per-net
    column tested as V1 − V2 paired by seed, or, with ``version``, that version's values
    against ``null`` (``text`` says it in words); ``depths``: where the paper speaks;
    ``paper_effect``: He et al.'s effect for the same comparison in the measure's units (None
    where they give no number), ``paper_source`` where it comes from; ``requires``: the
    positive controls (ids) the setting must pass; ``on_test_set``: the measure is read off
    the test set, whose size sets a floor under the sd; ``untestable``: why the plan declared
    it untestable in advance ("" if testable); ``role``: primary, or secondary where the plan
    moved it; ``window``: a short label for the report (at init, early, late)."""
    claim: str
    measure: str
    text: str
    direction: str
    margin: float
    margin_reason: str
    depths: tuple
    paper_effect: float | None
    paper_source: str
    requires: tuple = ()
    on_test_set: bool = False
    version: int | None = None
    null: float = 0.0
    untestable: str = ""
    role: str = "primary"
    window: str = ""

    def resolvable(self, effect: float | None = None) -> float | None:
        """The distance between the expected effect (``effect``, else He et al.'s) and the
        threshold, on either side: what the test must resolve to reach a verdict (None: no
        number to plan with)."""
        e = self.paper_effect if effect is None else effect
        if e is None:
            return None
        if self.direction == "equivalent":
            return abs(self.margin - abs(e))
        return abs(e - threshold(self.direction, self.margin))


def test_set_sd(v1, v2, n_test: int) -> float:
    """The sd of a difference of two nets' error rates that ``n_test`` test images alone imply,
    conservatively (binomial, errors taken as independent, no per-image discordance recorded):
    sqrt((p1 (1 − p1) + p2 (1 − p2)) / n_test). One fixed test set's noise does not average out
    over seeds: it is a floor under the mean's sd, not divided by sqrt(seeds)."""
    p1, p2 = float(np.mean(v1)), float(np.mean(v2))
    return math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / n_test)


def required_controls_failed(primary: Primary, failed_controls) -> str:
    """Why ``primary`` cannot be tested here ("" if every control it requires passed);
    ``failed_controls``: {control id: its numbers} of the run's failed controls."""
    return "; ".join(f"control {k} failed: {v}" for k, v in (failed_controls or {}).items()
                     if k in primary.requires)


PLAN_UNTESTABLE = "declared untestable by the plan"


def primary_rows(table, primary: Primary, *, experiment, failed_controls=None, n_test=None,
                 **extra) -> list[dict]:
    """The rows of one :class:`Primary` at each of its depths (role: the plan's): not testable
    here where a control it requires failed, the nets are missing or the plan declared it
    untestable (its numbers still shown); else the test."""
    p = primary
    failed = required_controls_failed(p, failed_controls)
    rows = []
    for depth in p.depths:
        kw = dict(direction=p.direction, margin=p.margin)
        if p.version is None:
            v1, v2, _ = paired(table, p.measure, depth)
            what = "V1/V2 pair"
        else:
            v1 = table.loc[(table["depth"] == depth) & (table["version"] == p.version), p.measure]
            what = f"V{p.version} net"
        if not len(v1):
            result = not_testable(0, f"no {what} at {depth} layers in this run", **kw)
        elif failed:
            result = not_testable(len(v1), failed, **kw)
        elif p.version is not None:
            result = one_sample(v1, null=p.null, **kw)
        else:
            floor = test_set_sd(v1, v2, n_test) if p.on_test_set and n_test else 0.0
            result = paired_difference(v1, v2, sd_floor=floor, **kw)
        if p.untestable and result.verdict != NOT_TESTABLE:
            result = not_testable(result.n, f"{PLAN_UNTESTABLE}: {p.untestable}", result=result)
        rows.append(claim_row(p.claim, p.role, experiment, p.text, int(depth), result,
                              margin_reason=p.margin_reason,
                              paper_effect=_NAN if p.paper_effect is None else p.paper_effect,
                              **extra))
    return rows


# --------------------------------------------------------------------------- rows and files
def claim_row(claim, role, experiment, measure, depth, result: TestResult, *, margin_reason="",
              paper_effect=_NAN, **extra) -> dict:
    """One claims.csv row: CLAIMS_COLUMNS, DETAIL_COLUMNS, then ``extra`` columns."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    r = result
    row = {"claim": claim, "role": role, "experiment": experiment, "measure": measure,
           "depth": _NAN if depth is None else depth, "effect": r.effect, "ci_low": r.ci_low,
           "ci_high": r.ci_high, "p_value": r.p_value, "n": r.n, "verdict": r.verdict,
           "p_holm": _NAN, "direction": r.direction, "margin": r.margin,
           "margin_reason": margin_reason, "detectable": r.detectable,
           "paper_effect": paper_effect, "method": r.method, "note": r.note}
    clash = set(extra) & set(CLAIMS_COLUMNS)     # details (a note, the unit kind) may be given
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
    why = table_problem(path, path.read_bytes())      # a row removed would change the verdicts
    if why:
        raise ValueError(f"{path}: {why}")
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
    """A claim's answer from its primary rows, by the claim rule: only the rows the plan
    declared untestable in advance stay out of the vote."""
    words = list(primary["verdict"])
    notes = [str(n) for n in primary["note"]] if "note" in primary else [""] * len(words)
    if all(w == NOT_TESTABLE for w in words):
        return NOT_TESTABLE
    if NOT_SUPPORTED in words:
        return NOT_SUPPORTED
    voting = [w for w, n in zip(words, notes)
              if not (w == NOT_TESTABLE and n.startswith(PLAN_UNTESTABLE))]
    if voting and all(w == SUPPORTED for w in voting):
        return SUPPORTED
    return INCONCLUSIVE


C7_RULE = """\
C7 ("V1 for shallow nets, V2 for deep ones") follows from two primary answers: C3 (deep V1 nets
train slowly at first: V2 is the better choice deep) and C5 (below about 164 layers V1 is not
worse than V2 by more than the margin: V1 is a fine choice shallow).
  supported          if C3 and C5 are both supported;
  not supported      if C3 or C5 is not supported;
  not testable here  if C3 or C5 is not testable here (and neither is not supported);
  inconclusive       otherwise (including a claim without data).
C6 (less overfitting) is reported beside it, not voted."""


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


# --------------------------------------------------------------------------- a share closed
def share_closed(v1, arm, v2) -> TestResult:
    """The share of V1's gap to V2 that an intervention closes, paired by seed:
    R = mean(v1 − arm) / mean(v1 − v2) (1: the arm does as well as V2; 0: as badly as V1), with
    one-sided 95% bounds (a 90% interval) by Fieller's method: the R for which the one-sample t
    statistic of the per-seed values (v1 − arm) − R (v1 − v2) stays within ±t_{0.95, n−1},

        (d̄ − R ē)² <= t² (s_dd − 2 R s_de + R² s_ee) / n,     d = v1 − arm, e = v1 − v2.

    Where the denominator is not itself significant (ē² <= t² s_ee / n) that set is unbounded:
    then the bounds are the 5th and 95th percentiles of R over every resampling of the seeds
    with replacement (a paired bootstrap; exact enumeration for up to 8 seeds, else 20,000
    draws of a fixed stream), and ``method`` says so. The p-value is the paired t test's of
    "the arm closes nothing" (mean(v1 − arm) <= 0). Verdict: R > 0 by the module's rule."""
    v1, ok1 = _finite(v1)
    arm, ok2 = _finite(arm)
    v2, ok3 = _finite(v2)
    if not (v1.size == arm.size == v2.size):
        raise ValueError(f"paired samples need equal lengths, got {v1.size}, {arm.size}, {v2.size}")
    n = v1.size
    kw = dict(direction="greater", margin=0.0)
    if not (ok1 and ok2 and ok3):
        return _finish(_NAN, _NAN, _NAN, _NAN, n, method="Fieller", note="non-finite values", **kw)
    d, e = v1 - arm, v1 - v2
    if n < 2 or e.mean() == 0:
        return _finish(_NAN, _NAN, _NAN, _NAN, n, method="Fieller",
                       note="no gap between V1 and V2" if n >= 2 else f"n={n}: no interval", **kw)
    r = float(d.mean() / e.mean())
    p = stats.ttest_1samp(d, 0.0, alternative="greater").pvalue if np.ptp(d) > 0 else _NAN
    lo, hi = fieller_bounds(d, e)
    if math.isfinite(lo):
        return _finish(r, lo, hi, p, n, method="Fieller (paired by seed)", **kw)
    lo, hi = bootstrap_ratio_bounds(d, e)
    return _finish(r, lo, hi, p, n, method="paired bootstrap over seeds (Fieller unbounded)", **kw)


def fieller_bounds(d, e) -> tuple[float, float]:
    """Fieller's one-sided 95% bounds on mean(d) / mean(e) for paired samples (NaN, NaN where
    the set is unbounded: the denominator is not significantly nonzero)."""
    d, e = np.asarray(d, float), np.asarray(e, float)
    n = d.size
    t2 = stats.t(n - 1).ppf(1 - ALPHA) ** 2
    cov = np.cov(np.vstack([d, e]), ddof=1)
    s_dd, s_de, s_ee = cov[0, 0], cov[0, 1], cov[1, 1]
    a = e.mean() ** 2 - t2 * s_ee / n
    b = d.mean() * e.mean() - t2 * s_de / n
    c = d.mean() ** 2 - t2 * s_dd / n
    disc = b * b - a * c
    if a <= 0 or disc < 0:
        return _NAN, _NAN
    root = math.sqrt(disc)
    return float((b - root) / a), float((b + root) / a)


def bootstrap_ratio_bounds(d, e, *, draws=20_000) -> tuple[float, float]:
    """5th and 95th percentiles of mean(d*) / mean(e*) over resamplings of the pairs."""
    import itertools
    d, e = np.asarray(d, float), np.asarray(e, float)
    n = d.size
    if n <= 8:
        idx = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        idx = np.random.default_rng(0).integers(0, n, (draws, n))
    num, den = d[idx].mean(axis=1), e[idx].mean(axis=1)
    ratio = np.where(den != 0, num / np.where(den != 0, den, 1), np.nan)
    ratio = ratio[np.isfinite(ratio)]
    if not ratio.size:
        return _NAN, _NAN
    return float(np.quantile(ratio, ALPHA)), float(np.quantile(ratio, 1 - ALPHA))
