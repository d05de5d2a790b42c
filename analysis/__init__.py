"""analysis: each experiment in one module named after it -- its presets, cells, analysis,
claims and figures, declared at its end as an ``Experiment`` (``analysis/contract.py``) -- and
what they share: tables, claim statistics, the report, the runner.

Imports flow one way: ``experiments/`` scripts -> ``analysis`` -> ``probes`` -> ``resnet_lab``.
Nothing here draws while it measures, nor measures while it draws: an experiment's
``draw_figures(run_dir)`` reads the run folder's CSVs alone.

``EXPERIMENTS`` is the registry: every experiment, by name, in the order ``make reproduce``
runs them; ``experiment(name)`` is its declaration, ``experiments()`` all of them.
"""
from __future__ import annotations

import importlib

from resnet_lab.io.folders import PAPER_ROOT


EXPERIMENTS = ("grad_flow", "signal_propagation", "shortcut_variants", "early_training",
               "full_training", "unit_ablation")
PAPER = PAPER_ROOT


def experiment(name: str):
    """The ``Experiment`` declared by ``analysis/<name>.py`` (ValueError naming the valid ones)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"analysis.{name}").EXPERIMENT


def experiments() -> tuple:
    """Every experiment's declaration, in ``EXPERIMENTS``' order."""
    return tuple(experiment(name) for name in EXPERIMENTS)
