"""resnet-lab: V1 (post-activation) and V2 (pre-activation) ResNets with taps on every shortcut."""
from .networks.families import ResNet, cifar_resnet, imagenet_resnet, resnet34_v1, resnet34_v2
from .networks.registry import create_model, list_models
from .networks.taps import TAP_NAMES, Tap
from .networks.units import UNIT_KINDS, ResidualUnit

__all__ = ["ResNet", "ResidualUnit", "TAP_NAMES", "Tap", "UNIT_KINDS", "cifar_resnet",
           "create_model", "imagenet_resnet", "list_models", "resnet34_v1", "resnet34_v2"]
