"""He et al. 2016, Table 2: the five residual unit kinds at ResNet-110 and -164 (quick: 110).

The units of Fig. 4 — (a) original, (b) BN after addition, (c) ReLU before addition,
(d) ReLU-only pre-activation, (e) full pre-activation — differ only in where BN and ReLU sit.
For every depth, unit kind and seed it builds a CIFAR ResNet, records the signal at
initialisation (forward channel variance and backward gradient norm at every unit, the
share of shortcut / gradient energy the after-addition function cuts), trains it with He et
al.'s recipe and records the early training loss and the final test error. It writes a table
in Table 2's layout next to He et al.'s CIFAR-10 numbers, and tests — paired by seed — each
kind's test error against the original unit in the direction the paper reports -- once
the positive controls pass (the original unit and full pre-activation fit their training
set). Presets, measures and tests: analysis/unit_ablation.py.

    python experiments/unit_ablation.py                  # quick preset: digits, 2 CPU cores
    python experiments/unit_ablation.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py unit_ablation results/runs/unit_ablation/<run-id>

Writes results/runs/unit_ablation/<run-id>/: config.json, train.csv, probe.csv.gz (step 1),
cells.csv, summary.csv, table2.md, table2.csv, claims.csv, figures/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import unit_ablation as experiment  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(experiment, argv)


if __name__ == "__main__":
    run_main(main)
