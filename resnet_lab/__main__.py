"""``python -m resnet_lab NAME``: print a network, its parameter count, units and taps.

As the article's script prints its two nets. ``--list`` names every registered model.
"""
import argparse
import sys

from .networks.registry import create_model, list_models
from .networks.taps import Tap


def summary(name, **overrides) -> str:
    net = create_model(name, **overrides)
    params = sum(p.numel() for p in net.parameters())
    taps = sum(isinstance(m, Tap) for m in net.modules())
    return (f"This is {name}:\n{net}\n"
            f"{name}: {params:,} parameters, {len(net.units())} residual units, {taps} taps")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m resnet_lab", description=__doc__)
    parser.add_argument("names", nargs="*", help="registered model names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the registered models")
    parser.add_argument("--width", type=int, help="override the CIFAR nets' base width")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        print("\n".join(list_models()))
        return 0
    overrides = {} if args.width is None else {"width": args.width}
    try:
        texts = [summary(name, **overrides) for name in args.names]
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
