"""What every experiment script shares: the common flags, presets, device choice, the run's
lifecycle and error handling.

The library raises ``ValueError`` (bad input, naming the valid choices) or ``FileNotFoundError``
(missing data, saying where to get it); a script wrapped in ``run_main`` turns either into one
line on stderr and exit status 2, as argparse does for its own errors.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time

import torch

from .runs import check_writable_dir

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


def add_run_args(parser: argparse.ArgumentParser, experiment: str, threads: int | None = None):
    """Add ``--threads`` (default ``threads``; None = PyTorch's choice) and ``--publish``."""
    default = "PyTorch's choice" if threads is None else threads
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"CPU threads for PyTorch (default: {default}; 1 avoids the stalls of "
                             "two OpenMP threads on a core another process is using)")
    parser.add_argument("--publish", metavar="DIR",
                        help="also copy the run's reference files to DIR and redraw its figures "
                             f"there (the committed results live in results/paper/{experiment})")
    return parser


def add_sweep_args(parser: argparse.ArgumentParser, steps: bool = True, width_note: str = ""):
    """Add ``--depths --width --batch-size`` (and ``--steps``): the nets of a sweep, each
    defaulting to the preset's value; ``width_note`` completes --width's help."""
    parser.add_argument("--depths", type=int, nargs="+",
                        help="CIFAR depths, 6n+2 (basic units) or 9n+2 (bottleneck); default: the preset's")
    parser.add_argument("--width", type=int,
                        help=f"base width of every net (default: the preset's{width_note})")
    if steps:
        parser.add_argument("--steps", type=int, help="training iterations per net (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    return parser


def preset_settings(args, presets: dict, keys) -> dict:
    """The chosen preset's values of ``keys``, each replaced by the command line's when given."""
    preset = presets[args.preset]
    return {k: getattr(args, k) if getattr(args, k, None) is not None else preset[k] for k in keys}


def prepare_outputs(args) -> None:
    """Before anything is written: apply ``--threads`` and check that ``--out`` and
    ``--publish`` are writable folders (ValueError otherwise)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    for folder in (args.out, getattr(args, "publish", None)):
        if folder is not None:
            check_writable_dir(folder)


@contextlib.contextmanager
def recorded(run):
    """The body's outcome goes into ``run``'s config: ``failed`` or ``interrupted`` (and the
    error re-raised), else ``completed`` with its wall time, also left in the yielded dict."""
    timing = {}
    t0 = time.perf_counter()
    try:
        yield timing
    except BaseException as err:
        run.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", error=repr(err))
        raise
    timing["seconds"] = time.perf_counter() - t0
    run.finish("completed", wall_seconds=round(timing["seconds"], 1))


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
