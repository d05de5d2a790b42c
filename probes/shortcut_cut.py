"""The step state of ``shortcut_cut``: per unit, the numerator sum h^2 [f(y) = 0].

A unit's taps pass in contract order -- shortcut h, then sum y, then output f(y) -- so the
shortcut and the sum are remembered at their taps and the numerator is read at the output
tap: in the same pass as the output's own sums where the two are laid out alike, alone where
the output tap is not measured. Where f is the identity (the output is the sum's tensor
itself) f zeroes nothing and the numerator is 0. The C++ taps (``kernels/_cpp_hooks.cpp``)
run the same sequence on the same buffer.
"""
from __future__ import annotations

import torch

from .tap_index import OUTPUT, PER_UNIT, SHORTCUT, SUM


class ShortcutCut:
    """The per-unit numerators (fp32, on the tensors' device) and the unit being passed."""

    def __init__(self, n_units):
        self.n_units = n_units
        self.numerators = None
        self.views = None
        self.clear()

    def ensure(self, device):
        """The buffer and its 0-d views (made once: indexing costs) on ``device``."""
        if self.numerators is None or self.numerators.device != device:
            self.numerators = torch.zeros(self.n_units, device=device)
            self.views = [self.numerators[u] for u in range(self.n_units)]

    def at_tap(self, slot, tap, t):
        """Remembers the unit's shortcut and sum at their taps; at the output tap returns
        ``(h, out)`` -- the numerator is ``masked_energy(h, t)`` into the 0-d view ``out`` --
        or None (nothing to read)."""
        if tap == SHORTCUT:
            self.h = t
        elif tap == SUM:
            self.y = t
        elif tap == OUTPUT and self.h is not None:
            self.ensure(t.device)
            u = slot // PER_UNIT
            h, y = self.h, self.y
            self.clear()
            if t is y:                       # f is the identity: it cuts nothing
                self.views[u].zero_()
            else:
                return h, self.views[u]
        return None

    def clear(self):
        """Forget the unit being passed (the end of a step: no tensor is kept past it)."""
        self.h = self.y = None

    def nbytes(self) -> int:
        return 0 if self.numerators is None else self.numerators.numel() * self.numerators.element_size()
