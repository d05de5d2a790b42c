"""FormulaCheck: do the tapped tensors obey a unit's formula? (claim C1)

An instrument like ``SignalProbe``: it finds the units through the tap contract
(``resnet_lab.networks.taps.tapped_units``), keeps each unit's five tapped tensors during a
forward and scores them against a formula the caller supplies -- for the suite's nets
``resnet_lab.networks.units.reference_formula``: ``out = f(h(x) + F(x))`` with the h and f
that the unit's shortcut and after-addition modules declare (``reference``, written from the
paper in plain torch, not taken from the modules' forward). It knows nothing of
architectures itself.
"""
from __future__ import annotations

import torch
from torch import nn

from resnet_lab.networks.taps import TAP_NAMES, tapped_units


class FormulaCheck:
    """Compare every unit's taps with ``formula`` during a forward.

    ``formula(unit, x, h, branch) -> (y, out)``: what the ``sum`` and ``output`` taps must
    hold, given the unit's own input, shortcut and branch tensors (the check passes them in
    fp64). ``contrast(unit, y) -> out``, optional: another after-addition
    function the output must *not* match (e.g. the other version's f), so the check shows it
    can tell them apart.

    Use as a context manager around a forward; ``rows`` then holds one dict per unit:
    ``unit, stage, index``; ``error`` (output vs the formula: largest absolute difference
    relative to the formula's root mean square); ``error_sum`` (sum tap vs h + F);
    ``error_contrast`` (output vs ``contrast``, NaN without one); ``identity_shortcut`` (the
    shortcut tap holds the unit's input itself) and the branch output's ``map_h``, ``map_w``.
    """

    def __init__(self, model: nn.Module, formula, contrast=None):
        self.units = tapped_units(model)
        self.formula, self.contrast = formula, contrast
        self.rows, self._handles, self._store = [], [], {}

    def __enter__(self):
        for u, unit in enumerate(self.units):
            for name in TAP_NAMES:
                self._handles.append(unit.taps[name].register_forward_hook(
                    lambda m, a, out, u=u, name=name: self._on_tap(u, name, out)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._store.clear()
        return False

    def _on_tap(self, u, name, t):
        self._store.setdefault(u, {})[name] = t
        if name == "output":
            self.rows.append(self._check(u, self.units[u], self._store.pop(u)))

    @torch.no_grad()
    def _check(self, u, unit, taps):
        identity = taps["shortcut"] is taps["input"]
        x, h, branch, total, out = (taps[k].detach().double() for k in TAP_NAMES)
        y64, out64 = self.formula(unit, x, h, branch)
        scale_y = float(y64.square().mean().sqrt()) or 1.0
        scale_out = float(out64.square().mean().sqrt()) or 1.0
        contrast = float("nan") if self.contrast is None else \
            float((out - self.contrast(unit, y64)).abs().max()) / scale_out
        return {"unit": u, "stage": getattr(unit, "stage", -1), "index": getattr(unit, "index", u),
                "error": float((out - out64).abs().max()) / scale_out,
                "error_sum": float((total - (h + branch)).abs().max()) / scale_y,
                "error_contrast": contrast, "identity_shortcut": identity,
                "map_h": branch.shape[-2], "map_w": branch.shape[-1]}
