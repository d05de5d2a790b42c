"""The network families: CIFAR ResNets (He et al. 2015/2016), ImageNet ResNets, and the article's pair.

Every network is a ``ResNet``: a stem, stages of ``ResidualUnit`` s, an optional final
BN-ReLU (pre-activation nets need one, since their last unit's output is an unactivated
sum), global average pooling and a linear classifier. ``net.units()`` lists the units in
order; each knows its ``stage`` and ``index``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .shortcuts import variant
from .units import BOTTLENECK_EXPANSION, PREACT_KINDS, ResidualUnit, bn_relu, resolve_unit_kind

BASIC_CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)       # He et al. 2015, Table 6
BOTTLENECK_CIFAR_DEPTHS = (164, 1001)                  # He et al. 2016, Table 3
IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)), 200: ("bottleneck", (3, 24, 36, 3)),
}


class ResNet(nn.Module):
    """stem -> stages of residual units -> final activation -> global pool -> linear.

    ``grad_checkpointing = True`` recomputes each unit's activations in the backward pass
    (``torch.utils.checkpoint``, non-reentrant) so a 1001-layer net fits in little memory;
    BN running statistics are updated once per step, not again in the recomputation.
    """

    def __init__(self, stem, stages, final, features, num_classes, *, name="resnet"):
        super().__init__()
        self.name = name
        self.stem = stem
        self.stages = nn.ModuleList(nn.Sequential(*units) for units in stages)
        self.final = final
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, num_classes)
        self.grad_checkpointing = False

    def units(self) -> list[ResidualUnit]:
        """The residual units in order (the tap contract, ``resnet_lab.networks.taps``)."""
        return [unit for stage in self.stages for unit in stage]

    def forward(self, x):
        x = self.stem(x)
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for unit in self.units():
            if recompute:
                x = checkpoint(unit, x, use_reentrant=False,
                               context_fn=lambda u=unit: (contextlib.nullcontext(), _frozen_bn_stats(u)))
            else:
                x = unit(x)
        x = self.pool(self.final(x)).flatten(1)
        return self.fc(x)


@contextlib.contextmanager
def _frozen_bn_stats(module):
    """During a checkpoint's recomputation, keep BN running statistics as they are.

    With momentum 0 the running-average update is a no-op (and the batch counter is put
    back); the batch statistics used for the output are the same as in the first forward,
    so gradients are unchanged.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, (momentum, tracked) in zip(bns, saved):
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)


def _stages(unit_kind, block, widths, counts, first_in, first_stride, **unit_args):
    stages, cin = [], first_in
    for s, (width, count) in enumerate(zip(widths, counts), start=1):
        units = []
        for i in range(count):
            stride = (first_stride if s == 1 else 2) if i == 0 else 1
            units.append(ResidualUnit(unit_kind, block, cin, width, stride, stage=s, index=i, **unit_args))
            cin = width
        stages.append(units)
    return stages


def he_fan_out_init(net: nn.Module):
    """He et al. 2015 initialisation as the official code does it: N(0, 2 / (k*k*out_channels))
    for convolutions, BN weight 1 and bias 0; linear layers keep PyTorch's default."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def valid_cifar_depths(block):
    """Depth rule: 6n+2 for basic units (two weight layers), 9n+2 for bottleneck units (three)."""
    return (lambda d: d >= 8 and (d - 2) % 6 == 0) if block == "basic" else (lambda d: d >= 11 and (d - 2) % 9 == 0)


def _nearest(depth, ok):
    below = next((d for d in range(depth, 0, -1) if ok(d)), None)
    above = next(d for d in range(depth, depth + 20) if ok(d))
    return [d for d in (below, above) if d is not None]


def resolve_cifar_block(depth: int, block: str = "auto") -> str:
    """Pick the unit block for a CIFAR depth.

    ``block="auto"``: depths of the paper's bottleneck nets (164, 1001) and any other depth
    that only 9n+2 allows resolve to ``bottleneck``; every other 6n+2 depth resolves to
    ``basic``. 56 and 110 are valid for both kinds and resolve to ``basic`` (He et al. 2015
    trains them so); 164 is valid for both and resolves to ``bottleneck`` (He et al. 2016).
    Pass ``block`` explicitly to get the other block.
    """
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    basic_ok, bottleneck_ok = valid_cifar_depths("basic"), valid_cifar_depths("bottleneck")
    if block == "auto":
        if depth in BOTTLENECK_CIFAR_DEPTHS or (bottleneck_ok(depth) and not basic_ok(depth)):
            return "bottleneck"
        if basic_ok(depth):
            return "basic"
    elif block == "basic" and basic_ok(depth):
        return "basic"
    elif block == "bottleneck" and bottleneck_ok(depth):
        return "bottleneck"
    elif block not in ("basic", "bottleneck"):
        raise ValueError(f"unknown block {block!r}; valid: auto, basic, bottleneck")
    blocks = ("basic", "bottleneck") if block == "auto" else (block,)
    hints = "; ".join(
        f"nearest {b} (" + ("6n+2" if b == "basic" else "9n+2") + "): "
        + ", ".join(map(str, _nearest(depth, valid_cifar_depths(b))))
        for b in blocks)
    raise ValueError(f"no CIFAR ResNet of depth {depth} with block={block}; {hints}")


def _with_variant(unit_kind, after, shortcut_variant):
    """(after, same-shape shortcut, final BN-ReLU?) of a net whose units have ``unit_kind``,
    changed by the ``shortcut_variant`` named (``resnet_lab.networks.shortcuts.VARIANTS``)."""
    final_bn_relu = unit_kind not in ("original", "bn_after_add")
    if shortcut_variant is None:
        return after, None, final_bn_relu
    change = variant(shortcut_variant, unit_kind)
    if change.after is not None:
        if after is not None and after != change.after:
            raise ValueError(f"after={after!r} and shortcut_variant={shortcut_variant!r} "
                             f"(after={change.after!r}) disagree; give one of them")
        after = change.after
    if change.final_bn_relu is not None:
        final_bn_relu = change.final_bn_relu
    return after, change.same_shape, final_bn_relu


# the options of ``cifar_resnet`` a sweep cell may name as factors (``resnet_lab.runs.sweep.build``)
NETWORK_OPTIONS = ("shortcut", "after", "shortcut_variant")


def cifar_resnet(depth, version=None, unit_kind=None, num_classes=10, width=16, in_channels=3,
                 block="auto", shortcut=None, after=None, shortcut_variant=None):
    """A CIFAR ResNet of ``depth`` layers (weight layers: stem + units + classifier).

    Basic units (depth 6n+2, n units per stage): a 3x3 stem conv to ``width`` channels and
    three stages of width, 2*width, 4*width channels; shortcut option A (zero-padding), so
    the paper's ResNet-110 has 1.7M parameters (He et al. 2015, Table 6).

    Bottleneck units (depth 9n+2): as the official resnet-1k-layers ResNet-164/1001: a 3x3
    stem conv to ``width`` channels, stages of 4*width, 8*width, 16*width output channels
    (64/128/256 at width 16), the stride on each stage's first 1x1 conv, projection
    shortcuts (option B) where the shape changes.

    Unit kind from ``version`` (1 = original, 2 = full_preact) or ``unit_kind`` (any of the five).
    Post-activation kinds get a conv-BN-ReLU stem; pre-activation kinds a bare conv stem (their
    first unit normalises it) and a final BN-ReLU before pooling, as the official code.
    ``block``: see ``resolve_cifar_block`` for which depths ``"auto"`` resolves and how.
    ``shortcut``: ``"A"`` or ``"B"`` where the shape changes (default: the block's, above).
    ``after``: every unit's after-addition function by name (``resnet_lab.networks.shortcuts.AFTERS``);
    default: the unit kind's.
    ``shortcut_variant``: a name of ``resnet_lab.networks.shortcuts.VARIANTS`` (He et al. 2016 Table 1's
    shortcuts on every unit that keeps its shape; V1 without its after-addition ReLU; V1 with a
    final BN-ReLU). ValueError naming the valid ones.
    Init: He fan-out for convolutions (the official code's).
    """
    unit_kind = resolve_unit_kind(version, unit_kind)
    block = resolve_cifar_block(depth, block)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if shortcut is None:
        shortcut = "A" if block == "basic" else "B"
    per_unit = 2 if block == "basic" else 3
    n = (depth - 2) // (3 * per_unit)
    factor = 1 if block == "basic" else BOTTLENECK_EXPANSION
    widths = [width * factor * m for m in (1, 2, 4)]
    preact = unit_kind in PREACT_KINDS
    stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
    if not preact:
        stem = nn.Sequential(stem, nn.BatchNorm2d(width), nn.ReLU())
    after, same_shape, final_bn_relu = _with_variant(unit_kind, after, shortcut_variant)
    stages = _stages(unit_kind, block, widths, [n] * 3, width, 1, shortcut=shortcut, after=after,
                     same_shape=same_shape)
    final = bn_relu(widths[-1]) if final_bn_relu else nn.Identity()
    net = ResNet(stem, stages, final, widths[-1], num_classes,
                 name=f"cifar_resnet{depth}_{unit_kind}")
    return he_fan_out_init(net)


def imagenet_resnet(depth, version=None, unit_kind=None, num_classes=1000, in_channels=3):
    """An ImageNet ResNet (18/34/50/101/152/200).

    Version 1 is torchvision's architecture (ResNet "v1.5": bottleneck stride on the 3x3
    conv; projection shortcuts conv1x1+BN where the shape changes) with its parameter
    counts (ResNet-34: 21,797,672). Pre-activation kinds add the final BN-ReLU and share
    the dimension-changing unit's BN-ReLU with its projection (He et al. 2016).
    """
    unit_kind = resolve_unit_kind(version, unit_kind)
    if depth not in IMAGENET_LAYERS:
        valid = ", ".join(map(str, IMAGENET_LAYERS))
        raise ValueError(f"no ImageNet ResNet of depth {depth!r}; valid: {valid}")
    block, counts = IMAGENET_LAYERS[depth]
    factor = 1 if block == "basic" else BOTTLENECK_EXPANSION
    widths = [64 * factor * m for m in (1, 2, 4, 8)]
    stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                         nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    stages = _stages(unit_kind, block, widths, counts, 64, 1, shortcut="B", stride_on_3x3=True)
    final = bn_relu(widths[-1]) if unit_kind not in ("original", "bn_after_add") else nn.Identity()
    net = ResNet(stem, stages, final, widths[-1], num_classes,
                 name=f"imagenet_resnet{depth}_{unit_kind}")
    return he_fan_out_init(net)


def _article_resnet34(unit_kind, final, num_classes):
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                         nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    stages = _stages(unit_kind, "basic", (64, 128, 256, 512), (3, 4, 6, 3), 64, 1, shortcut="B",
                     shared_preact=False, projection_bn=True)
    return ResNet(stem, stages, final, 512, num_classes, name=f"resnet34_{unit_kind}")


def resnet34_v1(num_classes=1000):
    """The article's ``ResNet34V1``, faithful to it with its defects fixed:

    1. ``ResidualBlockV1.forward`` computed ``relu(out)`` and returned nothing: it returns it.
    2. ``make_layer`` built a conv1x1+BN projection for every stage's first block, also
       layer1's 64->64 stride-1 one that needs none: layer1 now has identity shortcuts
       (this makes it torchvision's ResNet-34, 21,797,672 parameters).
    3. ``F.avg_pool2d(x, 7)`` tied the net to 224x224 input: adaptive average pooling.
    4. ``out += residual`` after an in-place ReLU modified tensors in place: the sum is
       out of place (the tap contract), which changes no number.
    5. ``import functional as F`` could not import: ``torch.nn.functional``.
    Initialisation is PyTorch's default, as in the article.
    """
    return _article_resnet34("original", nn.Identity(), num_classes)


def resnet34_v2(num_classes=1000):
    """The article's ``ResNet34V2``, faithful to it with its defects fixed:

    1. The last unit's output is an unnormalised sum fed straight to pooling: a final
       BN-ReLU is added (He et al. 2016, Sec. 4: "an extra activation after the
       final element-wise addition").
    2. layer1's unneeded projection is gone, as in ``resnet34_v1``.
    3. Adaptive average pooling instead of the fixed 7x7 one.
    4. In-place ``out += residual`` replaced by an out-of-place sum; ``functional`` import fixed.
    Kept from the article: the projection (conv1x1+BN) sees the raw input x, not the
    unit's pre-activation, and the stem keeps its BN-ReLU.
    """
    return _article_resnet34("full_preact", bn_relu(512), num_classes)
