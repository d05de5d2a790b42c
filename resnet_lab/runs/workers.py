"""A sweep's worker processes: ``run_in_workers`` runs cells in spawned processes, one cell per
process at a time, each process pinned to one device.

Each worker talks to its parent through a pipe of its own (no queue: a queue's semaphores
would leak if the parent were killed) and watches its parent: when the parent is gone, it
stops as if told to -- nobody would read what it finishes.

Stopping: a signal to the parent (Ctrl-C reaches the workers too; ``kill`` only the parent) is
passed on to every busy worker, which finishes the step it is in, checkpoints its net and
reports; the parent waits up to ``GRACE`` seconds, then kills what is left (at once on a
second signal). A failed cell stops the others the same way, then the failure is raised: the
checkpoints are kept, so nothing already trained is lost.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import wait

import torch

from ..io import signals
from ..io.errors import CellFailed, one_line

GRACE = 60.0          # seconds a worker gets to checkpoint its net after a stop
PARENT_POLL = 0.5     # seconds between a worker's looks at its parent


def run_in_workers(todo, target, args, *, workers: int, threads: int, devices, progress):
    """``target(cell, report, *args) -> done.json or None`` for every cell of ``todo``, in
    ``workers`` processes (``threads`` PyTorch threads each; worker k on CUDA device
    ``devices[k]`` when ``devices`` is given). Most expensive cells first. Raises
    ``signals.Interrupted`` when stopped by a signal, ``CellFailed`` when a cell failed."""
    ctx = multiprocessing.get_context("spawn")
    queue = collections.deque(sorted(todo, key=lambda c: -c.cost))
    count = min(workers, len(queue), len(devices) if devices else workers)
    crew = [_Worker(ctx, k, devices[k] if devices else None, target, args, threads)
            for k in range(count)]
    boss = _Boss(crew, queue, progress)
    try:
        boss.supervise()
    finally:
        for worker in crew:
            worker.close()
    boss.raise_outcome()


class _Boss:
    """The parent's side: hands out cells, relays progress, stops the crew."""

    def __init__(self, crew, queue, progress):
        self.crew, self.queue, self.progress = crew, queue, progress
        self.cells = {c.name: c for c in queue}
        self.failure, self.stopped_by, self.deadline = None, None, None

    def supervise(self):
        for worker in self.crew:
            worker.give(self.queue.popleft())
        while any(w.cell is not None for w in self.crew):
            signum = signals.stop_requested()
            if signum is not None and self.stopped_by is None:
                self.stopped_by = signum
                self.stop_all(signum)
            if self.deadline is not None and time.monotonic() > self.deadline:
                return                              # close() kills what is left
            busy = {w.conn: w for w in self.crew if w.cell is not None}
            for conn in wait(list(busy), timeout=0.5):
                self.handle(busy[conn])

    def stop_all(self, signum):
        self.deadline = time.monotonic() + GRACE
        for worker in self.crew:
            worker.signal(signum)

    def handle(self, worker):
        try:
            kind, name, value = worker.conn.recv()
        except (EOFError, OSError):
            if self.stopped_by is None:            # not told to stop: it died
                worker.process.join(timeout=5)
                self.fail(worker.cell, f"its worker process died ({_death(worker.process.exitcode)})")
            worker.cell = None
            return
        cell = self.cells[name]
        if kind == "start":
            self.progress.start(cell)
        elif kind == "step":
            self.progress.update(cell, value)
        elif kind == "done":
            self.progress.finish(cell, value) if value is not None else self.progress.skip(cell)
            go_on = self.queue and self.failure is None and self.stopped_by is None
            worker.give(self.queue.popleft() if go_on else None)
        else:                                      # "stopped" (checkpointed) or "failed"
            if kind == "failed":
                self.fail(cell, value)
            elif self.stopped_by is None:          # a signal sent to the worker alone
                self.fail(cell, "its worker process was stopped by a signal (its checkpoint "
                                "is kept)")
            worker.cell = None

    def fail(self, cell, message):
        if self.failure is None:
            self.failure = CellFailed(f"{cell.describe()} (cells/{cell.name})", message)
            if self.stopped_by is None:
                self.stop_all(signal.SIGTERM)

    def raise_outcome(self):
        if self.failure is not None:
            raise self.failure
        if self.stopped_by is not None:
            raise signals.Interrupted(self.stopped_by)


class _Worker:
    """One worker process and its pipe; ``cell``: the cell it is running (None: idle)."""

    def __init__(self, ctx, index, device, target, args, threads):
        self.conn, child = ctx.Pipe()
        self.device, self.cell = device, None
        self.process = ctx.Process(target=_worker_main, name=f"sweep-worker-{index}",
                                   args=(child, target, args, threads, device, os.getpid()))
        self.process.start()
        child.close()

    def give(self, cell):
        self.cell = cell
        try:
            self.conn.send(cell)
        except OSError:
            pass                                   # it died: handle() hears of it

    def signal(self, signum):
        if self.cell is not None and self.process.is_alive():
            os.kill(self.process.pid, signum)

    def close(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5 if self.cell is None else 0.1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death(code) -> str:
    if code is not None and code < 0:
        name = signals.name(-code)
        hint = ": the system's out-of-memory killer, most likely" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}; " + "use fewer --workers or a smaller net"
    return f"exit status {code}"


# ---- the worker's side ------------------------------------------------------------------------

def _worker_main(conn, target, args, threads, device, parent):
    signals.install(escalate=False)          # its parent decides when to stop waiting
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    if device is not None:
        torch.cuda.set_device(device)
    try:
        while (cell := conn.recv()) is not None:
            if not _run_one(conn, cell, target, args):
                break
    except (EOFError, OSError, KeyboardInterrupt):
        pass                                 # the parent went, or a stop while idle
    finally:
        # Everything it wrote is closed (atomic writes); skip the interpreter's teardown, which
        # with PyTorch loaded takes seconds on a busy machine.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)


def _run_one(conn, cell, target, args) -> bool:
    """Run one cell and say how it went; False when the worker should stop."""
    _send(conn, ("start", cell.name, 0))
    last = [0.0]

    def report(step):
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            _send(conn, ("step", cell.name, step))
    try:
        info = target(cell, report, *args)
    except signals.Interrupted as err:
        _send(conn, ("stopped", cell.name, err.step))
        return False
    except Exception as err:                    # noqa: BLE001 -- said to the parent, in one line if known
        _send(conn, ("failed", cell.name, one_line(err) or traceback.format_exc()))
        return False
    _send(conn, ("done", cell.name, info))
    return signals.pending() is None


def _send(conn, message):
    try:
        conn.send(message)
    except OSError:
        pass                                     # the parent is gone: nobody to tell


def _watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)
