"""Residual units written as the formula of He et al. 2016 (arXiv 1603.05027), Fig. 4.

Every unit computes

    h = h(x)            shortcut: identity, zero-padding (option A) or 1x1 projection (option B)
    F = F(x)            branch: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1, expansion 4)
    y = h + F           the addition
    out = f(y)          after-addition function: ReLU for the original (V1) unit, identity for
                        full pre-activation (V2)

and routes x, h, F, y and f(y) through its five taps (``unit.taps``, see ``resnet_lab.taps``).

The five unit kinds of Fig. 4 differ only in where BN and ReLU sit:

==================  ===============================================  ==============
kind                branch F (basic; bottleneck has three weights)   f (after add)
==================  ===============================================  ==============
original      (a)   conv-BN-ReLU-conv-BN                             ReLU
bn_after_add  (b)   conv-BN-ReLU-conv                                BN-ReLU
relu_before_add (c) conv-BN-ReLU-conv-BN-ReLU                        identity
relu_only_preact(d) ReLU-conv-BN-ReLU-conv-BN                        identity
full_preact   (e)   BN-ReLU-conv-BN-ReLU-conv                        identity
==================  ===============================================  ==============

Two details follow the official pre-activation code (KaimingHe/resnet-1k-layers):
a pre-activation unit that changes dimensions with a projection shortcut applies its
leading activation once and feeds the result to both the branch and the projection
(``shared_preact``); and a projection is conv1x1+BN for the post-activation kinds (a)-(c)
and the bare conv1x1 for the pre-activation kinds (d), (e).
Nothing here modifies a tensor in place (the tap contract).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .taps import make_taps

UNIT_KINDS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
VERSIONS = (1, 2)                                   # V1 = post-activation, V2 = pre-activation
VERSION_UNIT_KINDS = {1: "original", 2: "full_preact"}
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B")
PREACT_KINDS = ("relu_only_preact", "full_preact")
BOTTLENECK_EXPANSION = 4


def resolve_unit_kind(version=None, unit_kind=None) -> str:
    """Turn ``version`` (1 or 2) or ``unit_kind`` (a kind name) into a unit kind name."""
    if version is not None and unit_kind is not None:
        if VERSION_UNIT_KINDS.get(as_version(version)) != unit_kind:
            raise ValueError(f"version={version!r} and unit_kind={unit_kind!r} disagree; "
                             "give one of them")
    if unit_kind is not None:
        if unit_kind not in UNIT_KINDS:
            raise ValueError(f"unknown unit kind {unit_kind!r}; valid: {', '.join(UNIT_KINDS)}")
        return unit_kind
    if version is None:
        raise ValueError("give version=1|2 or unit_kind=" + "|".join(UNIT_KINDS))
    return VERSION_UNIT_KINDS[as_version(version)]


def version_of(unit_kind: str):
    """1 for the original unit, 2 for full pre-activation, None for the other kinds."""
    return next((v for v, kind in VERSION_UNIT_KINDS.items() if kind == unit_kind), None)


def as_version(version) -> int:
    text = str(version).lower().lstrip("v")
    if text not in ("1", "2"):
        raise ValueError(f"unknown version {version!r}; valid: 1, 2 (or v1, v2)")
    return int(text)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, 0, bias=False)


def bn_relu(channels):
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


class ZeroPadShortcut(nn.Module):
    """Option A of He et al. 2015: subsample by ``stride``, pad the new channels with zeros.

    It has no parameters, so the CIFAR nets keep the published parameter counts.
    """

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.extra}"


def _weight_layers(block, cin, cout, stride, stride_on_3x3):
    """The branch's convolutions in order, with where the stride goes.

    The official CIFAR bottleneck strides its first 1x1 conv; torchvision's ImageNet
    bottleneck (ResNet "v1.5") strides the 3x3 conv.
    """
    if block == "basic":
        return [conv3x3(cin, cout, stride), conv3x3(cout, cout)]
    mid = cout // BOTTLENECK_EXPANSION
    s1, s3 = (1, stride) if stride_on_3x3 else (stride, 1)
    return [conv1x1(cin, mid, s1), conv3x3(mid, mid, s3), conv1x1(mid, cout)]


def _branch(unit_kind, convs, share_preact):
    """Arrange BN and ReLU around the weight layers as in Fig. 4 of He et al. 2016."""
    layers = []
    last = len(convs) - 1
    for i, conv in enumerate(convs):
        cin, cout = conv.in_channels, conv.out_channels
        if unit_kind == "full_preact" and not (i == 0 and share_preact):
            layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        if unit_kind == "relu_only_preact" and not (i == 0 and share_preact):
            layers += [nn.ReLU()]
        layers.append(conv)
        if unit_kind == "relu_only_preact":
            layers.append(nn.BatchNorm2d(cout))
        if unit_kind in ("original", "bn_after_add", "relu_before_add"):
            if i < last or unit_kind in ("original", "relu_before_add"):
                layers.append(nn.BatchNorm2d(cout))
            if i < last or unit_kind == "relu_before_add":
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _after_addition(unit_kind, channels):
    if unit_kind == "original":
        return nn.ReLU()
    if unit_kind == "bn_after_add":
        return bn_relu(channels)
    return nn.Identity()


class ResidualUnit(nn.Module):
    """One residual unit: ``out = f(h(x) + F(x))`` with the five taps.

    Args:
        unit_kind: one of ``UNIT_KINDS``.
        block: ``"basic"`` or ``"bottleneck"``.
        in_channels, out_channels, stride: the unit's shape change.
        shortcut: ``"A"`` (zero-padding) or ``"B"`` (projection) when the shape changes;
            an identity shortcut is used whenever it does not.
        stage, index: where the unit sits (stage counted from 1, index within the stage from 0).
        stride_on_3x3: bottleneck only, see ``_weight_layers``.
        shared_preact: a pre-activation unit with a projection shortcut applies its leading
            activation once to feed both paths (official resnet-1k-layers). ``False``
            reproduces the article's V2 unit, whose projection sees the raw input.
        projection_bn: whether the projection ends with BN; default: for kinds (a)-(c) only.
    """

    def __init__(self, unit_kind, block, in_channels, out_channels, stride=1, shortcut="B",
                 stage=1, index=0, stride_on_3x3=False, shared_preact=True, projection_bn=None):
        super().__init__()
        if unit_kind not in UNIT_KINDS:
            raise ValueError(f"unknown unit kind {unit_kind!r}; valid: {', '.join(UNIT_KINDS)}")
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid: {', '.join(BLOCKS)}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: A (zero-padding), B (projection)")
        self.unit_kind, self.block, self.stage, self.index = unit_kind, block, stage, index
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut_kind = "identity" if not changes_shape else shortcut
        share = unit_kind in PREACT_KINDS and self.shortcut_kind == "B" and shared_preact
        self.taps = make_taps()
        if share:
            self.preact = bn_relu(in_channels) if unit_kind == "full_preact" else nn.ReLU()
        else:
            self.preact = nn.Identity()
        self.branch = _branch(unit_kind, _weight_layers(block, in_channels, out_channels, stride,
                                                   stride_on_3x3), share)
        self.shortcut = self._make_shortcut(unit_kind, projection_bn)
        self.after = _after_addition(unit_kind, out_channels)
        self.shares_preact = share

    def _make_shortcut(self, unit_kind, projection_bn):
        if self.shortcut_kind == "identity":
            return nn.Identity()
        if self.shortcut_kind == "A":
            return ZeroPadShortcut(self.in_channels, self.out_channels, self.stride)
        if projection_bn is None:
            projection_bn = unit_kind not in PREACT_KINDS
        proj = conv1x1(self.in_channels, self.out_channels, self.stride)
        return nn.Sequential(proj, nn.BatchNorm2d(self.out_channels)) if projection_bn else proj

    def forward(self, x):
        x = self.taps.input(x)
        a = self.preact(x)
        h = self.taps.shortcut(self.shortcut(a if self.shares_preact else x))
        branch = self.taps.branch(self.branch(a))
        y = self.taps.sum(h + branch)
        return self.taps.output(self.after(y))

    def extra_repr(self):
        return (f"unit_kind={self.unit_kind}, block={self.block}, stage={self.stage}, "
                f"index={self.index}, "
                f"{self.in_channels}->{self.out_channels}, stride={self.stride}, "
                f"shortcut={self.shortcut_kind}")


@torch.no_grad()
def reference_formula(unit: ResidualUnit, x, h, branch):
    """What the unit's ``sum`` and ``output`` taps must hold, from its input ``x``, shortcut
    ``h`` and branch ``F`` taps: ``(y, out)`` with ``y = x + F`` where the shortcut is the
    identity (so a shortcut that is not shows), ``y = h + F`` where it is a projection or
    zero-padding, and ``out = f(y)`` with f written out here from the paper (not taken from
    ``unit.after``) -- so tests and the C1 check compare the taps against the formula, not the
    code against itself.
    """
    y = (x if unit.shortcut_kind == "identity" else h) + branch
    if unit.unit_kind == "original":
        out = torch.relu(y)
    elif unit.unit_kind == "bn_after_add":
        bn = unit.after[0]
        if bn.training:
            mean = y.mean(dim=(0, 2, 3), keepdim=True)
            var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        else:
            mean = bn.running_mean.view(1, -1, 1, 1)
            var = bn.running_var.view(1, -1, 1, 1)
        normed = (y - mean) / torch.sqrt(var + bn.eps)
        out = torch.relu(normed * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    else:
        out = y
    return y, out
