"""The training engine: learning, bitwise reproducibility, kill-and-resume, divergence, probes,
torchrun equality, the schedule, run folders and sweep helpers."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab import cifar_resnet, create_model

from resnet_lab.io import folders as runs
from resnet_lab.engine.data import load_dataset
from resnet_lab.io.folders import RunDir, atomic_write, check_writable_dir
from resnet_lab.engine.schedule import Schedule
from resnet_lab.runs.shards import parse_shard, select_shard
from resnet_lab.runs.sweep import merge_runs
from resnet_lab.engine.training import train

ROOT = Path(__file__).resolve().parents[1]
STEPS = dict(steps=20, batch_size=32, eval_every=10, checkpoint_every=5, quiet=True)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: tiny nets run fastest so, and the 2 shared cores are not oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_net(seed=0):
    torch.manual_seed(seed)
    return cifar_resnet(20, version=2, width=4, in_channels=1)


def comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    """Everything but wall time."""
    return metrics[metrics.metric != "seconds"].reset_index(drop=True)


def read_csv(run, name):
    return pd.read_csv(run.path / name)


def assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---- learning and reproducibility -------------------------------------------------------------

def test_short_digits_run_lowers_the_loss_and_reproduces_bitwise(digits):
    a = train(small_net(), digits, steps=60, batch_size=64, eval_every=30, quiet=True)
    loss = a.metrics.query("split == 'train' and metric == 'loss'").value
    assert loss.iloc[-10:].mean() < loss.iloc[:10].mean() - 0.2
    test = a.metrics.query("split == 'test' and metric == 'loss'")
    assert list(test.step) == [30, 60] and test.value.iloc[-1] < 2.0          # chance: ln 10 = 2.30
    assert a.status == "completed" and a.step == 60
    assert set(a.metrics.columns) == {"step", "epoch", "split", "metric", "value"}
    lr = a.metrics.query("metric == 'lr'").set_index("step").value
    error = a.metrics.query("split == 'train' and metric == 'error'").set_index("step").value
    # the paper's warm-up: 0.01 up to the first update whose batch error is below 80%,
    # then 0.1, /10 after steps 30 and 45 (1/2 and 3/4 of the run)
    end = int(error[error < 0.8].index[0])
    assert (lr[:end] == 0.01).all() and lr[end + 1] == 0.1 and a.warmup_end == end
    assert lr[30] == 0.1 and lr[31] == 0.01 and lr[46] == 0.001

    b = train(small_net(), digits, steps=60, batch_size=64, eval_every=30, quiet=True)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics), check_exact=True)
    assert_same_weights(a.model, b.model)


# ---- checkpoint and resume --------------------------------------------------------------------

class FakeProbe:
    """A training callback in miniature, as the engine sees one: its own schedule (updates 1,
    1 + every, ...), a hook on the first unit's sum tap only during the updates it probes, the
    tap's mean as its record, its records as its state (saved in the checkpoint), its table."""
    name = "probe"

    def __init__(self, every=3):
        self.every, self.records, self.value, self.handle = every, [], None, None

    def on_train_start(self, model, step):
        self.unit = model.units()[0]

    def on_step_start(self, step):
        if (step - 1) % self.every == 0:
            self.handle = self.unit.taps["sum"].register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        assert self.value is None, "one forward per step, and none outside training steps"
        self.value = out.detach().mean().item()

    def on_after_backward(self, step):
        if self.handle is not None:
            self.records.append((step, self.value))

    def on_step_end(self, step):
        self.on_train_end()
        self.value = None

    def on_train_end(self):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def state_dict(self):
        return {"steps": [s for s, _ in self.records], "values": [v for _, v in self.records]}

    def load_state_dict(self, state):
        self.records = list(zip(state["steps"], state["values"]))

    def tables(self):
        return {"probe": pd.DataFrame({"step": [s for s, _ in self.records], "unit": 0, "stage": 1,
                                       "index": 0, "tap": "sum", "direction": "forward", "stat": "mean",
                                       "value": [v for _, v in self.records]})}


def kill_at_training_forward(model, n):
    """Raise KeyboardInterrupt in the n-th training forward: a kill in the middle of a step."""
    calls = []

    def hook(module, args):
        if module.training:
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
    return model.register_forward_pre_hook(hook)


def test_killed_run_resumes_to_the_same_weights_and_rows(tmp_path, digits):
    whole = RunDir.create("t", {"run": "whole"}, out=tmp_path)
    a = train(small_net(), digits, whole, callbacks=[FakeProbe(every=3)], **STEPS)

    run = RunDir.create("t", {"run": "killed"}, out=tmp_path, run_id="killed")
    net = small_net()
    handle = kill_at_training_forward(net, 13)             # dies during step 13; last checkpoint 10
    with pytest.raises(KeyboardInterrupt):
        train(net, digits, run, callbacks=[FakeProbe(every=3)], **STEPS)
    handle.remove()
    assert run.config["status"] == "interrupted"
    assert torch.load(run.path / "checkpoint.pt")["step"] == 10
    assert read_csv(run, "metrics.csv.gz").step.max() == 10

    run = RunDir.create("t", {"run": "killed"}, out=tmp_path, run_id="killed")   # the same command again
    b = train(small_net(seed=1), digits, run, callbacks=[FakeProbe(every=3)], **STEPS)
    assert b.status == "completed" and run.config["status"] == "completed"
    assert run.config["resumed_from_step"] == 10 and run.config["error"] is None
    (restart,) = run.config["restarts"]
    assert restart["previous_status"] == "interrupted" and "KeyboardInterrupt" in restart["previous_error"]
    assert_same_weights(a.model, b.model)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics), check_exact=True)
    pd.testing.assert_frame_equal(comparable(read_csv(whole, "metrics.csv.gz")),
                                  comparable(read_csv(run, "metrics.csv.gz")), check_exact=True)
    # Both probed steps 1, 4, ..., 19 -- the resumed run from step 13 on, across the
    # checkpoint at 10 -- and never an evaluation forward.
    assert list(a.tables["probe"].step) == [1, 4, 7, 10, 13, 16, 19]
    pd.testing.assert_frame_equal(a.tables["probe"], b.tables["probe"], check_exact=True)
    pd.testing.assert_frame_equal(read_csv(whole, "probe.csv.gz"), read_csv(run, "probe.csv.gz"))


def test_signal_probe_rows_are_saved_with_the_run(tmp_path, digits):
    probes = pytest.importorskip("probes")
    run = RunDir.create("t", {}, out=tmp_path)
    result = train(small_net(), digits, run, callbacks=[probes.ProbeCallback(every=5)],
                   steps=10, batch_size=32, checkpoint_every=5, quiet=True)
    saved = read_csv(run, "probe.csv.gz")
    assert sorted(saved.step.unique()) == [1, 6] and len(saved) == len(result.tables["probe"])
    assert {"step", "unit", "stage", "index", "tap", "direction", "stat", "value"} <= set(saved.columns)


def test_killed_probed_run_resumes_to_the_same_probe_table(tmp_path, digits):
    """A SignalProbe's rows are its state: a run killed between checkpoints and resumed records
    the same table, bit for bit, as an uninterrupted one (probed at 1, 4, ..., 19; the kill in
    step 13, the last checkpoint at 10)."""
    probes = pytest.importorskip("probes")
    stats = dict(stats=("rms", "frac_zero", "shortcut_cut", "grad_cut", "grad_norm"), weight_inputs=True)
    whole = RunDir.create("t", {"run": "whole"}, out=tmp_path)
    a = train(small_net(), digits, whole, callbacks=[probes.ProbeCallback(every=3, **stats)], **STEPS)
    run = RunDir.create("t", {"run": "killed"}, out=tmp_path, run_id="killed")
    net = small_net()
    handle = kill_at_training_forward(net, 13)
    with pytest.raises(KeyboardInterrupt):
        train(net, digits, run, callbacks=[probes.ProbeCallback(every=3, **stats)], **STEPS)
    handle.remove()
    assert all("forward" not in m.__dict__ for m in net.modules())      # the probe left the net
    run = RunDir.create("t", {"run": "killed"}, out=tmp_path, run_id="killed")
    b = train(small_net(seed=1), digits, run, callbacks=[probes.ProbeCallback(every=3, **stats)], **STEPS)
    assert sorted(a.tables["probe"].step.unique()) == [1, 4, 7, 10, 13, 16, 19]
    pd.testing.assert_frame_equal(a.tables["probe"], b.tables["probe"], check_exact=True)
    pd.testing.assert_frame_equal(read_csv(whole, "probe.csv.gz"), read_csv(run, "probe.csv.gz"))


def test_callbacks_need_names_of_their_own(digits):
    with pytest.raises(ValueError, match="two callbacks named 'probe'"):
        train(small_net(), digits, callbacks=[FakeProbe(), FakeProbe()], steps=1, batch_size=8, quiet=True)


# ---- divergence -------------------------------------------------------------------------------

def test_nan_loss_ends_the_run_as_diverged_and_keeps_the_rows(tmp_path, digits):
    net = small_net()
    calls = []

    def poison(module, args, out):
        if module.training:
            calls.append(1)
            if len(calls) == 8:
                return out * float("nan")
    net.register_forward_hook(poison)
    run = RunDir.create("t", {}, out=tmp_path)
    result = train(net, digits, run, **STEPS)
    assert result.status == "diverged" and result.step == 8
    config = run.config
    assert config["status"] == "diverged" and config["diverged_at_step"] == 8 and config["end_time"]
    saved = read_csv(run, "metrics.csv.gz")
    assert saved.step.max() == 8 and len(saved.query("split == 'train'")) == 8 * 4
    loss = saved.query("metric == 'loss' and split == 'train'").set_index("step").value
    assert loss[:7].notna().all() and pd.isna(loss[8])
    assert torch.load(run.path / "checkpoint.pt")["step"] == 5     # the last finite state is kept


def test_a_non_finite_test_loss_is_a_divergence_at_that_step(tmp_path, digits):
    """Divergence is data, in evaluation too: a net whose eval-mode output is NaN stops at its
    first evaluation with status diverged, its training rows finite."""
    net = small_net()
    net.register_forward_hook(lambda module, args, out: out if module.training else out * float("nan"))
    run = RunDir.create("t", {}, out=tmp_path)
    result = train(net, digits, run, **STEPS)
    assert result.status == "diverged" and result.step == STEPS["eval_every"]
    assert run.config["diverged_at_step"] == STEPS["eval_every"]
    assert result.metrics.query("split == 'test' and metric == 'loss'").value.isna().all()
    assert result.metrics.query("split == 'train' and metric == 'loss'").value.notna().all()


def test_a_run_without_evaluation_never_runs_the_net_in_eval_mode(digits):
    """``evaluate=False`` (grad_flow): the eval-mode NaN above goes unseen; no test rows."""
    net = small_net()
    net.register_forward_hook(lambda module, args, out: out if module.training else out * float("nan"))
    result = train(net, digits, None, evaluate=False, **STEPS)
    assert result.status == "completed" and result.step == STEPS["steps"]
    assert set(result.metrics["split"]) == {"train"}


# ---- torch.distributed ------------------------------------------------------------------------

class PerRankBatchNorm(nn.BatchNorm2d):
    """BatchNorm as DistributedDataParallel over ``ranks`` processes computes it: batch
    statistics over each rank's contiguous slice; running statistics from rank 0's slice
    (DDP broadcasts rank 0's buffers). SyncBatchNorm does not run on CPU, so the single-process
    reference does this instead."""
    ranks = 2

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self.num_batches_tracked += 1
        return torch.cat([F.batch_norm(part, self.running_mean if r == 0 else None,
                                       self.running_var if r == 0 else None, self.weight, self.bias,
                                       True, self.momentum, self.eps)
                          for r, part in enumerate(x.chunk(self.ranks))])


@pytest.mark.slow
def test_torchrun_two_processes_match_a_single_process(tmp_path, digits):
    args = ["--model", "cifar_resnet20_v2", "--width", "4", "--dataset", "digits", "--steps", "6",
            "--batch-size", "32", "--eval-every", "3", "--checkpoint-every", "3", "--seeds", "0",
            "--device", "cpu", "--quiet", "--out", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(ROOT / "experiments" / "train.py"), *args],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1                            # rank 0 alone reports
    (folder,) = (tmp_path / "train").iterdir()
    run = RunDir(folder)
    assert run.config["world_size"] == 2 and run.config["status"] == "completed"

    torch.manual_seed(0)
    net = create_model("cifar_resnet20_v2", num_classes=10, in_channels=1, width=4)
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = PerRankBatchNorm
    single = train(net, digits, steps=6, batch_size=32, eval_every=3, checkpoint_every=3, quiet=True)
    both = comparable(read_csv(run, "metrics.csv.gz"))
    ref = comparable(single.metrics)
    assert both[["step", "epoch", "split", "metric"]].equals(ref[["step", "epoch", "split", "metric"]])
    assert torch.allclose(torch.tensor(both.value.values), torch.tensor(ref.value.values),
                          rtol=1e-4, atol=1e-5)
    saved = torch.load(folder / "checkpoint.pt")["model"]
    for k, v in single.model.state_dict().items():
        assert torch.allclose(saved[k].float(), v.float(), rtol=1e-4, atol=1e-5), k


# ---- schedule ---------------------------------------------------------------------------------

def test_paper_schedule_and_its_scaling():
    paper = Schedule.paper(64_000)
    assert (paper.warmup_max_steps, paper.warmup_error, paper.milestones) == (400, 0.8, (32_000, 48_000))
    # the warm-up ends after the first update with batch error < 80%, or after 400 updates
    assert not paper.warmup_ends(0, 0.85) and paper.warmup_ends(0, 0.79) and paper.warmup_ends(399, 0.9)
    assert [paper.lr_at(s, None) for s in (0, 399, 5000)] == [0.01, 0.01, 0.01]
    assert [paper.lr_at(s, 400) for s in (0, 399, 400, 31_999)] == [0.01, 0.01, 0.1, 0.1]
    assert paper.lr_at(32_000, 400) == 0.01 and paper.lr_at(47_999, 12) == 0.01
    assert paper.lr_at(63_999, 12) == 0.001
    quick = Schedule.paper(1000)
    assert (quick.warmup_max_steps, quick.milestones) == (400, (500, 750))
    assert Schedule.paper(1000, warmup=False).lr_at(0, None) == 0.1
    fixed = Schedule(100, warmup_max_steps=30, warmup_error=None)
    assert not fixed.warmup_ends(28, 0.0) and fixed.warmup_ends(29, 0.9)


# ---- run folders and sweeps -------------------------------------------------------------------

def test_run_folder_config_and_atomic_files(tmp_path):
    run = RunDir.create("exp", {"depth": 20, "path": Path("x")}, preset={"steps": 5}, out=tmp_path,
                        run_id="r1")
    assert run.path == tmp_path / "exp" / "r1" and (run.path / "figures").is_dir()
    config = run.config
    assert config["args"] == {"depth": 20, "path": "x"} and config["status"] == "running"
    assert {"torch", "numpy", "pandas", "scipy", "python"} <= set(config["versions"])
    assert "git_commit" in config and config["start_time"]
    # The machine a wall time was measured on, as lscpu names the CPU.
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    model = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    if model:
        assert config["machine"] == f"{model[0]}, {len(os.sched_getaffinity(0))} CPUs"
        assert runs.device_name("cpu") == model[0]
    run.write_csv("a.csv.gz", pd.DataFrame({"x": [1, 2]}))
    assert gzip.decompress((run.path / "a.csv.gz").read_bytes()).decode() == "x\n1\n2\n"
    run.finish(extra=1)
    assert run.config["status"] == "completed" and run.config["extra"] == 1
    assert sorted(p.name for p in run.path.iterdir()) == ["a.csv.gz", "config.json", "figures"]
    with pytest.raises(ValueError, match="other arguments"):
        RunDir.create("exp", {"depth": 32}, out=tmp_path, run_id="r1")
    atomic_write(tmp_path / "t.txt", "hi")
    assert (tmp_path / "t.txt").read_text() == "hi"


def test_machine_names_the_cuda_device_it_is_given(monkeypatch):
    """The GPU named is the one the device string gives (cuda:1), not the current one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: f"GPU{torch.device(d).index}")
    assert runs.device_name("cuda:1") == "GPU1" and runs.device_name(torch.device("cuda:0")) == "GPU0"
    assert runs.machine("cuda:1").startswith("GPU1 (host: ") and "GPU" not in runs.machine("cpu")


def test_check_writable_dir_leaves_nothing_behind(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--out: cannot write to"):
        check_writable_dir(tmp_path / "file" / "sub")


def test_shards_split_a_sweep_and_merge_back(tmp_path):
    configs = list(range(10))
    shards = [select_shard(configs, f"{i}/3") for i in range(3)]
    assert shards[0] == [0, 3, 6, 9] and sorted(sum(shards, [])) == configs
    assert select_shard(configs, None) == configs and parse_shard("2/4") == (2, 4)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    folders = []
    for i in range(2):
        run = RunDir.create("sweep", {"seed": i}, out=tmp_path / f"machine{i}", run_id=f"seed{i}")
        run.write_csv("metrics.csv.gz", pd.DataFrame({"step": [1, 2], "value": [i, i]}))
        run.finish()
        folders.append(run.path)
    written = merge_runs(folders, tmp_path / "merged")
    merged = pd.read_csv(tmp_path / "merged" / "metrics.csv.gz")
    assert list(merged.run_id) == ["seed0", "seed0", "seed1", "seed1"] and list(merged.value) == [0, 0, 1, 1]
    runs = pd.read_csv(tmp_path / "merged" / "runs.csv")
    assert list(runs.seed) == [0, 1] and list(runs.status) == ["completed"] * 2
    assert {p.name for p in written} == {"runs.csv", "metrics.csv.gz"}
    assert json.loads((folders[0] / "config.json").read_text())["status"] == "completed"


# ---- CUDA (pytest -m gpu) ---------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_run_says_its_precision_and_resumes(tmp_path, digits):
    whole = RunDir.create("t", {"run": "whole"}, out=tmp_path)
    a = train(small_net(), digits, whole, device="cuda", **STEPS)
    config = whole.config
    assert config["status"] == "completed" and config["peak_memory_kind"] == "cuda_max_memory_allocated"
    said = config["training"]
    # fp32 unless asked: a probe measures the fp32 network the CPU runs measure.
    assert (said["precision"], said["autocast"], said["tf32"]) == ("fp32", None, False)
    assert said["memory_format"] == "channels_last" and "cuda" in config["device"]
    assert next(a.model.parameters()).is_cuda
    bf16 = RunDir.create("t", {"run": "bf16"}, out=tmp_path)
    train(small_net(), digits, bf16, device="cuda", precision="bf16", **STEPS)
    assert (bf16.config["training"]["precision"], bf16.config["training"]["autocast"]) == ("bf16", "bf16")

    run = RunDir.create("t", {"run": "killed"}, out=tmp_path, run_id="killed")
    net = small_net()
    handle = kill_at_training_forward(net, 13)
    with pytest.raises(KeyboardInterrupt):
        train(net, digits, run, device="cuda", **STEPS)
    handle.remove()
    b = train(small_net(), digits, run, device="cuda", **STEPS)
    # cuDNN may pick other kernels after a restart: equal up to rounding, not bitwise.
    ra, rb = comparable(a.metrics), comparable(b.metrics)
    assert ra[["step", "split", "metric"]].equals(rb[["step", "split", "metric"]])
    loss = ra.metric == "loss"
    assert torch.allclose(torch.tensor(ra.value[loss].values), torch.tensor(rb.value[loss].values),
                          rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
def test_cuda_gradient_checkpointing_same_step_less_memory():
    data = load_dataset("gaussian", num_train=256, num_test=128, image_size=32)
    results = {}
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        net = cifar_resnet(164, version=2, width=16)
        results[ckpt] = train(net, data, steps=2, batch_size=128, device="cuda", eval_every=2,
                              grad_checkpointing=ckpt, quiet=True)
    plain, ckpt = results[False], results[True]
    first = lambda r: r.metrics.query("step == 1 and metric == 'loss'").value.iloc[0]
    assert first(ckpt) == pytest.approx(first(plain), rel=1e-3)
    assert ckpt.peak_memory_bytes < 0.6 * plain.peak_memory_bytes
