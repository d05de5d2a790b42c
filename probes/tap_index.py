"""Where a model's taps lie: one slot per (unit, tap), found once through the tap contract.

A unit's five taps occupy consecutive slots, in ``TAP_NAMES`` order: slot = unit * PER_UNIT +
position. The probe's buffers, its C++ taps and its rows all use these numbers.
"""
from __future__ import annotations

import torch

from resnet_lab.networks.taps import TAP_INDEX, TAP_NAMES, tapped_units

PER_UNIT = len(TAP_NAMES)
INPUT, SHORTCUT, SUM, OUTPUT = TAP_INDEX["input"], TAP_INDEX["shortcut"], TAP_INDEX["sum"], TAP_INDEX["output"]


class TapIndex:
    """The units of ``model`` (``tapped_units``), their taps' slots and their parameters.

    ``slot_meta[slot]``: (unit number, stage, index, tap name, module name); ``tap_slot``: Tap
    module -> slot; ``unit_of``: id of any module inside a unit -> the unit's number;
    ``params``: the trainable parameters of every unit, ``param_unit`` / ``param_numel`` (int64)
    their unit and size.
    """

    def __init__(self, model):
        units = tapped_units(model)
        names = {m: n for n, m in model.named_modules()}
        self.units = units
        self.unit_of = {id(m): u for u, unit in enumerate(units) for m in unit.modules()}
        self.slot_meta = []
        self.tap_slot = {}
        for u, unit in enumerate(units):
            for tap in TAP_NAMES:
                module = unit.taps[tap]
                self.tap_slot[module] = len(self.slot_meta)
                self.slot_meta.append((u, getattr(unit, "stage", -1), getattr(unit, "index", u),
                                       tap, names.get(module, "")))
        params = [(u, p) for u, unit in enumerate(units) for p in unit.parameters() if p.requires_grad]
        self.params = [p for _, p in params]
        self.param_unit = torch.tensor([u for u, _ in params], dtype=torch.int64)
        self.param_numel = torch.tensor([p.numel() for _, p in params], dtype=torch.int64)

    @property
    def n_slots(self) -> int:
        return len(self.slot_meta)

    def unit_meta(self, u, tap, layer=""):
        """The row labels (unit, stage, index, tap, layer) of unit ``u``, or of the stem and
        classifier (u = -1)."""
        if u < 0:
            return (-1, -1, -1, tap, layer)
        return (u, *self.slot_meta[u * PER_UNIT][1:3], tap, layer)
