"""Gradient flow through the shortcuts of V1 and V2 ResNets, 20 to 1001 layers.

The suite's main job. For every depth, version (or unit kind) and seed it builds a CIFAR
ResNet, trains it for the first iterations of the paper's recipe (SGD, momentum 0.9, weight
decay 1e-4, the 0.01 warm-up learning rate) and probes every tap of every unit, forward and
backward, at initialisation and at evenly spaced probed steps. Presets, cells, summary and
figures: analysis/grad_flow.py.

    python experiments/grad_flow.py                      # quick preset: 2 CPU cores, minutes
    python experiments/grad_flow.py --preset paper --data-dir ~/data   # CIFAR-10 on a GPU
    python experiments/make_figures.py grad_flow results/runs/grad_flow/<run-id>   # redraw

Writes results/runs/grad_flow/<run-id>/ (config.json, train.csv, probe.csv.gz, cells.csv,
summary.csv, figures/, and cells/ with each net's own tables). The run id comes from the
settings: the same command again resumes an interrupted run and skips its finished nets.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import grad_flow as experiment  # noqa: E402
from analysis.runner import run_experiment  # noqa: E402
from resnet_lab.runs.cli import run_main  # noqa: E402


def main(argv=None):
    return run_experiment(experiment, argv)


if __name__ == "__main__":
    run_main(main)
