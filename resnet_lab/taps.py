"""Taps: named identity modules that every interesting tensor passes through.

A tap is TransformerLens' HookPoint idea: the model routes a tensor through an
identity module so that any tool (``probes.SignalProbe``) can reach it by name
with ordinary module hooks, without knowing the architecture.
"""
from torch import nn

TAP_NAMES = ("input", "shortcut", "branch", "sum", "output")


class Tap(nn.Module):
    """Identity module; returns its input object unchanged (no copy, no view)."""

    def forward(self, x):
        return x


def make_taps() -> nn.ModuleDict:
    """The five taps every residual unit owns (DESIGN.md, tap contract)."""
    return nn.ModuleDict({name: Tap() for name in TAP_NAMES})
