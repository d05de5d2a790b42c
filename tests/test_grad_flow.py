"""experiments/grad_flow.py end to end (smoke preset), its numbers against autograd, redrawing
its figures from the CSVs alone, and its answers to bad input."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from resnet_lab.runs.cli import main_guard
from resnet_lab.engine.data import Batches, apply_augmentation, draw_augmentation, load_dataset
from resnet_lab.runs.sweep import Cell, build

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "grad_flow.py"
PROBE_COLUMNS = ["step", "unit", "stage", "index", "tap", "direction", "stat", "value"]
TRAIN_COLUMNS = ["step", "epoch", "split", "metric", "value"]
ID_COLUMNS = ["experiment", "unit_kind", "version", "depth", "width", "seed"]
FIGURES = ["fig1_gradient_per_unit", "fig2_first_to_last_vs_depth", "fig3_signal_propagation", "fig4_relu_cuts"]


def load_script():
    spec = importlib.util.spec_from_file_location("grad_flow_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main_guard(load_script().main)(["--preset", "smoke", "--out", str(out)]) == 0
    (run,) = (out / "grad_flow").iterdir()
    return run


def test_smoke_writes_every_file_in_the_schema(smoke_run):
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["status"] == "completed" and config["preset"]["depths"] == [20, 56]
    probe = pd.read_csv(smoke_run / "probe.csv.gz")
    assert list(probe.columns[:6]) == ID_COLUMNS and set(PROBE_COLUMNS) <= set(probe.columns)
    assert set(probe["tap"]) >= {"input", "shortcut", "branch", "sum", "output"}
    assert set(probe["direction"]) == {"forward", "backward"}
    assert sorted(probe["step"].unique()) == [1, 3]            # initialisation and a later checkpoint
    train = pd.read_csv(smoke_run / "train.csv")
    assert list(train.columns) == ID_COLUMNS + TRAIN_COLUMNS
    summary = pd.read_csv(smoke_run / "summary.csv")
    assert len(summary) == 4 and (summary.query("version == 2")["grad_cut_init"] == 0).all()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (smoke_run / "figures" / f"{name}.{ext}").stat().st_size > 1000


def test_backward_norms_match_autograd(smoke_run):
    """Rebuild the seed-0 V2 net of depth 20 and its first batch; autograd gives dL/dx_l."""
    probe = pd.read_csv(smoke_run / "probe.csv.gz")
    rows = probe.query("depth == 20 and version == 2 and seed == 0 and step == 1 and tap == 'input' "
                       "and direction == 'backward' and stat == 'norm'").sort_values("unit")
    data = load_dataset("digits")
    cell = Cell(20, "full_preact", 0, 4)
    net = build(cell, data)
    idx = Batches(len(data.train_x), 16, seed=0).indices(0)
    generator = torch.Generator().manual_seed(0)
    x = apply_augmentation(data.train_x[idx], *draw_augmentation(16, generator, data.pad, data.flip), data.pad)
    inputs = []
    hooks = [u.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for u in net.units()]
    loss = F.cross_entropy(net(x), data.train_y[idx])
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(loss, inputs)
    expected = [g.norm().item() for g in grads]
    assert rows["value"].tolist() == pytest.approx(expected, rel=1e-4)


def test_figures_redraw_from_csvs_alone(smoke_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("probe.csv.gz", "train.csv"):
        shutil.copy(smoke_run / name, copy / name)
    # A fresh interpreter in which building any network fails: the figures must not need one.
    code = ("import resnet_lab.networks.families as n, runpy, sys\n"
            "n.ResNet.__init__ = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('model code ran'))\n"
            f"sys.argv = ['make_figures.py', 'grad_flow', {str(copy)!r}]\n"
            f"runpy.run_path({str(ROOT / 'experiments' / 'make_figures.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for name in FIGURES:
        assert (copy / "figures" / f"{name}.png").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--depths", "1000"], "nearest basic (6n+2): 998, 1004"),
    (["--versions", "3"], "valid versions are 1"),
    (["--unit-kinds", "preact"], "valid unit kinds are original, bn_after_add"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-python.tar.gz"),
    (["--out", "/proc/version/x"], "--out"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = [] if "--out" in argv else ["--out", str(tmp_path / "runs")]
    assert main_guard(load_script().main)(["--preset", "smoke", *argv, *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
