"""Claims C2, C3, C4: do very deep V1 nets train slowly at first, and does the ReLU after
the addition cut their shortcuts? (He et al. 2016, Fig. 1)

Trains V1 (original post-activation unit) and V2 (full pre-activation) at bottleneck depths
up to 1001, one width for the whole series, from the same seeds, for the first iterations of
the paper's recipe (SGD, momentum 0.9, weight decay 1e-4; a warm-up at lr 0.01 of a fixed
length the pair shares, then the main lr), probing every unit at evenly spaced steps. Positive
controls first: the warm-up gets V1 started, the shallowest V1 trains at the main lr, V2-1001
trains; the claims that need them are answered only where they pass.
Presets, measures, the primary tests and their margins: analysis/early_training.py.

    python experiments/early_training.py                    # quick preset: 2 CPU cores
    python experiments/early_training.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py early_training results/runs/early_training/<run-id>

Writes results/runs/early_training/<run-id>/: config.json, train.csv.gz, probe.csv.gz,
cells.csv, cuts.csv, summary.csv (per net), claims.csv, figures/, cells/ (each net's own
tables). The same command again resumes an interrupted run and skips its finished nets.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import early_training as experiment  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(experiment, argv)


if __name__ == "__main__":
    run_main(main)
