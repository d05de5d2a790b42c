"""Sweeps on a real SLURM: a single-node cluster started here (scripts/slurm_local.sh: munged,
slurmctld, slurmd), jobs submitted with the job script users get (scripts/sweep.sbatch).

* a 2-task array of a sweep gives the CSVs of one process;
* a task signalled mid-net with SIGUSR1 (what ``--signal`` sends before the time limit)
  checkpoints, exits 75, is requeued by the job script and resumes -- to the same CSVs.

Marked ``slurm`` (needs root and starts daemons; deselected by default): ``pytest -m slurm``.
The daemons it started are stopped at the end, by their pids.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import experiment
from experiment_checks import load_script, one_thread  # noqa: F401
from resnet_lab.runs.cli import main_guard
from resnet_lab.runs.results import compare_runs, load_run
from resnet_lab.runs.shards import split

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(shutil.which("sbatch") is None or os.geteuid() != 0,
                                 reason="needs sbatch and root (sudo scripts/slurm_local.sh start)")]
SWEEP = ["--preset", "smoke", "--depths", "20", "--workers", "1", "--device", "cpu"]
LONG = [*SWEEP, "--seeds", "0", "1", "2", "--steps", "100", "--probe-steps", "3"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    script = str(ROOT / "scripts" / "slurm_local.sh")
    started = subprocess.run([script, "start", str(state)], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    pids = [int((state / f"{name}.pid").read_text()) for name in ("munged", "slurmctld", "slurmd")]
    yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run([script, "stop", str(state)], check=True, capture_output=True)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def submit(env, out, name, argv) -> str:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**env, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "RESNET_LAB_NO_BAR": "1"}
    done = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1",
                           f"--chdir={ROOT}", f"--output={logs}/slurm-%A_%a.out",
                           str(ROOT / "scripts" / "sweep.sbatch"), name, *argv, "--out",
                           str(out / "runs")], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def wait(env, job, timeout=600):
    deadline = time.time() + timeout
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                         text=True).stdout.strip():
        assert time.time() < deadline, f"job {job} still queued or running after {timeout} s"
        time.sleep(1)
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True,
                           text=True).stdout
    return {int(task): (state, code, int(restarts)) for task, state, restarts, code in
            re.findall(r"ArrayTaskId=(\d+).*?JobState=(\w+).*?Restarts=(\d+).*?ExitCode=(\S+)",
                       shown, re.S)}


def logs(out) -> str:
    return "".join(p.read_text() for p in sorted((out / "logs").glob("*.out")))


def one_process(name, argv, out):
    assert main_guard(load_script(name).main)([*argv, "--out", str(out)]) == 0
    (folder,) = (out / name).iterdir()
    return folder


def test_a_two_task_array_gives_one_process_csvs(slurm, tmp_path):
    t0 = time.time()
    job = submit(slurm, tmp_path, "grad_flow", SWEEP)
    reference = one_process("grad_flow", SWEEP, tmp_path / "one")
    tasks = wait(slurm, job)
    print(f"2-task array: {time.time() - t0:.0f} s")
    assert tasks == {0: ("COMPLETED", "0:0", 0), 1: ("COMPLETED", "0:0", 0)}, logs(tmp_path)
    (folder,) = (tmp_path / "runs" / "grad_flow").iterdir()
    assert compare_runs(reference, folder) == []
    config = load_run(folder).config
    assert config["status"] == "completed" and set(config["shards"]) == {"0/2", "1/2"}
    assert logs(tmp_path).count("all 4 nets completed") == 1


def test_a_task_signalled_mid_net_is_requeued_and_resumes(slurm, tmp_path):
    t0 = time.time()
    job = submit(slurm, tmp_path, "early_training", LONG)
    module = experiment("early_training")
    share = split(module.cells(module.parse_settings(LONG)), 2)[0]     # task 0's nets
    first = share[0]
    metrics = list((tmp_path / "runs").glob(f"early_training/*/cells/{first.name}/state/metrics.csv.gz"))
    while not metrics:                                  # written at its first checkpoint (step 25)
        assert time.time() - t0 < 300, logs(tmp_path)
        time.sleep(0.1)
        metrics = list((tmp_path / "runs").glob(f"early_training/*/cells/{first.name}/state/metrics.csv.gz"))
    subprocess.run(["scancel", "--signal=USR1", f"{job}_0"], env=slurm, check=True)
    reference = one_process("early_training", LONG, tmp_path / "one")
    tasks = wait(slurm, job)
    print(f"2-task array with a requeue: {time.time() - t0:.0f} s")
    text = logs(tmp_path)
    assert tasks == {0: ("COMPLETED", "0:0", 1), 1: ("COMPLETED", "0:0", 0)}, text
    assert re.search(rf"interrupted by SIGUSR1: 0 of {len(share)} nets of this shard finished, 1 will resume "
                     rf"from its checkpoint \({first.name} at step \d+\)", text), text
    assert f"requeueing {job}_0" in text and "Traceback" not in text
    (folder,) = (tmp_path / "runs" / "early_training").iterdir()
    state = load_run(folder / "cells" / first.name / "state").config
    assert state["resumed_from_step"] >= 25                   # from the signal's checkpoint
    assert compare_runs(reference, folder) == []
    assert load_run(folder).config["status"] == "completed"
