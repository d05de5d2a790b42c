"""Tap a ResNet you did not build, so that ``SignalProbe(model)`` works on it unchanged.

    from probes.adapters.tapping import tap_model
    handle = tap_model(model)          # e.g. torchvision.models.resnet50(), timm resnet50 / resnetv2_50
    with SignalProbe(model) as probe:
        ...
    handle.remove()                    # or untap_model(model): the model is as it was

``tap_model`` finds the residual blocks it knows by their class name and attributes, gives
each the five taps of the tap contract (``resnet_lab.networks.taps``: ``unit.taps`` with input,
shortcut, branch, sum, output, and ``stage`` / ``index``) and replaces its ``forward``, on
that instance only, by the same computation routed through the taps:

* post-activation (V1), f = ReLU, h = downsample(x) or x:
  torchvision ``BasicBlock`` / ``Bottleneck`` (F = the conv-BN(-ReLU) chain);
  timm ``resnet`` ``BasicBlock`` / ``Bottleneck`` (timm.create_model("resnet50"), resnet50d,
  seresnet50, ecaresnet..., resnetblur..., resnetaa...: F = the conv-BN-act chain with its
  drop_block, anti-aliasing ``aa``, attention ``se`` and stochastic depth ``drop_path``, all
  inside the branch as timm computes them); timm ``resnetv2`` ``Bottleneck`` (its
  non-pre-activation block, ``ResNetV2(preact=False)``, the hybrid ViTs' backbone).
  A block whose after-addition activation is not an ``nn.ReLU`` is refused by name.
* pre-activation (V2), f = identity: timm ``resnetv2`` ``PreActBasic`` / ``PreActBottleneck``:
  a = norm1(x), h = downsample(a) or x, F = drop_path(the norm-conv chain from a) -- timm
  drops the branch, not the shortcut.

The tapped forward gives bitwise the same outputs, gradients and normalisation statistics as
the original. The libraries add the shortcut and apply the final ReLU in place
(``out += identity``, ``ReLU(inplace=True)``), which would overwrite tensors after they passed
a tap; the tapped forward does both out of place (the same kernels, so the same numbers).
Inside the branch nothing has passed a tap yet, so the block's own in-place operations stay.
The shortcut is computed before the branch (torchvision and timm resnet compute it after) so
that the taps fire in the contract's order; the shortcut draws no random numbers, so drop_path
and drop_block draw the same ones and no number changes.

Stages: the blocks that share a parent container form a stage (torchvision's and timm's
``layer1`` .. ``layer4``, timm resnetv2's ``stages.N.blocks``), numbered from 1 in module order;
``index`` counts blocks within it from 0. The replacement forward is a ``functools.partial``
of functions of this module, so a tapped model still deep-copies and pickles.
"""
from __future__ import annotations

import warnings

from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import nn

from resnet_lab.networks.taps import is_tapped_unit, make_taps

_ADDED = ("forward", "stage", "index")     # instance attributes tap_model sets (taps aside)
_SAVED = "_probes_tapping_saved"           # where a tapped block keeps what they were before


# ---- the branches F(x), as each library's forward computes them -----------------------------------

def _torchvision_branch(block, x):
    """torchvision ``BasicBlock`` / ``Bottleneck``."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(block.relu(out)))
    return out


def _timm_resnet_branch(block, x):
    """timm ``models/resnet.py`` ``BasicBlock`` / ``Bottleneck``: drop_block, anti-aliasing
    (``aa``), attention (``se``, None without one) and ``drop_path`` (None without) where
    timm's forward applies them."""
    if hasattr(block, "conv3"):
        out = block.act1(block.bn1(block.conv1(x)))
        out = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(out)))))
        out = block.bn3(block.conv3(out))
    else:
        out = block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))
        out = block.bn2(block.conv2(out))
    if block.se is not None:
        out = block.se(out)
    return out if block.drop_path is None else block.drop_path(out)


def _timm_resnetv2_branch(block, x):
    """timm ``models/resnetv2.py`` ``Bottleneck`` (not pre-activation): norm-act layers."""
    out = block.norm2(block.conv2(block.norm1(block.conv1(x))))
    return block.drop_path(block.norm3(block.conv3(out)))


def _timm_preact_branch(block, x_preact):
    """timm ``models/resnetv2.py`` ``PreActBasic`` / ``PreActBottleneck``, from norm1(x)."""
    out = block.conv2(block.norm2(block.conv1(x_preact)))
    if hasattr(block, "conv3"):
        out = block.conv3(block.norm3(out))
    return block.drop_path(out)


# ---- the tapped forwards ------------------------------------------------------------------------

def _post_activation_forward(block, branch_of, x):
    """V1: ``relu(F(x) + h(x))``, with the addition and the ReLU out of place."""
    taps = block.taps
    x = taps.input(x)
    h = taps.shortcut(x if block.downsample is None else block.downsample(x))
    branch = taps.branch(branch_of(block, x))
    y = taps.sum(branch + h)              # the libraries: out += identity
    return taps.output(torch.relu(y))     # the libraries: ReLU(inplace=True)


def _preact_forward(block, branch_of, x):
    """V2 (timm resnetv2): ``F(norm1(x)) + h``, h = downsample(norm1(x)) or x; f = identity."""
    taps = block.taps
    x = taps.input(x)
    x_preact = block.norm1(x)
    h = taps.shortcut(x if block.downsample is None else block.downsample(x_preact))
    branch = taps.branch(branch_of(block, x_preact))
    y = taps.sum(branch + h)
    return taps.output(y)


# ---- which blocks are known ---------------------------------------------------------------------

class _Kind(NamedTuple):
    library: str
    name: str          # the class name
    needed: tuple      # attributes an instance has ...
    absent: tuple      # ... and has not (what tells the libraries' same-named blocks apart)
    forward: Callable  # _post_activation_forward or _preact_forward
    branch: Callable
    f: str = ""        # the attribute holding the after-addition ReLU (post-activation blocks)

    def __str__(self):
        return f"{self.library} {self.name}"


_TV = ("conv1", "bn1", "relu", "conv2", "bn2", "downsample")
_TIMM = ("conv1", "bn1", "act1", "aa", "drop_block", "conv2", "bn2", "act2", "se", "drop_path",
         "downsample")
_V2 = ("norm1", "conv1", "norm2", "conv2", "drop_path", "downsample")
_POST, _PRE = _post_activation_forward, _preact_forward
_KINDS = (
    _Kind("torchvision", "BasicBlock", _TV, ("conv3", "act1", "se"), _POST, _torchvision_branch, "relu"),
    _Kind("torchvision", "Bottleneck", _TV + ("conv3", "bn3"), ("act1", "se"), _POST,
          _torchvision_branch, "relu"),
    _Kind("timm resnet", "BasicBlock", _TIMM, ("conv3",), _POST, _timm_resnet_branch, "act2"),
    _Kind("timm resnet", "Bottleneck", _TIMM + ("conv3", "bn3", "act3"), (), _POST,
          _timm_resnet_branch, "act3"),
    _Kind("timm resnetv2", "Bottleneck", _V2 + ("norm3", "conv3", "act3"), ("bn1",), _POST,
          _timm_resnetv2_branch, "act3"),
    _Kind("timm resnetv2", "PreActBasic", _V2, ("conv3",), _PRE, _timm_preact_branch),
    _Kind("timm resnetv2", "PreActBottleneck", _V2 + ("norm3", "conv3"), (), _PRE,
          _timm_preact_branch),
)
SUPPORTED = ", ".join(map(str, _KINDS))


def _kind_of(module: nn.Module):
    """The known kind of block ``module`` is, or None."""
    for kind in _KINDS:
        if (type(module).__name__ == kind.name and all(hasattr(module, a) for a in kind.needed)
                and not any(hasattr(module, a) for a in kind.absent)):
            return kind
    return None


def _refusal(module: nn.Module, name: str):
    """A ValueError naming what tap_model does not support in a known block, or None."""
    kind = _kind_of(module)
    f = getattr(module, kind.f) if kind.f else None
    if f is None or type(f) is nn.ReLU:
        return None
    # The tapped forward applies f as torch.relu, out of place; another activation would
    # change the numbers (and a post-activation block's f is a ReLU in He et al.'s V1). A
    # subclass of nn.ReLU may compute something else (its own forward): exact nn.ReLU only.
    what = (f"{type(f).__name__} (a subclass of nn.ReLU, which may compute something else)"
            if isinstance(f, nn.ReLU) else type(f).__name__)
    return ValueError(f"{kind} {name or '(the model)'}: its after-addition activation "
                      f"{kind.f} is {what}; tap_model supports nn.ReLU there only")


def _not_supported(module: nn.Module) -> ValueError:
    return ValueError(f"{type(module).__name__} is not a residual block probes.adapters.tapping knows; "
                      f"supported: {SUPPORTED}. Route your own block through "
                      "resnet_lab.networks.taps.make_taps() (see resnet_lab/networks/units.py)")


# ---- finding, tapping and untapping ---------------------------------------------------------------

def find_units(model: nn.Module) -> list:
    """``(name, module)`` for every residual unit of ``model`` that this module knows (the
    libraries call theirs blocks: BasicBlock, Bottleneck, PreActBottleneck, ...), in module
    order (a known unit's own submodules are not searched). ``tap_model`` refuses, by name,
    those with a part it does not support."""
    found = []
    for name, module in model.named_modules():
        if found and _within(name, found[-1][0]):
            continue
        if _kind_of(module) is not None:
            found.append((name, module))
    return found


find_blocks = find_units          # the old name, kept for callers


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
        if _kind_of(block) is None:
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
    return ValueError(f"no residual block probes.adapters.tapping knows in {type(model).__name__} "
                      f"(unrecognised: {what}); supported: {SUPPORTED}. Route your own block "
                      "through resnet_lab.networks.taps.make_taps() (see resnet_lab/networks/units.py)")


def _tap_block(block: nn.Module, stage: int, index: int):
    # What the instance had under the names we set, restored by _untap_block.
    saved = {a: block.__dict__[a] for a in _ADDED if a in block.__dict__}
    block.taps = make_taps()
    block.stage, block.index = stage, index
    # A partial of a module-level function (not a bound method): deep copies and pickles
    # of the model then call the copy's own modules.
    kind = _kind_of(block)
    block.forward = partial(kind.forward, block, kind.branch)
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


def tap_model(model: nn.Module, units=None, *, blocks=None) -> TapHandle:
    """Tap ``model``'s residual units in place (every known one, or the ``units`` given: the
    libraries' block modules). ``blocks=`` is the old name of ``units``, kept for callers.

    ValueError when a given unit, or every unit of the model, is of a kind this module does
    not know (the message names it and the supported kinds), or when a unit is tapped already.
    """
    if blocks is not None:
        if units is not None:
            raise ValueError("tap_model: give units= (blocks= is its old name), not both")
        warnings.warn("tap_model(blocks=...) is now tap_model(units=...)", DeprecationWarning,
                      stacklevel=2)
        units = blocks
    named = find_units(model) if units is None else _named(model, list(units))
    if not named:
        raise _no_blocks(model)
    for name, block in named:
        refusal = _refusal(block, name)
        if refusal is not None:
            raise refusal
        if hasattr(block, "taps") or _SAVED in block.__dict__:
            raise ValueError(f"{type(block).__name__} {name or '(the model)'} is already tapped "
                             "(or has a 'taps' attribute); remove the taps first")
    # Positions come from all the model's known blocks, so that tapping a few of them gives
    # each the stage and index it has in the model.
    layout = [n for n, _ in find_units(model)]
    where = dict(zip(layout, _positions(layout)))
    for (name, block), fallback in zip(named, _positions([n for n, _ in named])):
        _tap_block(block, *where.get(name, fallback))
    return TapHandle(model, [block for _, block in named])


def untap_model(model: nn.Module) -> int:
    """Remove every tap ``tap_model`` inserted into ``model``; returns how many blocks."""
    return sum(_untap_block(m) for m in list(model.modules()))
