"""SignalProbe as a Lightning callback: probe a LightningModule's taps every k training steps.

    from probes.lightning import SignalProbeCallback
    callback = SignalProbeCallback(every=10, taps=("input", "sum"), stats=("norm", "grad_cut"))
    Trainer(callbacks=[callback]).fit(module)
    df = callback.collect()            # the tidy table of SignalProbe.collect()

The module needs tapped residual units: a net built from resnet_lab units, or one tapped with
``probes.tapping.tap_model``; with ``tap=True`` (the default) the callback taps a module that
has none itself (they stay: ``callback.tap_handle.remove()`` removes them).

How a step is probed: the probe's hooks exist from ``on_train_batch_start`` to
``on_train_batch_end``; ``probe.step()`` runs in ``on_before_optimizer_step``, after the
backward and before gradient clipping and the update, so each row's ``step`` is the s-th
update (counted on from the trainer's ``global_step`` when fitting starts, as the training
engine counts). With gradient accumulation the tensor statistics are those of the last
micro-batch, the parameter-gradient norms those of the accumulated gradient.

``log_to="logger"`` also sends each probed step's rows to every logger of the trainer
(``log_metrics``), named as ``probes.tensorboard.scalar_tags`` names them
(``probe/backward/input/norm/unit_003``); choose ``taps`` and ``stats`` to keep that short.
Under DDP each rank probes its own batch; Lightning's loggers write on rank 0 only.
"""
from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError:
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("probes.lightning needs Lightning: pip install lightning "
                          "(or, in the resnet-lab checkout, pip install -e '.[lightning]')") from None

import pandas as pd

from resnet_lab.taps import TAP_NAMES, tapped_units

from .signal_probe import PROBE_COLUMNS, SignalProbe
from .tapping import tap_model
from .tensorboard import scalar_tags

LOG_TO = (None, "logger")


class SignalProbeCallback(Callback):
    """Probe every ``every``-th training step of ``Trainer.fit``.

    Args:
        every, taps, stats: as for ``SignalProbe``.
        log_to: None (keep the rows for ``collect()`` only) or ``"logger"`` (also log them
            as scalars through the trainer's loggers).
        tap: tap the module with ``probes.tapping.tap_model`` when it has no tapped units.
        **probe_options: further ``SignalProbe`` arguments (``weight_inputs``, ``param_grads``).
    """

    def __init__(self, every=1, taps=TAP_NAMES, stats=None, log_to=None, tap=True, **probe_options):
        if log_to not in LOG_TO:
            raise ValueError(f"log_to={log_to!r}: valid: None, 'logger'")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every, self.taps, self.stats, self.log_to = every, taps, stats, log_to
        self.tap, self.probe_options = tap, probe_options
        self.probe = None                  # made when fitting starts (the module is known then)
        self.tap_handle = None
        self._inside = self._stepped = False

    # ---- fitting ---------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        if self.tap and not _has_taps(pl_module):
            self.tap_handle = tap_model(pl_module)
        if self.probe is None:             # a second fit continues the same probe
            self.probe = SignalProbe(pl_module, taps=self.taps, stats=self.stats, every=self.every,
                                     first_step=trainer.global_step + 1, **self.probe_options)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.probe.__enter__()
        self._inside, self._stepped = True, False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self._inside or self._stepped:   # several optimizers: one probe step per batch
            return
        recorded = len(self.probe._records)
        self.probe.step()
        self._stepped = True
        if self.log_to == "logger" and len(self.probe._records) > recorded:
            self._log(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._leave()

    def on_exception(self, trainer, pl_module, exception):
        self._leave()

    def on_fit_end(self, trainer, pl_module):
        self._leave()

    def _leave(self):
        if self._inside:
            self.probe.__exit__(None, None, None)
            self._inside = False

    def _log(self, trainer):
        rows = self.probe._frame(*self.probe._records[-1])    # the step just recorded
        metrics = dict(zip(scalar_tags(rows), rows["value"].astype(float)))
        step = int(rows["step"].iloc[0]) if len(rows) else trainer.global_step + 1
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    # ---- results ---------------------------------------------------------------------------
    def collect(self):
        """Every probed step so far as SignalProbe's tidy DataFrame (empty before fitting)."""
        if self.probe is None:
            return pd.DataFrame(columns=PROBE_COLUMNS)
        return self.probe.collect()


def _has_taps(module) -> bool:
    try:
        tapped_units(module)
    except ValueError:
        return False
    return True
