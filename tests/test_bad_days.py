"""Bad days: signals, full disks, refused writes, long names, link loops, memory running out,
figures that cannot be drawn and corrupted cells -- one line each, the right exit status,
nothing half-written, and a rerun once the cause is gone equals an uninterrupted run.

(Bad command lines -- empty or ``~`` paths, runs into results/paper, counts that cannot mean
what they say -- are in test_robustness.py's table.)
"""
import dataclasses
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import analysis.cells
import analysis.grad_flow
import analysis.runner
from analysis import experiment
from analysis.preflight import predicted_time
from experiment_checks import load_script, one_thread  # noqa: F401
from resnet_lab.io import signals
from resnet_lab.runs.cellstore import CellStore
from resnet_lab.runs.cli import main_guard
from resnet_lab.io.errors import CellFailed
from resnet_lab.runs.results import compare_runs, load_run
from resnet_lab.io.folders import RunDir
from analysis.probing import probe_spacing, probed_count
from resnet_lab.runs.sweep import Cell, CellResult, run_cells

ROOT = Path(__file__).resolve().parents[1]
# Two nets of grad_flow (seconds); a few dozen steps of early_training (a signal lands mid-net).
SMALL = ["--preset", "smoke", "--depths", "20", "--seeds", "0", "--workers", "1", "--device", "cpu"]
LONG = ["--preset", "smoke", "--depths", "20", "--seeds", "0", "1", "2", "--steps", "40",
        "--probe-steps", "3", "--device", "cpu"]


def run(name, argv, out, capsys=None):
    """(exit status, stderr) of a script's main in this process."""
    code = main_guard(load_script(name).main)([*argv, "--out", str(out)])
    return code, capsys.readouterr().err if capsys is not None else None


def folder_of(out, name="grad_flow") -> Path:
    (folder,) = (Path(out) / name).iterdir()
    return folder


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    assert run("grad_flow", SMALL, out) == (0, None)
    return folder_of(out)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    assert run("early_training", [*LONG, "--workers", "1"], out) == (0, None)
    return folder_of(out, "early_training")


def one_line(err: str) -> str:
    """The last line of stderr (the progress lines come before it), checked to be the only
    line that is not progress."""
    lines = [line for line in err.splitlines() if not line.startswith(("[", "cells/"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def no_temporary_files(out):
    assert not [p for p in Path(out).rglob("*.tmp")], "a half-written file was left"


# ---- signals ----------------------------------------------------------------------------------

@pytest.fixture
def handlers():
    """The scripts' signal handlers in this process (run_main installs them), then pytest's."""
    old = {s: signal.getsignal(s) for s in signals.EXIT_STATUS}
    signals.install()
    yield
    for s, handler in old.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130),
                                            pytest.param(signal.SIGUSR1, 75, marks=pytest.mark.slow)])
def test_a_signal_checkpoints_the_net_and_the_same_command_resumes(signum, status, handlers,
                                                                   long_reference, tmp_path,
                                                                   capsys, monkeypatch):
    train = analysis.cells.train

    class Kill:                                                 # the second net, at step 7
        def on_step_end(self, step):
            if step == 7:
                os.kill(os.getpid(), signum)

    def signalled(model, data, state, settings, **kw):
        if settings.seed == 1 and "original" in str(state.path):
            kw["callbacks"] = [*kw["callbacks"], Kill()]
        return train(model, data, state, settings, **kw)
    monkeypatch.setattr(analysis.cells, "train", signalled)
    code, err = run("early_training", [*LONG, "--workers", "1"], tmp_path, capsys)
    line = one_line(err)
    assert code == status and line.startswith(f"interrupted by {signals.name(signum)}: 2 of 15 nets "
                                              "finished, 1 will resume from its checkpoint "
                                              "(d20_w4_original_s1 at step 7)"), line
    assert line.endswith(f"resume with: python experiments/early_training.py {' '.join(LONG)} "
                         f"--workers 1 --out {tmp_path}")
    folder = folder_of(tmp_path, "early_training")
    assert load_run(folder).config["status"] == "interrupted"
    monkeypatch.setattr(analysis.cells, "train", train)
    assert run("early_training", [*LONG, "--workers", "1"], tmp_path) == (0, None)
    assert compare_runs(long_reference, folder) == []
    state = json.loads((folder / "cells" / "d20_w4_original_s1" / "state" / "config.json").read_text())
    assert state["resumed_from_step"] == 7


def _children(pid) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(out):
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "early_training.py"), *LONG,
                             "--workers", "2", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "RESNET_LAB_NO_BAR": "1"})


def _wait_for_training(out, process):
    deadline = time.time() + 240
    while not list(Path(out).glob("early_training/*/cells/*/state/config.json")):
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1.0)
    workers = [pid for pid in _children(process.pid) if "spawn_main" in
               Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
    assert len(workers) == 2
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker processes")
def test_sigterm_to_the_parent_alone_stops_its_workers_in_a_second(long_reference, tmp_path):
    process = _start(tmp_path)
    workers = _wait_for_training(tmp_path, process)
    t0 = time.time()
    process.send_signal(signal.SIGTERM)                  # the parent only, as kill PID does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and time.time() - t0 < 5, err
    assert one_line(err).startswith("interrupted by SIGTERM: ") and "leaked" not in err
    assert not [pid for pid in workers if _alive(pid)]   # no orphan finishes its net
    assert run("early_training", [*LONG, "--workers", "1"], tmp_path) == (0, None)
    assert compare_runs(long_reference, folder_of(tmp_path, "early_training")) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker processes")
@pytest.mark.slow
def test_a_killed_parent_takes_its_workers_with_it(tmp_path):
    process = _start(tmp_path)
    workers = _wait_for_training(tmp_path, process)
    process.kill()                                      # SIGKILL: nothing of the parent runs
    err = process.stderr.read()                         # EOF: every writer (worker) is gone
    process.wait()
    deadline = time.time() + 10
    while [pid for pid in workers if _alive(pid)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]
    assert "Traceback" not in err and "leaked" not in err and "BrokenPipe" not in err, err
    assert len(list(tmp_path.glob("early_training/*/cells/*/done.json"))) < 6


def test_a_closed_stdout_ends_quietly():
    process = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "unit_ablation.py"),
                                "--preset", "paper", "--plan", "4"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()                              # as `| head` does once it has its lines
    err = process.stderr.read()
    assert process.wait() == 141 and err == ""


# ---- the operating system says no ----------------------------------------------------------------

class _RefusedFile:
    """A file whose write fails half-way as the disk or the file system would."""

    def __init__(self, real, code):
        self.real, self.code = real, code

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        raise OSError(self.code, os.strerror(self.code))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "free some space"),
                                          (errno.EROFS, "read-only"),
                                          (errno.EACCES, "give this user permission")])
def test_a_refused_write_is_one_line_and_the_rerun_completes(code, advice, small_reference,
                                                             tmp_path, capsys, monkeypatch):
    import resnet_lab.io.folders as runs
    real = os.fdopen

    def fdopen(fd, *args, **kw):
        path = os.readlink(f"/proc/self/fd/{fd}")
        file = real(fd, *args, **kw)
        return _RefusedFile(file, code) if "d20_w4_full_preact_s0/.probe" in path else file
    monkeypatch.setattr(runs.os, "fdopen", fdopen)
    status, err = run("grad_flow", SMALL, tmp_path, capsys)
    line = one_line(err)
    assert status == 2 and line.startswith(f"error: depth 20 V2 width 4 seed 0 "
                                           f"(cells/d20_w4_full_preact_s0): {os.strerror(code)}: ")
    assert "d20_w4_full_preact_s0/probe.csv.gz" in line and advice in line, line
    folder = folder_of(tmp_path)
    assert load_run(folder).config["status"] == "failed" and load_run(folder).config["error"] in line
    no_temporary_files(tmp_path)
    assert not (folder / "cells" / "d20_w4_full_preact_s0" / "done.json").exists()
    monkeypatch.setattr(runs.os, "fdopen", real)
    assert run("grad_flow", SMALL, tmp_path) == (0, None)
    assert compare_runs(small_reference, folder) == []


def test_an_unwritable_default_output_folder_is_refused_before_work(tmp_path, capsys, monkeypatch):
    import resnet_lab.io.folders as runs
    monkeypatch.chdir(tmp_path)

    def refused(*args, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(runs.tempfile, "TemporaryFile", refused)
    code = main_guard(load_script("grad_flow").main)(SMALL)
    line = one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: --out (default results/runs): cannot write to "
                                         "results/runs/grad_flow/smoke-") and "Permission denied" in line
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_data_archive_names_it(tmp_path, capsys, monkeypatch):
    import resnet_lab.engine.data as data
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"x")

    def refused(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(data, "md5sum", refused)
    code, err = run("grad_flow", [*SMALL, "--dataset", "cifar10", "--data-dir", str(tmp_path)],
                    tmp_path / "runs", capsys)
    assert code == 2 and one_line(err) == (f"error: Permission denied: {tmp_path}/cifar-10-python"
                                           ".tar.gz: give this user permission there, or choose "
                                           "another folder (--out, --data-dir)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["name too long", "link loop"])
def test_a_path_the_file_system_cannot_take_is_one_line(kind, tmp_path, capsys):
    if kind == "name too long":
        out, needle = tmp_path / ("x" * 300) / "runs", "File name too long"
    else:
        os.symlink("loop", tmp_path / "loop")
        out, needle = tmp_path / "loop" / "runs", "Too many levels of symbolic links"
    code, err = run("grad_flow", SMALL, out, capsys)
    line = one_line(err)
    assert code == 2 and needle in line and str(tmp_path) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind != "link loop" else ["loop"])


def test_a_net_out_of_memory_is_named_and_the_rerun_completes(small_reference, tmp_path, capsys,
                                                               monkeypatch):
    train = analysis.cells.train

    def allocation_fails(model, data, state, settings, **kw):
        if "full_preact" in str(state.path):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 360000000000 bytes.")
        return train(model, data, state, settings, **kw)
    monkeypatch.setattr(analysis.cells, "train", allocation_fails)
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    line = one_line(err)
    assert code == 2 and line.startswith("error: depth 20 V2 width 4 seed 0 (cells/d20_w4_full_"
                                         "preact_s0): out of memory (") and "--width" in line, line
    folder = folder_of(tmp_path)
    assert load_run(folder).config["status"] == "failed"
    assert (folder / "cells" / "d20_w4_original_s0" / "done.json").exists()   # kept
    monkeypatch.setattr(analysis.cells, "train", train)
    assert run("grad_flow", SMALL, tmp_path) == (0, None)
    assert compare_runs(small_reference, folder) == []


def _fails_for_seed_1(cell, state, context, report):
    if cell.seed == 1:
        raise MemoryError()
    time.sleep(0.2)
    return CellResult({"t": pd.DataFrame({"x": [cell.seed]})}, steps_done=1)


def test_a_worker_process_reports_its_failure_in_one_line(tmp_path):
    run_dir = RunDir.create("e", {}, out=tmp_path, run_id="r")
    cells = [Cell(20, "original", s, 4) for s in range(4)]
    with pytest.raises(CellFailed) as failed:
        run_cells(run_dir, "e", cells, _fails_for_seed_1, {}, workers=2)
    assert str(failed.value).startswith("depth 20 V1 width 4 seed 1 (cells/d20_w4_original_s1): "
                                        "out of memory (MemoryError): use a smaller --width")
    assert not (run_dir.path / "cells" / "d20_w4_original_s1" / "done.json").exists()


def _killed_for_seed_1(cell, state, context, report):
    if cell.seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)             # as the out-of-memory killer does
    return _fails_for_seed_1(cell, state, context, report)


def test_a_worker_killed_by_the_system_is_named(tmp_path):
    run_dir = RunDir.create("e", {}, out=tmp_path, run_id="r")
    cells = [Cell(20, "original", s, 4) for s in range(3)]
    with pytest.raises(CellFailed) as failed:
        run_cells(run_dir, "e", cells, _killed_for_seed_1, {}, workers=2)
    assert str(failed.value) == ("depth 20 V1 width 4 seed 1 (cells/d20_w4_original_s1): its worker "
                                 "process died (killed by SIGKILL: the system's out-of-memory "
                                 "killer, most likely; use fewer --workers or a smaller net)")


# ---- checks before work, not after ----------------------------------------------------------------

def test_a_figure_that_cannot_be_drawn_leaves_the_tables_and_the_nets_alone(tmp_path, capsys,
                                                                              monkeypatch):
    def broken(run_dir):
        raise ValueError("cannot convert float NaN to integer")
    monkeypatch.setattr(analysis.grad_flow, "EXPERIMENT",
                        dataclasses.replace(experiment("grad_flow"), draw_figures=broken))
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    assert code == 0 and one_line(err).startswith("warning: figures: ValueError: cannot convert "
                                                  "float NaN to integer; the tables are complete")
    run_dir = load_run(folder_of(tmp_path))
    assert run_dir.config["status"] == "completed" and "NaN" in run_dir.config["figures_error"]
    assert set(run_dir.cells["status"]) == {"completed"} and len(run_dir.summary) == 2


def test_a_run_far_longer_than_its_preset_says_its_predicted_time(capsys, monkeypatch):
    module = experiment("grad_flow")
    s = module.parse_settings(["--preset", "smoke", "--steps", "1000000000", "--device", "cpu"])
    line = predicted_time(module, s)
    assert line.startswith("predicted: ~") and "years of GPU time" in line
    assert "x the smoke preset's work" in line and "on 2 CPU cores" in line
    assert predicted_time(module, module.parse_settings(["--preset", "smoke"])) is None

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop
    monkeypatch.setattr(analysis.runner, "open_run", stop)     # said before anything runs
    with pytest.raises(Stop):
        load_script("grad_flow").main(["--preset", "smoke", "--steps", "1000000000"])
    assert capsys.readouterr().out.startswith("predicted: ~")


def test_one_checkpoint_probes_one_step():
    assert probed_count(13, probe_spacing(13, 1)) == 1
    assert probed_count(13, probe_spacing(13, 3)) == 3


@pytest.mark.slow
def test_full_training_on_a_depth_without_a_c5_measure_still_answers(tmp_path):
    run_dir = run_smoke_folder("full_training", tmp_path, "--depths", "164", "--steps", "4")
    assert len(list(run_dir.glob("figures/*.pdf"))) == 4
    assert "figures_error" not in load_run(run_dir).config


def run_smoke_folder(name, out, *extra):
    assert run(name, ["--preset", "smoke", "--workers", "1", *extra], out) == (0, None)
    return folder_of(out, name)


# ---- corrupted cells ------------------------------------------------------------------------------

def _halve_rows(path: Path):
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))


CORRUPTIONS = {
    "table cut off": (lambda p: p.write_bytes(p.read_bytes()[:100]), "probe.csv.gz does not match"),
    "half the rows dropped": (_halve_rows, "probe.csv.gz does not match"),
    "table missing": (lambda p: p.unlink(), "probe.csv.gz is missing"),
    "done.json cut off": (lambda p: (p.parent / "done.json").write_text('{"cell": "d20'),
                          "done.json is unreadable"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupted_cell_is_named_and_trained_again(kind, small_reference, tmp_path, capsys):
    shutil.copytree(small_reference, tmp_path / "grad_flow" / small_reference.name)
    folder = folder_of(tmp_path)
    damage, reason = CORRUPTIONS[kind]
    damage(folder / "cells" / "d20_w4_original_s0" / "probe.csv.gz")
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    assert code == 0 and err.splitlines()[0].startswith(f"cells/d20_w4_original_s0: {reason}")
    assert err.splitlines()[0].endswith("; training the net again")
    assert compare_runs(small_reference, folder) == []
    assert CellStore(folder / "cells", "grad_flow").verify(
        [Cell(20, k, 0, 4) for k in ("original", "full_preact")]) == {}


def test_a_cell_changed_after_the_check_is_caught_when_merged(small_reference, tmp_path, capsys,
                                                                monkeypatch):
    shutil.copytree(small_reference, tmp_path / "grad_flow" / small_reference.name)
    folder = folder_of(tmp_path)
    _halve_rows(folder / "cells" / "d20_w4_full_preact_s0" / "train.csv.gz")
    monkeypatch.setattr(CellStore, "verify", lambda self, cells: {})   # as if changed after it
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    assert code == 0 and "cells/d20_w4_full_preact_s0: train.csv.gz does not match" in err
    assert compare_runs(small_reference, folder) == []


def test_a_cut_off_config_is_named_and_moving_it_away_resumes(small_reference, tmp_path, capsys):
    shutil.copytree(small_reference, tmp_path / "grad_flow" / small_reference.name)
    folder = folder_of(tmp_path)
    config = folder / "config.json"
    config.write_text(config.read_text()[:150])
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    assert code == 2 and one_line(err).startswith(f"error: {config}: unreadable (JSONDecodeError")
    config.rename(tmp_path / "config.json.cut")
    assert run("grad_flow", SMALL, tmp_path) == (0, None)
    assert compare_runs(small_reference, folder) == [] and load_run(folder).status == "completed"


def test_an_unreadable_checkpoint_is_named_and_the_net_starts_afresh(small_reference, tmp_path,
                                                                      capsys):
    shutil.copytree(small_reference, tmp_path / "grad_flow" / small_reference.name)
    cell = folder_of(tmp_path) / "cells" / "d20_w4_original_s0"
    (cell / "done.json").unlink()                           # unfinished, with a cut-off checkpoint
    (cell / "state" / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut off")
    code, err = run("grad_flow", SMALL, tmp_path, capsys)
    assert code == 0 and err.startswith(f"cells/d20_w4_original_s0: {cell}/state/checkpoint.pt: "
                                        "unreadable checkpoint (")
    assert "; deleted, to train the net from the start" in err.splitlines()[0]
    assert compare_runs(small_reference, folder_of(tmp_path)) == []
