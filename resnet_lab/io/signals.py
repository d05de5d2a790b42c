"""Stopping on a signal: a sweep told to stop finishes the step it is in, checkpoints, and
exits with a status that says why -- one line, no traceback.

======== ============================================== ===========
signal   who sends it                                    exit status
======== ============================================== ===========
SIGINT   Ctrl-C                                          130
SIGTERM  ``kill``, ``scancel``, a job's time limit       143
SIGUSR1  ``sbatch --signal=USR1@<s>`` before time is up  75 (``REQUEUE``)
SIGHUP   the terminal closed                             129
======== ============================================== ===========

75 is EX_TEMPFAIL, "try again": the cluster job script (docs/CLUSTER.md) requeues the task on
it, and the same command resumes from the checkpoints.

Two modes. Outside ``polled()`` a signal raises ``Interrupted`` at once, as Ctrl-C raises
KeyboardInterrupt (nothing is lost: every file is written atomically, and a net resumes from
its last checkpoint). Inside ``polled()`` it only records the request, which a loop reads at
a safe point with ``stop_requested()`` -- the training engine after each step (it then
checkpoints), a sweep's parent between its workers' messages; a second signal then raises at
once, unless ``install(escalate=False)`` (a worker process: its parent decides when to stop
waiting for it). A request that arrived inside ``polled()`` stays ``pending()`` after it (a
net that finished at that step is kept; the sweep stops before the next).
"""
from __future__ import annotations

import contextlib
import signal

REQUEUE = 75
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: REQUEUE,
               signal.SIGHUP: 129}
_state = {"requested": None, "polled": 0, "escalate": True}


class Interrupted(KeyboardInterrupt):
    """A stop asked for by signal ``signum``; ``step``: where a training run checkpointed."""

    def __init__(self, signum: int, message: str | None = None, step: int | None = None):
        self.signum, self.step = signum, step
        super().__init__(message or f"interrupted by {name(signum)}")

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signum, 128 + self.signum)

    def __reduce__(self):                      # travels between processes with its fields
        return type(self), (self.signum, str(self), self.step)


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def install(escalate: bool = True):
    """Handle SIGINT, SIGTERM, SIGUSR1 and SIGHUP in this process (main thread only)."""
    _state["escalate"] = escalate
    for signum in EXIT_STATUS:
        signal.signal(signum, _on_signal)


def _on_signal(signum, frame):
    first = _state["requested"] is None
    if first:
        _state["requested"] = signum
    if _state["polled"] and (first or not _state["escalate"]):
        return
    raise Interrupted(signum, f"interrupted by {name(signum)}" if first else
                      f"interrupted by a second {name(signum)}: not waiting for checkpoints")


def stop_requested() -> int | None:
    """The signal that asked this process to stop, inside ``polled()``; else None."""
    return _state["requested"] if _state["polled"] else None


def pending() -> int | None:
    """The signal that asked this process to stop, if any (in ``polled()`` or since)."""
    return _state["requested"]


def forget():
    """Forget an earlier request (a new sweep in the same process starts afresh)."""
    _state["requested"] = None


@contextlib.contextmanager
def polled():
    """While inside, a (first) signal only sets ``stop_requested()``; the outermost entry
    forgets an earlier request (one that mattered has stopped the caller already)."""
    if _state["polled"] == 0:
        forget()
    _state["polled"] += 1
    try:
        yield
    finally:
        _state["polled"] -= 1


def raise_if_requested(message: str | None = None, step: int | None = None):
    """``Interrupted`` if a signal asked this process to stop."""
    signum = pending()
    if signum is not None:
        raise Interrupted(signum, message, step)
