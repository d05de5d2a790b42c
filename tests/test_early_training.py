"""experiments/early_training.py (claims C3, C5, C4 late) end to end on the smoke preset: files,
the loss measures recomputed by hand, verdicts and the depth threshold on synthetic data with a
known effect, figures redrawn from the CSVs alone, and answers to bad input."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from experiment_checks import (bad_input, help_text, one_thread, redraw_without_model_code,  # noqa: F401
                               run_smoke)
from analysis import early_training as ET
from analysis import claims as C

NAME = "early_training"
FIGURES = ["c3_loss_curves", "c3_c5_gap_vs_depth", "c4_late_transmission"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_and_claim(smoke):
    run, _ = smoke
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed"
    assert config["preset"]["schedule"]["warmup_lr"] == 0.01
    train = pd.read_csv(run / "train.csv")
    assert set(train["version"]) == {1, 2} and set(train["seed"]) == {0, 1, 2}
    table = pd.read_csv(run / "summary.csv")
    assert len(table) == 4 * 2 * 3 and table[["auc", "abs_log_rho_ratio"]].notna().all().all()
    assert set(table["probe_step"]) == {6}
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C3", "C4", "C5"}
    c3 = claims[claims["claim"] == "C3"]
    assert len(c3) == 4 * len(ET.LOSS_MEASURES) and (c3["n"] == 3).all()
    assert set(c3["block"]) == {"basic", "bottleneck"}
    # one row per depth counts for C7 in each of C3 and C4
    counted = claims[claims["for_c7"].astype(str) == "True"]
    assert sorted(counted.groupby("claim").size().items()) == [("C3", 4), ("C4", 4)]
    c5 = claims[claims["claim"] == "C5"]
    assert c5["depth"].isna().sum() == 2 and (c5["for_c7"].astype(str) == "False").all()
    assert len(c5) == 2 + 4         # a threshold per block; "small" rows below 164 layers
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_loss_measures_recomputed_by_hand(smoke):
    run, _ = smoke
    train = pd.read_csv(run / "train.csv")
    table = pd.read_csv(run / "summary.csv").set_index(["depth", "version", "seed"])
    loss = train.query("split == 'train' and metric == 'loss' and depth == 29 and version == 1 "
                       "and seed == 2").sort_values("step")["value"].to_numpy()
    row = table.loc[(29, 1, 2)]
    assert row["auc"] == pytest.approx(loss.mean())
    assert row["loss_q100"] == pytest.approx(loss[-1:].mean())     # window: 10% of 6 -> 1 step
    assert row["loss_q50"] == pytest.approx(loss[2])
    assert row["threshold"] == pytest.approx(0.5 * math.log(10))


def test_steps_to_threshold_and_censoring():
    steps = np.arange(1, 21)
    rows = [dict(depth=20, version=v, seed=0, width=4, step=s, split="train", metric="loss",
                 value=(3.0 - 0.2 * s) if v == 2 else 3.0) for v in (1, 2) for s in steps]
    table = ET.loss_measures(pd.DataFrame(rows), num_classes=10).set_index("version")
    # window 2: the mean of two steps first drops below 1.151 at step 10 (mean of 1.2 and 1.0)
    assert table.loc[2, "steps_to"] == 10 and not table.loc[2, "censored"]
    assert table.loc[1, "steps_to"] == 21 and table.loc[1, "censored"]


def synthetic(gap_from):
    """A summary where V1's AUC exceeds V2's by 0.5 from depth ``gap_from`` on."""
    rng = np.random.default_rng(0)
    rows = []
    for depth in (29, 65, 101, 164, 1001):          # bottleneck nets: one threshold
        for seed in range(5):
            base = 1.0 + rng.normal(0, 0.01)
            for version in (1, 2):
                auc = base + (0.5 if version == 1 and depth >= gap_from else 0) + rng.normal(0, 0.01)
                rows.append(dict(depth=depth, version=version, seed=seed, width=16, auc=auc,
                                 loss_q25=auc, loss_q50=auc, loss_q100=auc, steps_to=50,
                                 censored=False))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gap_from, threshold_verdict", [(164, C.SUPPORTED),
                                                         (1001, C.INCONCLUSIVE),
                                                         (29, C.NOT_SUPPORTED)])
def test_verdicts_and_threshold_follow_the_data(gap_from, threshold_verdict):
    rows = pd.DataFrame(ET.claims_rows(synthetic(gap_from), dataset="digits", preset="quick"))
    assert set(rows["block"]) == {"bottleneck"}
    auc = rows[(rows["claim"] == "C3") & rows["measure"].str.startswith("area")].set_index("depth")
    for depth, verdict in auc["verdict"].items():
        if depth >= gap_from:
            assert verdict == C.SUPPORTED          # clear effect
        else:
            assert verdict != C.SUPPORTED          # no effect
    threshold = rows[(rows["claim"] == "C5") & rows["depth"].isna()].iloc[0]
    assert threshold["effect"] == gap_from and threshold["verdict"] == threshold_verdict
    small = rows[(rows["claim"] == "C5") & rows["depth"].notna()].set_index("depth")["verdict"]
    for depth, verdict in small.items():     # "below 164 the difference is small"
        assert verdict == (C.SUPPORTED if depth < gap_from else C.NOT_SUPPORTED)


def test_published_copy_redraws_without_model_code(smoke):
    _, publish = smoke
    assert {"config.json", "claims.csv", "summary.csv", "train.csv.gz"} <= \
        {p.name for p in publish.iterdir()}
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--seeds", "1", "2"], "need at least 3 seeds"),
    (["--checkpoints", "99"], "--checkpoints"),
    (["--batch-size", "5000"], "exceeds the 1437 training images"),
    (["--out", "/proc/version/x"], "--out"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input(NAME, argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text(NAME, capsys)
    for flag in ("--preset", "--seeds", "--device", "--dataset", "--data-dir", "--out",
                 "--depths", "--width", "--steps", "--checkpoints", "--lr", "--batch-size",
                 "--threads", "--publish"):
        assert flag in text
