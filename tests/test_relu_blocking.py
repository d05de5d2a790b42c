"""experiments/relu_blocking.py (claim C2) end to end on the smoke preset: files, the cut
statistics against a direct computation, claims that follow the data, figures redrawn from
the CSVs alone, and answers to bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from experiment_checks import (bad_input, help_text, one_thread, redraw_without_model_code,  # noqa: F401
                               run_smoke)
from analysis import relu_blocking as RB
from analysis import claims as C
from resnet_lab.data import Batches, apply_augmentation, draw_augmentation, load_dataset
from resnet_lab.sweep import Cell, build

NAME = "relu_blocking"
FIGURES = ["c2_cut_heatmap", "c2_cut_profiles", "c2_cut_over_training"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_and_claim(smoke):
    run, _ = smoke
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["depths"] == [20, 29]
    cuts = pd.read_csv(run / "cuts.csv.gz")
    assert sorted(cuts["step"].unique()) == [1, 3, 5]
    assert ((cuts["shortcut_cut"] >= 0) & (cuts["shortcut_cut"] <= 1)).all()
    table = pd.read_csv(run / "summary.csv")
    assert len(table) == 2 * 3 * 3                  # depths x seeds x probed steps
    claims = C.read_claims(run / "claims.csv")
    assert set(claims["claim"]) == {"C2"}
    # (a) 29 vs 20 layers, four measures, at init and at the end; (b) three measures per depth
    assert len(claims) == 4 * 2 + 3 * 2
    assert set(claims["statement"]) == {"(a) more frequent at 1000 layers",
                                        "(b) fades after some training"}
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_cut_matches_a_direct_computation(smoke):
    """Rebuild the seed-0 V1 net of depth 20 and its first (augmented) batch: the share of
    shortcut energy where y = h + F <= 0, per unit, is what cuts.csv holds at step 1."""
    run, _ = smoke
    cuts = pd.read_csv(run / "cuts.csv.gz").query("depth == 20 and seed == 0 and step == 1")
    data = load_dataset("digits")
    net = build(Cell(20, "original", 0, 4), data)
    idx = Batches(len(data.train_x), 16, seed=0).indices(0)
    generator = torch.Generator().manual_seed(0)
    x = apply_augmentation(data.train_x[idx], *draw_augmentation(16, generator, data.pad,
                                                                 data.flip), data.pad)
    seen = {}
    hooks = [unit.taps[name].register_forward_hook(
        lambda m, a, out, u=u, name=name: seen.__setitem__((u, name), out.detach()))
        for u, unit in enumerate(net.units()) for name in ("shortcut", "sum")]
    net(x)
    for h in hooks:
        h.remove()
    for u in range(len(net.units())):
        h, y = seen[(u, "shortcut")].double(), seen[(u, "sum")].double()
        expected = (h ** 2 * (y <= 0)).sum() / (h ** 2).sum()
        got = cuts.loc[cuts["unit"] == u, "shortcut_cut"].item()
        assert got == pytest.approx(expected.item(), abs=1e-5)
        assert cuts.loc[cuts["unit"] == u, "frac_neg"].item() == pytest.approx(
            (y < 0).double().mean().item(), abs=1e-6)


def test_summary_shares():
    cuts = pd.DataFrame({"depth": 20, "seed": 0, "step": 1, "unit": range(4),
                         "shortcut_cut": [0.0, 0.6, 0.51, 0.2], "grad_cut": [0.9, 0.1, 0.0, 0.0],
                         "frac_neg": 0.1})
    row = RB.summary(cuts).iloc[0]
    assert row["heavy_share"] == 0.5 and row["heavy_grad_share"] == 0.25
    assert row["mean_cut"] == pytest.approx(1.31 / 4)


@pytest.mark.parametrize("deep_more, verdict", [(0.2, C.SUPPORTED), (0.0, None)])
def test_claims_follow_the_data(deep_more, verdict):
    """Synthetic summaries: the 1001-layer nets cut ``deep_more`` more than the 164-layer ones;
    the cut fades by 0.05 at 164 layers and not at 1001."""
    rng = np.random.default_rng(0)
    rows = []
    for depth in (164, 1001):
        for seed in range(4):
            for step in (1, 101):
                cut = 0.1 + (deep_more if depth == 1001 else 0) + rng.normal(0, 0.005)
                if depth == 164 and step == 101:
                    cut -= 0.05
                rows.append(dict(depth=depth, seed=seed, step=step, mean_cut=cut,
                                 heavy_share=cut, mean_grad_cut=cut, mean_frac_neg=cut))
    out = RB.claims_rows(pd.DataFrame(rows), dataset="digits", preset="quick")
    frequent = [r for r in out if r["statement"].startswith("(a)") and "mean shortcut" in r["measure"]]
    assert len(frequent) == 2
    at_init = next(r for r in frequent if r["measure"].endswith("at initialisation"))
    assert (at_init["verdict"] == verdict) if verdict else (at_init["verdict"] != C.SUPPORTED)
    fades = {r["depth"]: r["verdict"] for r in out
             if r["statement"].startswith("(b)") and "shortcut" in r["measure"]}
    assert fades[164] == C.SUPPORTED and fades[1001] != C.SUPPORTED


def test_published_copy_redraws_without_model_code(smoke):
    _, publish = smoke
    assert {"config.json", "claims.csv", "summary.csv", "cuts.csv.gz", "train.csv.gz"} <= \
        {p.name for p in publish.iterdir()}
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--seeds", "0", "0", "1"], "each seed once"),
    (["--checkpoints", "1"], "--checkpoints"),
    (["--steps", "0"], "--steps"),
    (["--lr", "0"], "--lr"),
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
