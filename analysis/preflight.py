"""Checks before work: what would fail late, or take far longer than asked for, is said before
the first net starts.

* the output folders (the default ``results/runs`` too) can be written;
* the largest net fits in the device's free memory (when the command line asks for wider nets
  or larger batches than the preset: the presets are known to fit);
* a run predicted to take far longer than its preset says so, with the predicted time;
* ``--plan N``: how N shards would split the nets, with each one's predicted hours.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from resnet_lab.runs.costs import REFERENCE, hours, step_seconds
from resnet_lab.engine.memory import check_fits, training_bytes
from resnet_lab.io.folders import check_writable_dir
from resnet_lab.runs.shards import plan
from resnet_lab.runs.sweep import build

# How much more than its preset's work a run may be before it says its predicted time.
FAR_LONGER = 10
# The quick presets' wall time on 2 CPU cores (README, "Experiments"), for a CPU run's estimate.
QUICK_SECONDS_ON_2_CORES = {"grad_flow": 66, "signal_propagation": 80, "shortcut_variants": 1440,
                            "early_training": 2500, "full_training": 850, "unit_ablation": 250}


def check_outputs(path, flag: str = "--out"):
    """The run folder ``path`` (or the nearest folder above it that exists) and, in an existing
    run, its cells/ and figures/ can be written: ValueError naming the folder otherwise."""
    check_writable_dir(path, flag)
    for sub in ("cells", "figures"):
        if (path / sub).exists():
            check_writable_dir(path / sub, flag)


def check_publish(publish, path):
    """``--publish`` copies a run's reference files elsewhere: not into the run folder itself
    (it would overwrite the run's tables with the published subset)."""
    if publish is None:
        return
    target, run = Path(os.path.realpath(publish)), Path(os.path.realpath(path))
    if target == run or run in target.parents:
        raise ValueError(f"--publish {publish}: that is the run's own folder; publish to another "
                         "one (e.g. results/paper/<experiment>)")


def seconds_on_reference(module, s: dict, cells=None) -> float:
    """Predicted seconds of the run's nets, one after another, on the reference GPU."""
    cells = module.cells(s) if cells is None else cells
    steps, batch = s.get("steps", 1), s.get("batch_size", 128)
    return sum(steps * step_seconds(c.depth, c.width, batch) for c in cells)


def predicted_time(module, s: dict) -> str | None:
    """A line saying the predicted time of a run that is far longer than its preset's (and
    of every paper preset run); None otherwise."""
    own = seconds_on_reference(module, s)
    ratio = own / max(seconds_on_reference(module, _preset(module, s["preset"], s)), 1e-9)
    if s["preset"] != "paper" and ratio < FAR_LONGER:
        return None
    line = f"predicted: ~{hours(own)} of GPU time on {REFERENCE}"
    if ratio >= FAR_LONGER:
        line += f", {ratio:,.0f}x the {s['preset']} preset's work"
    if s["device"] == "cpu":
        quick = QUICK_SECONDS_ON_2_CORES[module.NAME]
        cpu = own / seconds_on_reference(module, _preset(module, "quick", s)) * quick
        line += f"; on 2 CPU cores ~{hours(cpu)} (its quick preset: ~{hours(quick)})"
    return line


def _preset(module, name: str, s: dict) -> dict:
    """The settings of preset ``name`` on this run's device."""
    return module.parse_settings(["--preset", name, "--device", s["device"].split(":")[0],
                                  "--workers", "1", "--shard", "0/1"])


def check_memory(module, s: dict, data):
    """Refuse a run whose largest net cannot fit in the device's free memory, when the
    command line asks for wider nets or larger batches than the preset."""
    preset = module.PRESETS[s["preset"]]
    widest = max([preset.get("width") or 0, *(preset.get("widths") or {}).values()])
    asks_more = (s.get("width") or 0) > widest or s.get("batch_size", 0) > preset.get("batch_size", 0)
    if not asks_more:
        return
    cell = max(module.cells(s), key=lambda c: (c.depth * c.width ** 2, c.cost))
    with torch.random.fork_rng(), torch.device("meta"):
        net = build(cell, data)
    need = training_bytes(net, (data.in_channels, *data.image_size),
                          s.get("batch_size", 128))
    check_fits(need, s["device"], f"the largest net ({cell.describe()})",
               "use a smaller --width or --batch-size, or a machine (or GPU) with more memory")


def plan_text(module, s: dict) -> str:
    """``--plan N``: the split of the run's nets over N shards, predicted hours each."""
    n, cells = s["plan"], module.cells(s)
    steps, batch = s.get("steps", 1), s.get("batch_size", 128)
    table = plan(cells, n, lambda c: steps * step_seconds(c.depth, c.width, batch))
    total = seconds_on_reference(module, s, cells)
    return (f"{module.NAME} ({s['preset']}): {len(cells)} nets, {steps} step{'s' * (steps != 1)} each, ~{hours(total)}"
            f" in all on {REFERENCE}; split over {n} shards (--shard i/{n}, or a SLURM array "
            f"--array=0-{n - 1}):\n" + table.to_string(index=False))
