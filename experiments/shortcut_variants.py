"""He et al. 2016 Table 1: shortcut variants at initialisation and trained -- the known-groups
check of the signal measures the claims use.

Builds the original unit (V1) with each shortcut of He et al.'s Table 1 (identity, constant
scaling, exclusive and shortcut-only gating, 1x1 convolution, dropout) and V2 with the same
shortcuts. Part A: each net at initialisation, one forward/backward in train mode on its
seed's first batch, at depths up to 1001 (one width per series): the shortcut-path share,
C4's stage_rho and the gradient's end-to-end ratio; the known-groups check (does a measure
rank the identity shortcut ahead of scaling 0.5 and dropout?) declared before the data.
Part B: V1-110 with each shortcut trained in full_training's quick regime: does it train,
fit, and its test error beside He et al.'s column. Presets, measures and the rule:
analysis/shortcut_variants.py and analysis/known_groups.py.

    python experiments/shortcut_variants.py                    # quick preset: 2 CPU cores
    python experiments/shortcut_variants.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py shortcut_variants results/runs/shortcut_variants/<run-id>

Writes results/runs/shortcut_variants/<run-id>/: config.json, probe.csv.gz, path.csv,
init.csv (per net at init), known_groups.csv, train.csv.gz, final.csv, trained.csv,
table1.csv, cells.csv, figures/, cells/ (each net's own tables).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import shortcut_variants  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(shortcut_variants.EXPERIMENT, argv)


if __name__ == "__main__":
    run_main(main)
