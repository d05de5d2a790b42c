"""experiments/full_training.py (claims C5, C6) end to end on the smoke preset: the files and
their schema, the weight-input statistics against a direct computation, figures redrawn from the
CSVs alone, and answers to bad input. Primary-test verdicts: tests/test_primary_tests.py."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis import claims as C
from analysis import controls as K
from analysis import full_training as FT
from resnet_lab.engine.data import Batches, apply_augmentation, draw_augmentation, load_dataset
from resnet_lab.runs.sweep import Cell, build

from experiment_checks import bad_input, help_text, redraw_without_model_code, run_smoke

ROOT = Path(__file__).resolve().parents[1]
NAME = "full_training"
ID_COLUMNS = ["experiment", "unit_kind", "version", "depth", "width", "seed"]
FIGURES = ["c5_training_error", "c5_gap_vs_depth", "c6_final_metrics", "c6_input_distance"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--threads", "1",
                    "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_in_the_schema(smoke_run):
    run, _ = smoke_run
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["preset"] == "smoke"
    assert config["preset"]["dataset"] == "digits" and config["preset"]["depths"] == [8, 14]
    train = pd.read_csv(run / "train.csv.gz")
    assert list(train.columns[:6]) == ID_COLUMNS
    assert set(train["version"]) == {1, 2} and set(train["seed"]) == {0, 1, 2}
    final = pd.read_csv(run / "final.csv")
    assert len(final) == 2 * 2 * 3 * 4          # depths x versions x seeds x (split, metric)
    wi = pd.read_csv(run / "weight_inputs.csv.gz")
    assert sorted(wi["step"].unique()) == [1, 10]    # initialisation and the last step
    for depth in (8, 14):                            # every Conv2d / Linear, once per probed step
        for kind in ("original", "full_preact"):
            net = build(Cell(depth, kind, 0, 4), load_dataset("digits"))
            n = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
            cell = wi.query(f"depth == {depth} and unit_kind == '{kind}' and seed == 0 and step == 1")
            assert len(cell) == n
            assert set(cell["role"]) == {"stem", "unit input", "inside branch", "classifier"}
    assert np.allclose(wi["distance"] ** 2, wi["mean_rms"] ** 2 + wi["var_dev"] ** 2)
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 12
    assert summary[["gap_error", "distance_init", "err_early", "err_late"]].notna().all().all()
    assert np.allclose(summary["gap_error"], summary["test_error"] - summary["train_error"])
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C5", "C6"}
    assert set(claims.loc[claims["role"] == "mechanism", "claim"]) == {"C6"}
    # the smoke depths have none of the controls' or the claims' depths: all not testable
    primary = claims[claims["role"] == "primary"]
    assert (primary["verdict"] == C.NOT_TESTABLE).all()
    assert primary["note"].str.contains("no V1/V2 pair at (?:56|110|164) layers").all()
    controls = K.read_controls(run / "controls.csv")
    # every control at every depth a primary uses, both versions where He et al. ran both
    assert list(controls["control"]) == ["W"] * 4 + ["A"] * 2 + ["B", "C"] + ["D"] * 3 + ["F"] * 2
    assert list(zip(controls["depth"], controls["version"]))[:4] == [(56, 1), (56, 2), (110, 1),
                                                                      (110, 2)]
    assert not controls["passed"].any() and controls["numbers"].str.startswith("not measured").all()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 1000


def test_weight_input_statistics_match_a_direct_computation(smoke_run):
    """Rebuild the seed-0 V1 net of depth 8 and its first (augmented) batch; the channel
    means and variances of each weight layer's input must be what the table holds."""
    run, _ = smoke_run
    wi = pd.read_csv(run / "weight_inputs.csv.gz").query(
        "depth == 8 and version == 1 and seed == 0 and step == 1").set_index("layer")
    data = load_dataset("digits")
    net = build(Cell(8, "original", 0, 4), data)
    idx = Batches(len(data.train_x), 32, seed=0).indices(0)
    generator = torch.Generator().manual_seed(0)
    x = apply_augmentation(data.train_x[idx], *draw_augmentation(32, generator, data.pad, data.flip),
                           data.pad)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: seen.setdefault(name, a[0].detach()))
             for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    net(x)
    for h in hooks:
        h.remove()
    for name, t in seen.items():
        dims = (0, 2, 3) if t.dim() == 4 else (0,)
        m, v = t.double().mean(dims), t.double().var(dims, unbiased=False)
        assert wi.loc[name, "in_mean_mean"] == pytest.approx(m.mean().item(), rel=1e-4, abs=1e-6)
        assert wi.loc[name, "in_var_mean"] == pytest.approx(v.mean().item(), rel=1e-4, abs=1e-6)
        expected = np.sqrt((m ** 2 + (v - 1) ** 2).mean().item())
        assert wi.loc[name, "distance"] == pytest.approx(expected, rel=1e-4)
    assert wi.loc["stages.1.0.branch.0", "role"] == "unit input"
    assert wi.loc["stages.1.0.branch.3", "role"] == "inside branch"


def test_claims_are_recomputed_from_the_summary(smoke_run):
    run, _ = smoke_run
    table = pd.read_csv(run / "summary.csv")
    again = pd.DataFrame(C.apply_holm(FT.claims_rows(table, FT.control_rows(table),
                                                     dataset="digits", n_test=360)))
    written = C.read_claims(run / "claims.csv")
    assert again["verdict"].tolist() == written["verdict"].tolist()
    assert np.allclose(again["effect"], written["effect"], equal_nan=True)


@pytest.mark.slow
def test_published_copy_is_small_and_redraws_without_model_code(smoke_run):
    _, publish = smoke_run
    names = {p.name for p in publish.iterdir()}
    assert {"config.json", "claims.csv", "controls.csv", "summary.csv", "weight_inputs.csv.gz",
            "train.csv.gz", "figures"} <= names and "probe.csv.gz" not in names
    assert sum(p.stat().st_size for p in publish.glob("*.*")) < 2_000_000
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--seeds", "0", "1"], "need at least 3 seeds"),
    (["--probe-steps", "0"], "--probe-steps"),
    (["--lr", "-1"], "--lr -1.0: must be a positive"),
    (["--warmup-steps", "10"], "must be below --steps (10)"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
    (["--out", "/proc/version/x"], "--out"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input(NAME, argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text(NAME, capsys)
    for flag in ("--preset", "--seeds", "--device", "--dataset", "--data-dir", "--out", "--depths",
                 "--width", "--steps", "--lr", "--batch-size", "--probe-steps", "--threads",
                 "--workers", "--precision", "--publish"):
        assert flag in text
