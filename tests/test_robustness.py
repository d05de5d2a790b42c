"""Sweeps that survive and inputs that can't hurt (every script):

* a table of bad inputs: exit 2, one line on stderr without a traceback, nothing created;
* a sweep SIGKILLed mid-cell and run again equals an uninterrupted run, CSV for CSV;
* a sweep where every cell diverges still writes its summary, claims and figures;
* the same settings on 1 or 2 processes give the same tables;
* a live run's folder is locked against a second process.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiment_checks import load_script
from resnet_lab.runs.cli import main_guard
from resnet_lab.runs.results import compare_runs, load_run
from resnet_lab.io.folders import PAPER_ROOT as PAPER
from resnet_lab.io.folders import RunDir

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ("grad_flow", "signal_propagation", "early_training", "full_training", "unit_ablation")
HUGE = "99999999999999999999999"


def corrupt_cifar(folder: Path) -> Path:
    (folder / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / "cifar-10-batches-py" / name).write_bytes(b"\x80garbage" * 20)
    return folder


def cases():
    """(script, argv, what the one line must say)."""
    table = []
    for name in SWEEPS:
        table += [(name, ["--seeds", HUGE], "--seeds"),
                  (name, ["--seeds", "0", "1", "-1"], "--seeds -1"),
                  (name, ["--seeds", "0", "0", "1"], "each seed once"),
                  (name, ["--width", "0"], "--width 0"),
                  (name, ["--depths", "1000"], "nearest"),
                  (name, ["--depths", "20", "20"], "each depth once"),
                  (name, ["--threads", "0"], "--threads 0"),
                  (name, ["--threads", "-1"], "--threads -1"),
                  (name, ["--workers", "0"], "--workers 0"),
                  (name, ["--device", "tpu"], "invalid choice"),
                  (name, ["--preset", "huge"], "invalid choice"),
                  (name, ["--dataset", "cifar10", "--data-dir", "{corrupt}"], "is corrupt"),
                  (name, ["--dataset", "cifar10", "--data-dir", "{tmp}/none"], "cifar-10-python.tar.gz"),
                  (name, ["--publish", "{file}/x"], "--publish"),
                  (name, ["--out", "{file}/x"], "--out"),
                  (name, ["--batch-size", "100000"], "exceeds the 1437"),
                  (name, ["--no-such-flag"], "unrecognized arguments")]
    table += nonsense()
    for name in ("grad_flow", "early_training", "full_training", "unit_ablation"):
        table += [(name, ["--steps", "0"], "--steps 0"), (name, ["--lr", "0"], "--lr")]
    table += [("grad_flow", ["--probe-steps", "0"], "--probe-steps 0"),
              ("grad_flow", ["--versions", "3"], "valid versions are 1"),
              ("grad_flow", ["--versions", "1", "--unit-kinds", "original"], "not both"),
              ("unit_ablation", ["--unit-kinds", "preact"], "valid unit kinds"),
              ("signal_propagation", ["--inputs", "noise"], "--inputs noise"),
              ("train", ["--model", "cifar_resnet20_v2", "--eval-every", "0"], "--eval-every 0"),
              ("train", ["--model", "cifar_resnet20_v2", "--checkpoint-every", "0"], "--checkpoint-every 0"),
              ("train", ["--model", "cifar_resnet20_v2", "--probe-every", "0"], "--probe-every 0"),
              ("train", ["--model", "cifar_resnet20_v2", "--seeds", HUGE], "--seeds"),
              ("train", ["--model", "cifar_resnet20_v2", "--threads", "0"], "--threads 0"),
              ("train", ["--model", "cifar_resnet20_v2", "--lr", "-1"], "--lr"),
              ("train", ["--model", "resnet9000"], "--model resnet9000"),
              ("train", ["--model", "cifar_resnet20_v2", "--dataset", "cifar10", "--data-dir",
                         "{corrupt}"], "is corrupt"),
              ("train", ["--resume", "{tmp}/none"], "not a run folder"),
              ("make_figures", ["grad_flow", "{file}"], "is a file"),
              ("make_figures", ["nope"], "unknown experiment"),
              ("report", ["--results", "{tmp}/none"], "no results folder"),
              ("compare_runs", ["{tmp}/a", "{tmp}/b"], "a run folder?"),
              ("reproduce", ["--paper", "{file}/x"], "--paper")]
    return table


def nonsense():
    """Inputs that would mean something else than they say: paths, counts, sizes, shards."""
    table = []
    for name in SWEEPS:
        table += [(name, ["--out", ""], "--out '': give a folder"),
                  (name, ["--out", "~/x"], "--out ~/x: the shell did not expand the ~"),
                  (name, ["--out", "{paper}/x"], "the committed references"),
                  (name, ["--data-dir", "~/data"], "--data-dir ~/data: the shell"),
                  (name, ["--publish", ""], "--publish '': give a folder"),
                  (name, ["--out", "runs\nx"], "a line break"),
                  (name, ["--shard", "3/3"], "--shard 3/3: need 0 <= i < n"),
                  (name, ["--devices", "0"], "--devices 0: GPUs only"),
                  (name, ["--analyse"], "--analyse: no run at")]
    return table + [
        ("grad_flow", ["--probe-steps", "6", "--steps", "10"], "nearest counts that can: 5 or 10"),
        ("early_training", ["--probe-steps", "9", "--steps", "10"], "(they would be 10)"),
        ("grad_flow", ["--width", "4000"], "needs at least"),
        ("full_training", ["--width", "4096", "--batch-size", "64"], "needs at least"),
        ("train", ["--model", "cifar_resnet20_v2", "--width", "5000"], "--width 5000"),
        ("train", ["--model", "cifar_resnet20_v2", "--width", "4000"], "needs at least"),
        ("train", ["--model", "cifar_resnet20_v2", "--out", "~/x"], "the shell did not expand"),
        ("reproduce", ["--out", "{paper}/x"], "the committed references"),
        ("reproduce", ["--out", ""], "--out '': give a folder")]


@pytest.mark.parametrize("script, argv, needle", cases(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_bad_input_one_line_exit_2_nothing_written(script, argv, needle, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    corrupt = corrupt_cifar(tmp_path / "corrupt")
    argv = [a.format(tmp=tmp_path, file=tmp_path / "file", corrupt=corrupt, paper=PAPER) for a in argv]
    if script in SWEEPS or script == "train":
        argv = ["--preset", "smoke", *argv] + ([] if "--out" in argv else ["--out", str(tmp_path / "runs")])
    before = sorted(p.name for p in tmp_path.iterdir())
    threads = torch.get_num_threads()
    try:
        code = main_guard(load_script(script).main)(argv)
    except SystemExit as exit_:            # argparse's own errors
        code = exit_.code
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # nothing created


def _run(script, *argv, env=None):
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / f"{script}.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


SLOW = ["--preset", "smoke", "--depths", "20", "--seeds", "0", "1", "2", "--steps", "60",
        "--probe-steps", "3", "--workers", "1"]


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_tables(tmp_path):
    whole = _run("early_training", *SLOW, "--out", str(tmp_path / "whole"))
    killed = _run("early_training", *SLOW, "--out", str(tmp_path / "killed"))
    cells = tmp_path / "killed" / "early_training"
    deadline = time.time() + 240
    while time.time() < deadline:          # kill during the second cell, after its checkpoint
        done = list(cells.glob("*/cells/*/done.json"))
        started = list(cells.glob("*/cells/*/state/checkpoint.pt"))
        if len(done) >= 1 and started:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (folder,) = cells.iterdir()
    assert RunDir(folder).status() == "interrupted"        # says running, but nobody holds it
    assert 1 <= len(list(folder.glob("cells/*/done.json"))) < 6
    again = _run("early_training", *SLOW, "--out", str(tmp_path / "killed"))
    assert again.wait(timeout=300) == 0 and whole.wait(timeout=300) == 0, again.stderr.read()
    (reference,) = (tmp_path / "whole" / "early_training").iterdir()
    assert compare_runs(reference, folder) == []
    config = json.loads((folder / "config.json").read_text())
    assert config["status"] == "completed" and config["restarts"][0]["previous_status"] == \
        "interrupted (killed)"


def test_a_sweep_where_every_cell_diverges_still_answers(tmp_path, monkeypatch, capsys):
    """Every net's output is NaN from its first step: exit 0, each cell marked diverged, the
    summary, claims and figures written."""
    import analysis.cells as cells

    def poisoned(cell, data):
        net = build(cell, data)
        net.register_forward_hook(lambda module, args, out: out * float("nan"))
        return net
    build = cells.build
    monkeypatch.setattr(cells, "build", poisoned)
    code = main_guard(load_script("full_training").main)(
        ["--preset", "smoke", "--workers", "1", "--out", str(tmp_path)])
    assert code == 0
    (run,) = (tmp_path / "full_training").iterdir()
    table = load_run(run)
    assert set(table.cells["status"]) == {"diverged"} and set(table.cells["steps_done"]) == {1}
    assert len(table.summary) == 12 and (table.summary["diverged_at"] == 1).all()
    assert table.summary[["err_early", "err_late"]].to_numpy() == pytest.approx(0.9)   # chance error
    assert {"C5", "C6"} <= set(table.claims["claim"]) and len(list(run.glob("figures/*.pdf"))) == 4
    assert "all 12 nets diverged" in capsys.readouterr().out


@pytest.mark.slow
def test_one_or_two_processes_give_the_same_tables(tmp_path):
    argv = ["--preset", "smoke", "--depths", "20", "56", "--seeds", "0", "1"]
    one = _run("grad_flow", *argv, "--workers", "1", "--out", str(tmp_path / "one"))
    two = _run("grad_flow", *argv, "--workers", "2", "--out", str(tmp_path / "two"))
    assert one.wait(timeout=300) == 0 and two.wait(timeout=300) == 0
    (a,) = (tmp_path / "one" / "grad_flow").iterdir()
    (b,) = (tmp_path / "two" / "grad_flow").iterdir()
    assert a.name == b.name                    # --workers is not part of the run's identity
    assert compare_runs(a, b) == []
    assert len(pd.read_csv(a / "probe.csv.gz")) > 10_000


def test_a_live_run_is_locked(tmp_path):
    first = RunDir.create("x", {"a": 1}, out=tmp_path, run_id="r", lock=True)
    code = ("from resnet_lab.io.folders import RunDir\n"
            f"RunDir.create('x', {{'a': 1}}, out={str(tmp_path)!r}, run_id='r', lock=True)\n")
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert second.returncode != 0 and "in use by another running process" in second.stderr
    assert first.status() == "running"
    first.release_lock()                       # as if killed: the folder still says running
    assert RunDir(first.path).status() == "interrupted"
