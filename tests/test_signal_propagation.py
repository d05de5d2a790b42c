"""experiments/signal_propagation.py (claims C1, C4, C5) end to end on the smoke preset; the C1
formula check against deliberately broken units; the analytic variance law against a direct
computation; the transmission measure on known numbers; figures redrawn from the CSVs alone."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from experiment_checks import (bad_input, help_text, one_thread, redraw_without_model_code,  # noqa: F401
                               run_smoke)
from analysis import signal_propagation as SP
from resnet_lab import cifar_resnet
from analysis import claims as C
from resnet_lab.networks.shortcuts import Identity, IdentityAfter, ReLUAfter
from resnet_lab.networks.units import ResidualUnit

NAME = "signal_propagation"
FIGURES = ["c1_formula_check", "c4_spp_gaussian", "c4_spp_digits", "c4_gap_vs_depth"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file_and_claim(smoke):
    run, _ = smoke
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["preset"] == "smoke"
    probe = pd.read_csv(run / "probe.csv.gz")
    assert list(probe.columns[:7]) == ["experiment", "unit_kind", "version", "depth", "width",
                                       "seed", "dataset"]
    assert set(probe["dataset"]) == {"gaussian", "digits"} and set(probe["step"]) == {1}
    assert set(probe["tap"]) == {"input", "shortcut", "branch", "sum", "output"}
    assert set(probe["direction"]) == {"forward", "backward"}
    units = pd.read_csv(run / "units.csv.gz")
    # 20, 32 layers: 9, 15 basic units; 29, 47 layers: 9, 15 bottleneck units;
    # x 2 versions x 3 seeds x 2 inputs
    assert len(units) == (9 + 15 + 9 + 15) * 2 * 3 * 2 and (units["error"] < SP.TOLERANCE).all()
    assert (units["error_other_f"] > 0.1).all()      # the check tells ReLU from identity
    claims = C.read_claims(run / "claims.csv")
    c1 = claims[claims["claim"] == "C1"]
    assert len(c1) == 8 and (c1["verdict"] == C.SUPPORTED).all() and (c1["n"] == 6).all()
    assert set(c1["role"]) == {"mechanism"}                  # true by construction: no evidence
    c4 = claims[claims["claim"] == "C4"]
    assert len(c4) == 4 * 2 * 4             # 4 depths x 2 inputs x (rho, raw, V2 law, V1 law)
    assert set(claims["role"]) == {"mechanism", "secondary"}    # primary tests: early_training
    c2 = claims[claims["claim"] == "C2"]    # 47 vs 29 (bottleneck) and 32 vs 20 (basic), per input
    assert len(c2) == 2 * 2 * 2 and set(c2["depth"]) == {32, 47}
    fits = pd.read_csv(run / "linear_fits.csv")
    assert {"slope", "intercept", "r2", "predicted_slope"} <= set(fits.columns)
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 1000


class _ReLUDeclaredIdentity(IdentityAfter):
    """Declares f(y) = y, computes a ReLU."""

    def forward(self, y):
        return torch.relu(y)


class _IdentityDeclaredReLU(ReLUAfter):
    """Declares f(y) = max(y, 0), computes the identity."""

    def forward(self, y):
        return y


def broken(kind):
    """A net whose second unit computes another formula than it declares."""
    torch.manual_seed(0)
    net = cifar_resnet(20, unit_kind=kind, width=4, in_channels=1)
    unit = net.units()[1]
    if kind == "full_preact":
        unit.after = _ReLUDeclaredIdentity()   # V2 with an after-addition ReLU
    else:
        unit.after = _IdentityDeclaredReLU()   # V1 without its ReLU
    return net


@pytest.mark.parametrize("kind", ["original", "full_preact"])
def test_formula_check_fails_on_a_broken_unit(kind):
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    _, good = SP.measure_net(cifar_resnet(20, unit_kind=kind, width=4, in_channels=1), x, y)
    _, bad = SP.measure_net(broken(kind), x, y)
    assert good["error"].max() < SP.TOLERANCE
    assert bad.loc[bad["unit"] == 1, "error"].item() > 0.01
    assert (bad.loc[bad["unit"] != 1, "error"] < SP.TOLERANCE).all()
    # and the C1 verdict turns: errors far outside the tolerance are "not supported"
    inputs = [torch.randn(16, 1, 8, 8) for _ in range(3)]
    errors = [SP.measure_net(broken(kind), x, y)[1]["error"].max() for x in inputs]
    result = C.one_sample(errors, direction="equivalent", margin=SP.TOLERANCE)
    assert result.verdict == C.NOT_SUPPORTED


def test_formula_check_catches_a_shortcut_that_is_not_the_identity():
    torch.manual_seed(0)
    net = cifar_resnet(20, version=2, width=4, in_channels=1)
    unit = net.units()[2]
    assert unit.shortcut_kind == "identity"

    class DeclaredIdentity(Identity):        # declares h = x, computes a dropout
        def forward(self, x):
            return nn.functional.dropout(x, p=0.5)

    unit.shortcut = DeclaredIdentity()       # h(x) != x
    _, rows = SP.measure_net(net, torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    assert rows.loc[rows["unit"] == 2, "error"].item() > 0.01


@pytest.mark.parametrize("block, channels, size", [("basic", 16, 8), ("basic", 16, 4),
                                                   ("bottleneck", 64, 8)])
def test_predicted_increment_matches_a_direct_computation(block, channels, size):
    """The channel variance a V2 branch adds at init, over many inits, is the analytic delta."""
    from resnet_lab.networks.families import he_fan_out_init

    torch.manual_seed(1)
    x = torch.randn(32, channels, size, size) * 3 + 1       # BN standardises whatever comes
    measured = []
    for _ in range(30):
        unit = he_fan_out_init(ResidualUnit("full_preact", block, channels, channels))
        with torch.no_grad():
            f = unit.branch(x)
        m = f.mean(dim=(0, 2, 3))
        measured.append(((f ** 2).mean(dim=(0, 2, 3)) - m ** 2).mean().item())
    delta = SP.predicted_increment(unit, size, size)
    assert np.mean(measured) == pytest.approx(delta, rel=0.08)
    if block == "bottleneck":
        assert delta == pytest.approx(0.25 * (1 - 1 / math.pi))


def test_transmission_on_known_numbers():
    rows = []
    for unit, (g_in, x_in, g_out, x_out) in enumerate([(100.0, 0.1, 0, 0), (0, 0, 1.0, 10.0)]):
        for tap, g, x in (("input", g_in, x_in), ("output", g_out, x_out)):
            rows += [dict(depth=20, version=1, seed=0, step=1, unit=unit, stage=1, tap=tap,
                          direction="backward", stat="norm", value=g),
                     dict(depth=20, version=1, seed=0, step=1, unit=unit, stage=1, tap=tap,
                          direction="forward", stat="norm", value=x)]
    out = SP.transmission(pd.DataFrame(rows), ["depth", "version", "seed"]).iloc[0]
    assert out["log_grad_ratio"] == pytest.approx(2.0)        # 100 / 1
    assert out["log_rho_ratio"] == pytest.approx(0.0)         # 100 * 0.1 / (1 * 10)


def test_claims_follow_the_data():
    """Synthetic gaps: V1 worse by 1 decade at the deep depths only -> supported there."""
    rng = np.random.default_rng(0)
    rows = []
    for depth in (20, 56, 164, 1001):
        for seed in range(4):
            base = 0.5 + rng.normal(0, 0.02)
            for version in (1, 2):
                gap = 1.0 if version == 1 and depth >= 164 else 0.0
                rows.append(dict(dataset="gaussian", depth=depth, version=version, seed=seed,
                                 width=16, abs_log_rho_ratio=base + gap + rng.normal(0, 0.02)))
    gaps = pd.DataFrame(rows)
    found = C.paired_rows(gaps, "abs_log_rho_ratio", claim="C4", role="secondary", experiment=NAME,
                          measure="gap", depths=(20, 56, 164, 1001))
    verdicts = {r["depth"]: r["verdict"] for r in found}
    assert verdicts[164] == verdicts[1001] == C.SUPPORTED
    assert verdicts[20] != C.SUPPORTED and verdicts[56] != C.SUPPORTED


@pytest.mark.slow
def test_published_copy_is_small_and_redraws_without_model_code(smoke):
    _, publish = smoke
    names = {p.name for p in publish.iterdir()}
    assert {"config.json", "claims.csv", "probe.csv.gz", "units.csv.gz", "linear_fits.csv",
            "figures"} <= names
    assert sum(p.stat().st_size for p in publish.glob("*.*")) < 1_000_000
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--seeds", "0", "1"], "need at least 3 seeds"),
    (["--batch-size", "1"], "--batch-size"),
    (["--width", "0"], "--width"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
    (["--out", "/proc/version/x"], "--out"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    bad_input(NAME, argv, needle, tmp_path, capsys, monkeypatch)


def test_help_documents_every_flag(capsys):
    text = help_text(NAME, capsys)
    for flag in ("--preset", "--seeds", "--device", "--dataset", "--data-dir", "--out",
                 "--depths", "--width", "--inputs", "--batch-size", "--threads", "--publish"):
        assert flag in text
