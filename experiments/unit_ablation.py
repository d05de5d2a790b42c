"""He et al. 2016, Table 2: the five residual unit kinds at two depths.

The units of Fig. 4 — (a) original, (b) BN after addition, (c) ReLU before addition,
(d) ReLU-only pre-activation, (e) full pre-activation — differ only in where BN and ReLU sit.
For every depth, unit kind and seed it builds a CIFAR ResNet, records the signal at
initialisation (forward channel variance and backward gradient norm at every unit, the
share of shortcut / gradient energy the after-addition function cuts), trains it with He et
al.'s recipe and records the early training loss and the final test error. It writes a table
in Table 2's layout next to He et al.'s CIFAR-10 numbers, and tests — paired by seed — each
kind's test error against the original unit in the direction the paper reports.

    python experiments/unit_ablation.py                  # quick preset: digits, 2 CPU cores
    python experiments/unit_ablation.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py unit_ablation results/runs/unit_ablation/<run-id>

Quick preset: 8x8 digits, ResNet-20 (basic units, width 16; He et al.'s ResNet-110 column is
basic units) and ResNet-164 (bottleneck units, width 4: the paper's depth at a quarter of its
width, to fit the budget), 3 seeds, 150 iterations of batch 128, lr 0.1 after a 30-step
warm-up at 0.01, /10 at 50% and 75% of the run — the recipe of experiments/overfitting.py.

Writes results/runs/unit_ablation/<run-id>/: config.json, train.csv, probe.csv.gz (step 1),
cells.csv, summary.csv, table2.md, table2.csv, claims.csv, figures/.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import SignalProbe  # noqa: E402
from probes import unit_ablation as T2  # noqa: E402
from probes.overfitting import recipe_schedule, schedule_dict  # noqa: E402
from resnet_lab.claims import append_claims  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            preset_settings, recorded, resolve_device, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.networks import resolve_cifar_block  # noqa: E402
from resnet_lab.runs import RunDir, atomic_write_text  # noqa: E402
from resnet_lab.sweep import Cell, run_cells  # noqa: E402
from resnet_lab.training import check_train_args  # noqa: E402
from resnet_lab.units import UNIT_KINDS, resolve_unit_kind  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: 6.5 minutes measured (1 thread, shared machine).
    "quick": dict(depths=[20, 164], widths={20: 16, 164: 4}, seeds=[0, 1, 2], steps=150,
                  warmup_steps=30, lr=0.1, batch_size=128, dataset="digits"),
    # He et al. 2016 Table 2: ResNet-110 and ResNet-164 on CIFAR-10, width 16; a GPU.
    "paper": dict(depths=[110, 164], widths={110: 16, 164: 16}, seeds=[0, 1, 2, 3, 4],
                  steps=64000, warmup_steps=400, lr=0.1, batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 11], widths={8: 4, 11: 4}, seeds=[0, 1, 2], steps=4,
                  warmup_steps=1, lr=0.1, batch_size=32, dataset="digits"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, width_note=" per-depth widths")
    parser.add_argument("--units", nargs="+", metavar="KIND",
                        help=f"unit kinds (default all five): {', '.join(UNIT_KINDS)}; "
                             "'original' is needed for the tests against it")
    parser.add_argument("--warmup-steps", type=int,
                        help="iterations at lr 0.01 before --lr (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate after the warm-up (default 0.1)")
    add_run_args(parser, "unit_ablation", threads=None)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    preset = PRESETS[args.preset]
    s = preset_settings(args, PRESETS,
                        ("depths", "seeds", "steps", "warmup_steps", "lr", "batch_size", "dataset"))
    s["units"] = [resolve_unit_kind(unit=u) for u in (args.units or UNIT_KINDS)]
    if len(set(s["units"])) != len(s["units"]):
        raise ValueError(f"--units must be distinct, got {s['units']}")
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
    s["schedule"] = schedule_dict(recipe_schedule(s["steps"], s["lr"], s["warmup_steps"]))
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
                     eval_every=s["eval_every"], probe_every=s["steps"])
    schedule = recipe_schedule(s["steps"], s["lr"], s["warmup_steps"])
    cells = [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
             for kind in s["units"]]

    run = RunDir.create(T2.EXPERIMENT, vars(args), preset=s, out=args.out)
    print(f"unit_ablation ({args.preset}): {len(cells)} nets on {s['dataset']}, depths "
          f"{s['depths']} (width {s['width']}), units {', '.join(s['units'])}, seeds "
          f"{s['seeds']}, {s['steps']} steps of {s['batch_size']}, lr {s['lr']} after "
          f"{s['warmup_steps']} warm-up steps at 0.01, /10 at {list(schedule.milestones)}; "
          f"signal probed at step 1; on {s['device']}\n-> {run.path}", flush=True)
    run.update_config(device=f"{s['device']} ({torch.get_num_threads()} threads)"
                      if s["device"] == "cpu" else s["device"])
    with recorded(run) as timing:
        train, probe, _ = run_cells(
            run, T2.EXPERIMENT, cells, data, steps=s["steps"], batch_size=s["batch_size"],
            device=s["device"], schedule=schedule, eval_every=s["eval_every"],
            probe_factory=lambda model, every: SignalProbe(
                model, taps=T2.PROBE_TAPS, stats=T2.PROBE_STATS, every=every),
            probe_every=s["steps"])
        table = T2.summary(train, probe)
        run.write_csv("summary.csv", table)
        t2 = T2.table2(table, dataset=s["dataset"], preset=args.preset)
        run.write_csv("table2.csv", t2)
        atomic_write_text(run.path / "table2.md", T2.table2_markdown(t2, table))
        rows = T2.claims_rows(table, dataset=s["dataset"], preset=args.preset)
        if rows:
            append_claims(run.path, rows)
        figures = T2.draw_figures(run.path)
    seconds = timing["seconds"]
    print((run.path / "table2.md").read_text())
    if rows:
        with pd.option_context("display.width", 200, "display.max_columns", 20,
                               "display.max_colwidth", 60, "display.float_format", "{:.3g}".format):
            print(pd.DataFrame(rows)[["depth", "unit_kind", "direction", "effect", "ci_low",
                                      "ci_high", "p_value", "n", "verdict"]].to_string(index=False))
    if args.publish is not None:
        print(f"published to {T2.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
