"""Shortcuts h(x) and after-addition functions f(y), each a small module that declares its formula.

A residual unit computes ``out = f(h(x) + F(x))`` (``resnet_lab.units``). What varies between
He et al.'s designs is which h and which f; each is a module here that says, beside the code
that computes it:

* ``kind``: its name in tables (``units.csv``'s ``shortcut_kind``);
* ``formula``: one line for docs and reports;
* ``reference(...)``: the formula written from the paper in plain torch, not by calling the
  module, so the formula check (``units.reference_formula``, ``probes.FormulaCheck``) compares
  the taps with the paper, not the code with itself.

A shortcut's ``mix(x) -> (h, w)`` gives h and the weight its unit multiplies the branch F
with before the addition (``None``: F as it is); only the variants of He et al. 2016 Table 1
that scale the branch (constant scaling, exclusive gating) return one. The unit's ``branch``
tap holds the weighted F, so ``sum = shortcut + branch`` holds for every shortcut.

Nothing here modifies a tensor in place (the tap contract).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---- shortcuts ---------------------------------------------------------------------------

class Shortcut(nn.Module):
    """Base of every shortcut: ``mix`` and the declaration (``kind``, ``formula``,
    ``branch_formula``, ``reference``)."""
    kind = "identity"
    formula = "h = x"
    branch_formula = "F"

    def mix(self, x):
        """(h, weight of the branch F or None); a subclass that weighs the branch overrides it."""
        return self(x), None

    def reference(self, x):
        """h(x) from the paper, in plain torch, in ``x``'s dtype."""
        raise NotImplementedError


class Identity(Shortcut):
    """The identity shortcut, h = x: the same tensor object passes (the tap contract's
    ``identity_shortcut``: the shortcut tap *is* the input tap)."""

    def forward(self, x):
        return x

    def reference(self, x):
        return x


class ZeroPad(Shortcut):
    """Option A of He et al. 2015: subsample by ``stride``, pad the new channels with zeros.

    It has no parameters, so the CIFAR nets keep the published parameter counts.
    """
    kind = "A"
    formula = "h = [x[::s, ::s]; 0] (option A: subsample, zero channels)"

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def reference(self, x):
        sub = x[:, :, :: self.stride, :: self.stride]
        zeros = sub.new_zeros(sub.shape[0], self.extra, *sub.shape[2:])
        return torch.cat([sub, zeros], dim=1)

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.extra}"


def _conv1x1_reference(conv: nn.Conv2d, x):
    bias = None if conv.bias is None else conv.bias.to(x.dtype)
    return F.conv2d(x, conv.weight.to(x.dtype), bias, conv.stride)


def batch_norm_reference(bn: nn.BatchNorm2d, y):
    """BN as the paper writes it: batch statistics (biased variance) in training, running
    averages in evaluation, then the affine map."""
    if bn.training:
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = bn.running_mean.to(y.dtype).view(1, -1, 1, 1)
        var = bn.running_var.to(y.dtype).view(1, -1, 1, 1)
    normed = (y - mean) / torch.sqrt(var + bn.eps)
    return normed * bn.weight.to(y.dtype).view(1, -1, 1, 1) + bn.bias.to(y.dtype).view(1, -1, 1, 1)


class Projection(Shortcut, nn.Sequential):
    """Option B of He et al. 2015 with BN: h = BN(W x), W a 1x1 convolution of ``stride``
    (a Sequential, so its parameters keep the names ``shortcut.0.weight``, ``shortcut.1.*``)."""
    kind = "B"
    formula = "h = BN(W_s x) (option B: 1x1 conv, BN)"

    def __init__(self, in_channels, out_channels, stride, kind="B"):
        nn.Sequential.__init__(self, nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                               nn.BatchNorm2d(out_channels))
        self.kind = kind

    def reference(self, x):
        return batch_norm_reference(self[1], _conv1x1_reference(self[0], x))


class BareProjection(Shortcut, nn.Conv2d):
    """Option B without BN, as the official pre-activation code: h = W x, W a 1x1 convolution
    (the module *is* the convolution, so its weight keeps the name ``shortcut.weight``)."""
    kind = "B"
    formula = "h = W_s x (option B: 1x1 conv)"

    def __init__(self, in_channels, out_channels, stride, kind="B"):
        nn.Conv2d.__init__(self, in_channels, out_channels, 1, stride, 0, bias=False)
        self.kind = kind

    def reference(self, x):
        return _conv1x1_reference(self, x)


def projection(in_channels, out_channels, stride, *, bn: bool, kind="B") -> Shortcut:
    """A 1x1-convolution shortcut, with or without BN."""
    cls = Projection if bn else BareProjection
    return cls(in_channels, out_channels, stride, kind=kind)


# ---- after-addition functions (also a unit's shared pre-activation) -----------------------

class Activation(nn.Module):
    """Base of the functions a unit applies after the addition (f) or, shared by both paths,
    before them: ``kind``, ``formula``, ``reference(y)``."""
    kind = "identity"
    formula = "f(y) = y"

    def reference(self, y):
        raise NotImplementedError


class ReLUAfter(Activation, nn.ReLU):
    """f(y) = max(y, 0): the original unit (V1)."""
    kind = "relu"
    formula = "f(y) = max(y, 0)"

    def reference(self, y):
        return torch.relu(y)


class IdentityAfter(Activation, nn.Identity):
    """f(y) = y: the pre-activation units (V2) and relu_before_add."""

    def reference(self, y):
        return y


class BNReLUAfter(Activation, nn.Sequential):
    """f(y) = ReLU(BN(y)) (He et al. 2016 Fig. 4(b), and a pre-activation unit's shared
    BN-ReLU): a Sequential, so its parameters keep the names ``after.0.*``."""
    kind = "bn_relu"
    formula = "f(y) = max(BN(y), 0)"

    def __init__(self, channels):
        nn.Sequential.__init__(self, nn.BatchNorm2d(channels), nn.ReLU())

    def reference(self, y):
        return torch.relu(batch_norm_reference(self[0], y))


AFTERS = {"relu": ReLUAfter, "identity": IdentityAfter, "bn_relu": BNReLUAfter}


def make_after(name: str, channels: int) -> Activation:
    """The after-addition function called ``name`` (one of ``AFTERS``)."""
    if name not in AFTERS:
        raise ValueError(f"unknown after-addition function {name!r}; valid: {', '.join(AFTERS)}")
    return BNReLUAfter(channels) if name == "bn_relu" else AFTERS[name]()
