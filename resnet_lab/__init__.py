"""resnet-lab: V1 (post-activation) and V2 (pre-activation) ResNets with taps on every shortcut."""
import os as _os


def _checked_mpl_backend():
    """matplotlib refuses to import at all when MPLBACKEND names no backend, which would end
    every script (even ``--help``) in a traceback. The suite draws with Agg (``plotting``)
    whatever it says, so an unknown name is replaced by Agg with one warning line. Runs before
    anything imports matplotlib: every script imports this package first."""
    name = _os.environ.get("MPLBACKEND")
    if not name:
        return
    del _os.environ["MPLBACKEND"]
    from matplotlib import rcsetup
    try:
        rcsetup.validate_backend(name)
    except ValueError:
        import sys
        print(f"warning: MPLBACKEND={name!r} is not a matplotlib backend; drawing with Agg",
              file=sys.stderr, flush=True)
        name = "agg"
    _os.environ["MPLBACKEND"] = name


_checked_mpl_backend()
from .networks.families import ResNet, cifar_resnet, imagenet_resnet, resnet34_v1, resnet34_v2
from .networks.registry import create_model, list_models
from .networks.taps import TAP_NAMES, Tap
from .networks.units import UNIT_KINDS, ResidualUnit

__all__ = ["ResNet", "ResidualUnit", "TAP_NAMES", "Tap", "UNIT_KINDS", "cifar_resnet",
           "create_model", "imagenet_resnet", "list_models", "resnet34_v1", "resnet34_v2"]
