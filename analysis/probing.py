"""The probe's settings: how many steps a training run probes, and how they are spaced.

A script that probes during training takes ``PROBE_STEPS`` among its options
(``resnet_lab.runs.settings.parser``/``resolve``) and derives ``probe_every`` with
``probe_spacing``; the checks read ``steps`` (so ``steps`` comes first in the options) and the
experiment's rule ``min_probe_steps``.
"""
from __future__ import annotations

from resnet_lab.runs.settings import Option


def check_probe_steps(probe_steps, s):
    """--probe-steps: from 1 to --steps, at least the rule `min_probe_steps`, and a count
    that evenly spaced probed steps from step 1 can hold (else the nearest counts that can)."""
    steps = s.get("steps")
    if not isinstance(probe_steps, int) or probe_steps < 1 or (steps and probe_steps > steps):
        raise ValueError(f"--probe-steps {probe_steps!r}: must be an integer from 1 to --steps "
                         f"({steps})")
    minimum = s.get("min_probe_steps", 1)
    if probe_steps < minimum:
        raise ValueError(f"--probe-steps {probe_steps}: need at least {minimum} (initialisation "
                         "and a later step)")
    if steps and probed_count(steps, probe_spacing(steps, probe_steps)) != probe_steps:
        window = range(max(1, minimum, probe_steps - 50), min(steps, probe_steps + 50) + 1)
        counts = [c for c in window if probed_count(steps, probe_spacing(steps, c)) == c]
        near = [max(c for c in counts if c < probe_steps) if counts[0] < probe_steps else None,
                min(c for c in counts if c > probe_steps) if counts[-1] > probe_steps else None]
        raise ValueError(f"--probe-steps {probe_steps}: {steps} steps cannot hold {probe_steps} "
                         f"evenly spaced probed steps from step 1 (they would be "
                         f"{probed_count(steps, probe_spacing(steps, probe_steps))}); "
                         f"nearest counts that can: {' or '.join(str(c) for c in near if c)}")
    return probe_steps


def probe_spacing(steps: int, probe_steps: int) -> int:
    """probe_every so that ``probe_steps`` probed steps are spread from step 1 to near the end
    (one checkpoint: step 1 alone, initialisation)."""
    if probe_steps <= 1:
        return max(1, steps)
    return max(1, (steps - 1) // (probe_steps - 1))


def probed_count(steps: int, every: int) -> int:
    """How many of ``steps`` steps a probe with ``probe_every=every`` records (0-based steps
    0, every, 2 every, ...)."""
    return -(-steps // every)


PROBE_STEPS = Option("--probe-steps", dict(type=int, help="probed steps, evenly spaced from the "
                                                          "first iteration"), check_probe_steps)
