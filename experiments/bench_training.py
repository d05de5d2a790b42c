"""Benchmark: time per training step and peak memory of deep V2 nets, with and without
gradient checkpointing, through the training engine.

Each configuration trains a few steps (the paper's recipe, batch 128, digits: 8x8 inputs) in a
fresh process, so that its peak memory is its own: on CPU the process's peak resident set
(``ru_maxrss``; the column ``before_train_mib`` is that peak just before training started --
libraries, data, model), on CUDA ``max_memory_allocated``. The step time is the median of the
engine's per-step ``seconds`` after the first step (on CUDA those are host-side times of an
asynchronous queue: right for launch-bound nets like these, rough otherwise). CPU runs use one
thread by default: on this shared 2-core machine two threads contending with other jobs ran up
to 40 times slower than one. Writes results/runs/bench/bench_training.csv (or --out);
``--publish`` writes the committed results/paper/bench_training.csv instead.

    python experiments/bench_training.py                    # the four configurations, CPU
    python experiments/bench_training.py --steps 3 --device cuda
"""
import argparse
import multiprocessing
import os
import resource
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import output_path, positive_int  # noqa: E402
from resnet_lab import cifar_resnet  # noqa: E402
from resnet_lab.runs.cli import Parser, resolve_device, run_main  # noqa: E402
from resnet_lab.engine.data import load_dataset  # noqa: E402
from resnet_lab.io.folders import atomic_write, cpu_model  # noqa: E402
from resnet_lab.engine.training import train  # noqa: E402

# (depth, width): ResNet-164 at the paper's width, ResNet-1001 at half of it
CONFIGS = [(164, 16), (1001, 8)]
BATCH = 128
MIB = 2**20


def bench_one(depth, width, grad_checkpointing, steps, device, threads):
    """Runs in its own process; returns one table row."""
    if threads:
        torch.set_num_threads(threads)
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = cifar_resnet(depth, version=2, width=width, in_channels=data.in_channels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = train(net, data, steps=steps, batch_size=BATCH, device=device, eval_every=steps,
                   grad_checkpointing=grad_checkpointing, quiet=True)
    seconds = result.metrics.query("split == 'train' and metric == 'seconds'").value
    return {"model": f"cifar_resnet{depth}_v2", "depth": depth, "width": width, "batch": BATCH,
            "input": "digits 1x8x8", "grad_checkpointing": grad_checkpointing, "device": str(device),
            "threads": torch.get_num_threads(), "steps_timed": len(seconds) - 1,
            "seconds_per_step": seconds.iloc[1:].median(), "first_step_seconds": seconds.iloc[0],
            "peak_memory_mib": result.peak_memory_bytes / MIB,
            "before_train_mib": before / MIB if device.type == "cpu" else None,
            "peak_memory_kind": "process_peak_rss" if device.type == "cpu" else "cuda_max_memory_allocated",
            "cpu": cpu_model(), "torch": torch.__version__}


def main(argv=None):
    parser = Parser(prog="experiments/bench_training.py", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="steps per configuration (default 4; "
                                                             "the first is not timed)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads (default 1: on a shared machine, 2 threads contending "
                             "with other jobs ran many times slower than 1)")
    parser.add_argument("--out", help="CSV to write (default results/runs/bench/bench_training.csv)")
    parser.add_argument("--publish", action="store_true",
                        help="write the committed results/paper/bench_training.csv")
    args = parser.parse_args(argv)
    if args.steps < 2:
        raise ValueError("--steps must be at least 2 (the first step is not timed)")
    out = output_path(args.out, args.publish, "bench_training.csv")    # before any benchmarking
    device = resolve_device(args.device)
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for depth, width in CONFIGS:
        for grad_checkpointing in (False, True):
            with spawn.Pool(1) as pool:       # a fresh process: its peak memory is this config's
                row = pool.apply(bench_one, (depth, width, grad_checkpointing, args.steps, device, args.threads))
            rows.append(row)
            print(f"ResNet-{depth} V2 width {width}, gradient checkpointing {grad_checkpointing}: "
                  f"{row['seconds_per_step']:.2f} s/step, peak {row['peak_memory_mib']:.0f} MiB",
                  file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    plain = table[~table.grad_checkpointing].set_index("depth")
    table["time_vs_plain"] = table.seconds_per_step / table.depth.map(plain.seconds_per_step)
    table["memory_vs_plain"] = table.peak_memory_mib / table.depth.map(plain.peak_memory_mib)
    shown = ["model", "width", "grad_checkpointing", "seconds_per_step", "peak_memory_mib",
             "before_train_mib", "time_vs_plain", "memory_vs_plain"]
    print(table[shown].to_string(index=False, float_format="%.2f"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, table.to_csv(index=False, float_format="%.4g"))
    print(f"wrote {out} (load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    run_main(main)
