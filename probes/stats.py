"""The statistics a SignalProbe records: one declaration each -- its name, the raw sums it
needs, its formula -- and the raw sums every backend computes.

A hook only reads its tensor into a few raw sums, on the tensor's device (``probes.kernels``:
one read by the C module on the CPU, by one Triton launch on CUDA, torch operations
elsewhere); ``step()`` evaluates the formulas below once, for all taps at once, in float64.
For a tensor t with N elements in C channels of M = N / C elements each (batch and space):

* ``s1c``: per channel, the sum of t over its M elements (C values);
* the row ``RAW_ROW``: ``sum_sq`` = sum t^2, ``sign_sum`` = sum sign(t) = n_pos - n_neg,
  ``sign_sq`` = sum sign(t)^2 = n_pos + n_neg. Every backend writes these in this order (the
  C module and the Triton kernels say theirs, and ``probes.kernels`` refuses a mismatch);
* ``cut_energy``: at a unit's output f(y), sum h^2 [f(y) = 0] of its shortcut h, read in the
  same pass where both are laid out alike;
* of a weight layer's input also ``s2c`` (per channel, the sum of t^2); of a unit's parameters
  ``param_sq`` (the sum of their squared gradients);
* of a stage's identity path (``PATH_SUMS``, read by torch operations in ``probes.identity_path``,
  not by the backends): the stage-end gradient's energy ``path_energy`` = sum g^2, the part of it
  on the open path ``path_passed`` = sum g^2 M, and the path's open elements ``path_open`` = sum M
  of ``path_numel``.

Adding a statistic: declare it below. If it needs a raw sum no backend computes yet, add the
sum to ``RAW_ROW`` and to each backend (``tests/test_conformance.py`` names the backend that
lacks it), and give it a float64 reference in that test.
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Callable

import numpy as np
import torch

RAW_ROW = ("sum_sq", "sign_sum", "sign_sq")
# Every raw sum a backend computes (the methods of ``probes.kernels.torch_ops.TorchKernels``).
RAW_SUMS = ("s1c",) + RAW_ROW + ("cut_energy", "s2c", "param_sq")


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One statistic: ``formula(sums)`` gives its value for every slot (or unit, or layer) at
    once from the raw sums in ``needs``."""
    name: str
    needs: tuple
    formula: Callable
    meaning: str


# ---- of every tapped tensor, forward (the activation) and backward (its gradient) ------------

class TensorSums:
    """The raw sums of T slots, and what several formulas share, each computed once.

    ``s1c``: the channel sums of all slots end to end, ``seg[i]`` the slot of channel i;
    ``row``: (len(RAW_ROW), T), the rows the backends wrote; ``count``: M of each slot;
    ``channels``: C of each slot. All float64 (``seg`` int64) on one device.
    """

    def __init__(self, s1c, seg, row, count, channels):
        self.s1c, self.seg, self.count, self.channels = s1c, seg, count, channels
        self.row = dict(zip(RAW_ROW, row))
        self.zeros = torch.zeros(count.shape[0], dtype=s1c.dtype, device=s1c.device)

    def __getattr__(self, name):          # a raw sum of the row by its name: sums.sum_sq
        try:
            return self.__dict__["row"][name]
        except KeyError:
            raise AttributeError(name) from None

    @cached_property
    def n(self):
        return self.count * self.channels

    @cached_property
    def mean(self):
        return self.zeros.index_add(0, self.seg, self.s1c) / self.n

    @cached_property
    def ch_sq_mean(self):
        m = self.s1c / self.count[self.seg]
        return self.zeros.index_add(0, self.seg, m * m) / self.channels


TENSOR = (
    Statistic("rms", ("sum_sq",), lambda s: torch.sqrt(s.sum_sq / s.n), "sqrt(sum t^2 / N)"),
    Statistic("norm", ("sum_sq",), lambda s: torch.sqrt(s.sum_sq),
              "sqrt(sum t^2), the L2 norm of the whole tensor"),
    Statistic("mean", ("s1c",), lambda s: s.mean, "sum t / N"),
    Statistic("std", ("s1c", "sum_sq"), lambda s: torch.sqrt(torch.clamp(s.sum_sq / s.n - s.mean * s.mean, min=0)),
              "sqrt(sum t^2 / N - mean^2), the population standard deviation"),
    Statistic("ch_sq_mean", ("s1c",), lambda s: s.ch_sq_mean,
              "mean over channels of (s1_c / M)^2: the squared channel mean (Brock et al. 2021, SPP)"),
    Statistic("ch_var", ("s1c", "sum_sq"), lambda s: torch.clamp(s.sum_sq / s.n - s.ch_sq_mean, min=0),
              "mean over channels of s2_c / M - (s1_c / M)^2, the channel variance (SPP); "
              "mean_c s2_c / M is sum t^2 / N, so the total suffices"),
    Statistic("frac_neg", ("sign_sum", "sign_sq"), lambda s: (s.sign_sq - s.sign_sum) / (2 * s.n),
              "share of elements < 0"),
    Statistic("frac_zero", ("sign_sq",), lambda s: 1 - s.sign_sq / s.n, "share of elements == 0"),
)


# ---- of a unit's after-addition function f, at its sum tap -----------------------------------

@dataclasses.dataclass(frozen=True)
class UnitStatistic(Statistic):
    """A statistic of f, recorded at a unit's ``sum`` tap in one ``direction``, from the
    statistics of the sum tap and of ``taps`` (measured for it) of the same unit."""
    direction: str = "forward"
    taps: tuple = ()


class UnitSums:
    """Per unit: the L2 norm at each tap of one direction (float64 numpy), the cut energies."""

    def __init__(self, norm_at, cut_energy=None):
        self.norm, self.cut_energy = norm_at, cut_energy


def _shortcut_cut(u):
    energy = u.norm("shortcut") ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(energy > 0, u.cut_energy / energy, 0.0)


def _grad_cut(u):
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (u.norm("sum") / u.norm("output")) ** 2


CUT = (
    UnitStatistic("shortcut_cut", ("cut_energy", "sum_sq"), _shortcut_cut,
                  "sum h^2 [f(y) = 0] / sum h^2: the share of the shortcut h's energy that f zeroes. "
                  "For f = ReLU (V1) the mask is [y <= 0], the article's [y < 0] up to the "
                  "measure-zero set y = 0; where f is the identity (V2) it is 0 exactly",
                  direction="forward", taps=("shortcut",)),
    UnitStatistic("grad_cut", ("sum_sq",), _grad_cut,
                  "1 - ||dL/dy||^2 / ||dL/d out||^2: the share of gradient energy f stops. For V1 "
                  "dL/dy = dL/d out [y > 0]; where f is the identity it is 0 by construction; "
                  "negative where f amplifies the gradient (e.g. BN after the addition)",
                  direction="backward", taps=("output",)),
)


# ---- of a stage's identity path (claim C2 element by element; ``probes.identity_path``) -------

@dataclasses.dataclass(frozen=True)
class PathStatistic(Statistic):
    """A statistic of a stage's identity path, recorded at the ``output`` tap of the stage's
    last unit in one ``direction``; ``taps``: of each unit on the path, measured for it."""
    direction: str = "backward"
    taps: tuple = ()


class PathSums:
    """Per stage with an identity path (float64 numpy): the sums of ``identity_path.SUMS`` --
    ``passed`` = sum g^2 M, ``energy`` = sum g^2 of the gradient g at the stage's end,
    ``open`` = sum M, ``numel`` -- and ``chain_cut``: per stage, the ``grad_cut`` of each unit
    on its path (an array)."""

    def __init__(self, passed, energy, opened, numel, chain_cut=()):
        self.passed, self.energy, self.open, self.numel, self.chain_cut = passed, energy, opened, numel, chain_cut


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


PATH = (
    PathStatistic("path_share", ("path_passed", "path_energy"), lambda p: _ratio(p.passed, p.energy),
                  "sum g^2 M / sum g^2: the share of the gradient energy at a stage's end that passes "
                  "every after-addition function along the identity path, element by element "
                  "(M = prod_k [out_k != 0] over the units of the stage's identity path, 1 where f is "
                  "the identity); NaN without gradient energy", direction="backward"),
    PathStatistic("path_share_indep", ("sum_sq",), lambda p: np.array([np.prod(1 - c) for c in p.chain_cut]),
                  "prod_k (1 - grad_cut_k) over the same units: path_share as C2's product of per-unit "
                  "averages gives it, each unit's share of its own gradient energy, as if the units' "
                  "masks were independent; equal to path_share where the branches carry no gradient "
                  "(the product telescopes), so the two differ by the masks' dependence and the "
                  "branches' gradient between the units", direction="backward", taps=("sum", "output")),
    PathStatistic("path_frac", ("path_open", "path_numel"), lambda p: p.open / p.numel,
                  "mean M: the share of elements whose identity path through the stage is open "
                  "(forward, unweighted by the gradient)", direction="forward"),
)
# The raw sums of PATH: torch operations of ``probes.identity_path`` on any device, not the
# backends' (``RAW_SUMS``): three reductions per stage, not per tensor.
PATH_SUMS = ("path_passed", "path_energy", "path_open", "path_numel")


# ---- of every Conv2d / Linear input (weight_inputs=True; claim C6) --------------------------

class ChannelMoments:
    """The channel means m_c = s1_c / M and variances v_c = s2_c / M - m_c^2 of T layers'
    inputs, and their means over channels; arguments as ``TensorSums``'."""

    def __init__(self, s1c, s2c, seg, count, channels):
        self.seg, self.channels = seg, channels
        self.zeros = torch.zeros(count.shape[0], dtype=s1c.dtype, device=s1c.device)
        per_ch_count = count[seg]
        self.m = s1c / per_ch_count
        self.v = s2c / per_ch_count - self.m * self.m
        self.mean_m = self.over_channels(self.m)
        self.mean_v = self.over_channels(self.v)

    def over_channels(self, x):
        return self.zeros.index_add(0, self.seg, x) / self.channels

    def spread(self, x, mean):
        """The population variance over channels of ``x`` around ``mean``."""
        return self.over_channels((x - mean[self.seg]) ** 2)


WEIGHT_INPUT = (
    Statistic("in_mean_mean", ("s1c",), lambda w: w.mean_m, "mean_c m_c (near 0 for a normalised input)"),
    Statistic("in_mean_var", ("s1c",), lambda w: w.spread(w.m, w.mean_m), "var_c m_c"),
    Statistic("in_var_mean", ("s1c", "s2c"), lambda w: w.mean_v, "mean_c v_c (near 1 for a normalised input)"),
    Statistic("in_var_var", ("s1c", "s2c"), lambda w: w.spread(w.v, w.mean_v), "var_c v_c"),
)

# ---- of a unit's parameters ------------------------------------------------------------------

PARAMS = (Statistic("grad_norm", ("param_sq",), torch.sqrt,
                    "the L2 norm of the gradient of all parameters of a unit (tap ``params``)"),)


# ---- the groups ------------------------------------------------------------------------------

TENSOR_STATS = tuple(s.name for s in TENSOR)
FORWARD_STATS = TENSOR_STATS + tuple(s.name for s in CUT if s.direction == "forward")
BACKWARD_STATS = TENSOR_STATS + tuple(s.name for s in CUT if s.direction == "backward")
WEIGHT_INPUT_STATS = tuple(s.name for s in WEIGHT_INPUT)
PATH_STATS = tuple(s.name for s in PATH)
# A probe's default: every statistic but the identity path's, which are asked for by name (they
# put a Python function in front of the C++ taps and hold a mask per stage: identity_path).
DEFAULT_STATS = tuple(dict.fromkeys(FORWARD_STATS + BACKWARD_STATS + WEIGHT_INPUT_STATS
                                    + tuple(s.name for s in PARAMS)))
ALL_STATS = DEFAULT_STATS + PATH_STATS
DECLARED = {s.name: s for s in TENSOR + CUT + WEIGHT_INPUT + PARAMS + PATH}


def needs(stats) -> set:
    """The raw sums the statistics ``stats`` (names) need."""
    return {raw for name in stats for raw in DECLARED[name].needs}


def tensor_stats(s1c, seg, row, count, channels) -> dict:
    """Every TENSOR statistic of T slots at once (arguments as ``TensorSums``'): name -> (T,)."""
    sums = TensorSums(s1c, seg, row, count, channels)
    return {s.name: s.formula(sums) for s in TENSOR}


def weight_input_stats(s1c, s2c, seg, count, channels) -> dict:
    """Every WEIGHT_INPUT statistic of T layers at once: name -> (T,)."""
    moments = ChannelMoments(s1c, s2c, seg, count, channels)
    return {s.name: s.formula(moments) for s in WEIGHT_INPUT}
