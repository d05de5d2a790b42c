"""Benchmark: the cost of a SignalProbe on a training step, measured side by side.

Probed and plain training steps (forward, backward, SGD step) alternate in one process on
the same model and batch; after warm-up, the median step time of each is printed, and the
median (and quartiles) of the ratios of adjacent pairs. Two ways of using the probe:

* ``per_step``: the probe is entered around every step, as the README snippet does
  (``with probe: ...backward(); probe.step()``), so its hooks come and go at every step;
* ``block``: the probe is entered once around ``every`` steps (the training engine's way).

With ``every=k`` a measured unit is k steps of which one is probed, against k plain steps.
Also the bytes the probe holds between steps. ``--split`` measures instead where a probed
step's extra time goes: its reads of the tensors, or the rest (the hooks' Python), and what the
C++ taps and hooks save against the Python ones. Writes results/runs/bench/bench_probes.csv
(or --out); ``--publish`` writes the committed results/paper/bench_probes.csv instead.

    python experiments/bench_probes.py                       # ResNet-164 and -1001, CPU (+ CUDA)
    python experiments/bench_probes.py --configs 1001 --every 1 --modes per_step --repeats 15
    python experiments/bench_probes.py --devices cuda --precision fp32 bf16 --width 16 --image 32
    python experiments/bench_probes.py --split --configs 1001 --repeats 15   # reads vs the rest
"""
import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import (CONFIGS, bench_one, describe, describe_split, output_path,  # noqa: E402
                        positive_int, split_one)
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402
from resnet_lab.networks.families import resolve_cifar_block  # noqa: E402
from resnet_lab.io.folders import cpu_model, write_table  # noqa: E402

MODES = ("per_step", "block")
PRECISIONS = ("fp32", "bf16")


# ---- the command ---------------------------------------------------------------------------

def parse_args(argv=None):
    p = Parser(prog="experiments/bench_probes.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=int, nargs="+", default=list(CONFIGS),
                   help="depths to measure (default: 164 1001; others: width 16, batch 128, 32x32 "
                        "unless --width/--batch/--image say otherwise)")
    p.add_argument("--versions", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--every", type=positive_int, nargs="+", default=[1, 10], help="probe every k steps (default: 1 10)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="per_step: entered around each step (README); block: around every k steps")
    p.add_argument("--repeats", type=positive_int, default=11, help="timed pairs (default 11)")
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs first (default 2)")
    p.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                   help="default: cpu, and cuda when available")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
                   help="CUDA runs: fp32 (TF32 off) and/or bf16 autocast (default fp32); CPU runs are fp32")
    p.add_argument("--width", type=positive_int, help="override the config's width")
    p.add_argument("--batch", type=positive_int, help="override the config's batch size")
    p.add_argument("--image", type=positive_int, help="override the config's image size")
    p.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch (default: its own choice)")
    p.add_argument("--split", action="store_true",
                   help="instead, where a probed step's extra time goes: plain, probed and probed without "
                        "its tensor reads, rotating (every=1, per_step; bench_probes_split.csv)")
    p.add_argument("--out", help="CSV to write (default results/runs/bench/bench_probes.csv)")
    p.add_argument("--publish", action="store_true", help="write the committed results/paper/bench_probes.csv")
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error(f"argument --warmup: must be >= 0, got {args.warmup}")
    return args


def main(argv=None):
    args = parse_args(argv)
    out = output_path(args.out, args.publish, "bench_probes_split.csv" if args.split else "bench_probes.csv")
    for depth in args.configs:
        resolve_cifar_block(depth)                                     # ValueError naming valid depths
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError("--devices cuda: CUDA is not available on this machine; valid here: cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    rows = []
    for device in map(torch.device, devices):
        for precision in args.precision if device.type == "cuda" else ["fp32"]:
            for depth in args.configs:
                for version in args.versions:
                    if args.split:
                        rows.append(split_one(depth, version, device, args.repeats, args.warmup, precision,
                                              args.width, args.batch, args.image))
                        print(describe_split(rows[-1]), flush=True)
                        continue
                    for every in args.every:
                        for mode in args.modes:
                            rows.append(bench_one(depth, version, every, device, args.repeats, args.warmup,
                                                  mode, precision, args.width, args.batch, args.image))
                            print(describe(rows[-1]), flush=True)
    write_table(out, pd.DataFrame(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
