"""Shards: one sweep split over several processes or machines (a SLURM job array), each
running a deterministic, cost-balanced share of the cells into the same run folder.

``--shard i/n`` (0 <= i < n) picks share i of n; without it, a SLURM array task takes its
share from ``SLURM_ARRAY_TASK_ID`` and the count from ``SLURM_ARRAY_TASK_COUNT`` (or
``SLURM_ARRAY_TASK_MIN``/``_MAX``/``_STEP``): ``--array=0-9`` is shards 0/10 ... 9/10.

The split: cells in order of predicted cost (``Cell.cost``, most expensive first; ties in the
sweep's order), each given to the share with the least predicted work so far (ties: the lower
share) -- the longest-processing-time rule, within 4/3 of the best split. Every shard computes
the same split from the settings alone, so no shard needs to talk to another.
"""
from __future__ import annotations

import os

import pandas as pd

from .costs import hours

ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                   "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1), the whole sweep."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: must look like i/n (e.g. 0/4)") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n (shards 0/{max(n, 1)} to "
                         f"{max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def select_shard(configs, shard) -> list:
    """Every n-th item starting at the i-th (``experiments/train.py --shard``: seeds, whose
    runs cost the same). ``shard`` is "i/n", (i, n) or None (everything)."""
    i, n = parse_shard(shard) if shard is None or isinstance(shard, str) else shard
    return list(configs)[i::n]


def shard_from_environment(env=None) -> str | None:
    """``"i/n"`` of a SLURM array task, or None outside one."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    try:
        task, step = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_STEP", 1))
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(env["SLURM_ARRAY_TASK_COUNT"]) if "SLURM_ARRAY_TASK_COUNT" in env else \
            (int(env["SLURM_ARRAY_TASK_MAX"]) - first) // step + 1
    except (KeyError, ValueError):
        raise ValueError("SLURM array variables (SLURM_ARRAY_TASK_ID, _COUNT or _MIN/_MAX) are "
                         "incomplete or not numbers: give --shard i/n") from None
    if step < 1 or (task - first) % step or not 0 <= (task - first) // step < count:
        raise ValueError(f"SLURM array task {task} is not one of an evenly spaced array (min "
                         f"{first}, step {step}, {count} tasks): give --shard i/n")
    return f"{(task - first) // step}/{count}"


def resolve_shard(text: str | None, env=None) -> tuple[int, int]:
    """The shard of this process: ``--shard`` if given, else the SLURM array's, else 0/1."""
    return parse_shard(text if text is not None else shard_from_environment(env))


def split(cells, n: int) -> list[list]:
    """The cells of each of ``n`` shards (each in the sweep's order), balanced by cost."""
    cells = list(cells)
    loads, shares = [0.0] * n, [[] for _ in range(n)]
    for index in sorted(range(len(cells)), key=lambda k: (-cells[k].cost, k)):
        target = min(range(n), key=lambda s: (loads[s], s))
        loads[target] += cells[index].cost
        shares[target].append(index)
    return [[cells[k] for k in sorted(share)] for share in shares]


def share(cells, shard: tuple[int, int]) -> list:
    """The cells of ``shard`` = (i, n)."""
    i, n = shard
    return list(cells) if n == 1 else split(cells, n)[i]


def plan(cells, n: int, step_seconds_of) -> pd.DataFrame:
    """How ``n`` shards split ``cells``: per shard its nets, their depths and the predicted
    hours (``step_seconds_of(cell)``: a cell's whole predicted time in seconds)."""
    rows = []
    for i, part in enumerate(split(cells, n)):
        seconds = sum(step_seconds_of(c) for c in part)
        depths = pd.Series([c.depth for c in part], dtype=int).value_counts().sort_index()
        rows.append({"shard": f"{i}/{n}", "nets": len(part),
                     "depths": ", ".join(f"{count}x{depth}" for depth, count in depths.items()),
                     "predicted_hours": round(seconds / 3600, 2), "predicted": hours(seconds)})
    return pd.DataFrame(rows)
