"""Every claim's primary test on synthetic per-net tables with a known answer: one where it must
say *supported*, one *not supported*, one *not testable here* -- through the same
``claims_rows`` functions the experiments run, with Holm applied as in claims.csv."""
import numpy as np
import pandas as pd
import pytest

from analysis import claims as C
from analysis import early_training as ET
from analysis import full_training as FT
from analysis import signal_propagation as SP
from analysis import unit_ablation as UA

SEEDS = range(5)


def answer(rows, claim):
    rows = C.apply_holm(rows)
    return C.claim_verdict(pd.DataFrame([r for r in rows if r["claim"] == claim
                                         and r["role"] == "primary"]))


def early_table(depths=(164, 1001), *, err_gap=0.0, rho_gap=0.0, cut=0.05, seed=0):
    """An early_training summary: V2's values around a level, V1's shifted by the gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        for s in SEEDS:
            base = dict(err=0.4 + rng.normal(0, 0.02), rho=0.5 + rng.normal(0, 0.03))
            for version in (1, 2):
                v1 = version == 1
                row = dict(depth=depth, version=version, seed=s, width=4,
                           err_window=base["err"] + (err_gap if v1 else 0) + rng.normal(0, 0.005),
                           loss_rel=0.5, steps_to_half=200 if v1 else 100, censored=False,
                           rho_init=base["rho"] + (rho_gap if v1 else 0) + rng.normal(0, 0.01),
                           rho_last=base["rho"] + (rho_gap if v1 else 0) + rng.normal(0, 0.01),
                           grad_ratio_last=1.0)
                for stat in ET.CUTS:
                    value = (cut + rng.normal(0, cut / 20)) if v1 else 0.0
                    row.update({f"{stat}_init": value, f"{stat}_last": value, f"{stat}_mean": value})
                rows.append(row)
    return pd.DataFrame(rows)


def full_table(depths=(20, 56), *, err_gap=0.0, gap_gap=0.0, fits=True, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        for s in SEEDS:
            err, gap = 0.2 + rng.normal(0, 0.02), 0.02 + rng.normal(0, 0.002)
            for version in (1, 2):
                v1 = version == 1
                rows.append(dict(depth=depth, version=version, seed=s, width=16,
                                 err_window=err + (err_gap if v1 else 0) + rng.normal(0, 0.005),
                                 loss_rel=0.5, gap_error=gap + (gap_gap if v1 else 0)
                                 + rng.normal(0, 0.0005), fits=fits, test_error=0.03,
                                 gap_loss=0.1, train_loss_final=0.01, distance_init=1.0 if v1 else 0.7))
    return pd.DataFrame(rows)


def ablation_table(*, delta=0.0, fits=True, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in SEEDS:
        base = 0.05 + rng.normal(0, 0.005)
        for kind in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"):
            error = base + (delta if kind == "full_preact" else 0) + rng.normal(0, 0.001)
            rows.append(dict(depth=20, unit_kind=kind, seed=s, width=16, test_error=error,
                             fits=fits or kind != "original"))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("claim, table, expected", [
    ("C2", early_table(cut=0.05), C.SUPPORTED),
    ("C2", early_table(cut=0.001), C.NOT_SUPPORTED),
    ("C2", early_table(depths=(29, 164)), C.NOT_TESTABLE),
    ("C3", early_table(err_gap=0.3), C.SUPPORTED),
    ("C3", early_table(err_gap=0.0), C.NOT_SUPPORTED),
    ("C3", early_table(depths=(29, 164), err_gap=0.3), C.NOT_TESTABLE),
    ("C4", early_table(rho_gap=1.0), C.SUPPORTED),
    ("C4", early_table(rho_gap=-0.5), C.NOT_SUPPORTED),
    ("C4", early_table(depths=(29, 164), rho_gap=1.0), C.NOT_TESTABLE),
])
def test_early_training_primary_tests(claim, table, expected):
    assert answer(ET.claims_rows(table, dataset="digits"), claim) == expected


@pytest.mark.parametrize("claim, table, expected", [
    ("C5", full_table(err_gap=0.0), C.SUPPORTED),
    ("C5", full_table(err_gap=0.3), C.NOT_SUPPORTED),
    ("C5", full_table(depths=(164, 326)), C.NOT_TESTABLE),
    ("C6", full_table(gap_gap=0.03), C.SUPPORTED),
    ("C6", full_table(gap_gap=-0.03), C.NOT_SUPPORTED),
    ("C6", full_table(gap_gap=0.03, fits=False), C.NOT_TESTABLE),
])
def test_full_training_primary_tests(claim, table, expected):
    assert answer(FT.claims_rows(table, dataset="digits"), claim) == expected


@pytest.mark.parametrize("table, expected", [
    (ablation_table(delta=-0.02), C.SUPPORTED),
    (ablation_table(delta=+0.02), C.NOT_SUPPORTED),
    (ablation_table(delta=-0.02, fits=False), C.NOT_TESTABLE),
])
def test_unit_ablation_primary_test(table, expected):
    assert answer(UA.claims_rows(table, dataset="digits"), "T2") == expected


def test_a_depth_the_primary_test_needs_is_named_when_missing():
    rows = ET.claims_rows(early_table(depths=(29, 164)), dataset="digits")
    (c3,) = [r for r in rows if r["claim"] == "C3" and r["role"] == "primary"]
    assert c3["verdict"] == C.NOT_TESTABLE and "1001" in c3["note"]


def test_holm_is_applied_within_a_claim():
    """C5 has a primary test per depth: each p is Holm-adjusted over them."""
    rows = C.apply_holm(FT.claims_rows(full_table(depths=(20, 56, 110)), dataset="digits"))
    c5 = [r for r in rows if r["claim"] == "C5" and r["role"] == "primary"]
    assert len(c5) == 3
    assert [r["p_holm"] for r in c5] == pytest.approx(list(C.holm([r["p_value"] for r in c5])))


def test_c1_mechanism_check_follows_the_formula_errors():
    def units(error):
        return pd.DataFrame([dict(dataset="gaussian", depth=20, version=v, seed=s, unit=u,
                                  error=error * (1 + 0.1 * s), error_sum=0.0, error_other_f=0.5)
                             for v in (1, 2) for s in SEEDS for u in range(3)])
    good, bad = SP.c1_rows(units(1e-7)), SP.c1_rows(units(1e-3))
    assert {r["verdict"] for r in good} == {C.SUPPORTED} and {r["role"] for r in good} == {"mechanism"}
    assert {r["verdict"] for r in bad} == {C.NOT_SUPPORTED}
