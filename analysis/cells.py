"""The work a sweep cell does (``resnet_lab.runs.sweep.run_sweep``): train one net with a probe,
or measure one at initialisation. Module-level functions of picklable arguments, so that
worker processes can run them.

A training cell's ``context`` (a dict, the same for every cell of a sweep):
``dataset``, ``data_dir``, ``train`` (``TrainSettings`` fields but the seed; ``schedule`` as a
dict), ``probe`` (``probes.ProbeCallback`` keyword arguments: ``every`` and ``SignalProbe``'s,
or None) and ``final_eval`` (also evaluate the trained net on the whole train and test split,
eval mode: table ``final``).
"""
from __future__ import annotations

import pandas as pd

from probes import ProbeCallback
from resnet_lab.engine.data import load_dataset
from resnet_lab.engine.schedule import Schedule
from resnet_lab.runs.sweep import CellResult, build
from resnet_lab.engine.training import TrainSettings, evaluate, train

_DATA = {}
CHECKPOINT_MIN_STEPS = 25


def dataset(name: str, data_dir=None):
    """The dataset, loaded once per process (worker processes serve many cells)."""
    key = (name, str(data_dir))
    if key not in _DATA:
        _DATA[key] = load_dataset(name, data_dir=data_dir, seed=0)
    return _DATA[key]


def checked_dataset(s: dict):
    """The settings' dataset (FileNotFoundError / ValueError saying where to get it), checked
    against the settings' batch size -- before any folder is made."""
    data = dataset(s["dataset"], s.get("data_dir"))
    batch = s.get("batch_size")
    if batch is not None and batch > len(data.train_x):
        raise ValueError(f"--batch-size {batch}: exceeds the {len(data.train_x)} training images "
                         f"of {s['dataset']}")
    return data


def train_context(s: dict, probe=None, final_eval: bool = False) -> dict:
    """A training sweep's context from its resolved settings (``s``: steps, batch_size,
    device, precision, schedule, eval_every or evaluate=False, probe_every); ``probe``: the
    ``SignalProbe`` keyword arguments of the probe every cell trains with, or None."""
    # A checkpoint every tenth of the run, at least CHECKPOINT_MIN_STEPS apart: a killed sweep
    # resumes its unfinished cells from there (bitwise the same numbers as an uninterrupted
    # run); a short cell simply starts again. Saving a 1001-layer net costs about a second,
    # as much as two of its CPU steps.
    train = dict(steps=s["steps"], batch_size=s["batch_size"], device=s["device"],
                 schedule=s["schedule"], eval_every=s.get("eval_every"),
                 evaluate=s.get("evaluate", True),
                 checkpoint_every=max(CHECKPOINT_MIN_STEPS, s["steps"] // 10),
                 precision=s["precision"], checkpoint_at_end=False)
    if probe is not None:
        probe = dict(probe, every=s.get("probe_every", 1))
    return dict(dataset=s["dataset"], data_dir=s["data_dir"], train=train, probe=probe,
                final_eval=final_eval)


def train_settings(context: dict, seed: int) -> TrainSettings:
    fields = dict(context["train"])
    fields["schedule"] = Schedule(**{**fields["schedule"], "milestones": tuple(fields["schedule"]["milestones"])})
    return TrainSettings(seed=seed, **fields)


def train_cell(cell, state, context, report) -> CellResult:
    """Build the cell's net from its seed and train it (resuming from ``state``'s checkpoint);
    tables ``train`` (metrics), ``probe`` (if probed) and ``final`` (if asked)."""
    data = dataset(context["dataset"], context.get("data_dir"))
    model = build(cell, data)
    callbacks = [_Report(report)]
    if context.get("probe") is not None:
        callbacks.append(ProbeCallback(**context["probe"]))
    result = train(model, data, state, train_settings(context, cell.seed), callbacks=callbacks, quiet=True)
    tables = {"train": result.metrics, **result.tables}
    if context.get("final_eval"):
        tables["final"] = final_evaluation(result.model, data, context["train"]["device"])
    return CellResult(tables, result.status, result.step, result.peak_memory_bytes)


class _Report:
    """A training callback that reports each update's number to the sweep's progress bar."""

    def __init__(self, report):
        self.report = report

    def on_step_end(self, step):
        self.report(step)


def final_evaluation(model, data, device) -> pd.DataFrame:
    """Loss and error of a trained net, eval mode, on the whole train and test sets (no
    augmentation): the two sides of a generalization gap. Tidy: split, metric, value."""
    data = data.to(device)
    rows = []
    for split, (x, y) in (("train", (data.train_x, data.train_y)), ("test", (data.test_x, data.test_y))):
        loss, error = evaluate(model, x, y)
        rows += [{"split": split, "metric": "loss", "value": loss},
                 {"split": split, "metric": "error", "value": error}]
    return pd.DataFrame(rows)
