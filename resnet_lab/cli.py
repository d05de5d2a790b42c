"""How every script talks to its user: one-line errors, exit status 2, the device.

The library raises ``ValueError`` (bad input, naming the valid choices) or ``FileNotFoundError``
(missing data, saying where to get it); a script wrapped in ``run_main`` turns either into one
line on stderr and exit status 2. ``Parser`` makes argparse's own errors one line too.
"""
from __future__ import annotations

import argparse
import functools
import signal
import sys

import torch

DEVICES = ("auto", "cpu", "cuda")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <what>`` and exit status 2, no usage
    block (``--help`` still prints it)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a ValueError."""
    if name not in DEVICES:
        raise ValueError(f"--device {name!r}: valid devices are {', '.join(DEVICES)}")
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
    None counts as 0. SIGTERM is turned into KeyboardInterrupt, so a terminated run records
    itself as interrupted (and releases its folder) as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _terminate)
    guarded = main_guard(fn)
    sys.exit((guarded() if argv is None else guarded(argv)) or 0)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"terminated (signal {signum})")
