"""How every script talks to its user: one-line errors, exit status 2, the device.

The library raises ``ValueError`` (bad input, naming the valid choices) or ``FileNotFoundError``
(missing data, saying where to get it); the operating system ``OSError`` (no space, permission
...), and memory can run out: a script wrapped in ``run_main`` turns each into one line on
stderr that says what to do (``resnet_lab.io.errors``) and exit status 2. A signal ends it with
one line and 130 (SIGINT), 143 (SIGTERM) or 75 (SIGUSR1, "requeue me";
``resnet_lab.io.signals``); a closed stdout (``| head``) ends it quietly. ``Parser`` makes
argparse's own errors one line too.
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

import torch

from ..io import signals
from ..io.errors import one_line

DEVICES = ("auto", "cpu", "cuda")
BROKEN_PIPE = 141          # what a shell reports for a process ended by SIGPIPE


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
    """Wrap a ``main`` so expected errors become ``error: ...`` on stderr and return code 2,
    a signal one line and its exit status, a closed stdout silence."""
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as err:
            if not isinstance(err, signals.Interrupted):
                err = signals.Interrupted(signal.SIGINT, str(err) or None)
            print(" ".join(str(err).split()), file=sys.stderr, flush=True)
            return err.exit_status
        except BrokenPipeError:
            _silence_stdout()
            return BROKEN_PIPE
        except Exception as err:
            message = one_line(err)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 2
    return guarded


def _silence_stdout():
    """The reader of stdout went away (``| head``): send what is left to /dev/null, so that
    Python's flush at exit does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_main(fn, argv=None):
    """``sys.exit`` with what the guarded ``fn()`` (``fn(argv)`` when argv is given) returns;
    None counts as 0. SIGINT, SIGTERM and SIGUSR1 stop it as ``resnet_lab.io.signals`` says."""
    signals.install()
    guarded = main_guard(fn)
    code = (guarded() if argv is None else guarded(argv)) or 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = code or BROKEN_PIPE
    if code in signals.EXIT_STATUS.values():
        # Stopped by a signal: everything is written (atomically) and said; the interpreter's
        # teardown with PyTorch loaded takes seconds on a busy machine, so skip it.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
