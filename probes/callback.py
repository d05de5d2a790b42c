"""A SignalProbe as a training callback: made when training starts, in its ``with`` during each
training step it probes, stepped after the backward; its rows are its state.

The training engine (``resnet_lab.engine.training.train(..., callbacks=[ProbeCallback(every=k)])``)
calls it as it is; the Lightning callback (``probes.adapters.lightning``) calls the same
methods from Lightning's hooks. Steps are the numbers of the updates they make, counted from
1, as in the engine's rows.
"""
from __future__ import annotations

import pandas as pd

from .rows import empty_frame
from .signal_probe import SignalProbe


class ProbeCallback:
    """Probe updates 1, 1 + every, 1 + 2 every, ... of a training run.

    Its schedule is its own: a run resumed after s updates probes the same updates as an
    uninterrupted one (the first from s + 1 on that the schedule names), and the records
    restored from its ``state_dict`` continue the same table. ``probe_options``: further
    ``SignalProbe`` arguments (``taps``, ``stats``, ``weight_inputs``, ...).
    """
    name = "probe"                         # its table: probe.csv.gz

    def __init__(self, every=1, **probe_options):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every, self.probe_options = every, probe_options
        self.probe = None                  # made when training starts (the model is known then)
        self._start = None                 # the first update this probe probes
        self._restored = None              # a state loaded before the probe exists
        self._inside = self._stepped = False

    def on_train_start(self, model, step):
        """Training of ``model`` starts (or resumes) after ``step`` updates. A second start
        continues the probe made at the first."""
        if self.probe is None:
            self._start = -(-step // self.every) * self.every + 1
            self.probe = SignalProbe(model, every=self.every, first_step=self._start, **self.probe_options)
            if self._restored is not None:
                self.probe.load_state_dict(self._restored)
                self._restored = None

    def on_step_start(self, step):
        """Update ``step`` begins (before its forward)."""
        if step >= self._start and not self._inside:
            self.probe.__enter__()
            self._inside, self._stepped = True, False

    def on_after_backward(self, step) -> bool:
        """Its backward is done, the update not yet made (once per update, however many
        optimizers). True when the probe recorded this step."""
        if not self._inside or self._stepped:
            return False
        self._stepped = True
        return self.probe.step()

    def on_step_end(self, step):
        self._leave()

    def on_train_end(self):
        """Training ended, finished or not: the probe's hooks go."""
        self._leave()

    def _leave(self):
        if self._inside:
            self.probe.__exit__(None, None, None)
            self._inside = False

    # ---- state and results -------------------------------------------------------------------
    def state_dict(self):
        if self.probe is None:
            return self._restored
        return self.probe.state_dict()

    def load_state_dict(self, state):
        if self.probe is None:
            self._restored = state
        else:
            self.probe.load_state_dict(state)

    def collect(self) -> pd.DataFrame:
        """Every probed step so far as SignalProbe's tidy DataFrame (empty before training)."""
        return empty_frame() if self.probe is None else self.probe.collect()

    def tables(self) -> dict:
        """The tables a training run writes for it: {"probe": rows}."""
        return {} if self.probe is None else {self.name: self.collect()}
