"""Claim C2: does V1's after-addition ReLU cut the shortcut off, and how often, over depth
and training?

Trains V1 (the original post-activation unit) at several depths with He et al.'s first
iterations (SGD, momentum 0.9, weight decay 1e-4, lr 0.01 for the first 400 iterations —
their warm-up — then --lr) and probes every unit's sum at initialisation and at evenly
spaced steps: the share of shortcut energy and of gradient energy the ReLU after the
addition zeroes (probes/relu_blocking.py defines the measures and the tests).

    python experiments/relu_blocking.py                     # quick preset: 2 CPU cores
    python experiments/relu_blocking.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py relu_blocking results/runs/relu_blocking/<run-id>

Quick preset: digits (8x8), depths 20, 56, 110 (basic, width 16), 164 (bottleneck, width
16) and 1001 (bottleneck, width 4), 3 seeds, 81 iterations of batch 128 (all at the
warm-up lr 0.01, i.e. the paper's first 81 iterations), probed every 10; 6.3 minutes
with one thread on an otherwise idle core.

Writes results/runs/relu_blocking/<run-id>/: config.json, train.csv, probe.csv.gz, cells.csv,
cuts.csv.gz (per unit and probed step), summary.csv (per net and probed step), claims.csv,
figures/.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import SignalProbe  # noqa: E402
from probes import claims_helpers as H  # noqa: E402
from probes import relu_blocking as RB  # noqa: E402
from resnet_lab.claims import append_claims  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            recorded, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.runs import RunDir  # noqa: E402
from resnet_lab.sweep import Cell, run_cells  # noqa: E402
from resnet_lab.training import check_train_args  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: 6.3 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 56, 110, 164, 1001], widths={1001: 4}, width=16, seeds=[0, 1, 2],
                  steps=81, checkpoints=9, lr=0.1, batch_size=128, dataset="digits"),
    # CIFAR-10 at the paper's width, the first 2,000 iterations (400 warm-up); a GPU.
    "paper": dict(depths=[20, 56, 110, 164, 1001], widths={}, width=16, seeds=[0, 1, 2, 3, 4],
                  steps=2001, checkpoints=41, lr=0.1, batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29], widths={}, width=4, seeds=[0, 1, 2], steps=5, checkpoints=3,
                  lr=0.1, batch_size=16, dataset="digits"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, width_note=", reduced for 1001 layers in the quick preset")
    parser.add_argument("--checkpoints", type=int,
                        help="probed steps, evenly spaced from the first iteration (default: "
                             "the preset's)")
    parser.add_argument("--lr", type=float,
                        help="learning rate after the 400 warm-up iterations at 0.01 (default 0.1)")
    add_run_args(parser, "relu_blocking", threads=1)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    return H.first_iterations_settings(args, PRESETS, min_checkpoints=2)


def main(argv=None):
    args = parse_args(argv)
    s = resolve(args)
    prepare_outputs(args)
    data = load_dataset(s["dataset"], data_dir=args.data_dir, seed=0)
    check_train_args(n_train=len(data.train_x), steps=s["steps"], batch_size=s["batch_size"],
                     eval_every=s["eval_every"], probe_every=s["probe_every"])
    schedule = H.first_iterations_schedule(s["steps"], s["lr"])
    cells = [Cell(d, "original", seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]]

    run = RunDir.create(RB.EXPERIMENT, vars(args), preset=s, out=args.out)
    print(f"relu_blocking ({args.preset}): {len(cells)} V1 nets on {s['dataset']}, depths "
          f"{s['depths']} (width {s['width']}), seeds {s['seeds']}, {s['steps']} steps of "
          f"{s['batch_size']} (lr 0.01 for {schedule.warmup_steps}, then {s['lr']}), probed "
          f"every {s['probe_every']}, on {s['device']}\n-> {run.path}", flush=True)
    with recorded(run) as timing:
        _, probe, _ = run_cells(
            run, RB.EXPERIMENT, cells, data, steps=s["steps"], batch_size=s["batch_size"],
            device=s["device"], schedule=schedule, eval_every=s["eval_every"],
            probe_factory=lambda model, every: SignalProbe(
                model, taps=RB.PROBE_TAPS, stats=RB.PROBE_STATS, every=every, param_grads=False),
            probe_every=s["probe_every"])
        cuts = RB.cut_table(probe)
        run.write_csv("cuts.csv.gz", cuts)
        table = RB.summary(cuts)
        run.write_csv("summary.csv", table)
        append_claims(run.path, RB.claims_rows(table, dataset=s["dataset"], preset=args.preset))
        figures = RB.draw_figures(run.path)
    seconds = timing["seconds"]
    H.print_claims(run.path / "claims.csv")
    if args.publish is not None:
        print(f"published to {RB.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
