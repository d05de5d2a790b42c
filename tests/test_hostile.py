"""A hostile user (issue 38): every file read back is checked, publishing is atomic and knows
whose folder it is, the probe refuses what it cannot do, and each case that ended in a
traceback ends in one line and exit status 2.

Each test asserts the exit status, one line, nothing half-written and -- where the result used
to be silently wrong -- that the result is refused rather than changed.
"""
import dataclasses
import errno
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import analysis
from analysis.publishing import publish
from experiment_checks import load_script, one_thread, run_in_process  # noqa: F401
from probes import SignalProbe
from probes.adapters.tapping import tap_model
from reference_resnets import resnet18
from resnet_lab import cifar_resnet
from resnet_lab.runs.cellstore import CellStore
from resnet_lab.runs.results import compare_runs, load_run
from resnet_lab.runs.sweep import Cell

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "smoke", "--depths", "20", "--seeds", "0", "--workers", "1", "--device", "cpu"]
TRAIN = ["--preset", "smoke", "--model", "cifar_resnet20_v1", "--device", "cpu", "--quiet"]


def only_line(err: str) -> str:
    """The one line of stderr that is not progress (and no traceback)."""
    lines = [line for line in err.splitlines() if not line.startswith(("[", "cells/"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files(folder) -> dict:
    """{relative path: SHA-256} of every file under ``folder`` (what must not change)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"}


def no_half_written(root):
    assert not [p for p in Path(root).rglob("*") if p.name.endswith(".tmp") or p.name == ".publishing"]


def folder_of(out, name) -> Path:
    (folder,) = (Path(out) / name).iterdir()
    return folder


@pytest.fixture(scope="module")
def grad_flow_run(tmp_path_factory):
    """A grad_flow run (two nets) and its published references."""
    out = tmp_path_factory.mktemp("gf")
    code = load_script("grad_flow").main([*SMALL, "--out", str(out / "runs"),
                                          "--publish", str(out / "paper" / "grad_flow")])
    assert code == 0
    return folder_of(out / "runs", "grad_flow"), out / "paper" / "grad_flow"


@pytest.fixture(scope="module")
def claims_run(tmp_path_factory):
    """signal_propagation at one depth: a run with claims, and its published references."""
    out = tmp_path_factory.mktemp("sp")
    code = load_script("signal_propagation").main(
        ["--preset", "smoke", "--depths", "20", "--workers", "1", "--device", "cpu", "--out", str(out / "runs"), "--publish", str(out / "paper" / "signal_propagation")])
    assert code == 0
    return folder_of(out / "runs", "signal_propagation"), out / "paper"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished experiments/train.py run (it keeps its checkpoint)."""
    out = tmp_path_factory.mktemp("train")
    assert load_script("train").main([*TRAIN, "--out", str(out)]) == 0
    return folder_of(out, "train")


def copy_run(folder, tmp_path, name) -> Path:
    shutil.copytree(folder, tmp_path / name / folder.name)
    return tmp_path / name / folder.name


# ---- 1. everything read back is verified ---------------------------------------------------

def _overwrite_inside_a_tensor(path: Path, n=256):
    """Zero ``n`` bytes in the middle of the largest tensor of a torch zip (the zip still reads)."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[start: start + n] = bytes(n) if data[start: start + n] != bytes(n) else b"\x01" * n
    path.write_bytes(bytes(data))
    torch.load(path)                     # still a valid checkpoint to torch: only the hash knows


def test_a_checkpoint_changed_inside_a_tensor_is_refused_at_resume(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path, "train")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "interrupted"}))
    metrics = (run / "metrics.csv.gz").read_bytes()
    _overwrite_inside_a_tensor(run / "checkpoint.pt")
    code, err = run_in_process("train", ["--resume", str(run), "--quiet"], capsys)
    assert code == 2 and only_line(err) == (
        f"error: {run}/checkpoint.pt: changed since it was saved (its SHA-256 differs from "
        f"checkpoint.pt.sha256's; {(run / 'checkpoint.pt').stat().st_size:,} bytes); delete it to "
        "train the net from the start")
    after = json.loads((run / "config.json").read_text())
    assert after["status"] == "failed" and "changed since it was saved" in after["error"]
    assert (run / "metrics.csv.gz").read_bytes() == metrics          # nothing resumed from it
    no_half_written(run)


def test_a_checkpoint_without_its_hash_is_not_trusted(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path, "train")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "interrupted"}))
    (run / "checkpoint.pt.sha256").unlink()
    code, err = run_in_process("train", ["--resume", str(run), "--quiet"], capsys)
    assert code == 2 and "has no content hash beside it" in only_line(err)
    assert json.loads((run / "config.json").read_text())["status"] == "failed"


def _cifar_folder(root: Path, n_train=40, n_test=40, label=None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = rng.integers(0, 10, n).tolist()
        if label is not None and name == "data_batch_3":
            labels[5] = label
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


@pytest.mark.parametrize("kind, needle", [
    ("40 images a batch", "holds 200 training and 40 test images, the official set 50,000 and 10,000"),
    ("label 10", "holds a training label 10, outside 0..9"),
    ("label -1", "holds a training label -1, outside 0..9"),
    ("a batch of 3000-byte images", "not CIFAR batches (data is uint8 (40, 3000)")])
def test_an_extracted_cifar_folder_is_checked_before_training(kind, needle, tmp_path, capsys):
    if kind.startswith("label"):                    # checked before the counts
        data = _cifar_folder(tmp_path / "data", label=int(kind.split()[1]))
    else:
        data = _cifar_folder(tmp_path / "data")
    if "3000" in kind:
        path = data / "cifar-10-batches-py" / "data_batch_2"
        batch = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps({**batch, b"data": batch[b"data"][:, :3000].copy()}))
    code, err = run_in_process("grad_flow", [*SMALL, "--dataset", "cifar10", "--data-dir",
                                             str(data), "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and needle in only_line(err)
    assert not (tmp_path / "runs").exists()                           # nothing trained


def test_a_row_removed_from_published_claims_is_refused_by_the_report(claims_run, tmp_path, capsys):
    paper = tmp_path / "paper"
    shutil.copytree(claims_run[1], paper)
    claims = paper / "signal_propagation" / "claims.csv"
    lines = claims.read_text().splitlines(keepends=True)
    claims.write_text("".join(lines[:2] + lines[3:]))                 # one claim row fewer
    code, err = run_in_process("report", ["--results", str(paper)], capsys)
    assert code == 2 and only_line(err).startswith(
        f"error: {claims}: does not match the checksum tables.json recorded")
    assert not (paper / "REPORT.md").exists()                        # no report from it


@pytest.mark.parametrize("edit", ["extra column", "missing column", "swapped columns", "row added"])
def test_load_run_refuses_a_table_changed_after_it_was_written(edit, claims_run, tmp_path):
    run = copy_run(claims_run[0], tmp_path, "signal_propagation")
    path = run / "gaps.csv"
    df = pd.read_csv(path)
    df = {"extra column": lambda d: d.assign(extra=1),
          "missing column": lambda d: d.drop(columns=d.columns[-1]),
          "swapped columns": lambda d: d.rename(columns={d.columns[0]: d.columns[1],
                                                         d.columns[1]: d.columns[0]}),
          "row added": lambda d: pd.concat([d, d.tail(1)])}[edit](df)
    df.to_csv(path, index=False)
    result = load_run(run)
    with pytest.raises(ValueError, match=r"gaps.csv: does not match the checksum tables.json "):
        result["gaps"]
    assert load_run(run)["linear_fits"] is not None                   # the others still read


@pytest.mark.parametrize("record", ["{}", "[]"])
def test_an_empty_or_foreign_done_json_is_named_and_the_net_trained_again(record, grad_flow_run,
                                                                           tmp_path, capsys):
    run = copy_run(grad_flow_run[0], tmp_path, "grad_flow")
    (run / "cells" / "d20_w4_original_s0" / "done.json").write_text(record)
    code, err = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path)], capsys)
    first = err.splitlines()[0]
    assert code == 0 and first.startswith("cells/d20_w4_original_s0: done.json ")
    assert first.endswith("; training the net again")
    assert compare_runs(grad_flow_run[0], run) == []                # the same tables, not blanks
    cells = pd.read_csv(run / "cells.csv")
    assert cells["steps_done"].dtype == np.int64 and set(cells["status"]) == {"completed"}
    assert CellStore(run / "cells", "grad_flow").verify(
        [Cell(20, k, 0, 4) for k in ("original", "full_preact")]) == {}


@pytest.mark.parametrize("record", ["null", "[1, 2]", '"text"', "3"])
def test_a_config_json_that_is_no_record_is_one_line_and_moving_it_away_resumes(
        record, grad_flow_run, tmp_path, capsys):
    run = copy_run(grad_flow_run[0], tmp_path, "grad_flow")
    (run / "config.json").write_text(record)
    for _ in range(2):                                                # every rerun: one line
        code, err = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path)], capsys)
        assert code == 2 and only_line(err).startswith(f"error: {run}/config.json: not a record (a JSON ")
        assert "move it away" in err
    with pytest.raises(ValueError, match=r"config.json: not a record \(a JSON "):
        load_run(run)
    if record == "null":                                              # once: it is the same path
        (run / "config.json").rename(tmp_path / "config.json.edited")
        code, _ = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path)], capsys)
        assert code == 0 and compare_runs(grad_flow_run[0], run) == []


# ---- 2. publishing: atomic, and it knows whose folder it is -----------------------------------

def test_publishing_into_another_experiments_references_is_refused(grad_flow_run, tmp_path, capsys):
    dest = tmp_path / "paper" / "grad_flow"
    shutil.copytree(grad_flow_run[1], dest)
    before = files(dest)
    code, err = run_in_process("signal_propagation", ["--preset", "smoke", "--workers", "1", "--out",
                                                      str(tmp_path / "runs"), "--publish", str(dest)], capsys)
    assert code == 2 and only_line(err) == (
        f"error: --publish {dest}: it holds grad_flow's references (smoke preset), not "
        "signal_propagation's; publishing there would replace them: choose another folder, or add "
        "--publish-over to replace them")
    assert files(dest) == before and not (tmp_path / "runs").exists()  # nothing touched or run


@pytest.mark.slow
def test_publishing_another_presets_references_over_them_is_refused(grad_flow_run, tmp_path, capsys):
    dest = tmp_path / "grad_flow"
    shutil.copytree(grad_flow_run[1], dest)
    config = json.loads((dest / "config.json").read_text())
    config["args"]["preset"] = "quick"                              # as results/paper/ holds
    (dest / "config.json").write_text(json.dumps(config))
    before = files(dest)
    copy_run(grad_flow_run[0], tmp_path / "runs", "grad_flow")     # its nets are finished
    code, err = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path / "runs"),
                                             "--publish", str(dest)], capsys)
    assert code == 2 and "it holds grad_flow's quick preset references, not the smoke preset's" in only_line(err)
    assert files(dest) == before
    # Asked explicitly, it replaces them -- whole.
    code, _ = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path / "runs"), "--publish",
                                           str(dest), "--publish-over"], capsys)
    assert code == 0 and set(files(dest)) == set(files(grad_flow_run[1]))
    assert compare_runs(dest, grad_flow_run[1]) == []
    assert json.loads((dest / "config.json").read_text())["args"]["preset"] == "smoke"
    no_half_written(tmp_path)


def test_a_folder_of_other_files_is_not_published_into(tmp_path, capsys):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "thesis.tex").write_text("mine")
    code, err = run_in_process("grad_flow", [*SMALL, "--out", str(tmp_path / "runs"),
                                             "--publish", str(dest)], capsys)
    assert code == 2 and "it holds files but no config.json" in only_line(err)
    assert [p.name for p in dest.iterdir()] == ["thesis.tex"]


def test_a_disk_that_fills_while_publishing_leaves_the_old_references_whole(grad_flow_run, tmp_path):
    dest = tmp_path / "paper" / "grad_flow"
    shutil.copytree(grad_flow_run[1], dest)
    before = files(dest)
    assert len(list(dest.glob("figures/*.pdf"))) > 0
    drawn = []

    def full_disk(folder):
        drawn.append(folder)
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / "figures" / "x.pdf"))

    module = dataclasses.replace(analysis.experiment("grad_flow"), draw_figures=full_disk)
    with pytest.raises(OSError):
        publish(module, grad_flow_run[0], dest)
    assert drawn and Path(drawn[0]) != dest                          # drawn beside, not in place
    assert files(dest) == before                                      # every old figure is there
    assert json.loads((dest / "config.json").read_text())["status"] == "completed"
    no_half_written(tmp_path)


def test_published_tables_carry_their_checksums(grad_flow_run):
    record = json.loads((grad_flow_run[1] / "tables.json").read_text())
    for name in ("train.csv", "cells.csv", "summary.csv", "probe.csv.gz"):
        data = (grad_flow_run[1] / name).read_bytes()
        assert record[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert record[name]["bytes"] == len(data)


# ---- 3. the probe refuses what it cannot do -----------------------------------------------------

@pytest.fixture(scope="module")
def net20():
    torch.manual_seed(0)
    return cifar_resnet(20, version=1, width=4)


def _probed_step(probe, net):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    F.cross_entropy(net(x), y).backward()
    probe.step()


def test_a_probe_entered_twice_refuses_and_keeps_recording(net20):
    probe = SignalProbe(net20, cpp_hooks=False)
    with probe:
        with pytest.raises(RuntimeError, match=r"^SignalProbe entered twice \(a nested `with probe:`\)"):
            with probe:
                pass
        _probed_step(probe, net20)                                  # still recording all of it
    alone = SignalProbe(net20, cpp_hooks=False)
    with alone:
        _probed_step(alone, net20)
    assert len(probe.collect()) == len(alone.collect()) == 747


def test_a_probe_used_from_two_threads_refuses_the_second(net20):
    probe = SignalProbe(net20, cpp_hooks=False)
    errors, inside, leave = [], threading.Event(), threading.Event()

    def first():
        with probe:
            inside.set()
            leave.wait(30)

    def second():
        try:
            with probe:
                pass
        except RuntimeError as err:
            errors.append(str(err))

    one = threading.Thread(target=first)
    one.start()
    inside.wait(30)
    two = threading.Thread(target=second)
    two.start()
    two.join(30)
    with pytest.raises(RuntimeError, match="called from a thread other than the one inside"):
        probe.step()                                                # this thread is not inside
    leave.set()
    one.join(30)
    assert errors == ["SignalProbe is in use by another thread; a probe measures one thread's "
                      "forward and backward: give each thread its own probe"]


def test_a_probe_state_from_another_net_is_refused_before_anything_changes(net20):
    small = SignalProbe(net20, cpp_hooks=False)
    with small:
        _probed_step(small, net20)
    big = SignalProbe(cifar_resnet(56, version=1, width=4), cpp_hooks=False)
    with pytest.raises(ValueError, match=r"made by a probe of another net or other arguments "
                                         r"\(forward: 45 slots, this probe has 135\)"):
        big.load_state_dict(small.state_dict())
    assert len(big.collect()) == 0
    with pytest.raises(ValueError, match="not a probe's state"):
        big.load_state_dict({"rows": []})
    same = SignalProbe(net20, cpp_hooks=False)
    same.load_state_dict(small.state_dict())
    pd.testing.assert_frame_equal(same.collect(), small.collect())


@pytest.mark.parametrize("kwargs, needle", [
    (dict(taps=[]), "taps is empty: rms, norm"),
    (dict(taps=(), stats=("rms",)), "taps is empty: rms would be recorded at no tap"),
    (dict(taps=(), stats=("grad_norm",), param_grads=False), "taps is empty: nothing would be recorded at all"),
    (dict(stats=[]), "stats is empty: the probe would record nothing"),
    (dict(stats=()), "stats is empty")])
def test_empty_tap_or_statistic_lists_are_refused(kwargs, needle, net20):
    with pytest.raises(ValueError, match=needle):
        SignalProbe(net20, **kwargs)


def test_taps_that_record_without_a_tap_are_still_accepted(net20):
    probe = SignalProbe(net20, taps=(), stats=("grad_norm",), cpp_hooks=False)
    with probe:
        _probed_step(probe, net20)
    assert set(probe.collect()["stat"]) == {"grad_norm"} and len(probe.collect()) == 9


class LeakyReLU(nn.ReLU):
    """A subclass of nn.ReLU that computes something else."""

    def forward(self, x):
        return F.leaky_relu(x, 0.1)


def test_tap_model_refuses_a_relu_subclass_by_name():
    model = resnet18(num_classes=10)                     # torchvision's code (tests/reference_resnets)
    model.layer2[1].relu = LeakyReLU()
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    before = model(x)
    with pytest.raises(ValueError, match=r"layer2\.1: its after-addition activation relu is LeakyReLU "
                                         r"\(a subclass of nn\.ReLU, which may compute something else\); "
                                         r"tap_model supports nn\.ReLU there only$"):
        tap_model(model)
    assert torch.equal(model(x), before)                            # nothing was swapped
    assert not [m for m in model.modules() if type(m).__name__ == "Tap"]


# ---- 4. tracebacks -> one line, exit 2; bad constructor arguments -> one ValueError -------------

@pytest.mark.parametrize("what", ["grad_flow run", "cell state"])
def test_train_resume_refuses_a_folder_it_did_not_make(what, grad_flow_run, tmp_path, capsys):
    run = copy_run(grad_flow_run[0], tmp_path, "grad_flow")
    folder = run if what == "grad_flow run" else run / "cells" / "d20_w4_original_s0" / "state"
    folder.mkdir(exist_ok=True)
    if what == "cell state":
        (folder / "config.json").write_text(json.dumps(
            {"cell": "d20_w4_original_s0", "experiment": "grad_flow", "status": "running"}))
    before = files(run)
    code, err = run_in_process("train", ["--resume", str(folder)], capsys)
    line = only_line(err)
    assert code == 2 and line.startswith(f"error: --resume: {folder} is ")
    assert line.endswith("not an experiments/train.py run; resume an experiment by running its own "
                         "command again")
    assert ("grad_flow's net d20_w4_original_s0" if what == "cell state" else "a grad_flow run") in line
    assert files(run) == before


def test_an_unknown_mpl_backend_falls_back_to_agg_in_one_line(tmp_path):
    scripts = ["grad_flow", "signal_propagation", "early_training", "full_training",
               "unit_ablation", "train", "report", "make_figures", "reproduce", "compare_runs"]
    code = ("import sys, contextlib, io\n"
            "sys.path.insert(0, 'tests')\n"
            "from experiment_checks import load_script\n"
            f"for name in {scripts!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        load_script(name).main(['--help'])\n"
            "import matplotlib; print(matplotlib.get_backend())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "nonsense"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: MPLBACKEND='nonsense' is not a matplotlib backend; drawing with Agg"]
    assert done.stdout.strip().lower() == "agg"


@pytest.mark.parametrize("script", ["grad_flow", "signal_propagation", "early_training",
                                    "full_training", "unit_ablation"])
@pytest.mark.parametrize("depth", ["-20", "0", "-1001"])
def test_a_negative_depth_is_one_line(script, depth, tmp_path, capsys):
    code, err = run_in_process(script, ["--preset", "smoke", "--depths", depth, "--out",
                                        str(tmp_path / "runs")], capsys)
    assert code == 2 and f"--depths: no CIFAR ResNet of depth {depth}" in only_line(err)
    assert "nearest basic (6n+2): 8" in err and not (tmp_path / "runs").exists()


def test_make_figures_on_an_empty_results_folder_says_so(tmp_path, capsys):
    code, err = run_in_process("make_figures", ["--results", str(tmp_path)], capsys)
    assert code == 2 and only_line(err) == (
        f"error: --results {tmp_path}: no experiment folder in it (looked for grad_flow, "
        "signal_propagation, shortcut_variants, early_training, full_training, unit_ablation); "
        "nothing to draw")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(in_channels=0), "in_channels must be at least 1, got 0"),
    (dict(in_channels=-3), "in_channels must be at least 1, got -3"),
    (dict(num_classes=0), "num_classes must be at least 1, got 0"),
    (dict(num_classes=2.0), "num_classes must be an integer, got 2.0"),
    (dict(depth=True), "depth must be an integer, got True"),
    (dict(depth=20.0), "depth must be an integer, got 20.0"),
    (dict(depth=-20), "no CIFAR ResNet of depth -20"),
    (dict(width=np.int64(0)), "width must be a positive integer")])
def test_bad_constructor_arguments_are_one_value_error(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cifar_resnet(**{"depth": 20, "version": 1, **kwargs})


def test_any_integral_depth_builds_the_same_net():
    torch.manual_seed(0)
    plain = cifar_resnet(20, version=2, width=4, num_classes=np.int32(10))
    torch.manual_seed(0)
    numpy_int = cifar_resnet(np.int64(20), version=2, width=np.int64(4))
    assert plain.name == numpy_int.name
    for a, b in zip(plain.state_dict().values(), numpy_int.state_dict().values()):
        assert torch.equal(a, b)


def test_a_cut_off_gzip_table_is_one_line(grad_flow_run, tmp_path):
    """(Beyond the issue.) A published probe table cut off: refused by its checksum."""
    dest = tmp_path / "grad_flow"
    shutil.copytree(grad_flow_run[1], dest)
    path = dest / "probe.csv.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:500]))
    with pytest.raises(ValueError, match="probe.csv.gz: does not match the checksum"):
        load_run(dest)["probe"]
