"""What every experiment script shares: the common flags, device choice and error handling.

The library raises ``ValueError`` (bad input, naming the valid choices) or ``FileNotFoundError``
(missing data, saying where to get it); a script wrapped in ``run_main`` turns either into one
line on stderr and exit status 2, as argparse does for its own errors.
"""
from __future__ import annotations

import argparse
import functools
import sys

import torch

DATASETS = ("digits", "gaussian", "cifar10", "cifar100")
DEVICES = ("auto", "cpu", "cuda")


def add_common_args(parser: argparse.ArgumentParser, presets: dict) -> argparse.ArgumentParser:
    """Add ``--preset --seeds/--seed --device --dataset --data-dir --out``.

    ``presets`` maps a preset name to its settings; ``quick`` is the default when it exists.
    ``--seeds`` and ``--dataset`` default to None so that the preset's value applies.
    """
    default = "quick" if "quick" in presets else next(iter(presets))
    parser.add_argument("--preset", choices=list(presets), default=default,
                        help=f"settings bundle: {', '.join(presets)} (default {default})")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", metavar="SEED",
                        help="seeds to run, one run each (default: the preset's)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto = cuda when available, else cpu (default auto)")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="digits (bundled 8x8), gaussian (N(0,1) inputs, random labels), "
                             "cifar10/cifar100 (official archive in --data-dir); default: the preset's")
    parser.add_argument("--data-dir", default="data",
                        help="folder holding cifar-10-python.tar.gz / cifar-100-python.tar.gz (default data)")
    parser.add_argument("--out", help="root folder of the run folders (default results/runs)")
    return parser


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a ValueError."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device available; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def main_guard(fn):
    """Wrap a ``main`` so library errors become ``error: ...`` on stderr and return code 2."""
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            message = " ".join(str(err).split()) or type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            return 2
    return guarded


def run_main(fn, argv=None):
    """``sys.exit`` with what the guarded ``fn()`` (``fn(argv)`` when argv is given) returns;
    None counts as 0."""
    guarded = main_guard(fn)
    sys.exit((guarded() if argv is None else guarded(argv)) or 0)
