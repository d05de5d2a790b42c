"""Claims C3 and C5: do very deep V1 nets train slowly at first, and from which depth on?

Trains V1 (original post-activation unit) and V2 (full pre-activation) at depths 20 … 1001
from the same seeds — a seed fixes the initialisation stream, the batches and the
augmentation, so V1 and V2 of a seed see the same data in the same order — for the first
iterations of He et al.'s recipe (SGD, momentum 0.9, weight decay 1e-4, lr 0.01 for the
first 400 iterations — their warm-up — then --lr; paper Fig. 1). It measures the loss at
fixed iterations, the iterations to reach a loss threshold and the area under the loss
curve, tests V1 − V2 paired by seed at every depth, and finds the depth from which V1's gap
is significant (analysis/early_training.py defines the measures and the tests). It also probes
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

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import early_training as experiment  # noqa: E402
from analysis import open_run, publish  # noqa: E402
from analysis.cells import checked_dataset, train_cell  # noqa: E402
from analysis.claim_helpers import print_claims  # noqa: E402
from resnet_lab.cli import run_main  # noqa: E402
from resnet_lab.sweep import run_sweep  # noqa: E402


def main(argv=None):
    s = experiment.parse_settings(argv)                 # flags -> preset -> checks; nothing written
    data = checked_dataset(s)                           # the data exist (else: where to get them)
    run = open_run(experiment.NAME, s, s["out"])        # id from the settings: rerun = resume
    print(f"{experiment.describe(s)}\n-> {run.path}", flush=True)
    with run.recorded() as timing:
        tables, cells = run_sweep(run, experiment.NAME, experiment.cells(s), train_cell,
                                  experiment.context(s), workers=s["workers"],
                                  threads=s["threads"], steps=s["steps"])
        table = experiment.analyse(run, tables, cells, dataset=s["dataset"],
                                   num_classes=data.num_classes, preset=s["preset"])
        figures = experiment.draw_figures(run.path)
    print_claims(run.path / "claims.csv")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print(table.groupby(["depth", "version"])[["auc", "loss_q25", "loss_q100", "steps_to"]]
              .mean().to_string())
    if s["publish"] is not None:
        print(f"published to {publish(experiment, run.path, s['publish'])}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
