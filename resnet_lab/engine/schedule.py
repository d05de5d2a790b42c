"""The learning-rate schedule of He et al.: the one schedule every run uses.

Recipe (He et al. 2015 §4.2 and 2016, CIFAR): SGD, momentum 0.9, weight decay 1e-4, batch 128;
lr 0.1, with a warm-up at 0.01 "until the training error is below 80% (about 400 iterations)"
for the deep nets, then /10 at 32k and 48k of 64k iterations.

The experiments give the warm-up a fixed length (``Schedule.paper(..., warmup_steps=W)``):
both nets of a V1-V2 pair then share one schedule, and the paper's intent -- a warm-up that
gets V1 started -- is checked afterwards by a positive control (``analysis.controls``). On
CIFAR W = 400 ("about 400 iterations"); on small data the words "until the training error
is below 80%" mean something else (one lucky batch of an 11-batch epoch), so the quick
presets state their own W. Without ``warmup_steps`` the warm-up is the paper's words,
data-dependent: the lr is ``warmup_lr`` until the training error of an iteration's batch is
below ``warmup_error`` (80%), and at most ``WARMUP_MAX_STEPS`` (400) iterations; which
iteration ended it is state the training engine keeps (and checkpoints), and ``lr_at(step,
warmup_end)`` is a pure function of it. The division steps sit at the paper's fractions of
the run (1/2 and 3/4), whatever its length.
"""
from __future__ import annotations

import dataclasses

PAPER_ITERATIONS = 64_000
PAPER_MILESTONES = (32_000, 48_000)
LR, WARMUP_LR = 0.1, 0.01
WARMUP_MAX_STEPS = 400          # He et al.: "about 400 iterations"
WARMUP_ERROR = 0.8              # ... "until the training error is below 80%"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning rate per update (0-based ``step``).

    ``warmup_lr`` until the warm-up ends, then ``lr`` divided by ``divide_by`` at each
    milestone passed (a division, so that 0.1 / 10 is exactly 0.01 in the CSVs). The warm-up
    ends after the first update whose batch training error is below ``warmup_error``, or
    after ``warmup_max_steps`` updates, whichever comes first (``warmup_max_steps=0``: none;
    ``warmup_error=None``: always ``warmup_max_steps``)."""
    steps: int
    lr: float = LR
    warmup_lr: float = WARMUP_LR
    warmup_max_steps: int = WARMUP_MAX_STEPS
    warmup_error: float | None = WARMUP_ERROR
    milestones: tuple = ()
    divide_by: float = 10.0

    @classmethod
    def paper(cls, steps: int, lr: float = LR, warmup: bool = True,
              warmup_steps: int | None = None) -> "Schedule":
        """The paper's schedule on ``steps`` updates: the warm-up -- ``warmup_steps`` updates
        if given, else the data-dependent one (at most 400 updates, and never the whole run)
        -- then ``lr``, /10 at 1/2 and 3/4 of the run."""
        check_steps(steps)
        if not lr > 0:
            raise ValueError(f"--lr {lr!r}: must be positive")
        milestones = tuple(round(m * steps / PAPER_ITERATIONS) for m in PAPER_MILESTONES)
        milestones = tuple(m for m in milestones if 0 < m < steps)
        if warmup_steps is not None:
            return cls(steps, lr, WARMUP_LR, warmup_steps if warmup else 0, None, milestones)
        return cls(steps, lr, WARMUP_LR, min(WARMUP_MAX_STEPS, steps) if warmup else 0,
                   WARMUP_ERROR, milestones)

    def warmup_ends(self, step: int, batch_error: float) -> bool:
        """After update ``step`` (0-based) with this batch error: does the warm-up end here?"""
        return step + 1 >= self.warmup_max_steps or (
            self.warmup_error is not None and batch_error < self.warmup_error)

    def lr_at(self, step: int, warmup_end: int | None) -> float:
        """The lr of update ``step`` (0-based); ``warmup_end``: the number of warm-up
        updates, None while the warm-up goes on."""
        if self.warmup_max_steps > 0 and (warmup_end is None or step < warmup_end):
            return self.warmup_lr
        return self.lr / self.divide_by ** sum(step >= m for m in self.milestones)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_steps(steps) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"--steps {steps!r}: must be a positive integer")
    return steps
