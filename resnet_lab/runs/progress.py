"""A sweep's progress: a tqdm bar over the cells' work (steps x predicted cost) with the cells
in progress and their step, and tqdm's estimate of the time left; when stderr is not a
terminal (or ``RESNET_LAB_NO_BAR`` is set), one line per finished cell."""
from __future__ import annotations

import os
import sys


class SweepProgress:
    """The sweep's progress: a tqdm bar over the cells' work (steps x cost) with the cells in
    progress and their step, and tqdm's estimate of the time left; when stderr is not a
    terminal, one line per finished cell."""

    def __init__(self, cells, todo, steps):
        self.steps = max(1, steps)
        self.total = len(cells)
        self.done = len(cells) - len(todo)
        self.active = {}
        self.bar = None
        if todo and sys.stderr.isatty() and os.environ.get("RESNET_LAB_NO_BAR") is None:
            from tqdm import tqdm
            self.bar = tqdm(total=round(sum(c.cost for c in todo) * self.steps), unit="work",
                            dynamic_ncols=True, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        self._credited = {}

    def start(self, cell):
        self.active[cell.name] = 0
        self._show()

    def update(self, cell, step):
        self.active[cell.name] = step
        self._credit(cell, step)
        self._show()

    def _credit(self, cell, step):
        if self.bar is not None:
            new = round(cell.cost * min(step, self.steps))
            self.bar.update(new - self._credited.get(cell.name, 0))
            self._credited[cell.name] = new

    def skip(self, cell):
        """A cell another process runs (or just finished): not this one's to count."""
        self.active.pop(cell.name, None)
        self.total -= 1
        line = f"{cell.describe()}: running in another process; skipped"
        self.bar.write(line, file=sys.stderr) if self.bar is not None else \
            print(line, file=sys.stderr, flush=True)

    def finish(self, cell, info):
        self.active.pop(cell.name, None)
        self._credit(cell, self.steps)
        self.done += 1
        line = (f"[{self.done}/{self.total}] {cell.describe()}: {info['status']}, "
                f"{info.get('steps_done') or ''}{' steps ' if info.get('steps_done') else ''}"
                f"in {info['seconds']:.1f} s")
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self._show()
        else:
            print(line, file=sys.stderr, flush=True)

    def _show(self):
        if self.bar is not None:
            now = ", ".join(f"{name} step {step}" for name, step in self.active.items())
            self.bar.set_postfix_str(f"{self.done}/{self.total} cells; {now}", refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
