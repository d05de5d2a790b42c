"""Claim C2: does V1's after-addition ReLU cut the shortcut off, and how often, over depth
and training?

Trains V1 (the original post-activation unit) at several depths with He et al.'s first
iterations (SGD, momentum 0.9, weight decay 1e-4, lr 0.01 for the first 400 iterations —
their warm-up — then --lr) and probes every unit's sum at initialisation and at evenly
spaced steps: the share of shortcut energy and of gradient energy the ReLU after the
addition zeroes (analysis/relu_blocking.py defines the measures and the tests).

    python experiments/relu_blocking.py                     # quick preset: 2 CPU cores
    python experiments/relu_blocking.py --preset paper --data-dir ~/data   # CIFAR-10, a GPU
    python experiments/make_figures.py relu_blocking results/runs/relu_blocking/<run-id>

Quick preset: digits (8x8), depths 20, 56, 110 (basic, width 16), 164 (bottleneck, width
16) and 1001 (bottleneck, width 4), 3 seeds, 81 iterations of batch 128 (all at the
warm-up lr 0.01, i.e. the paper's first 81 iterations), probed every 10; 6.3 minutes
with one thread on an otherwise idle core.

Writes results/runs/relu_blocking/<run-id>/: config.json, train.csv, probe.csv.gz, cells.csv,
cuts.csv.gz (per unit and probed step), summary.csv (per net and probed step), claims.csv,
figures/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import open_run, publish  # noqa: E402
from analysis import relu_blocking as experiment  # noqa: E402
from analysis.cells import checked_dataset, train_cell  # noqa: E402
from analysis.claim_helpers import print_claims  # noqa: E402
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
        experiment.analyse(run, tables, cells, dataset=s["dataset"], preset=s["preset"])
        figures = experiment.draw_figures(run.path)
    print_claims(run.path / "claims.csv")
    if s["publish"] is not None:
        print(f"published to {publish(experiment, run.path, s['publish'])}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path} ({len(figures) // 2} figures)")
    return 0


if __name__ == "__main__":
    run_main(main)
