"""SignalProbe as a Lightning callback: probe a LightningModule's taps every k training steps.

    from probes.adapters.lightning import SignalProbeCallback
    callback = SignalProbeCallback(every=10, taps=("input", "sum"), stats=("norm", "grad_cut"))
    Trainer(callbacks=[callback]).fit(module)
    df = callback.collect()            # the tidy table of SignalProbe.collect()

The module needs tapped residual units: a net built from resnet_lab units, or one tapped with
``probes.adapters.tapping.tap_model``; with ``tap=True`` (the default) the callback taps a module that
has none itself (they stay: ``callback.tap_handle.remove()`` removes them).

How a step is probed: the probe's hooks exist from ``on_train_batch_start`` to
``on_train_batch_end``; ``probe.step()`` runs in ``on_before_optimizer_step``, after the
backward and before gradient clipping and the update, so each row's ``step`` is the s-th
update, and updates 1, 1 + every, ... are probed, as in the training engine (a fit resumed
from a checkpoint continues the schedule and, through the callback's state, the table). With
gradient accumulation the tensor statistics are those of the last micro-batch, the
parameter-gradient norms those of the accumulated gradient.

``log_to="logger"`` also sends each probed step's rows to every logger of the trainer
(``log_metrics``), named as ``probes.adapters.tensorboard.scalar_tags`` names them
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
        raise ImportError("probes.adapters.lightning needs Lightning: pip install lightning "
                          "(or, in the resnet-lab checkout, pip install -e '.[lightning]')") from None


from resnet_lab.networks.taps import TAP_NAMES, tapped_units

from ..callback import ProbeCallback
from .tapping import tap_model
from .tensorboard import scalar_tags

LOG_TO = (None, "logger")


class SignalProbeCallback(Callback):
    """Probe every ``every``-th training step of ``Trainer.fit`` (``probes.ProbeCallback``, the
    training engine's probe, called from Lightning's hooks; its rows are its checkpointed state).

    Args:
        every, taps, stats: as for ``SignalProbe``.
        log_to: None (keep the rows for ``collect()`` only) or ``"logger"`` (also log them
            as scalars through the trainer's loggers).
        tap: tap the module with ``probes.adapters.tapping.tap_model`` when it has no tapped units.
        **probe_options: further ``SignalProbe`` arguments (``weight_inputs``, ``param_grads``).
    """

    def __init__(self, every=1, taps=TAP_NAMES, stats=None, log_to=None, tap=True, **probe_options):
        if log_to not in LOG_TO:
            raise ValueError(f"log_to={log_to!r}: valid: None, 'logger'")
        self.callback = ProbeCallback(every=every, taps=taps, stats=stats, **probe_options)
        self.log_to, self.tap = log_to, tap
        self.tap_handle = None

    @property
    def probe(self):
        """The SignalProbe (made when fitting starts)."""
        return self.callback.probe

    # ---- fitting ---------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        if self.tap and not _has_taps(pl_module):
            self.tap_handle = tap_model(pl_module)
        self.callback.on_train_start(pl_module, trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.callback.on_step_start(trainer.global_step + 1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.callback.on_after_backward(trainer.global_step + 1) and self.log_to == "logger":
            self._log(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.callback.on_step_end(trainer.global_step)

    def on_exception(self, trainer, pl_module, exception):
        self.callback.on_train_end()

    def on_fit_end(self, trainer, pl_module):
        self.callback.on_train_end()

    def _log(self, trainer):
        rows = self.probe.latest()          # the step just recorded
        metrics = dict(zip(scalar_tags(rows), rows["value"].astype(float)))
        step = int(rows["step"].iloc[0]) if len(rows) else trainer.global_step + 1
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    # ---- state and results -----------------------------------------------------------------
    def state_dict(self):
        return self.callback.state_dict() or {}

    def load_state_dict(self, state_dict):
        if state_dict:
            self.callback.load_state_dict(state_dict)

    def collect(self):
        """Every probed step so far as SignalProbe's tidy DataFrame (empty before fitting)."""
        return self.callback.collect()


def _has_taps(module) -> bool:
    try:
        tapped_units(module)
    except ValueError:
        return False
    return True
