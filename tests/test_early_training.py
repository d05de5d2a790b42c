"""experiments/early_training.py (claims C2, C3, C4) end to end on the smoke preset: files, the
training measures recomputed by hand, the cut table against the probe rows, figures redrawn from
the CSVs alone, and answers to bad input. Primary-test verdicts: tests/test_primary_tests.py."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import claims as C
from analysis import early_training as ET
from experiment_checks import (bad_input, help_text, one_thread, redraw_without_model_code,  # noqa: F401
                               run_smoke)

NAME = "early_training"
FIGURES = ["c3_training_error", "c3_gap_vs_depth", "c4_transmission", "c2_cut_over_training"]


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
    train = pd.read_csv(run / "train.csv.gz")
    assert set(train["version"]) == {1, 2} and set(train["seed"]) == {0, 1, 2}
    table = pd.read_csv(run / "summary.csv")
    assert len(table) == 3 * 2 * 3 and table[["err_window", "rho_init", "rho_last"]].notna().all().all()
    assert (table.loc[table["version"] == 2, ["grad_cut_init", "shortcut_cut_init"]] == 0).all().all()
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C2", "C3", "C4"}
    primary = claims[claims["role"] == "primary"]
    # the smoke preset has no 1001-layer net: every primary test says so
    assert len(primary) == 4 and (primary["verdict"] == C.NOT_TESTABLE).all()
    assert primary["note"].str.contains("1001").all()
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_training_measures_recomputed_by_hand(smoke):
    run, _ = smoke
    train = pd.read_csv(run / "train.csv.gz")
    net = train.query("depth == 29 and version == 1 and seed == 2 and split == 'train'")
    error = net[net["metric"] == "error"].set_index("step")["value"]
    lr = net[net["metric"] == "lr"].set_index("step")["value"]
    row = pd.read_csv(run / "summary.csv").set_index(["depth", "version", "seed"]).loc[(29, 1, 2)]
    lo, hi = ET.window({"steps": 10})
    assert (lo, hi) == (6, 10) and row["err_window"] == pytest.approx(error.loc[lo + 1: hi].mean())
    at_01 = lr[lr > 0.01]
    assert row["warmup_end"] == (at_01.index[0] - 1 if len(at_01) else pytest.approx(np.nan, nan_ok=True))


def test_measures_of_a_diverged_or_stuck_net():
    """A net that diverges counts chance error from then on; one that never leaves the warm-up
    has no warmup_end and a censored steps_to_half."""
    steps = np.arange(1, 11)
    curve = pd.DataFrame({"step": steps, "lr": 0.01, "error": 0.2,
                          "loss": [1.0] * 5 + [np.nan] + [np.nan] * 4})
    m = ET.loss_measures(curve.iloc[:6], window=[5, 10], steps=10, chance=0.9)
    assert m["diverged_at"] == 6 and m["err_window"] == pytest.approx(0.9)
    assert np.isnan(m["warmup_end"]) and m["censored"] and m["steps_to_half"] == 10


def test_cut_table_is_the_mean_over_units_of_the_probe_rows(smoke):
    run, _ = smoke
    probe = pd.read_csv(run / "probe.csv.gz")
    cuts = pd.read_csv(run / "cuts.csv").set_index(["depth", "version", "seed", "step"])
    rows = probe.query("depth == 47 and version == 1 and seed == 0 and tap == 'sum' and "
                       "stat == 'grad_cut'")
    for step, part in rows.groupby("step"):
        assert cuts.loc[(47, 1, 0, step), "grad_cut"] == pytest.approx(part["value"].mean())


def test_claims_are_recomputed_from_the_summary(smoke):
    run, _ = smoke
    again = pd.DataFrame(C.apply_holm(ET.claims_rows(pd.read_csv(run / "summary.csv"),
                                                     dataset="digits")))
    written = C.read_claims(run / "claims.csv")
    assert again["verdict"].tolist() == written["verdict"].tolist()
    assert np.allclose(again["effect"], written["effect"], equal_nan=True)


def test_published_copy_redraws_without_model_code(smoke):
    _, publish = smoke
    assert {"config.json", "claims.csv", "summary.csv", "train.csv.gz", "cuts.csv"} <= \
        {p.name for p in publish.iterdir()}
    assert not (publish / "probe.csv.gz").exists()      # the raw probe table stays behind
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest"),
    (["--seeds", "1", "2"], "need at least 3 seeds"),
    (["--seeds", "1", "1", "2"], "each seed once"),
    (["--checkpoints", "0"], "--checkpoints 0"),
    (["--batch-size", "5000"], "exceeds the 1437 training images"),
    (["--lr", "nan"], "--lr nan"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input(NAME, argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text(NAME, capsys)
    for flag in ("--depths", "--seeds", "--steps", "--checkpoints", "--lr", "--width", "--workers",
                 "--threads", "--precision", "--publish"):
        assert flag in text
