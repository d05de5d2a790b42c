"""Every claim's primary test on synthetic per-net tables with a known answer: one where it must
say *supported*, one *not supported*, one *not testable here* (a missing depth, a failed positive
control, too little power) -- through the same ``control_rows`` and ``claims_rows`` functions the
experiments run, with Holm applied as in claims.csv."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis import claims as C
from analysis import early_training as ET
from analysis import full_training as FT
from analysis import signal_propagation as SP
from analysis import unit_ablation as UA

SEEDS = range(5)
QUICK_EARLY = dict(depths=[29, 164, 1001])


def answer(rows, claim):
    rows = C.apply_holm(rows)
    return C.claim_verdict(pd.DataFrame([r for r in rows if r["claim"] == claim
                                         and r["role"] == "primary"]))


def early_table(depths=(29, 164, 1001), *, err_gap=0.0, survival=-3.0, stage_rho=0.1,
                rho_gap=0.5, v2_trains=True, seed=0):
    """An early_training summary: V2's values around a level, V1's shifted by the gaps (V1's
    identity path at ``survival``, V2's at 0; V1's stage_rho and grad_ratio ``rho_gap`` above
    V2's); every net leaves the warm-up below 80% and trains, unless ``v2_trains`` is False."""
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        for s in SEEDS:
            err = 0.4 + rng.normal(0, 0.02)
            for version in (1, 2):
                v1 = version == 1
                row = dict(depth=depth, version=version, seed=s, width=4,
                           err_c3=err + (err_gap if v1 else 0) + rng.normal(0, 0.005),
                           err_end=0.1 if (v1 or v2_trains) else 0.85, warmup_error=0.5,
                           survival_init=(survival + rng.normal(0, 0.05)) if v1 else 0.0,
                           path_indep_init=(0.8 * survival + rng.normal(0, 0.05)) if v1 else 0.0,
                           rho_init=0.5, rho_last=0.5)
                for when in ("init", "last"):
                    gap = rho_gap if v1 else 0.0
                    row.update({f"path_{when}": (survival + rng.normal(0, 0.05)) if v1 else 0.0,
                                f"stage_rho_{when}": stage_rho + gap + rng.normal(0, 0.01),
                                f"grad_ratio_{when}": 1 + gap + rng.normal(0, 0.01),
                                f"stage_rho_signed_{when}": stage_rho + rng.normal(0, 0.01)})
                for stat in ET.CUTS:
                    value = 0.05 + rng.normal(0, 0.002) if v1 else 0.0
                    row.update({f"{stat}_init": value, f"{stat}_last": value})
                rows.append(row)
    return pd.DataFrame(rows)


def early_answer(table, claim):
    s = dict(depths=sorted(table["depth"].unique()))
    return answer(ET.claims_rows(table, ET.control_rows(table, s), dataset="digits"), claim)


@pytest.mark.parametrize("claim, table, expected", [
    ("C2", early_table(survival=-3.0), C.SUPPORTED),
    ("C2", early_table(survival=-0.05), C.NOT_SUPPORTED),
    ("C2", early_table(depths=(29, 164)), C.NOT_TESTABLE),
    ("C3", early_table(err_gap=0.3), C.SUPPORTED),
    ("C3", early_table(err_gap=0.0), C.NOT_SUPPORTED),
    ("C3", early_table(depths=(29, 164), err_gap=0.3), C.NOT_TESTABLE),
    ("C3", early_table(err_gap=0.3, v2_trains=False), C.NOT_TESTABLE),      # control E failed
    ("C4", early_table(rho_gap=0.5), C.SUPPORTED),
    ("C4", early_table(rho_gap=-0.5), C.NOT_SUPPORTED),       # V2 transmits worse than V1
    ("C4", early_table(survival=0.3, rho_gap=0.0), C.NOT_SUPPORTED),      # the path row decides
    ("C4", early_table(depths=(29, 164)), C.NOT_TESTABLE),
])
def test_early_training_primary_tests(claim, table, expected):
    assert early_answer(table, claim) == expected


def test_a_failed_control_is_named_in_the_dependent_rows():
    table = early_table(err_gap=0.3, v2_trains=False)
    controls = ET.control_rows(table, dict(depths=[29, 164, 1001]))
    assert [r["passed"] for r in controls] == [True, True, False]
    rows = ET.claims_rows(table, controls, dataset="digits")
    (c3,) = [r for r in rows if r["claim"] == "C3" and r["role"] == "primary"]
    assert c3["verdict"] == C.NOT_TESTABLE and c3["note"].startswith("control E failed: V2-1001: 0 of 5")
    # C4 at init needs no trained net: still answered
    c4 = [r for r in rows if r["claim"] == "C4" and r["role"] == "primary"]
    assert [r["verdict"] for r in c4] == [C.SUPPORTED, C.NOT_TESTABLE] * 3


def full_table(depths=(20, 56, 110, 164), *, err_gap=0.0, gap_gap=0.0, fits=True, v1_110_err=0.0,
               gap_noise=0.0005, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        for s in SEEDS:
            err, gap = 0.2 + rng.normal(0, 0.02), 0.02 + rng.normal(0, 0.002)
            for version in (1, 2):
                v1 = version == 1
                train_error = 0.0 if fits else 0.3
                if v1 and depth == 110:
                    train_error += v1_110_err
                rows.append(dict(depth=depth, version=version, seed=s, width=16,
                                 err_early=err + (err_gap if v1 else 0) + rng.normal(0, 0.005),
                                 err_late=err / 4 + (err_gap if v1 else 0) + rng.normal(0, 0.005),
                                 warmup_error=0.5, train_error=train_error,
                                 gap_error=gap + (gap_gap if v1 else 0) + rng.normal(0, gap_noise),
                                 fits=train_error <= 0.02, test_error=0.03, gap_loss=0.1,
                                 train_loss_final=0.01, distance_init=1.0 if v1 else 0.7))
    return pd.DataFrame(rows)


def full_answer(table, claim, n_test=100_000):
    rows = FT.claims_rows(table, FT.control_rows(table), dataset="digits", n_test=n_test)
    return answer(rows, claim)


@pytest.mark.parametrize("claim, table, expected", [
    ("C5", full_table(err_gap=0.0), C.SUPPORTED),
    ("C5", full_table(err_gap=0.3), C.NOT_SUPPORTED),
    ("C5", full_table(depths=(164, 326)), C.NOT_TESTABLE),
    ("C5", full_table(v1_110_err=0.4), C.NOT_TESTABLE),          # controls B, C: V1-110 fails
    ("C6", full_table(gap_gap=0.03), C.SUPPORTED),
    ("C6", full_table(gap_gap=-0.03), C.NOT_SUPPORTED),
    ("C6", full_table(gap_gap=0.03, fits=False), C.NOT_TESTABLE),
    ("C6", full_table(gap_gap=0.03, gap_noise=0.05), C.NOT_TESTABLE),   # underpowered
])
def test_full_training_primary_tests(claim, table, expected):
    assert full_answer(table, claim) == expected


def test_the_test_set_size_alone_can_make_c6_underpowered():
    """Seeds that agree perfectly cannot detect He et al.'s 0.24 points with 360 test images:
    the test set's binomial noise alone sets the floor."""
    table = full_table(gap_gap=0.03)
    assert full_answer(table, "C6", n_test=1_000_000) == C.SUPPORTED
    rows = FT.claims_rows(table, FT.control_rows(table), dataset="digits", n_test=360)
    c6 = [r for r in rows if r["claim"] == "C6" and r["role"] == "primary"]
    assert all(r["verdict"] == C.NOT_TESTABLE and "underpowered" in r["note"] for r in c6)
    floor = C.detectable_effect(C.test_set_sd([0.03] * 5, [0.03] * 5, 360), 5)
    assert all(r["detectable"] >= floor for r in c6)


def test_full_training_controls_on_a_degraded_v1():
    """V1-110 ends 40 points worse than V1-56: B and C fail, with their numbers."""
    rows = {(r["control"], r["depth"], r["version"]): r for r in FT.control_rows(full_table(v1_110_err=0.4))}
    assert not rows[("B", 110, 1)]["passed"] and "0 of 5" in rows[("B", 110, 1)]["numbers"]
    assert not rows[("C", 110, 1)]["passed"] and "+40.0 points" in rows[("C", 110, 1)]["numbers"]
    assert rows[("A", 56, 1)]["passed"] and rows[("D", 110, 2)]["passed"]


def ablation_table(*, delta=0.0, fits=True, noise=0.001, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in SEEDS:
        base = 0.05 + rng.normal(0, 0.005)
        for kind in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"):
            error = base + (delta if kind == "full_preact" else 0) + rng.normal(0, noise)
            rows.append(dict(depth=110, unit_kind=kind, seed=s, width=16, test_error=error,
                             train_error=0.0 if (fits or kind != "original") else 0.3))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("table, n_test, expected", [
    (ablation_table(delta=-0.02), 10**7, C.SUPPORTED),
    (ablation_table(delta=+0.02), 10**7, C.NOT_SUPPORTED),
    (ablation_table(delta=-0.02, fits=False), 10**7, C.NOT_TESTABLE),      # control B
    (ablation_table(delta=-0.02), 360, C.NOT_TESTABLE),                    # underpowered
])
def test_unit_ablation_primary_test(table, n_test, expected):
    rows = UA.claims_rows(table, UA.control_rows(table), dataset="digits", n_test=n_test)
    assert answer(rows, "T2") == expected


def test_holm_is_applied_within_a_claim():
    """C5 has a primary test per depth and window: each p is Holm-adjusted over them."""
    table = full_table()
    rows = C.apply_holm(FT.claims_rows(table, FT.control_rows(table), dataset="d", n_test=10**6))
    c5 = [r for r in rows if r["claim"] == "C5" and r["role"] == "primary"]
    assert len(c5) == 4
    assert [r["p_holm"] for r in c5] == pytest.approx(list(C.holm([r["p_value"] for r in c5])))


def test_c2_primary_is_the_compounded_cut_against_half():
    rows = ET.claims_rows(early_table(survival=-3.0), ET.control_rows(early_table(), QUICK_EARLY),
                          dataset="d")
    (c2,) = [r for r in rows if r["claim"] == "C2" and r["role"] == "primary"]
    assert c2["effect"] == pytest.approx(-3.0 - math.log10(0.5), abs=0.1) and c2["n"] == 5


def test_c1_mechanism_check_follows_the_formula_errors():
    def units(error):
        return pd.DataFrame([dict(dataset="gaussian", depth=20, version=v, seed=s, unit=u,
                                  error=error * (1 + 0.1 * s), error_sum=0.0, error_other_f=0.5)
                             for v in (1, 2) for s in SEEDS for u in range(3)])
    good, bad = SP.c1_rows(units(1e-7)), SP.c1_rows(units(1e-3))
    assert {r["verdict"] for r in good} == {C.SUPPORTED} and {r["role"] for r in good} == {"mechanism"}
    assert {r["verdict"] for r in bad} == {C.NOT_SUPPORTED}
