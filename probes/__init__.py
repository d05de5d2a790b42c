"""probes: SignalProbe and the statistic definitions. Knows taps, not architectures."""
from .signal_probe import PROBE_COLUMNS, SignalProbe
from .stats import ALL_STATS, BACKWARD_STATS, FORWARD_STATS, TENSOR_STATS, WEIGHT_INPUT_STATS

__all__ = ["ALL_STATS", "BACKWARD_STATS", "FORWARD_STATS", "PROBE_COLUMNS", "SignalProbe",
           "TENSOR_STATS", "WEIGHT_INPUT_STATS"]
