"""Tap a ResNet you did not build, so that ``SignalProbe(model)`` works on it unchanged.

    from probes.tapping import tap_model
    handle = tap_model(model)          # e.g. torchvision.models.resnet50(), timm resnetv2_50
    with SignalProbe(model) as probe:
        ...
    handle.remove()                    # or untap_model(model): the model is as it was

``tap_model`` finds the residual blocks it knows by their class name and attributes, gives
each the five taps of the tap contract (``resnet_lab.taps``: ``unit.taps`` with input,
shortcut, branch, sum, output, and ``stage`` / ``index``) and replaces its ``forward``, on
that instance only, by the same computation routed through the taps:

* torchvision ``BasicBlock`` / ``Bottleneck`` (post-activation): h = downsample(x) or x,
  F = the block's conv-BN(-ReLU) chain, f = ReLU;
* timm resnetv2 ``PreActBasic`` / ``PreActBottleneck`` (pre-activation): a = norm1(x),
  h = downsample(a) or x, F = drop_path(the norm-conv chain from a) -- timm drops the branch,
  not the shortcut -- and f = identity.

The tapped forward gives bitwise the same outputs and gradients as the original. torchvision
adds the shortcut and applies the final ReLU in place (``out += identity``, ``ReLU(inplace=True)``),
which would overwrite tensors after they passed a tap; the tapped forward does both out of
place (the same kernels, so the same numbers). Inside the branch nothing has passed a tap
yet, so the block's own in-place ReLUs stay. The shortcut is computed before the branch
(torchvision computes it after) so that the taps fire in the contract's order; no number
changes.

Stages: the blocks that share a parent container form a stage (torchvision's ``layer1`` ..
``layer4``, timm's ``stages.N.blocks``), numbered from 1 in module order; ``index`` counts
blocks within it from 0. The replacement forward is a ``functools.partial`` of a function of
this module, so a tapped model still deep-copies and pickles.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from resnet_lab.taps import is_tapped_unit, make_taps

_ADDED = ("forward", "stage", "index")     # instance attributes tap_model sets (taps aside)
_SAVED = "_probes_tapping_saved"           # where a tapped block keeps what they were before


# ---- the tapped forwards ------------------------------------------------------------------------

def _torchvision_branch(block, x):
    """F(x) of torchvision's BasicBlock / Bottleneck, as its forward computes it."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(block.relu(out)))
    return out


def _post_activation_forward(block, x):
    """torchvision: ``relu(F(x) + h(x))``, with the addition and the ReLU out of place."""
    taps = block.taps
    x = taps.input(x)
    h = taps.shortcut(x if block.downsample is None else block.downsample(x))
    branch = taps.branch(_torchvision_branch(block, x))
    y = taps.sum(branch + h)              # torchvision: out += identity
    return taps.output(torch.relu(y))     # torchvision: self.relu (inplace=True)


def _preact_forward(block, x):
    """timm resnetv2: ``drop_path(F(norm1(x))) + h``, h = downsample(norm1(x)) or x; f = identity."""
    taps = block.taps
    x = taps.input(x)
    x_preact = block.norm1(x)
    h = taps.shortcut(x if block.downsample is None else block.downsample(x_preact))
    out = block.conv1(x_preact)
    out = block.conv2(block.norm2(out))
    if hasattr(block, "conv3"):
        out = block.conv3(block.norm3(out))
    branch = taps.branch(block.drop_path(out))
    y = taps.sum(branch + h)
    return taps.output(y)


# ---- which blocks are known ---------------------------------------------------------------------

# class name -> (library, attributes it must have, attributes it must not have, tapped forward)
_KNOWN = {
    "BasicBlock": ("torchvision", ("conv1", "bn1", "relu", "conv2", "bn2", "downsample"),
                   ("conv3",), _post_activation_forward),
    "Bottleneck": ("torchvision", ("conv1", "bn1", "relu", "conv2", "bn2", "conv3", "bn3",
                                   "downsample"), (), _post_activation_forward),
    "PreActBasic": ("timm resnetv2", ("norm1", "conv1", "norm2", "conv2", "drop_path",
                                      "downsample"), ("conv3",), _preact_forward),
    "PreActBottleneck": ("timm resnetv2", ("norm1", "conv1", "norm2", "conv2", "norm3", "conv3",
                                           "drop_path", "downsample"), (), _preact_forward),
}
SUPPORTED = ", ".join(f"{lib} {name}" for name, (lib, *_) in _KNOWN.items())


def _forward_for(module: nn.Module):
    """The tapped forward for ``module``, or None if it is not a block this module knows."""
    known = _KNOWN.get(type(module).__name__)
    if known is None:
        return None
    _, needed, absent, forward = known
    if not all(hasattr(module, a) for a in needed) or any(hasattr(module, a) for a in absent):
        return None
    if "relu" in needed and not isinstance(module.relu, nn.ReLU):
        return None                       # the out-of-place f is written for a ReLU
    return forward


def _not_supported(module: nn.Module) -> ValueError:
    return ValueError(f"{type(module).__name__} is not a residual block probes.tapping knows; "
                      f"supported: {SUPPORTED}. Route your own block through "
                      "resnet_lab.taps.make_taps() (see resnet_lab/units.py)")


# ---- finding, tapping and untapping ---------------------------------------------------------------

def find_blocks(model: nn.Module) -> list:
    """``(name, block)`` for every residual block of ``model`` that this module knows, in module
    order (a known block's own submodules are not searched)."""
    found = []
    for name, module in model.named_modules():
        if found and _within(name, found[-1][0]):
            continue
        if _forward_for(module) is not None:
            found.append((name, module))
    return found


def _within(name: str, parent: str) -> bool:
    return parent == "" or name.startswith(parent + ".")


def _positions(names) -> list:
    """``(stage, index)`` per block name: blocks with the same parent container form a stage
    (numbered from 1 in order of appearance), ``index`` counts within it from 0."""
    stages, counts, out = {}, {}, []
    for name in names:
        parent = name.rpartition(".")[0]
        stage = stages.setdefault(parent, len(stages) + 1)
        counts[parent] = counts.get(parent, 0) + 1
        out.append((stage, counts[parent] - 1))
    return out


def _named(model: nn.Module, blocks) -> list:
    """Explicitly given blocks as ``(name, block)`` in module order; each must be known."""
    names = {id(m): n for n, m in model.named_modules()}
    for block in blocks:
        if _forward_for(block) is None:
            raise _not_supported(block)
        if id(block) not in names:
            raise ValueError(f"the {type(block).__name__} given is not a submodule of "
                             f"{type(model).__name__}")
    order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    return sorted(((names[id(b)], b) for b in blocks), key=lambda nb: order[id(nb[1])])


def _no_blocks(model: nn.Module) -> ValueError:
    if any(is_tapped_unit(m) for m in model.modules()):
        return ValueError(f"{type(model).__name__} already has tapped units (resnet_lab units, "
                          "or tapped before): SignalProbe works on it as it is")
    looks_like_block = ("block", "bottleneck", "basic", "residual", "unit", "stage")
    candidates = sorted({type(m).__name__ for m in model.modules()
                         if any(w in type(m).__name__.lower() for w in looks_like_block)})
    what = ", ".join(candidates) if candidates else type(model).__name__
    return ValueError(f"no residual block probes.tapping knows in {type(model).__name__} "
                      f"(unrecognised: {what}); supported: {SUPPORTED}. Route your own block "
                      "through resnet_lab.taps.make_taps() (see resnet_lab/units.py)")


def _tap_block(block: nn.Module, stage: int, index: int):
    # What the instance had under the names we set, restored by _untap_block.
    saved = {a: block.__dict__[a] for a in _ADDED if a in block.__dict__}
    block.taps = make_taps()
    block.stage, block.index = stage, index
    # A partial of a module-level function (not a bound method): deep copies and pickles
    # of the model then call the copy's own modules.
    block.forward = partial(_forward_for(block), block)
    block.__dict__[_SAVED] = saved


def _untap_block(block: nn.Module) -> bool:
    saved = block.__dict__.pop(_SAVED, None)
    if saved is None:                      # not tapped by us, or already untapped
        return False
    del block.taps
    for a in _ADDED:
        if a in saved:
            block.__dict__[a] = saved[a]
        else:
            block.__dict__.pop(a, None)
    return True


class TapHandle:
    """What ``tap_model`` returns. ``units``: the tapped blocks in order (what ``net.units()``
    is for a resnet_lab net); ``remove()`` restores them; usable as a context manager."""

    def __init__(self, model: nn.Module, units: list):
        self.model, self.units = model, units

    def remove(self):
        for block in self.units:
            _untap_block(block)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def __repr__(self):
        return f"TapHandle({type(self.model).__name__}, {len(self.units)} units)"


def tap_model(model: nn.Module, blocks=None) -> TapHandle:
    """Tap ``model``'s residual blocks in place (every known block, or the ``blocks`` given).

    ValueError when a given block, or every block of the model, is of a kind this module does
    not know (the message names it and the supported kinds), or when a block is tapped already.
    """
    named = find_blocks(model) if blocks is None else _named(model, list(blocks))
    if not named:
        raise _no_blocks(model)
    for name, block in named:
        if hasattr(block, "taps") or _SAVED in block.__dict__:
            raise ValueError(f"{type(block).__name__} {name or '(the model)'} is already tapped "
                             "(or has a 'taps' attribute); remove the taps first")
    # Positions come from all the model's known blocks, so that tapping a few of them gives
    # each the stage and index it has in the model.
    layout = [n for n, _ in find_blocks(model)]
    where = dict(zip(layout, _positions(layout)))
    for (name, block), fallback in zip(named, _positions([n for n, _ in named])):
        _tap_block(block, *where.get(name, fallback))
    return TapHandle(model, [block for _, block in named])


def untap_model(model: nn.Module) -> int:
    """Remove every tap ``tap_model`` inserted into ``model``; returns how many blocks."""
    return sum(_untap_block(m) for m in list(model.modules()))
