"""experiments/gpu_check.py without a GPU: its argument checks, its refusal to run without
CUDA, the paper plan it reads from analysis.EXPERIMENTS, and the prediction arithmetic."""
import contextlib
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiment_checks import run_in_process

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_status_2(args, flag, capsys, script="gpu_check"):
    code, err = run_in_process(script, list(args), capsys)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and flag in err and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_one_line_and_status_2(tmp_path, capsys):
    one_line_status_2(["--out", str(tmp_path / "check")], "GPU is needed", capsys)
    assert not (tmp_path / "check").exists()                      # nothing written


@pytest.mark.parametrize("args, flag", [(["--repeats", "0"], "--repeats"), (["--steps", "-1"], "--steps"),
                                        (["--skip", "everything"], "--skip"), (["--depths", "20"], "--depths")])
def test_bad_arguments_one_line_and_status_2(args, flag, capsys):
    one_line_status_2(args, flag, capsys)


def test_out_inside_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    for out in (afile, afile / "check"):
        one_line_status_2(["--out", str(out)], "--out", capsys)
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_paper_plan_covers_every_experiment_with_a_paper_preset(gpu_check):
    import analysis
    plan = gpu_check.paper_plan()
    names = [p["experiment"] for p in plan]
    expected = [n for n in analysis.EXPERIMENTS if "paper" in analysis.experiment(n).presets]
    assert names == expected and names
    for p in plan:
        preset = analysis.experiment(p["experiment"]).presets["paper"]
        assert p["batch"] == preset["batch_size"] and p["cells"]
        assert {d for d, _, _ in p["cells"]} <= set(preset["depths"])
        assert all(w == p["widths"][d] for d, w, _ in p["cells"])


def test_prediction_is_steps_times_cells_times_step_time(gpu_check):
    plan = [{"experiment": "a", "steps": 400, "batch": 128, "dataset": "cifar10",
             "cells": [(20, 16, "original")] * 3 + [(164, 16, "full_preact")] * 2},
            {"experiment": "b", "steps": 1, "batch": 64, "dataset": "digits",
             "cells": [(20, 16, "original")]}]
    table = pd.DataFrame([
        {"depth": 20, "width": 16, "unit_kind": "original", "batch": 128, "dataset": "cifar10", "step_s": 0.01},
        {"depth": 164, "width": 16, "unit_kind": "full_preact", "batch": 128, "dataset": "cifar10", "step_s": 0.1},
        {"depth": 20, "width": 16, "unit_kind": "original", "batch": 64, "dataset": "digits", "step_s": 0.5}])
    runs = gpu_check.predict(plan, table).set_index("experiment")
    assert runs.loc["a", "predicted_s"] == pytest.approx(400 * (3 * 0.01 + 2 * 0.1))
    assert runs.loc["a", "cells"] == 5 and runs.loc["a", "predicted_h"] == pytest.approx(92 / 3600)
    assert runs.loc["b", "predicted_s"] == pytest.approx(0.5)
    with pytest.raises(KeyError):                                 # a net that was not measured
        gpu_check.predict([{**plan[1], "batch": 32}], table)


@pytest.mark.parametrize("script", ["bench_probes.py", "bench_training.py"])
@pytest.mark.parametrize("args, flag", [(["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
                                        (["--out", "{file}/x.csv"], "--out"),
                                        (["--out", "results/paper/{script}.csv"], "--publish"),
                                        (["--out", "x.csv", "--publish"], "--publish")])
def test_benchmarks_check_their_arguments_before_benchmarking(tmp_path, script, args, flag, capsys,
                                                                 monkeypatch):
    """One line on stderr naming the flag, status 2, nothing written (issue 14)."""
    monkeypatch.chdir(ROOT)                # the relative paths are the README's
    afile = tmp_path / "a_file"
    afile.write_text("x")
    paper = sorted((ROOT / "results" / "paper").glob("bench_*.csv"))
    before = {p: p.stat().st_mtime_ns for p in paper}
    args = [a.format(file=afile, script=script[:-3]) for a in args]
    one_line_status_2(args, flag, capsys, script=script[:-3])
    assert {p: p.stat().st_mtime_ns for p in paper} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_bench_probes_default_output_is_a_run_folder_not_the_paper(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from benchmarks import output_path
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert output_path(None, False, "bench_probes.csv") == ROOT / "results" / "runs" / "bench" / "bench_probes.csv"
    assert output_path(None, True, "bench_probes.csv") == ROOT / "results" / "paper" / "bench_probes.csv"
    assert output_path(str(tmp_path / "b.csv"), False, "bench_probes.csv") == tmp_path / "b.csv"


def test_split_skips_the_reads_and_keeps_the_hooks():
    """Inside ``reads_skipped`` a probed step runs its hooks and records rows, but no tensor is
    read (every channel sum stays 0); outside, the C module is back; ``split_one`` adds up."""
    import torch.nn.functional as F

    from probes import SignalProbe
    from probes.kernels import c_module
    from resnet_lab import cifar_resnet
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from benchmarks import reads_skipped, split_one
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    fast = c_module._fastsums
    if fast is None:
        pytest.skip("the C module is not built: the torch operations read, and they are not skipped")
    torch.manual_seed(0)
    net = cifar_resnet(8, version=1, width=4)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    for skipped in (True, False):
        probe = SignalProbe(net)
        with reads_skipped() if skipped else contextlib.nullcontext():
            for _ in range(3):              # from the third step the kept layouts read (C++ hooks too)
                with probe:
                    net.zero_grad()
                    F.cross_entropy(net(x), y).backward()
                    probe.step()
        rms = probe.collect().query("stat == 'rms' and step == 3").value
        assert len(rms) > 20 and ((rms == 0).all() if skipped else (rms > 0).all())
        assert c_module._fastsums is fast
    row = split_one(8, 1, torch.device("cpu"), 1, 0, width=4, batch=4, size=8)   # one round: medians are its values
    assert row["reads_s"] + row["rest_s"] == pytest.approx(row["probed_step_s"] - row["step_s"])
    assert row["python_hooks_step_s"] > 0 and row["python_hooks_ratio"] > 0   # the C++ hooks' A/B arm ran
