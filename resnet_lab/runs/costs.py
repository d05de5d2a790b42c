"""What a net costs to train: one step's predicted seconds, from steps measured on a GPU.

``STEP_SECONDS``: one training step (fp32, channels-last, SGD, batch 128, CIFAR-10 32x32,
width 16) on an NVIDIA H200, by depth -- the mean over the unit kinds measured by
``experiments/gpu_check.py`` (``results/paper/gpu_check/paper_steps.csv``; the README's "On a
GPU" table). Between and beyond the measured depths the time is interpolated (extrapolated)
linearly in depth: it is close to linear, ~0.39 ms a layer plus ~5 ms. A wider net or a
larger batch costs more in proportion to its arithmetic (width squared times batch); a
narrower net or a smaller batch costs as much (the GPU waits for kernel launches, not for
arithmetic, at width 16 and batch 128 already).

Balancing shards needs only the ratios (a 1001-layer cell ~5x a 164-layer one); the hours
predicted for ``--preset paper`` are the H200's, on another GPU they scale with its speed.
"""
from __future__ import annotations

import numpy as np

REFERENCE = "an NVIDIA H200 (fp32, measured step times)"
STEP_SECONDS = {20: 0.01215, 29: 0.01368, 56: 0.02581, 65: 0.03017, 110: 0.05055,
                164: 0.07535, 326: 0.15339, 1001: 0.39233}
REFERENCE_WIDTH, REFERENCE_BATCH = 16, 128


def step_seconds(depth: int, width: int = REFERENCE_WIDTH, batch_size: int = REFERENCE_BATCH) -> float:
    """Predicted seconds of one training step of a CIFAR ResNet on the reference GPU."""
    depths = np.array(sorted(STEP_SECONDS), dtype=float)
    times = np.array([STEP_SECONDS[d] for d in sorted(STEP_SECONDS)])
    if depth <= depths[-1]:
        base = float(np.interp(depth, depths, times))
        if depth < depths[0]:                     # below 20 layers: the line through 20 and 29
            slope = (times[1] - times[0]) / (depths[1] - depths[0])
            base = max(times[0] * 0.5, times[0] - slope * (depths[0] - depth))
    else:
        slope = (times[-1] - times[-2]) / (depths[-1] - depths[-2])
        base = times[-1] + slope * (depth - depths[-1])
    arithmetic = (width / REFERENCE_WIDTH) ** 2 * batch_size / REFERENCE_BATCH
    return base * max(1.0, arithmetic)


def hours(seconds: float) -> str:
    """``"4 min"``, ``"0.6 h"``, ``"56 h"``, ``"3.2 days"``, ``"1,900 years"``: a duration."""
    h = seconds / 3600
    if h < 0.05:
        return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
    if h < 1000:
        return f"{h:.1f} h" if h < 10 else f"{h:.0f} h"
    if h < 2 * 24 * 365:
        return f"{h / 24:.0f} days"
    return f"{h / 24 / 365:,.0f} years"
