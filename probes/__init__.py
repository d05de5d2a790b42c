"""probes: the instruments. SignalProbe (statistics at every tap, forward and backward),
FormulaCheck (the taps against a unit's formula), the statistic declarations (``stats``) and
the backends that compute them (``kernels``); ProbeCallback, a probe for the training engine.

Knows the tap contract (``resnet_lab.networks.taps``), not architectures, data, training or claims.
"""
from .callback import ProbeCallback
from .formula import FormulaCheck
from .shortcut_path import SHORTCUT_PATH_COLUMNS, ShortcutPath
from .signal_probe import PROBE_COLUMNS, SignalProbe
from .stats import ALL_STATS, BACKWARD_STATS, FORWARD_STATS, TENSOR_STATS, WEIGHT_INPUT_STATS
from .adapters.tapping import tap_model, untap_model   # other libraries' ResNets (probes.adapters.tapping)

__all__ = ["ALL_STATS", "BACKWARD_STATS", "FORWARD_STATS", "FormulaCheck", "PROBE_COLUMNS", "ProbeCallback", "SHORTCUT_PATH_COLUMNS", "ShortcutPath",
           "SignalProbe", "TENSOR_STATS", "WEIGHT_INPUT_STATS", "tap_model", "untap_model"]
