"""Taps: the contract between the networks and every instrument.

A tap is TransformerLens' HookPoint idea: the model routes a tensor through an identity
module so that any tool (``probes.SignalProbe``, ``probes.FormulaCheck``) can reach it by
name with ordinary module hooks, without knowing the architecture.

The contract (docs/DESIGN.md):

* every residual unit owns ``unit.taps``, a ModuleDict with exactly ``TAP_NAMES``, in the
  order the unit's forward passes them: ``x -> input``, ``h(x) -> shortcut``,
  ``F(x) -> branch``, ``y = h + F -> sum``, ``f(y) -> output``;
* every unit knows its ``stage`` (from 1) and ``index`` (within the stage, from 0);
* a network lists its units in order with ``net.units()``; ``tapped_units(model)`` finds them
  in any model (also one whose blocks were tapped after the fact);
* nothing modifies a tensor in place after it passed a tap.
"""
from torch import nn

TAP_NAMES = ("input", "shortcut", "branch", "sum", "output")
TAP_INDEX = {name: i for i, name in enumerate(TAP_NAMES)}   # a tap's position within its unit


class Tap(nn.Module):
    """Identity module; returns its input object unchanged (no copy, no view)."""

    def forward(self, x):
        return x


def make_taps() -> nn.ModuleDict:
    """The five taps every residual unit owns."""
    return nn.ModuleDict({name: Tap() for name in TAP_NAMES})


def is_tapped_unit(module: nn.Module) -> bool:
    taps = getattr(module, "taps", None)
    return (isinstance(taps, nn.ModuleDict) and tuple(taps.keys()) == TAP_NAMES
            and all(isinstance(t, Tap) for t in taps.values()))


def tapped_units(model: nn.Module) -> list:
    """The residual units of ``model`` in order: ``model.units()`` where the model has it,
    else every submodule that owns the five taps, in module order. ValueError if none."""
    units = list(model.units()) if callable(getattr(model, "units", None)) else \
        [m for m in model.modules() if is_tapped_unit(m)]
    if not units or not all(is_tapped_unit(u) for u in units):
        raise ValueError(f"{type(model).__name__} has no tapped residual units (modules owning "
                         f"unit.taps with {', '.join(TAP_NAMES)}); build it from resnet_lab "
                         "units or tap its blocks with probes.tap_model")
    return units
