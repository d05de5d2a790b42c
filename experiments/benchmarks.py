"""What the benchmark scripts share (``bench_probes.py``, ``bench_training.py``, ``gpu_check.py``):
their command-line checks, and the probe's cost measured side by side.

Probed and plain training steps (forward, backward, SGD step) alternate in one process on the
same model and batch; after warm-up, the median step time of each, and the median (and
quartiles) of the ratios of adjacent pairs. ``split_one`` measures instead where a probed
step's extra time goes: its reads of the tensors, or the rest.
"""
import argparse
import contextlib
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from probes import SignalProbe  # noqa: E402
from probes import kernels as K  # noqa: E402
from probes.kernels import c_module, cpp_hooks  # noqa: E402
from resnet_lab import cifar_resnet  # noqa: E402
from resnet_lab.io.folders import check_writable_dir, device_name  # noqa: E402
from resnet_lab.engine.training import autocast_for  # noqa: E402

# depth -> (width, batch, image size), as issue 3 specifies (CPU-sized)
CONFIGS = {164: (16, 128, 16), 1001: (8, 128, 8)}
RUNS = ROOT / "results" / "runs" / "bench"
PAPER = ROOT / "results" / "paper"


# ---- command-line checks ------------------------------------------------------------------------

def positive_int(text):
    """argparse type: an integer >= 1 (``--threads 0`` or ``-1`` is a one-line error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def output_path(out, publish, name) -> Path:
    """Where a benchmark writes its CSV, checked before any benchmarking: ``--out``, or
    results/runs/bench/<name> by default, or results/paper/<name> with ``--publish`` (the
    committed copy, which nothing else overwrites). ValueError naming the flag otherwise."""
    if out is not None and publish:
        raise ValueError("give --out or --publish, not both (--publish writes results/paper/)")
    path = PAPER / name if publish else Path(out) if out is not None else RUNS / name
    if not publish and path.resolve().parent == PAPER.resolve():
        raise ValueError(f"--out: {path} is the published copy in results/paper/; "
                         "add --publish (without --out) to overwrite it")
    if path.is_dir():
        raise ValueError(f"--out: {path} is a folder; give a file name, e.g. {path / name}")
    check_writable_dir(path.parent, "--publish" if publish else "--out")
    return path


# ---- the measurement ---------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(depth, version, width, batch, size, device, precision):
    """A model, its probe's target, and one training step (forward, backward, SGD)."""
    torch.manual_seed(0)
    net = cifar_resnet(depth, version=version, width=width).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = autocast_for(device, precision)      # fp32: TF32 off on CUDA

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return net, train_step


def timed_units(probe, train_step, every, mode):
    """The two things compared: ``every`` plain steps, and ``every`` steps with the probe."""
    def plain():
        for _ in range(every):
            train_step()

    def per_step():                     # entered around each step, as the README does
        for _ in range(every):
            with probe:
                train_step()
                probe.step()

    def block():                        # entered once around the ``every`` steps
        with probe:
            for _ in range(every):
                train_step()
                probe.step()
    return plain, per_step if mode == "per_step" else block


def rotated_times(arms: dict, device, repeats, warmup) -> dict:
    """Seconds of each arm (name -> function) per round, the order rotated every round (two
    arms: alternating which goes first), after ``warmup`` untimed rounds."""
    times = {name: [] for name in arms}
    order = list(arms.items())
    for i in range(warmup + repeats):
        for name, fn in order[i % len(order):] + order[:i % len(order)]:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def paired_times(plain, probed, device, repeats, warmup):
    """Per-step seconds of each, alternating which goes first, after ``warmup`` pairs."""
    times = rotated_times({"plain": plain, "probed": probed}, device, repeats, warmup)
    return times["plain"], times["probed"]


def bench_one(depth, version, every, device, repeats, warmup, mode="per_step", precision="fp32",
              width=None, batch=None, size=None):
    """One table row: the probe's cost on one net in one way of using it."""
    d_width, d_batch, d_size = CONFIGS.get(depth, (16, 128, 32))
    width, batch, size = width or d_width, batch or d_batch, size or d_size
    net, train_step = make_step(depth, version, width, batch, size, device, precision)
    probe = SignalProbe(net, every=every)
    plain, probed = timed_units(probe, train_step, every, mode)
    a, b = paired_times(plain, probed, device, repeats, warmup)
    # The ratio is the median over adjacent (plain, probed) pairs: on a shared machine a
    # plain step alone varies by +-15% over seconds, which pairs cancel and medians don't.
    ratios = sorted(q / p for p, q in zip(a, b))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"device": device_name(device), "precision": precision, "mode": mode, "depth": depth,
            "version": version, "width": width, "batch": batch, "image": size, "every": every,
            "step_s": statistics.median(a) / every, "probed_step_s": statistics.median(b) / every,
            "ratio": statistics.median(ratios), "ratio_q1": quartiles[0], "ratio_q3": quartiles[2],
            "pairs": repeats, "probe_bytes": probe.nbytes(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


@contextlib.contextmanager
def reads_skipped():
    """While in, the probe skips its reads of the tapped tensors -- the C module's kernel on the
    CPU (called from Python or from the C++ taps and hooks), the Triton launches on a GPU -- and
    does everything else: the taps, the gradient hooks registered and called, ``step()``. A
    probed step inside costs the probe's work less the reads (the torch fallback path, when it
    is the one used, still reads)."""
    fast, hooks = c_module._fastsums, cpp_hooks.load()
    kernels = None if K.TRITON is None else K.triton_sums
    if fast is not None:
        c_module._fastsums = types.SimpleNamespace(channel_sums=lambda *a: None, masked_energy=lambda *a: None,
                                                   grouped_sq_sums=fast.grouped_sq_sums, SUMS_INTO=fast.SUMS_INTO)
    if hooks is not None:
        hooks.set_reads(False)
    launch = None if kernels is None else kernels._Plan.launch
    if kernels is not None:
        kernels._Plan.launch = lambda self, pointers: None
    try:
        yield
    finally:
        c_module._fastsums = fast
        if hooks is not None:
            hooks.set_reads(True)
        if kernels is not None:
            kernels._Plan.launch = launch


def split_one(depth, version, device, repeats, warmup, precision="fp32", width=None, batch=None, size=None):
    """Where a probed step's extra time goes (probe entered around each step, every=1): plain,
    probed and probed with ``reads_skipped`` steps rotating in one process; the reads cost the
    difference of the last two, the rest (Python, hooks) the difference of the first two, each
    the median over rounds of the difference within a round (the arms of a round run seconds
    apart, so a host that speeds up or slows down over minutes cancels out). On
    the CPU, where the C++ taps and hooks are built, a fourth arm probes through the Python ones
    (``cpp_hooks=False``): what the C++ saves is its difference to the probed step."""
    d_width, d_batch, d_size = CONFIGS.get(depth, (16, 128, 32))
    width, batch, size = width or d_width, batch or d_batch, size or d_size
    net, train_step = make_step(depth, version, width, batch, size, device, precision)
    plain, probed = timed_units(SignalProbe(net), train_step, 1, "per_step")

    def no_reads():
        with reads_skipped():
            probed()
    arms = {"plain": plain, "probed": probed, "no_reads": no_reads}
    if device.type == "cpu" and cpp_hooks.load() is not None:
        arms["python_hooks"] = timed_units(SignalProbe(net, cpp_hooks=False), train_step, 1, "per_step")[1]
    times = rotated_times(arms, device, repeats, warmup)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratio = {name: statistics.median(b / a for a, b in zip(times["plain"], v)) for name, v in times.items()}

    def paired(a, b):
        return statistics.median(y - x for x, y in zip(times[a], times[b]))
    return {"device": device_name(device), "precision": precision, "depth": depth, "version": version,
            "width": width, "batch": batch, "image": size, "step_s": med["plain"],
            "probed_step_s": med["probed"], "no_reads_step_s": med["no_reads"],
            "reads_s": paired("no_reads", "probed"), "rest_s": paired("plain", "no_reads"),
            "ratio": ratio["probed"], "no_reads_ratio": ratio["no_reads"],
            "python_hooks_step_s": med.get("python_hooks", float("nan")),
            "python_hooks_ratio": ratio.get("python_hooks", float("nan")),
            "rounds": repeats, "torch": torch.__version__}


def describe(row) -> str:
    return (f"{row['device'][:24]:24s} {row['precision']} {row['mode']:8s} depth {row['depth']:4d} "
            f"V{row['version']} every={row['every']:<3d} step {row['step_s'] * 1e3:8.1f} ms  "
            f"probed {row['probed_step_s'] * 1e3:8.1f} ms  ratio {row['ratio']:.3f} "
            f"(quartiles {row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}, {row['pairs']} pairs)  "
            f"probe {row['probe_bytes'] / 1024:.0f} KiB")


def describe_split(row) -> str:
    ms = {k: v * 1e3 for k, v in row.items() if k.endswith("_s")}
    return (f"{row['device'][:24]:24s} {row['precision']} depth {row['depth']:4d} V{row['version']}  "
            f"step {ms['step_s']:8.1f} ms  probed {ms['probed_step_s']:8.1f} ms  without reads "
            f"{ms['no_reads_step_s']:8.1f} ms: reads {ms['reads_s']:6.1f} ms, the rest {ms['rest_s']:6.1f} ms; "
            f"ratio {row['ratio']:.3f}, with the Python hooks {row['python_hooks_ratio']:.3f} "
            f"({row['rounds']} rounds)")
