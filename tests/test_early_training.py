"""experiments/early_training.py (claims C2, C3, C4) end to end on the smoke preset: files, the
training measures recomputed by hand, the cut table against the probe rows, figures redrawn from
the CSVs alone, and answers to bad input. Primary-test verdicts: tests/test_primary_tests.py."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import claims as C
from analysis import controls as K
from analysis import early_training as ET
from analysis.measures import curve_measures
from experiment_checks import (bad_input, help_text, one_thread, redraw_without_model_code,  # noqa: F401
                               run_smoke)

NAME = "early_training"
FIGURES = ["c3_training_error", "c3_gap_vs_depth", "c4_transmission", "c2_cut_over_training",
           "c3_interventions"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_and_claim(smoke):
    run, _ = smoke
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["schedule"]["warmup_lr"] == 0.01
    assert config["preset"]["schedule"]["milestones"] == [32000, 48000]    # no division yet
    assert config["preset"]["schedule"]["warmup_max_steps"] == 3            # one fixed warm-up
    assert config["data"]["image_size"] == [8, 8] and config["data"]["test"] == 360
    train = pd.read_csv(run / "train.csv.gz")
    pairs = train[train["arm"].isna()]
    assert set(pairs["version"]) == {1, 2} and set(train["seed"]) == {0, 1, 2}
    assert set(train["arm"].dropna()) == set(ET.ARMS)                 # at the deepest depth only
    assert set(train.loc[train["arm"].notna(), "depth"]) == {47}
    table = pd.read_csv(run / "summary.csv")
    assert len(table) == 3 * 2 * 3
    assert table[["err_c3", "err_end", "stage_rho_init", "survival_init"]].notna().all().all()
    assert (table.loc[table["version"] == 2, ["grad_cut_init", "survival_init"]] == 0).all().all()
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C2", "C3", "C4"}
    primary = claims[claims["role"] == "primary"]
    # the smoke preset has no 1001-layer net: every primary test of the plan says so (C2 and
    # C4 on the identity path, C3; C4's stage_rho and gradient ratio are secondary there)
    assert len(primary) == 4 and (primary["verdict"] == C.NOT_TESTABLE).all()
    assert set(primary.loc[primary["claim"] != "C3", "known_group"]) == {"shortcut_path"}
    assert primary["note"].str.contains("1001").all()
    controls = K.read_controls(run / "controls.csv")
    # W for both versions at the shallowest depth and at 1001 (none here: not measured, failed),
    # A for both versions, E at 1001
    assert list(controls["control"]) == ["W"] * 4 + ["A"] * 2 + ["E"]
    assert list(controls["passed"][[2, 3, 6]]) == [False] * 3
    assert controls.loc[2, "numbers"].startswith("not measured")
    # the run records the plan it was made under
    from analysis.plan import plan_hash
    assert config["plan_sha256"] == plan_hash() and config["plan_file"] == "plans/plan.json"
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_both_nets_of_a_pair_share_one_lr_schedule(smoke):
    """Read back from the training rows: V1 and V2 of a seed and depth get the same lr at every
    iteration (one fixed warm-up, no data-dependent switch)."""
    run, _ = smoke
    train = pd.read_csv(run / "train.csv.gz")
    rates = train[train["metric"] == "lr"]
    lr = rates[rates["arm"].isna()].pivot_table(index=["depth", "seed", "step"],
                                                columns="version", values="value")
    assert len(lr) == 3 * 3 * 10 and (lr[1] == lr[2]).all()
    # and every intervention net of a seed the same schedule as its V1/V2 pair
    arms = rates[rates["arm"].notna()].set_index(["arm", "depth", "seed", "step"])["value"]
    for (arm, depth, seed, step), value in arms.items():
        assert value == lr.loc[(depth, seed, step), 1]
    assert set(lr.loc[(29, 0)][1].iloc[:3]) == {0.01} and set(lr.loc[(29, 0)][1].iloc[3:]) == {0.1}


def test_training_measures_recomputed_by_hand(smoke):
    run, _ = smoke
    train = pd.read_csv(run / "train.csv.gz")
    net = train.query("depth == 29 and version == 1 and seed == 2 and split == 'train'")
    error = net[net["metric"] == "error"].set_index("step")["value"]
    row = pd.read_csv(run / "summary.csv").set_index(["depth", "version", "seed"]).loc[(29, 1, 2)]
    windows = ET.windows({"steps": 10, "schedule": {"warmup_max_steps": 3}})
    assert windows == {"c3": (3, 6), "end": (8, 10)}
    assert row["err_c3"] == pytest.approx(error.loc[4:6].mean())
    assert row["err_end"] == pytest.approx(error.loc[9:10].mean())
    epoch = 1437 // 16
    assert row["warmup_error"] == pytest.approx(error.loc[max(1, 3 - epoch + 1):3].mean())


def test_survival_and_stage_transmission_recomputed_from_the_probe_rows(smoke):
    """The compounded cut and the per-stage rho, by hand from the raw probe rows."""
    run, _ = smoke
    probe = pd.read_csv(run / "probe.csv.gz")
    row = pd.read_csv(run / "summary.csv").set_index(["depth", "version", "seed"]).loc[(47, 1, 0)]
    net = probe.query("depth == 47 and version == 1 and seed == 0 and arm != arm")   # not an arm
    first = net[net["step"] == net["step"].min()]
    cuts = first.query("tap == 'sum' and stat == 'grad_cut'")["value"]
    assert row["survival_init"] == pytest.approx(np.log10(1 - cuts).sum())
    norm = first[first["stat"] == "norm"].set_index(["stage", "index", "tap", "direction"])["value"]
    ratios = []
    for stage in sorted(first["stage"].unique()):
        idx = sorted(i for i in first.loc[first["stage"] == stage, "index"].unique() if i >= 1)
        rho_in = norm[(stage, idx[0], "input", "backward")] * norm[(stage, idx[0], "input", "forward")]
        rho_out = norm[(stage, idx[-1], "output", "backward")] * norm[(stage, idx[-1], "output", "forward")]
        ratios.append(abs(np.log10(rho_in / rho_out)))
    assert row["stage_rho_init"] == pytest.approx(max(ratios))


def test_identity_path_recomputed_from_the_probe_rows(smoke):
    """C2's element-wise path and the product of averages: sums over stages of the probe's
    per-stage path_share and path_share_indep at the first probed step."""
    run, _ = smoke
    probe = pd.read_csv(run / "probe.csv.gz")
    row = pd.read_csv(run / "summary.csv").set_index(["depth", "version", "seed"]).loc[(47, 1, 0)]
    net = probe.query("depth == 47 and version == 1 and seed == 0 and arm != arm")
    first = net[net["step"] == net["step"].min()]
    for stat, column in (("path_share", "path_init"), ("path_share_indep", "path_indep_init")):
        values = first.loc[first["stat"] == stat, "value"]
        assert len(values) == 3 and row[column] == pytest.approx(np.log10(values).sum())
    v2 = pd.read_csv(run / "summary.csv").query("version == 2")
    assert (v2["path_init"].abs() < 1e-6).all()                 # identity f: nothing is cut


def test_interventions_share_recomputed_by_hand(smoke):
    """The share of V1's slow start each arm closes, from the training rows: (err_c3[V1] −
    err_c3[arm]) / (err_c3[V1] − err_c3[V2]), means over the same seeds."""
    run, _ = smoke
    train = pd.read_csv(run / "train.csv.gz")
    errors = train[(train["split"] == "train") & (train["metric"] == "error") &
                   (train["depth"] == 47) & train["step"].between(4, 6)]
    c3 = lambda part: part.groupby("seed")["value"].mean()
    pairs = errors[errors["arm"].isna()]
    v1, v2 = c3(pairs[pairs["version"] == 1]), c3(pairs[pairs["version"] == 2])
    shares = pd.read_csv(run / "interventions.csv").set_index("arm")
    assert list(shares.index) == list(ET.ARMS)
    for arm in ET.ARMS:
        mine = c3(errors[errors["arm"] == arm])
        assert shares.loc[arm, "err_c3_arm"] == pytest.approx(mine.mean())
        expected = (v1 - mine).mean() / (v1 - v2).mean()
        assert shares.loc[arm, "effect"] == pytest.approx(expected)
        gain = (v1 - mine).to_numpy()             # V1 − arm paired by seed, a one-sided 95% bound
        half = stats.t.ppf(0.95, len(gain) - 1) * gain.std(ddof=1) / np.sqrt(len(gain))
        assert shares.loc[arm, "v1_minus_arm"] == pytest.approx(gain.mean())
        assert shares.loc[arm, "v1_minus_arm_low"] == pytest.approx(gain.mean() - half)
        assert shares.loc[arm, "n"] == 3 and isinstance(shares.loc[arm, "method"], str)
    claims = C.read_claims(run / "claims.csv")
    assert (claims["arm"].dropna() == list(ET.ARMS)).all()


def test_measures_of_a_diverged_net():
    """A net that diverges counts chance error from then on."""
    steps = np.arange(1, 11)
    curve = pd.DataFrame({"step": steps, "lr": 0.01, "error": 0.2,
                          "loss": [1.0] * 5 + [np.nan] + [np.nan] * 4})
    m = curve_measures(curve.iloc[:6], windows={"late": (5, 10)}, steps=10, chance=0.9,
                       warmup=2, epoch=2)
    assert m["diverged_at"] == 6 and m["err_late"] == pytest.approx(0.9)
    assert m["warmup_error"] == pytest.approx(0.2) and (m["late_from"], m["late_to"]) == (5, 10)


def test_cut_table_is_the_mean_over_units_of_the_probe_rows(smoke):
    run, _ = smoke
    probe = pd.read_csv(run / "probe.csv.gz")
    cuts = pd.read_csv(run / "cuts.csv").set_index(["depth", "version", "seed", "step"])
    rows = probe.query("depth == 47 and version == 1 and seed == 0 and arm != arm and tap == 'sum' and "
                       "stat == 'grad_cut'")
    for step, part in rows.groupby("step"):
        assert cuts.loc[(47, 1, 0, step), "grad_cut"] == pytest.approx(part["value"].mean())


def test_claims_are_recomputed_from_the_summary(smoke):
    run, _ = smoke
    table = pd.read_csv(run / "summary.csv")
    controls = ET.control_rows(table, {"depths": [20, 29, 47]})
    assert pd.DataFrame(controls)["passed"].tolist() == K.read_controls(run / "controls.csv")["passed"].tolist()
    shares = pd.read_csv(run / "interventions.csv")
    again = pd.DataFrame(C.apply_holm(ET.claims_rows(table, controls, dataset="digits")
                                      + ET.intervention_rows(shares, dataset="digits")))
    written = C.read_claims(run / "claims.csv")
    assert again["verdict"].tolist() == written["verdict"].tolist()
    assert np.allclose(again["effect"], written["effect"], equal_nan=True)


@pytest.mark.slow
def test_published_copy_redraws_without_model_code(smoke):
    _, publish = smoke
    assert {"config.json", "claims.csv", "controls.csv", "summary.csv", "train.csv.gz",
            "cuts.csv"} <= \
        {p.name for p in publish.iterdir()}
    assert not (publish / "probe.csv.gz").exists()      # the raw probe table stays behind
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest"),
    (["--seeds", "1", "2"], "need at least 3 seeds"),
    (["--seeds", "1", "1", "2"], "each seed once"),
    (["--probe-steps", "0"], "--probe-steps 0"),
    (["--batch-size", "5000"], "exceeds the 1437 training images"),
    (["--lr", "nan"], "--lr nan"),
    (["--warmup-steps", "10"], "must be below --steps"),
    (["--warmup-steps", "-1"], "--warmup-steps -1"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input(NAME, argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text(NAME, capsys)
    for flag in ("--depths", "--seeds", "--steps", "--probe-steps", "--lr", "--width", "--workers",
                 "--threads", "--precision", "--publish"):
        assert flag in text
