"""The GPU check: everything that needs a CUDA machine, in one go, with one summary.

1. ``pytest -m gpu`` (in a subprocess): the probe on CUDA equals the CPU, the Triton kernels
   equal the torch path, no hook synchronises with the host.
2. What one probed tensor costs the host and the GPU: ``raw_sums`` of a 128x16x32x32
   channels-last tensor through the torch operations, through the Triton kernel launched by
   the JIT, and through the compiled kernel launched directly (``triton_sums.DIRECT``); and
   where a probed step's extra time goes, at the deepest --depths, V1 and V2, fp32: the
   Triton launches, or the rest (the hooks' Python; ``benchmarks.split_one``).
3. The probe's cost (``bench_probes.py``, probe entered around each step as the README does):
   ResNet-164 and ResNet-1001, V1 and V2, width 16, batch 128, 32x32 inputs, fp32 (TF32 off)
   and bf16 autocast, every=1 and every=10. Targets: <= 1.10x at every=1, <= 1.02x at every=10,
   probe memory < 2 MB.
4. One training step (fp32, channels-last, SGD) of every net of every experiment's ``paper``
   preset (``analysis.EXPERIMENTS`` at run time): wall time and peak memory; and from them
   the predicted wall time of each paper run: sum over its cells of steps x step time.

Writes gpu_tests.txt, launch_cost.csv, probe_split.csv, probe_cost.csv, paper_steps.csv,
paper_runs.csv and summary.txt under --out (default results/runs/gpu_check/), and prints the summary. Without
CUDA it exits with status 2 and says a GPU is needed.

    python experiments/gpu_check.py                      # all four (~10 minutes on an H200)
    python experiments/gpu_check.py --skip tests --repeats 5 --depths 164
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import bench_one, describe, describe_split, positive_int, split_one  # noqa: E402
from resnet_lab import cifar_resnet  # noqa: E402
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402
from resnet_lab.io.folders import atomic_write, check_writable_dir, cpu_model, device_name, write_table  # noqa: E402
from resnet_lab.runs.settings import widths_by_depth  # noqa: E402
from resnet_lab.engine.training import autocast_for  # noqa: E402

STAGES = ("tests", "launch", "bench", "presets")
TARGETS = {1: 1.10, 10: 1.02}          # every -> largest probed / plain step time
PROBE_MEMORY_TARGET = 2 * 2**20        # bytes held between steps
IMAGES = {"cifar10": (3, 32), "digits": (1, 8)}   # dataset -> (channels, size)


def parse_args(argv=None):
    p = Parser(prog="experiments/gpu_check.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "runs" / "gpu_check"),
                   help="folder for the CSVs (default results/runs/gpu_check/)")
    p.add_argument("--skip", nargs="+", default=[], choices=STAGES, help="stages to leave out")
    p.add_argument("--depths", type=int, nargs="+", default=[164, 1001], choices=[164, 1001],
                   help="probe benchmark depths (default 164 1001)")
    p.add_argument("--repeats", type=positive_int, default=7, help="timed pairs per benchmark (default 7)")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed pairs first (default 2)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed training steps per paper net (default 5)")
    p.add_argument("--test-timeout", type=positive_int, default=600, help="seconds for pytest -m gpu")
    return p.parse_args(argv)


def output_folder(out) -> Path:
    """--out, checked before anything runs: a folder that exists or can be made."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out: {path} is a file; give a folder")
    check_writable_dir(path, "--out")
    return path


def require_cuda():
    if not torch.cuda.is_available():
        raise ValueError("a CUDA GPU is needed: experiments/gpu_check.py measures the GPU path "
                         "(torch.cuda.is_available() is False here)")


# ---- 1. the GPU tests ----------------------------------------------------------------------

def run_gpu_tests(out: Path, timeout: int) -> dict:
    """``pytest -m gpu`` in a subprocess; its output goes to gpu_tests.txt."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        text, code = f"{err.stdout or ''}\ntimed out after {timeout} s", -1
    atomic_write(out / "gpu_tests.txt", text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return {"returncode": code, "summary": lines[-1] if lines else "(no output)"}


# ---- 2. one tensor's launch ----------------------------------------------------------------

def launch_cost(calls=2000) -> pd.DataFrame:
    """Host and total microseconds per ``raw_sums`` call on one tensor of a ResNet's
    first stage (batch 128, width 16, 32x32, channels-last, fp32) -- the probe's work per
    distinct tensor -- by each path. Host: the loop's time before the closing synchronise,
    total: after it."""
    from probes import kernels
    from probes.stats import RAW_ROW
    K = kernels.triton_sums
    t = torch.randn(128, 16, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    s1c, row = torch.zeros(16, device="cuda"), torch.zeros(len(RAW_ROW), device="cuda")
    views = (row, tuple(row[k] for k in range(len(RAW_ROW))))
    bufs = [torch.empty(t.numel(), device="cuda"), torch.empty(t.numel(), device="cuda")]

    def one_call(backend):
        backend.raw_sums(t, s1c, views, lambda k, like: bufs[k])

    paths = {"torch": (kernels.TORCH, False), "triton_jit": (kernels.TRITON, False),
             "triton_direct": (kernels.TRITON, True)}
    rows = []
    saved = K.DIRECT
    try:
        for name, (backend, direct) in paths.items():
            K.DIRECT = direct
            K._plans.clear()
            for _ in range(20):                  # warm-up: compiled, planned, launcher kept
                one_call(backend)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                one_call(backend)
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            rows.append({"path": name, "calls": calls, "host_us": (t1 - t0) / calls * 1e6,
                         "total_us": (t2 - t0) / calls * 1e6, "tensor": "128x16x32x32 fp32 channels-last"})
            print(f"raw_sums by {name}: {rows[-1]['host_us']:.1f} us/call host, "
                  f"{rows[-1]['total_us']:.1f} us/call in all", flush=True)
    finally:
        K.DIRECT = saved
        K._plans.clear()
    return pd.DataFrame(rows)


def probe_split(depth, repeats, warmup) -> pd.DataFrame:
    """``benchmarks.split_one`` for V1 and V2 at the paper's width and input size, fp32."""
    rows = []
    for version in (1, 2):
        rows.append(split_one(depth, version, torch.device("cuda"), repeats, warmup, "fp32", 16, 128, 32))
        print(describe_split(rows[-1]), flush=True)
    return pd.DataFrame(rows)


# ---- 3. the probe's cost -------------------------------------------------------------------

def probe_cost(depths, repeats, warmup) -> pd.DataFrame:
    """bench_probes rows at the paper's width and input size, with the targets."""
    rows = []
    device = torch.device("cuda")
    for precision in ("fp32", "bf16"):
        for depth in depths:
            for version in (1, 2):
                for every in TARGETS:
                    row = bench_one(depth, version, every, device, repeats, warmup, "per_step",
                                    precision, width=16, batch=128, size=32)
                    row["target"] = TARGETS[every]
                    row["meets_target"] = row["ratio"] <= TARGETS[every] and row["probe_bytes"] < PROBE_MEMORY_TARGET
                    rows.append(row)
                    print(describe(row), flush=True)
    return pd.DataFrame(rows)


# ---- 4. the paper presets ------------------------------------------------------------------

def paper_plan() -> list[dict]:
    """For every experiment with a ``paper`` preset: its steps per cell, batch size, input,
    widths by depth, and its cells as (depth, width, unit kind)."""
    import analysis
    plan = []
    for name in analysis.EXPERIMENTS:
        module = analysis.experiment(name)
        preset = getattr(module, "PRESETS", {}).get("paper")
        if preset is None:
            continue
        widths = widths_by_depth(preset["depths"], None, preset.get("widths"))
        try:        # the experiment's own cells: every depth, kind and seed it trains
            cells = [(c.depth, c.width, c.unit_kind) for c in module.cells(module.parse_settings(["--preset", "paper"]))]
        except (Exception, SystemExit):                 # its settings need more: one per depth, seed, version
            cells = [(d, widths[d], kind) for d in preset["depths"] for _ in preset.get("seeds", [0])
                     for kind in ("original", "full_preact")]
        plan.append({"experiment": name, "steps": preset.get("steps") or 1, "batch": preset["batch_size"],
                     "dataset": preset.get("dataset", "cifar10"), "widths": widths, "cells": cells})
    return plan


def measure_step(depth, width, kind, batch, dataset, steps, device) -> dict:
    """Median wall time and peak memory of one fp32 training step of one net."""
    channels, size = IMAGES.get(dataset, (3, 32))
    torch.manual_seed(0)
    net = cifar_resnet(depth, unit_kind=kind, width=width, in_channels=channels).to(device)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = autocast_for(device, "fp32")
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 2):                  # two untimed steps: cuDNN picks its algorithms
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device)
    del net, opt, x, y
    torch.cuda.empty_cache()
    return {"depth": depth, "width": width, "unit_kind": kind, "batch": batch, "dataset": dataset,
            "step_s": statistics.median(times), "peak_memory_mib": peak / 2**20}


def paper_steps(plan, steps, device) -> pd.DataFrame:
    """measure_step for every distinct net of the plan, once each."""
    keys = sorted({(d, w, k, p["batch"], p["dataset"]) for p in plan for d, w, k in p["cells"]})
    rows = []
    for depth, width, kind, batch, dataset in keys:
        rows.append(measure_step(depth, width, kind, batch, dataset, steps, device))
        r = rows[-1]
        print(f"ResNet-{depth} {kind} width {width} batch {batch} {dataset}: "
              f"{r['step_s'] * 1e3:.1f} ms/step, peak {r['peak_memory_mib']:.0f} MiB", flush=True)
    return pd.DataFrame(rows)


def predict(plan, steps_table: pd.DataFrame) -> pd.DataFrame:
    """Predicted wall time of each paper run: the sum over its cells of steps x the step time
    of the cell's net (``steps_table``: depth, width, unit_kind, batch, dataset, step_s).
    Training only: evaluation, probing and data loading come on top."""
    step_s = steps_table.set_index(["depth", "width", "unit_kind", "batch", "dataset"])["step_s"]
    rows = []
    for p in plan:
        per_cell = [step_s[(d, w, k, p["batch"], p["dataset"])] for d, w, k in p["cells"]]
        seconds = p["steps"] * sum(per_cell)
        rows.append({"experiment": p["experiment"], "cells": len(p["cells"]), "steps": p["steps"],
                     "batch": p["batch"], "mean_step_s": sum(per_cell) / len(per_cell),
                     "predicted_s": seconds, "predicted_h": seconds / 3600})
    return pd.DataFrame(rows)


# ---- the summary ---------------------------------------------------------------------------

def summary(tests, launch, split, cost, steps, runs) -> str:
    import triton
    lines = [f"GPU: {device_name('cuda')}; torch {torch.__version__}; triton {triton.__version__}; "
             f"host CPU {cpu_model()}"]
    if tests is not None:
        lines.append(f"pytest -m gpu: {tests['summary']} (exit {tests['returncode']})")
    if launch is not None:
        lines += ["", "one tensor's raw sums (us per call):", launch.to_string(index=False, float_format="%.1f")]
    if split is not None:
        shown = split[["depth", "version", "step_s", "probed_step_s", "no_reads_step_s", "reads_s", "rest_s", "ratio"]]
        lines += ["", "a probed step's extra time (s): the Triton launches (reads_s) and the rest:",
                  shown.to_string(index=False, float_format="%.4f")]
    if cost is not None:
        shown = cost[["precision", "depth", "version", "every", "step_s", "ratio", "ratio_q1", "ratio_q3",
                      "target", "probe_bytes", "meets_target"]]
        lines += ["", "probe cost (probed / plain step, per_step mode, width 16, batch 128, 32x32):",
                  shown.to_string(index=False, float_format="%.3f")]
    if steps is not None:
        lines += ["", "one training step of each paper net (fp32):",
                  steps.to_string(index=False, float_format="%.3f")]
    if runs is not None:
        lines += ["", "predicted paper runs (training steps only):",
                  runs.to_string(index=False, float_format="%.2f")]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    out = output_folder(args.out)
    require_cuda()
    out.mkdir(parents=True, exist_ok=True)
    tests = launch = split = cost = steps = runs = None
    if "tests" not in args.skip:
        tests = run_gpu_tests(out, args.test_timeout)
        print(f"pytest -m gpu: {tests['summary']}", flush=True)
    if "launch" not in args.skip:
        launch = launch_cost()
        write_table(out / "launch_cost.csv", launch)
        split = probe_split(max(args.depths), args.repeats, args.warmup)
        write_table(out / "probe_split.csv", split)
    if "bench" not in args.skip:
        cost = probe_cost(args.depths, args.repeats, args.warmup)
        write_table(out / "probe_cost.csv", cost)
    if "presets" not in args.skip:
        plan = paper_plan()
        steps = paper_steps(plan, args.steps, torch.device("cuda"))
        runs = predict(plan, steps)
        write_table(out / "paper_steps.csv", steps)
        write_table(out / "paper_runs.csv", runs)
    text = summary(tests, launch, split, cost, steps, runs)
    atomic_write(out / "summary.txt", text + "\n")
    print("\n" + text + f"\n\nwrote {out}/")
    return 0 if tests is None or tests["returncode"] == 0 else 1


if __name__ == "__main__":
    run_main(main)
