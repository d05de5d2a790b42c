"""One registry for every network: ``create_model(name, **overrides)`` and ``list_models()``.

Names carry their family, so the CIFAR and ImageNet nets of the same depth cannot collide:
``cifar_resnet110_v1``, ``imagenet_resnet50_v2``, ``article_resnet34_v1``.
"""
from __future__ import annotations

from .families import (BASIC_CIFAR_DEPTHS, BOTTLENECK_CIFAR_DEPTHS, IMAGENET_LAYERS, cifar_resnet,
                       imagenet_resnet, resnet34_v1, resnet34_v2)

_REGISTRY: dict[str, tuple] = {}


def _register(name, builder, **defaults):
    _REGISTRY[name] = (builder, defaults)


for _depth in sorted(BASIC_CIFAR_DEPTHS + BOTTLENECK_CIFAR_DEPTHS):
    for _v in (1, 2):
        _register(f"cifar_resnet{_depth}_v{_v}", cifar_resnet, depth=_depth, version=_v)
for _depth in IMAGENET_LAYERS:
    for _v in (1, 2):
        _register(f"imagenet_resnet{_depth}_v{_v}", imagenet_resnet, depth=_depth, version=_v)
_register("article_resnet34_v1", resnet34_v1)
_register("article_resnet34_v2", resnet34_v2)


def list_models() -> list[str]:
    return list(_REGISTRY)


def create_model(name: str, **overrides):
    """Build a registered network; ``overrides`` replace its builder's arguments.

    ``unit_kind=KIND`` replaces the name's version, e.g.
    ``create_model("cifar_resnet164_v1", unit_kind="bn_after_add", width=8)``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(_REGISTRY)}")
    builder, defaults = _REGISTRY[name]
    args = dict(defaults)
    if "unit_kind" in overrides and "version" in args:
        args.pop("version")
    args.update(overrides)
    return builder(**args)
