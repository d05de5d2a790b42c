"""Gradient flow through the shortcuts of V1 and V2 ResNets, 20 to 1001 layers.

The suite's main job. For every depth, version (or unit kind) and seed it builds a CIFAR
ResNet, trains it for the first iterations of the paper's recipe (SGD, momentum 0.9, weight
decay 1e-4, the 0.01 warm-up learning rate of the first 400 iterations) and probes every tap
of every unit, forward and backward, at initialisation and at evenly spaced checkpoints.
It writes results/runs/grad_flow/<run-id>/ (config.json, train.csv, probe.csv.gz, cells.csv,
summary.csv, figures/) and prints a summary table.

    python experiments/grad_flow.py                      # quick preset: 2 CPU cores, minutes
    python experiments/grad_flow.py --preset paper --data-dir ~/data   # CIFAR-10 on a GPU
    python experiments/make_figures.py grad_flow results/runs/grad_flow/<run-id>   # redraw
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import SignalProbe  # noqa: E402
from probes import grad_flow  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            preset_settings, recorded, resolve_device, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.networks import resolve_cifar_block  # noqa: E402
from resnet_lab.runs import RunDir  # noqa: E402
from resnet_lab.sweep import Cell, run_cells  # noqa: E402
from resnet_lab.training import Schedule, check_train_args  # noqa: E402
from resnet_lab.units import UNIT_KINDS, resolve_unit_kind  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits (8x8), width 16 except 1001 layers at width 4.
    "quick": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2], steps=21, checkpoints=3,
                  batch_size=64, width=16, widths={1001: 4}, dataset="digits"),
    # the paper's widths, CIFAR-10 32x32 from --data-dir, batch 128; meant for a GPU (bf16).
    "paper": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2, 3, 4], steps=401, checkpoints=5,
                  batch_size=128, width=16, widths={}, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 56], seeds=[0, 1], steps=3, checkpoints=2,
                  batch_size=16, width=4, widths={}, dataset="digits"),
}
WARMUP_ITERATIONS, WARMUP_LR = 400, 0.01      # He et al. 2016: 0.01 until the loss falls, 400 its


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, width_note=", reduced for 1001 layers in the quick preset")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--versions", nargs="+", help="1 (post-activation) and/or 2 (pre-activation); default 1 2")
    kinds.add_argument("--units", nargs="+", help=f"unit kinds instead of versions: {', '.join(UNIT_KINDS)}")
    parser.add_argument("--checkpoints", type=int,
                        help="probed steps, evenly spaced from the first iteration (default: the preset's)")
    add_run_args(parser, "grad_flow", threads=None)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    preset = PRESETS[args.preset]
    s = preset_settings(args, PRESETS,
                        ("depths", "seeds", "steps", "checkpoints", "batch_size", "width", "dataset"))
    s["widths"] = {} if args.width is not None else preset["widths"]
    s["units"] = [resolve_unit_kind(unit=u) for u in args.units] if args.units else \
        [resolve_unit_kind(version=v) for v in (args.versions or [1, 2])]
    for depth in s["depths"]:
        resolve_cifar_block(depth)
    if s["checkpoints"] < 1 or s["checkpoints"] > s["steps"]:
        raise ValueError(f"--checkpoints must be between 1 and --steps ({s['steps']}), got {s['checkpoints']}")
    s["probe_every"] = max(1, (s["steps"] - 1) // max(1, s["checkpoints"] - 1))
    s["eval_every"] = -(-s["steps"] // s["probe_every"]) * s["probe_every"]
    s["device"] = str(resolve_device(args.device))
    s["data_dir"] = args.data_dir
    return s


def main(argv=None):
    args = parse_args(argv)
    s = resolve(args)
    prepare_outputs(args)
    data = load_dataset(s["dataset"], data_dir=args.data_dir, seed=0)
    check_train_args(n_train=len(data.train_x), steps=s["steps"], batch_size=s["batch_size"],
                     eval_every=s["eval_every"], probe_every=s["probe_every"])
    cells = [Cell(d, kind, seed, s["widths"].get(d, s["width"]))
             for d in s["depths"] for seed in s["seeds"] for kind in s["units"]]
    schedule = Schedule(s["steps"], lr=0.1, warmup_lr=WARMUP_LR,
                        warmup_steps=min(WARMUP_ITERATIONS, s["steps"]))

    run = RunDir.create("grad_flow", vars(args), preset=s, out=args.out)
    print(f"grad_flow ({args.preset}): {len(cells)} nets on {s['dataset']}, depths {s['depths']}, "
          f"{', '.join(s['units'])}, seeds {s['seeds']}, {s['steps']} steps, probed every "
          f"{s['probe_every']}, on {s['device']}\n-> {run.path}", flush=True)
    with recorded(run) as timing:
        train, probe, _ = run_cells(
            run, "grad_flow", cells, data, steps=s["steps"], batch_size=s["batch_size"],
            device=s["device"], schedule=schedule, eval_every=s["eval_every"],
            probe_factory=lambda model, every: SignalProbe(model, every=every),
            probe_every=s["probe_every"])
        table = grad_flow.summary(probe, train)
        run.write_csv("summary.csv", table)
        grad_flow.draw_figures(run.path)
    seconds = timing["seconds"]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))
    if args.publish is not None:
        print(f"published to {grad_flow.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path}")
    return 0


if __name__ == "__main__":
    run_main(main)
