"""Claim C6: does V2 overfit less because every weight layer's input is normalized?

(a) With SignalProbe(weight_inputs=True) it records, for every Conv2d / Linear of V1 and
V2, the channel means and variances of the layer's input at initialisation and at evenly
spaced steps of training, and how far they are from (0, 1), per layer and depth.
(b) It trains V1 and V2 with He et al.'s recipe at three depths and several seeds, evaluates
each net on the whole train and test split at the end, and tests — paired by seed — the
generalization gap (test − train), the final test error, and He et al. 2016 Fig. 6's
pattern "V2 ends with a slightly higher training loss but a lower test error" (164 layers).

    python experiments/overfitting.py                    # quick preset: digits, 2 CPU cores
    python experiments/overfitting.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py overfitting results/runs/overfitting/<run-id>

Quick preset: 8x8 digits (1,437 train / 360 test images), ResNet-20 and ResNet-164 at the
paper's width 16 and ResNet-326 at width 4, 3 seeds, 150 iterations of batch 128 (~13
epochs), lr 0.1 after a 30-step warm-up at 0.01, /10 at 50% and 75% of the run (the
paper's fractions). Why not the paper's warm-up fraction: compressed to 150 steps it is
1 step, and V1 at 56+ layers then blows up on digits; the paper warms up "until the
training error is below 80%", which takes V1-164 about 30 steps at lr 0.01 here.

Writes results/runs/overfitting/<run-id>/: config.json, train.csv (training rows),
probe.csv.gz (weight-input rows), final.csv (end-of-training evaluation), cells.csv,
weight_inputs.csv.gz, summary.csv, table.md, claims.csv, figures/.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import WEIGHT_INPUT_STATS, SignalProbe  # noqa: E402
from probes import overfitting as C6  # noqa: E402
from resnet_lab.claims import append_claims  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            preset_settings, recorded, resolve_device, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.networks import resolve_cifar_block  # noqa: E402
from resnet_lab.runs import RunDir, atomic_write_text  # noqa: E402
from resnet_lab.sweep import Cell, run_cells  # noqa: E402
from resnet_lab.training import check_train_args  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: 10.5 minutes measured (1 thread, shared machine).
    "quick": dict(depths=[20, 164, 326], widths={20: 16, 164: 16, 326: 4}, seeds=[0, 1, 2],
                  steps=150, warmup_steps=30, lr=0.1, batch_size=128, checkpoints=5,
                  dataset="digits"),
    # He et al. 2016: CIFAR-10, width 16, 64k iterations, warm-up 400 at 0.01; a GPU.
    "paper": dict(depths=[110, 164, 1001], widths={110: 16, 164: 16, 1001: 16},
                  seeds=[0, 1, 2, 3, 4], steps=64000, warmup_steps=400, lr=0.1,
                  batch_size=128, checkpoints=9, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 11], widths={8: 4, 11: 4}, seeds=[0, 1, 2], steps=4,
                  warmup_steps=1, lr=0.1, batch_size=32, checkpoints=2, dataset="digits"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, width_note=" per-depth widths")
    parser.add_argument("--warmup-steps", type=int,
                        help="iterations at lr 0.01 before --lr (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate after the warm-up (default 0.1)")
    parser.add_argument("--checkpoints", type=int,
                        help="probed steps (weight-layer inputs), evenly spaced from the first "
                             "iteration to the end (default: the preset's)")
    add_run_args(parser, "overfitting", threads=None)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    preset = PRESETS[args.preset]
    s = preset_settings(args, PRESETS, ("depths", "seeds", "steps", "warmup_steps", "lr", "batch_size",
                   "checkpoints", "dataset"))
    for depth in s["depths"]:
        resolve_cifar_block(depth)
    if len(set(s["depths"])) != len(s["depths"]):
        raise ValueError(f"--depths must be distinct, got {s['depths']}")
    if len(s["seeds"]) < 3 or len(set(s["seeds"])) != len(s["seeds"]):
        raise ValueError(f"--seeds: need at least 3 distinct seeds for the paired tests, "
                         f"got {s['seeds']}")
    if args.width is not None:
        if args.width < 1:
            raise ValueError(f"--width must be a positive integer, got {args.width}")
        s["widths"] = {d: args.width for d in s["depths"]}
    else:
        s["widths"] = {d: preset["widths"].get(d, 16) for d in s["depths"]}
    if s["checkpoints"] < 1 or s["checkpoints"] > s["steps"]:
        raise ValueError(f"--checkpoints must be between 1 and --steps ({s['steps']}), "
                         f"got {s['checkpoints']}")
    s["schedule"] = C6.schedule_dict(C6.recipe_schedule(s["steps"], s["lr"], s["warmup_steps"]))
    s["probe_every"] = max(1, (s["steps"] - 1) // max(1, s["checkpoints"] - 1))
    s["eval_every"] = max(1, s["steps"] // 10)
    s["device"] = str(resolve_device(args.device))
    s["name"] = args.preset
    s["width"] = ", ".join(f"{w} at {d} layers" for d, w in s["widths"].items())
    return s


def main(argv=None):
    args = parse_args(argv)
    s = resolve(args)
    prepare_outputs(args)
    data = load_dataset(s["dataset"], data_dir=args.data_dir, seed=0)
    check_train_args(n_train=len(data.train_x), steps=s["steps"], batch_size=s["batch_size"],
                     eval_every=s["eval_every"], probe_every=s["probe_every"])
    schedule = C6.recipe_schedule(s["steps"], s["lr"], s["warmup_steps"])
    cells = [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
             for kind in ("original", "full_preact")]

    run = RunDir.create(C6.EXPERIMENT, vars(args), preset=s, out=args.out)
    print(f"overfitting ({args.preset}): {len(cells)} nets (V1, V2) on {s['dataset']}, depths "
          f"{s['depths']} (width {s['width']}), seeds {s['seeds']}, {s['steps']} steps of "
          f"{s['batch_size']}, lr {s['lr']} after {s['warmup_steps']} warm-up steps at 0.01, "
          f"/10 at {list(schedule.milestones)}; weight inputs probed every {s['probe_every']} "
          f"steps; on {s['device']}\n-> {run.path}", flush=True)
    run.update_config(device=f"{s['device']} ({torch.get_num_threads()} threads)"
                      if s["device"] == "cpu" else s["device"])
    final = []

    def on_cell(cell, result):      # the end-of-training evaluation, both splits, eval mode
        ids = dict(zip(C6.ID_COLUMNS, (C6.EXPERIMENT, cell.unit_kind, cell.version, cell.depth,
                                       cell.width, cell.seed)))
        final.extend(C6.final_rows(C6.evaluate_final(result.model, data, s["device"]), ids))
        run.write_csv("final.csv", pd.DataFrame(final))

    with recorded(run) as timing:
        train, probe, _ = run_cells(
            run, C6.EXPERIMENT, cells, data, steps=s["steps"], batch_size=s["batch_size"],
            device=s["device"], schedule=schedule, eval_every=s["eval_every"],
            probe_factory=lambda model, every: SignalProbe(
                model, taps=(), stats=WEIGHT_INPUT_STATS, every=every, weight_inputs=True),
            probe_every=s["probe_every"], on_cell=on_cell)
        weight_inputs = C6.weight_input_table(probe)
        run.write_csv("weight_inputs.csv.gz", weight_inputs)
        table = C6.summary(train, pd.DataFrame(final), weight_inputs)
        run.write_csv("summary.csv", table)
        atomic_write_text(run.path / "table.md",
                          C6.results_table(table, dataset=s["dataset"], preset=args.preset))
        append_claims(run.path, C6.claims_rows(table, dataset=s["dataset"], preset=args.preset))
        figures = C6.draw_figures(run.path)
    seconds = timing["seconds"]
    claims = pd.read_csv(run.path / "claims.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 70, "display.float_format", "{:.3g}".format):
        print(claims[["depth", "measure", "effect", "ci_low", "ci_high", "p_value", "n",
                      "verdict"]].to_string(index=False))
    if args.publish is not None:
        print(f"published to {C6.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
