"""experiments/overfitting.py (claim C6) end to end on the smoke preset: the files and their
schema, the weight-input statistics against a direct computation, verdicts that follow the
data, figures redrawn from the CSVs alone, the report section, and answers to bad input."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis import overfitting as C6
from analysis import claims as C
from resnet_lab.data import Batches, apply_augmentation, draw_augmentation, load_dataset
from analysis.report import render_report
from resnet_lab.sweep import Cell, build

from experiment_checks import bad_input, help_text, redraw_without_model_code, run_smoke

ROOT = Path(__file__).resolve().parents[1]
ID_COLUMNS = ["experiment", "unit_kind", "version", "depth", "width", "seed"]
FIGURES = ["c6_training_curves", "c6_final_metrics", "c6_weight_input_stats", "c6_input_distance"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / "overfitting"
    run = run_smoke("overfitting", tmp_path_factory.mktemp("runs"), "--threads", "1",
                    "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_in_the_schema(smoke_run):
    run, _ = smoke_run
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["preset"] == "smoke"
    assert config["preset"]["dataset"] == "digits" and config["preset"]["depths"] == [8, 11]
    train = pd.read_csv(run / "train.csv")
    assert list(train.columns[:6]) == ID_COLUMNS
    assert set(train["version"]) == {1, 2} and set(train["seed"]) == {0, 1, 2}
    final = pd.read_csv(run / "final.csv")
    assert len(final) == 2 * 2 * 3 * 4          # depths x versions x seeds x (split, metric)
    wi = pd.read_csv(run / "weight_inputs.csv.gz")
    assert sorted(wi["step"].unique()) == [1, 4]    # initialisation and the last step
    # every Conv2d / Linear of every net, once per probed step
    for depth in (8, 11):
        for kind in ("original", "full_preact"):
            net = build(Cell(depth, kind, 0, 4), load_dataset("digits"))
            n = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
            cell = wi.query(f"depth == {depth} and unit_kind == '{kind}' and seed == 0 and step == 1")
            assert len(cell) == n
            assert set(cell["role"]) == {"stem", "unit input", "inside branch", "classifier"}
    assert np.allclose(wi["distance"] ** 2, wi["mean_rms"] ** 2 + wi["var_dev"] ** 2)
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 12 and summary[["gap_error", "distance_init"]].notna().all().all()
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C6"} and len(claims) == 2 * len(C6.MEASURES)
    assert (claims["n"] == 3).all() and set(claims["depth"]) == {8, 11}
    c7 = claims.set_index("measure")["for_c7"].groupby(level=0).first()
    assert c7[[m for m in c7.index if m.startswith("final test")]].all()
    assert not c7[[m for m in c7.index if "distance" in m or "train loss" in m]].any()
    # 4 smoke steps fit nothing: the gaps compare underfit nets and stay out of C7
    gaps = claims[claims["measure"].str.startswith("generalization gap")]
    assert not gaps["for_c7"].any() and gaps["note"].str.contains("did not fit").all()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert "| 8 | 4 | V1 | 3 |" in (run / "table.md").read_text()


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
    again = pd.DataFrame(C6.claims_rows(table, dataset="digits", preset="smoke"))
    written = C.read_claims(run / "claims.csv")
    assert again["verdict"].tolist() == written["verdict"].tolist()
    assert np.allclose(again["effect"], written["effect"], equal_nan=True)


@pytest.mark.parametrize("v1_gap, verdict", [(0.05, C.SUPPORTED), (-0.05, C.NOT_SUPPORTED)])
def test_verdicts_follow_the_data(v1_gap, verdict):
    """A synthetic summary: V1's generalization gap exceeds V2's by ``v1_gap``."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(4):
        base = 0.02 + rng.normal(0, 0.002)
        for version, gap in ((1, base + v1_gap + rng.normal(0, 0.003)), (2, base)):
            rows.append(dict(depth=164, version=version, seed=seed, width=16, gap_error=gap,
                             test_error=0.05, train_error=0.01, gap_loss=0.1,
                             train_loss_final=0.05, distance_init=1.0, distance_final=1.0))
    table = pd.DataFrame(rows)
    out = {r["measure"]: r for r in C6.claims_rows(table, dataset="digits", preset="quick")}
    row = next(r for m, r in out.items() if m.startswith("generalization gap in error"))
    assert row["verdict"] == verdict and row["for_c7"] is True
    assert row["effect"] == pytest.approx(v1_gap, abs=0.01)


def test_published_copy_is_small_and_redraws_without_model_code(smoke_run):
    _, publish = smoke_run
    names = {p.name for p in publish.iterdir()}
    assert {"config.json", "claims.csv", "summary.csv", "weight_inputs.csv.gz", "train.csv.gz",
            "table.md", "figures"} <= names and "probe.csv.gz" not in names
    assert sum(p.stat().st_size for p in publish.glob("*.*")) < 2_000_000
    assert set(FIGURES) <= set(redraw_without_model_code("overfitting", publish))


def test_report_lists_c6_rows_and_figures_under_c6(smoke_run, tmp_path):
    _, publish = smoke_run
    text = render_report(publish.parent, tmp_path)
    c6 = text.split('<a id="c6"></a>')[1].split('<a id="c7"></a>')[0]
    assert "generalization gap in error" in c6 and "c6_training_curves.png" in c6
    assert "`smoke` preset is not the paper's setting" in c6
    assert "No data yet" not in c6


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--seeds", "0", "1"], "need at least 3 seeds"),
    (["--checkpoints", "0"], "--checkpoints"),
    (["--warmup-steps", "99"], "--warmup-steps 99"),
    (["--lr", "-1"], "--lr -1.0: must be a positive"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
    (["--out", "/proc/version/x"], "--out"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input("overfitting", argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text("overfitting", capsys)
    for flag in ("--preset", "--seeds", "--device", "--dataset", "--data-dir", "--out", "--depths",
                 "--width", "--steps", "--warmup-steps", "--lr", "--batch-size", "--checkpoints",
                 "--threads", "--publish"):
        assert flag in text


def test_gap_of_an_underfit_net_is_kept_out_of_c7():
    rows = [dict(depth=164, version=v, seed=s, width=16, gap_error=0.01 * (s + 1) * v,
                 test_error=0.5 if v == 1 else 0.05, train_error=0.5 if v == 1 else 0.01,
                 gap_loss=0.1, train_loss_final=1.0, distance_init=1.0, distance_final=1.0)
            for s in range(3) for v in (1, 2)]
    out = C6.claims_rows(pd.DataFrame(rows), dataset="digits", preset="quick")
    gaps = [r for r in out if r["measure"].startswith("generalization gap")]
    assert gaps and all(r["for_c7"] is False and "V1 train error 50%" in r["note"] for r in gaps)
    (test_error,) = [r for r in out if r["measure"].startswith("final test error")]
    assert test_error["for_c7"] is True and "did not fit" in test_error["note"]
