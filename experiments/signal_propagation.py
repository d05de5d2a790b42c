"""Claims C1, C2 and C4 at initialisation: unit formulas and signal propagation.

For every input kind (Gaussian N(0, 1) images and real images), depth, version (V1 =
original post-activation unit, V2 = full pre-activation) and seed: build the net, run one
batch forward and backward in train mode with a SignalProbe on every tap and a check of
every unit's formula (analysis/signal_propagation.py says exactly what is measured and
tested). V1 and V2 of a seed see the same batch; the tests pair them by seed.

    python experiments/signal_propagation.py                   # quick preset: 2 CPU cores
    python experiments/signal_propagation.py --preset paper --data-dir ~/data   # CIFAR-10
    python experiments/make_figures.py signal_propagation results/runs/signal_propagation/<run-id>

Writes results/runs/signal_propagation/<run-id>/: config.json, probe.csv.gz (probe rows),
units.csv.gz (per-unit formula errors and predicted variance increments), cells.csv,
linear_fits.csv, gaps.csv, claims.csv, figures/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import signal_propagation as experiment  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(experiment, argv)


if __name__ == "__main__":
    run_main(main)
