"""Claim C6: does V2 overfit less because every weight layer's input is normalized?

(a) With SignalProbe(weight_inputs=True) it records, for every Conv2d / Linear of V1 and
V2, the channel means and variances of the layer's input at initialisation and at evenly
spaced steps of training, and how far they are from (0, 1), per layer and depth.
(b) It trains V1 and V2 with He et al.'s recipe at three depths and several seeds, evaluates
each net on the whole train and test split at the end, and tests — paired by seed — the
generalization gap (test − train), the final test error, and He et al. 2016 Fig. 6's
pattern "V2 ends with a slightly higher training loss but a lower test error" (164 layers).
Presets, measures and tests: analysis/overfitting.py.

    python experiments/overfitting.py                    # quick preset: digits, 2 CPU cores
    python experiments/overfitting.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py overfitting results/runs/overfitting/<run-id>

Writes results/runs/overfitting/<run-id>/: config.json, train.csv (training rows),
probe.csv.gz (weight-input rows), final.csv (end-of-training evaluation), cells.csv,
weight_inputs.csv.gz, summary.csv, table.md, claims.csv, figures/.
"""
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import open_run, publish  # noqa: E402
from analysis import overfitting as experiment  # noqa: E402
from analysis.cells import checked_dataset, train_cell  # noqa: E402
from resnet_lab.cli import run_main  # noqa: E402
from resnet_lab.sweep import run_sweep  # noqa: E402


def main(argv=None):
    s = experiment.parse_settings(argv)                 # flags -> preset -> checks; nothing written
    checked_dataset(s)                                  # the data exist (else: where to get them)
    run = open_run(experiment.NAME, s, s["out"])        # id from the settings: rerun = resume
    print(f"{experiment.describe(s)}\n-> {run.path}", flush=True)
    with run.recorded() as timing:
        tables, cells = run_sweep(run, experiment.NAME, experiment.cells(s), train_cell,
                                  experiment.context(s), workers=s["workers"],
                                  threads=s["threads"], steps=s["steps"])
        claims = experiment.analyse(run, tables, cells, dataset=s["dataset"], preset=s["preset"])
        figures = experiment.draw_figures(run.path)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 70, "display.float_format", "{:.3g}".format):
        print(claims[["depth", "measure", "effect", "ci_low", "ci_high", "p_value", "n",
                      "verdict"]].to_string(index=False))
    if s["publish"] is not None:
        print(f"published to {publish(experiment, run.path, s['publish'])}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
