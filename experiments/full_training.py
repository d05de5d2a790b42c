"""Claims C5 and C6: below 164 layers, is V1 as good as V2 -- and does V2 overfit less?

Trains V1 (original post-activation unit) and V2 (full pre-activation) at basic-unit depths
below 164, one width for the series, from the same seeds, with the paper's whole schedule
(SGD, momentum 0.9, weight decay 1e-4; a warm-up at lr 0.01 of a fixed length the pair
shares, then the main lr, /10 at 1/2 and 3/4 of the run), records the statistics of every
weight layer's input at evenly spaced steps, and evaluates every net on its whole train and
test split at the end. Positive controls first (He et al.'s baselines: V1-56 trains at the
main lr, V1-110 fits and is no worse than V1-56, V2 likewise); C5 and C6 are answered only
where the controls they need pass.
Presets, measures, the primary tests and their margins: analysis/full_training.py.

    python experiments/full_training.py                    # quick preset: digits, 2 CPU cores
    python experiments/full_training.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py full_training results/runs/full_training/<run-id>

Writes results/runs/full_training/<run-id>/: config.json, train.csv.gz, probe.csv.gz
(weight-input rows), final.csv (end-of-training evaluation), cells.csv, weight_inputs.csv.gz,
summary.csv, claims.csv, figures/, cells/ (each net's own tables). The same command again
resumes an interrupted run and skips its finished nets.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import full_training as experiment  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(experiment, argv)


if __name__ == "__main__":
    run_main(main)
