"""Claims C3 and C5: do very deep V1 nets train slowly at first, and from which depth on?

Trains V1 (original post-activation unit) and V2 (full pre-activation) at depths 20 … 1001
from the same seeds — a seed fixes the initialisation stream, the batches and the
augmentation, so V1 and V2 of a seed see the same data in the same order — for the first
iterations of He et al.'s recipe (SGD, momentum 0.9, weight decay 1e-4, lr 0.01 for the
first 400 iterations — their warm-up — then --lr; paper Fig. 1). It measures the loss at
fixed iterations, the iterations to reach a loss threshold and the area under the loss
curve, tests V1 − V2 paired by seed at every depth, and finds the depth from which V1's gap
is significant (probes/early_training.py defines the measures and the tests). It also probes
each unit's input (norms, forward and backward) at evenly spaced steps, for C4 late in the run.

    python experiments/early_training.py                    # quick preset: 2 CPU cores
    python experiments/early_training.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py early_training results/runs/early_training/<run-id>

Quick preset: digits (8x8), the paper's depths 20, 56, 110 (basic units, width 16), 164
(bottleneck, width 16) and 1001 (bottleneck, width 4: the paper's width does not fit 2 CPU
cores), plus bottleneck nets of 29 and 65 layers (the paper's nets change block between 110
and 164 layers; these separate depth from block); 5 seeds, 81 iterations of batch 128, all
at the warm-up lr 0.01 — i.e. the paper's first 81 iterations; 20.5 minutes with one
thread.

Writes results/runs/early_training/<run-id>/: config.json, train.csv, probe.csv.gz, cells.csv,
summary.csv (per net), claims.csv, figures/.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import SignalProbe  # noqa: E402
from probes import claims_helpers as H  # noqa: E402
from probes import early_training as ET  # noqa: E402
from resnet_lab.claims import append_claims  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            recorded, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.runs import RunDir  # noqa: E402
from resnet_lab.sweep import Cell, run_cells  # noqa: E402
from resnet_lab.training import check_train_args  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: 20.5 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 29, 56, 65, 110, 164, 1001], widths={1001: 4}, width=16,
                  seeds=[0, 1, 2, 3, 4], steps=81, checkpoints=5, lr=0.1, batch_size=128,
                  dataset="digits"),
    # He et al. Fig. 1: CIFAR-10 at the paper's width, the first 4,000 iterations; a GPU.
    "paper": dict(depths=[20, 29, 56, 65, 110, 164, 1001], widths={}, width=16,
                  seeds=[0, 1, 2, 3, 4],
                  steps=4000, checkpoints=5, lr=0.1, batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29, 32, 47], widths={}, width=4, seeds=[0, 1, 2], steps=6,
                  checkpoints=2,
                  lr=0.1, batch_size=16, dataset="digits"),
}
VERSIONS = ("original", "full_preact")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, width_note=", reduced for 1001 layers in the quick preset")
    parser.add_argument("--checkpoints", type=int,
                        help="probed steps (unit-input norms, for C4), evenly spaced from the "
                             "first iteration (default: the preset's)")
    parser.add_argument("--lr", type=float,
                        help="learning rate after the 400 warm-up iterations at 0.01 (default 0.1)")
    add_run_args(parser, "early_training", threads=1)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    return H.first_iterations_settings(args, PRESETS)


def main(argv=None):
    args = parse_args(argv)
    s = resolve(args)
    prepare_outputs(args)
    data = load_dataset(s["dataset"], data_dir=args.data_dir, seed=0)
    check_train_args(n_train=len(data.train_x), steps=s["steps"], batch_size=s["batch_size"],
                     eval_every=s["eval_every"], probe_every=s["probe_every"])
    schedule = H.first_iterations_schedule(s["steps"], s["lr"])
    cells = [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
             for kind in VERSIONS]

    run = RunDir.create(ET.EXPERIMENT, vars(args), preset=s, out=args.out)
    print(f"early_training ({args.preset}): {len(cells)} nets (V1, V2) on {s['dataset']}, depths "
          f"{s['depths']} (width {s['width']}), seeds {s['seeds']}, {s['steps']} steps of "
          f"{s['batch_size']} (lr 0.01 for {schedule.warmup_steps}, then {s['lr']}), unit "
          f"norms probed every {s['probe_every']}, on {s['device']}\n-> {run.path}", flush=True)
    with recorded(run) as timing:
        train, probe, _ = run_cells(
            run, ET.EXPERIMENT, cells, data, steps=s["steps"], batch_size=s["batch_size"],
            device=s["device"], schedule=schedule, eval_every=s["eval_every"],
            probe_factory=lambda model, every: SignalProbe(
                model, taps=ET.PROBE_TAPS, stats=ET.PROBE_STATS, every=every, param_grads=False),
            probe_every=s["probe_every"])
        table = ET.summary(train, probe, num_classes=data.num_classes)
        run.write_csv("summary.csv", table)
        append_claims(run.path, ET.claims_rows(table, dataset=s["dataset"], preset=args.preset))
        figures = ET.draw_figures(run.path)
    seconds = timing["seconds"]
    H.print_claims(run.path / "claims.csv")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print(table.groupby(["depth", "version"])[["auc", "loss_q25", "loss_q100", "steps_to"]]
              .mean().to_string())
    if args.publish is not None:
        print(f"published to {ET.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
