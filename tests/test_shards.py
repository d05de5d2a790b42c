"""Sweeps split over shards (``--shard i/n``, a SLURM array) into one run folder:

* the split is deterministic, covers every cell once and is balanced by predicted cost;
* SLURM's array variables give the shard; a bad one is one line and exit 2;
* two shard processes give the same CSVs as one process, the last one writes the analysis,
  ``--analyse`` does it on demand;
* a cell held by another process is never run twice (its lock);
* ``--plan`` prints the split; ``--devices`` is checked.
"""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import EXPERIMENTS, experiment
from analysis.preflight import plan_text
from experiment_checks import load_script, one_thread, run_smoke  # noqa: F401
from resnet_lab.runs.cellstore import CellStore
from resnet_lab.runs.cli import main_guard
from resnet_lab.runs.results import compare_runs, load_run
from resnet_lab.io.folders import RunDir
from resnet_lab.runs.settings import check_workers, resolve_devices
from resnet_lab.runs.shards import resolve_shard, shard_from_environment, split
from resnet_lab.runs.sweep import Cell, CellResult, run_cells

ROOT = Path(__file__).resolve().parents[1]


def paper_cells(name):
    module = experiment(name)
    return module.cells(module.parse_settings(["--preset", "paper", "--device", "cpu"]))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_split_covers_every_cell_once_balanced_by_cost(name):
    cells = paper_cells(name)
    parts = split(cells, 10)
    assert split(cells, 10) == parts                                  # deterministic
    assert sorted(c.name for part in parts for c in part) == sorted(c.name for c in cells)
    loads = [sum(c.cost for c in part) for part in parts]
    best = max(sum(loads) / 10, max(c.cost for c in cells))           # no split does better
    assert max(loads) <= 4 / 3 * best + 1e-9                          # the LPT rule's bound
    for part in parts:                                                # each in sweep order
        assert [cells.index(c) for c in part] == sorted(cells.index(c) for c in part)


def test_a_1001_layer_cell_costs_about_five_164_layer_ones():
    ratio = Cell(1001, "original", 0, 16).cost / Cell(164, "original", 0, 16).cost
    assert 4.5 < ratio < 6


def test_the_shard_comes_from_the_flag_or_the_slurm_array():
    assert shard_from_environment({}) is None
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10"}) == "3/10"
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                   "SLURM_ARRAY_TASK_MAX": "10"}) == "4/10"
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0",
                                   "SLURM_ARRAY_TASK_MAX": "8", "SLURM_ARRAY_TASK_STEP": "2"}) == "2/5"
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert resolve_shard(None, env) == (1, 2) and resolve_shard("0/1", env) == (0, 1)
    for bad in ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"},
                {"SLURM_ARRAY_TASK_ID": "3"},
                {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
                 "SLURM_ARRAY_TASK_STEP": "2"}):
        with pytest.raises(ValueError, match="--shard i/n"):
            shard_from_environment(bad)


@pytest.mark.parametrize("argv, env, needle", [
    (["--shard", "2/2"], {}, "--shard 2/2: need 0 <= i < n"),
    (["--shard=-1/2"], {}, "--shard -1/2"),
    (["--shard", "1/0"], {}, "--shard 1/0"),
    (["--shard", "half"], {}, "--shard 'half': must look like i/n"),
    ([], {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "x"}, "give --shard i/n"),
    (["--plan", "0"], {}, "--plan 0"),
    (["--devices", "0"], {}, "--devices 0: GPUs only"),
])
def test_a_bad_shard_is_one_line_and_exit_2(argv, env, needle, tmp_path, capsys, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main_guard(load_script("grad_flow").main)(["--preset", "smoke", "--device", "cpu",
                                                      "--out", str(tmp_path / "runs"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def _process(*argv):
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "grad_flow.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "RESNET_LAB_NO_BAR": "1"})


@pytest.mark.slow
def test_two_shard_processes_give_one_process_csvs(tmp_path):
    argv = ["--preset", "smoke", "--depths", "20", "--workers", "1", "--device", "cpu"]
    shards = [_process(*argv, "--shard", f"{i}/2", "--out", str(tmp_path / "sharded"))
              for i in range(2)]
    one = run_smoke("grad_flow", tmp_path / "one", "--depths", "20", "--workers", "1")
    outputs = [p.communicate(timeout=300) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outputs
    (folder,) = (tmp_path / "sharded" / "grad_flow").iterdir()
    assert folder.name == one.name                       # --shard is not part of the run's id
    assert compare_runs(one, folder) == []
    assert sum("all 4 nets completed" in out for out, _ in outputs) == 1   # one analysed
    config = load_run(folder).config
    assert set(config["shards"]) == {"0/2", "1/2"} and config["status"] == "completed"
    assert sum(part.get("wrote_analysis", False) for part in config["shards"].values()) == 1
    assert all("ended" in part for part in config["shards"].values())
    hosts = {CellStore(folder / "cells", "grad_flow").record(c)["host"]
             for c in experiment("grad_flow").cells(experiment("grad_flow").parse_settings(argv))}
    assert len(hosts) == 1


@pytest.mark.slow
def test_a_shard_leaves_the_analysis_to_the_last_and_analyse_does_it(tmp_path, capsys):
    argv = ["--preset", "smoke", "--depths", "20", "--workers", "1", "--device", "cpu", "--out",
            str(tmp_path)]
    main = main_guard(load_script("grad_flow").main)
    assert main([*argv, "--shard", "0/2"]) == 0
    (folder,) = (tmp_path / "grad_flow").iterdir()
    out = capsys.readouterr().out
    assert "shard 0/2: done; 2 nets are not finished yet" in out and not (folder / "summary.csv").exists()
    assert RunDir(folder).config["shards"]["0/2"]["left_to_others"] > 0
    assert main([*argv, "--analyse"]) == 2
    assert "nets are not finished" in capsys.readouterr().err
    assert main([*argv, "--shard", "1/2"]) == 0                     # the last one: analyses
    assert (folder / "summary.csv").exists() and load_run(folder).status == "completed"
    (folder / "summary.csv").unlink()
    assert main([*argv, "--analyse"]) == 0 and (folder / "summary.csv").exists()
    assert "running in another process" not in capsys.readouterr().err


def _work(cell, state, context, report):
    context["ran"].append(cell.name)
    return CellResult({"t": pd.DataFrame({"x": [cell.seed]})}, steps_done=1)


def test_a_cell_another_process_holds_is_not_run_twice(tmp_path, capsys):
    run = RunDir.create("e", {}, out=tmp_path, run_id="r")
    cells = [Cell(20, "original", s, 4) for s in range(3)]
    store = CellStore(run.path / "cells", "e")
    store.make()
    context = {"ran": []}
    with store.claimed(cells[1]) as mine:                   # as another shard would hold it
        assert mine
        with store.claimed(cells[1]) as again:              # a second claim fails while held
            assert not again
        left = run_cells(run, "e", cells, _work, context)
    assert context["ran"] == [cells[0].name, cells[2].name] and left == [cells[1]]
    assert "running in another process; skipped" in capsys.readouterr().err
    run_cells(run, "e", cells, _work, context)              # released: now it runs, once
    assert context["ran"] == [c.name for c in (cells[0], cells[2], cells[1])]


def test_plan_prints_the_split_with_predicted_hours(capsys):
    module = experiment("unit_ablation")
    text = plan_text(module, module.parse_settings(["--preset", "paper", "--device", "cpu",
                                                    "--plan", "10"]))
    assert "50 nets" in text and "~56 h" in text and text.count("/10") >= 10
    assert main_guard(load_script("unit_ablation").main)(["--preset", "paper", "--plan", "3"]) == 0
    assert "2/3" in capsys.readouterr().out                 # no data needed, nothing written


def test_devices_are_gpu_indices_one_worker_each(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = torch.device("cuda")
    assert resolve_devices(None, cuda) == [0, 1] and resolve_devices(["1"], cuda) == [1]
    assert resolve_devices(["0,1"], cuda) == [0, 1]
    assert check_workers(None, cuda, [0, 1]) == 2 and check_workers(1, cuda, [0, 1]) == 1
    for bad, needle in ((["2"], "from 0 to 1"), (["0", "0"], "each GPU once"), (["a"], "indices")):
        with pytest.raises(ValueError, match=needle):
            resolve_devices(bad, cuda)
    with pytest.raises(ValueError, match="at most 2"):
        check_workers(3, cuda, [0, 1])
    assert resolve_devices(None, torch.device("cpu")) is None


@pytest.mark.gpu
def test_each_worker_is_pinned_to_its_gpu(tmp_path):
    run = run_smoke("grad_flow", tmp_path, "--device", "cuda", "--devices", "0")
    config = load_run(run).config
    assert config["devices"][0].startswith("cuda:0 (")
    record = CellStore(run / "cells", "grad_flow").record(Cell(20, "original", 0, 4))
    assert record["device"].startswith("cuda:0 (")
