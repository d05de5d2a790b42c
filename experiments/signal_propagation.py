"""Claims C1 and C4 (and C5 from C4's gap): unit formulas and signal propagation at init.

For every input kind (Gaussian N(0, 1) images and real images), depth, version (V1 =
original post-activation unit, V2 = full pre-activation) and seed: build the net, run one
batch forward and backward in train mode with a SignalProbe on every tap and a check of
every unit's formula (probes/signal_propagation.py says exactly what is measured and
tested). V1 and V2 of a seed see the same batch; the tests pair them by seed.

    python experiments/signal_propagation.py                   # quick preset: 2 CPU cores
    python experiments/signal_propagation.py --preset paper --data-dir ~/data   # CIFAR-10
    python experiments/make_figures.py signal_propagation results/runs/signal_propagation/<run-id>

Quick preset: digits (8x8, 1 channel) and Gaussian images of that shape, 5 seeds, batch 128;
the paper's depths 20, 56, 110 (basic units, zero-padding shortcuts), 164 and 1001 (bottleneck
units, projection shortcuts), plus bottleneck nets of 29 and 65 layers and a basic net of 326
layers, so that depth and block are not confounded; width 16, except 4 at 1001 layers (the
paper's width does not fit the time budget of 2 CPU cores). 5 minutes with one thread.

Writes results/runs/signal_propagation/<run-id>/: config.json, probe.csv.gz (probe rows),
units.csv.gz (per-unit formula errors and predicted variance increments), cells.csv,
linear_fits.csv, gaps.csv, claims.csv, figures/.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import claims_helpers as H  # noqa: E402
from probes import signal_propagation as SP  # noqa: E402
from resnet_lab.claims import append_claims  # noqa: E402
from resnet_lab.cli import (add_common_args, add_run_args, add_sweep_args, prepare_outputs,
                            preset_settings, recorded, resolve_device, run_main)  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.runs import RunDir  # noqa: E402

# ---- settings ----------------------------------------------------------------------------
PRESETS = {
    # 2 CPU cores, nothing downloaded: 5 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 29, 56, 65, 110, 164, 326, 1001], widths={1001: 4}, width=16,
                  seeds=[0, 1, 2, 3, 4], inputs=["gaussian", "real"], dataset="digits",
                  batch_size=128),
    # the paper's widths on CIFAR-10 32x32 (and Gaussian images of that shape); a GPU.
    "paper": dict(depths=[20, 29, 56, 65, 110, 164, 326, 1001], widths={}, width=16,
                  seeds=[0, 1, 2, 3, 4], inputs=["gaussian", "real"], dataset="cifar10",
                  batch_size=128),
    # seconds: what the tests run (two basic and two bottleneck depths).
    "smoke": dict(depths=[20, 29, 32, 47], widths={}, width=4, seeds=[0, 1, 2],
                  inputs=["gaussian", "real"], dataset="digits", batch_size=16),
}
INPUTS = ("gaussian", "real")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS)
    add_sweep_args(parser, steps=False, width_note=", reduced for 1001 layers in the quick preset")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS,
                        help="gaussian (N(0, 1) images, random labels) and/or real (--dataset's "
                             "first training batch of each seed); default both")
    add_run_args(parser, "signal_propagation", threads=1)
    return parser.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides, checked before anything is written."""
    preset = PRESETS[args.preset]
    s = preset_settings(args, PRESETS, ("depths", "seeds", "inputs", "dataset", "batch_size"))
    s["depths"] = H.check_depths(s["depths"])
    s["seeds"] = H.check_seeds(s["seeds"])
    s["inputs"] = list(dict.fromkeys(s["inputs"]))
    H.check_positive("--batch-size", s["batch_size"])
    if s["batch_size"] < 2:
        raise ValueError("--batch-size must be at least 2 (BN in train mode)")
    s["widths"] = H.resolve_widths(s["depths"], args.width, preset["widths"], preset["width"])
    s["width"] = H.describe_widths(s["widths"])
    s["device"] = str(resolve_device(args.device))
    s["name"] = args.preset
    s["datasets"] = [s["dataset"] if i == "real" else "gaussian" for i in s["inputs"]]
    return s


def main(argv=None):
    args = parse_args(argv)
    s = resolve(args)
    prepare_outputs(args)
    data = load_dataset(s["dataset"], data_dir=args.data_dir, seed=0)
    if s["batch_size"] > len(data.train_x):
        raise ValueError(f"--batch-size {s['batch_size']} exceeds the {len(data.train_x)} "
                         f"training images of {s['dataset']}")

    run = RunDir.create(SP.EXPERIMENT, vars(args), preset=s, out=args.out)
    n = len(s["datasets"]) * len(s["depths"]) * len(s["seeds"]) * 2
    print(f"signal_propagation ({args.preset}): {n} nets (V1, V2) at init, inputs "
          f"{', '.join(s['datasets'])} ({tuple(data.train_x.shape[1:])}), depths {s['depths']} "
          f"(width {s['width']}), seeds {s['seeds']}, batch {s['batch_size']}, on "
          f"{s['device']}\n-> {run.path}", flush=True)
    with recorded(run) as timing:
        probe, units, _ = SP.measure_all(
            run, datasets=s["datasets"], data=data, depths=s["depths"], widths=s["widths"],
            seeds=s["seeds"], batch_size=s["batch_size"], device=s["device"],
            log=lambda text: print(text, file=sys.stderr, flush=True))
        fits = SP.linear_fits(SP.law_table(probe, units))
        run.write_csv("linear_fits.csv", fits)
        rows, gaps = SP.claims_rows(probe, units, preset=args.preset)
        run.write_csv("gaps.csv", gaps)
        append_claims(run.path, rows)
        figures = SP.draw_figures(run.path)
    seconds = timing["seconds"]
    H.print_claims(run.path / "claims.csv")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print(fits[fits["span"] == "stage"][["dataset", "depth", "version", "stage", "slope",
                                             "intercept", "r2", "predicted_slope"]]
              .to_string(index=False))
    if args.publish is not None:
        print(f"published to {SP.publish(run.path, args.publish)}")
    print(f"done in {seconds:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
