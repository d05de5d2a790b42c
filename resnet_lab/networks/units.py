"""Residual units written as the formula of He et al. 2016 (arXiv 1603.05027), Fig. 4.

Every unit computes

    h = h(x)            shortcut: identity, zero-padding (option A) or 1x1 projection (option B),
                        or one of He et al. 2016 Table 1's (``resnet_lab.networks.shortcuts``)
    F = F(x)            branch: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1, expansion 4)
    y = h + F           the addition
    out = f(y)          after-addition function: ReLU for the original (V1) unit, identity for
                        full pre-activation (V2)

and routes x, h, F, y and f(y) through its five taps (``unit.taps``, see ``resnet_lab.networks.taps``).

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

from .shortcuts import (BNReLUAfter, Identity, IdentityAfter, ReLUAfter, ZeroPad, make_after,
                        projection)
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
    """A net's final BN-ReLU before pooling."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


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


# the after-addition function of each kind (He et al. 2016 Fig. 4)
KIND_AFTER = {"original": "relu", "bn_after_add": "bn_relu", "relu_before_add": "identity",
              "relu_only_preact": "identity", "full_preact": "identity"}


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
        after: the after-addition function by name (``resnet_lab.networks.shortcuts.AFTERS``);
            default: the kind's (``KIND_AFTER``).
        same_shape: ``(channels, unit_kind) -> Shortcut``, the shortcut where the shape does not
            change (a ``resnet_lab.networks.shortcuts.Variant``'s); default: the identity.

    ``unit.shortcut`` (h, a ``resnet_lab.networks.shortcuts.Shortcut``) and ``unit.after`` (f, an
    ``Activation``) declare their formulas; ``reference_formula`` reads them.
    """

    def __init__(self, unit_kind, block, in_channels, out_channels, stride=1, shortcut="B",
                 stage=1, index=0, stride_on_3x3=False, shared_preact=True, projection_bn=None,
                 after=None, same_shape=None):
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
        chosen = shortcut if changes_shape else "identity"
        share = unit_kind in PREACT_KINDS and chosen == "B" and shared_preact
        self.taps = make_taps()
        # modules are made in this order (preact, branch, shortcut, after): the order in which
        # construction draws random numbers, hence every net's initial weights
        if share:
            self.preact = BNReLUAfter(in_channels) if unit_kind == "full_preact" else ReLUAfter()
        else:
            self.preact = nn.Identity()
        self.branch = _branch(unit_kind, _weight_layers(block, in_channels, out_channels, stride,
                                                   stride_on_3x3), share)
        self.shortcut = self._make_shortcut(chosen, unit_kind, projection_bn, same_shape)
        self.after = make_after(KIND_AFTER[unit_kind] if after is None else after, out_channels)
        self.shares_preact = share

    @property
    def shortcut_kind(self) -> str:
        """The shortcut's name in tables: ``identity``, ``A``, ``B`` (or a variant's)."""
        return self.shortcut.kind

    def _make_shortcut(self, chosen, unit_kind, projection_bn, same_shape):
        if chosen == "identity":
            return Identity() if same_shape is None else same_shape(self.out_channels, unit_kind)
        if chosen == "A":
            return ZeroPad(self.in_channels, self.out_channels, self.stride)
        if projection_bn is None:
            projection_bn = unit_kind not in PREACT_KINDS
        return projection(self.in_channels, self.out_channels, self.stride, bn=projection_bn)

    def forward(self, x):
        x = self.taps.input(x)
        a = self.preact(x)
        h, weight = self.shortcut.mix(a if self.shares_preact else x)
        h = self.taps.shortcut(h)
        branch = self.branch(a)
        branch = self.taps.branch(branch if weight is None else weight * branch)
        y = self.taps.sum(h + branch)
        return self.taps.output(self.after(y))

    def extra_repr(self):
        return (f"unit_kind={self.unit_kind}, block={self.block}, stage={self.stage}, "
                f"index={self.index}, "
                f"{self.in_channels}->{self.out_channels}, stride={self.stride}, "
                f"shortcut={self.shortcut_kind}, after={self.after.kind}")


@torch.no_grad()
def reference_formula(unit: ResidualUnit, x, h, branch):
    """What the unit's ``sum`` and ``output`` taps must hold, from its input ``x`` and branch
    ``F`` taps: ``(y, out)`` with ``y = h(x) + F`` and ``out = f(y)``, where h and f are the
    formulas its shortcut and after-addition function declare (``reference``, written from
    the paper in plain torch; a shared pre-activation's too) -- not the shortcut tap ``h``, so
    a shortcut that computes something else than it declares shows, and not the modules' code,
    so tests and the C1 check compare the taps against the formula, not the code against
    itself. ValueError for a module that declares no formula.
    """
    for name in ("shortcut", "after") + (("preact",) if unit.shares_preact else ()):
        if not callable(getattr(getattr(unit, name), "reference", None)):
            raise ValueError(f"unit.{name} ({type(getattr(unit, name)).__name__}) declares no "
                             "formula; use the modules of resnet_lab.networks.shortcuts")
    source = unit.preact.reference(x) if unit.shares_preact else x
    y = unit.shortcut.reference(source) + branch
    return y, unit.after.reference(y)
