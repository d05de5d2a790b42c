"""The step state of the identity-path statistics: per stage, the share of the gradient at the
stage's end that passes *every* after-addition function along the shortcuts (claim C2,
element by element).

Within a stage, a unit whose shortcut is the identity computes out_k = f(x_k + F_k) with
x_k = out_{k-1}. The gradient g = dL/d out_last at the stage's end, followed back along the
shortcuts only (not through the branches), reaches the input of the first unit of the stage's
identity path as g * M, M = prod_k pass_k over the path's units, where an element passes f
when f does not zero it: pass_k = [out_k != 0], and pass_k = 1 where f is the identity (the
output tap holds the sum's tensor itself). For f = ReLU, [out != 0] = [y > 0] is the mask
ReLU's backward applies (it stops the gradient at y = 0 too), and its complement is the mask
of ``shortcut_cut``. For an f that is not element-wise (BN-ReLU, ``bn_after_add``) it is the
share that f's zeroing leaves, not f's whole Jacobian.

The identity path of a stage is the run of units with identity shortcuts (the shortcut tap
holds the input tap's tensor itself) that ends at the stage's last unit: a unit whose shortcut
is not the identity (a projection or zero-padding: the first unit of a stage, except where it
keeps the shape) starts it afresh. A stage is a run of consecutive units with one ``stage``
number (``net.units()`` order). A stage whose last unit has no identity shortcut has no path
and no rows.

Per stage and probed step (``probes.stats.PATH`` declares the formulas):

* ``passed`` = sum g^2 M and ``energy`` = sum g^2, read by one node pre-hook on the gradient
  of the stage's last output (fp32 sums on the gradient's device, no host synchronisation);
* ``open`` = sum M and ``numel``, read at ``step()``.

Cost, only when a path statistic is asked for: a Python function in front of each unit's
input, shortcut, sum and output taps (after the probe's own, Python or C++: ``SignalProbe``
chains them), one cast to bool and one in-place ``and`` per unit with a ReLU after the
addition, one bool tensor per stage held from the stage's end to the step's end, and a square,
a multiply and two sums per stage in backward.
"""
from __future__ import annotations

import weakref
from functools import partial

import torch

from .recorder import in_backward
from .tap_index import INPUT, OUTPUT, PER_UNIT, SHORTCUT, SUM

SUMS = ("passed", "energy", "open", "numel")     # per stage, in this order (``probes.stats.PATH``)


class _Path:
    """One stage's identity path in this step's forward: its units ``first``..``last``, the
    mask M (None: every unit's f is the identity, M is all ones) and the stage's 0-d views."""
    __slots__ = ("first", "last", "mask", "numel", "views", "grad_seen", "__weakref__")

    def __init__(self, first, last, mask, numel, views):
        self.first, self.last, self.mask, self.numel, self.views = first, last, mask, numel, views
        self.grad_seen = False


class IdentityPath:
    """A probe's identity-path taps and the per-stage sums they leave for ``step()``."""

    def __init__(self, index):
        n = len(index.units)
        stage = [index.slot_meta[u * PER_UNIT][1] for u in range(n)]
        self.starts = [u == 0 or stage[u - 1] != stage[u] for u in range(n)]
        self.ends = [u for u in range(n) if u == n - 1 or stage[u + 1] != stage[u]]
        self.stage_of_end = {u: s for s, u in enumerate(self.ends)}
        self.sums = self.views = None
        at = {INPUT: self._at_input, SHORTCUT: self._at_shortcut, SUM: self._at_sum, OUTPUT: self._at_output}
        self._forwards = {module: partial(at[slot % PER_UNIT], slot // PER_UNIT)
                          for module, slot in index.tap_slot.items() if slot % PER_UNIT in at}
        self.clear_step()

    def forwards(self) -> dict:
        """Tap module -> the function to run after the probe's own forward of that tap."""
        return self._forwards

    def ensure(self, device):
        """The (stages, len(SUMS)) float64 buffer and its 0-d views (made once: indexing costs)."""
        if self.sums is None or self.sums.device != device:
            self.sums = torch.zeros(len(self.ends), len(SUMS), dtype=torch.float64, device=device)
            self.views = [tuple(row[k] for k in range(len(SUMS))) for row in self.sums]

    def clear_step(self):
        """Drop every tensor held for the step (its masks; a hook that fires later finds none)."""
        self.paths = {}                      # stage number -> _Path of this step
        self._clear_unit()
        self.first = self.mask = None        # the path being followed: its first unit, its mask

    def _clear_unit(self):
        self.x = self.y = None
        self.identity = False

    def nbytes(self) -> int:
        return 0 if self.sums is None else self.sums.numel() * self.sums.element_size()

    # ---- the taps (each returns its tensor unchanged) -----------------------------------------
    def _at_input(self, unit, x):
        self.x = x
        return x

    def _at_shortcut(self, unit, h):
        self.identity = h is self.x and isinstance(h, torch.Tensor)
        self.x = None
        return h

    def _at_sum(self, unit, y):
        self.y = y
        return y

    def _at_output(self, unit, out):
        if not isinstance(out, torch.Tensor):
            self._clear_unit()
            return out
        stage = self.stage_of_end.get(unit)
        if in_backward():                    # a checkpoint's recomputation: hook its gradient only
            path = None if stage is None else self.paths.get(stage)
            if path is not None and out.requires_grad:
                _hook(out, path)
            self._clear_unit()
            return out
        if self.starts[unit]:                # a new stage: its path starts afresh
            self.first = self.mask = None
        if self.identity:
            # f = identity passes everything; else [out != 0] as a new tensor (a float tensor's
            # bool(): 15x faster than ``out != 0`` on the CPU, NaN passes, -0.0 does not)
            passes = None if out is self.y else out.bool()
            if self.first is None:
                self.first, self.mask = unit, passes
            elif passes is not None:
                self.mask = passes if self.mask is None else self.mask.logical_and_(passes)
        else:                                # a projection or zero-padding: the path starts after it
            self.first = self.mask = None
        self._clear_unit()
        if stage is not None:
            if self.first is not None:
                self.ensure(out.device)
                path = self.paths[stage] = _Path(self.first, unit, self.mask, out.numel(), self.views[stage])
                if out.requires_grad:
                    _hook(out, path)
            self.first = self.mask = None
        return out

    # ---- step() ---------------------------------------------------------------------------------
    def finish_step(self):
        """``(values, seen)``: the float64 sums of every stage (``SUMS`` per stage, on the device)
        and per stage ``(first unit, last unit, forward seen, backward seen)`` (-1, -1, 0, 0
        without a path this step); None when no stage had one."""
        if not self.paths:
            return None
        seen = []
        for stage in range(len(self.ends)):
            path = self.paths.get(stage)
            if path is None:
                seen += [-1, -1, 0, 0]
                continue
            _, _, opened, numel = path.views
            if path.mask is None:
                opened.fill_(path.numel)
            else:
                opened.copy_(torch.count_nonzero(path.mask))     # a third of bool sum()'s time
            numel.fill_(path.numel)
            seen += [path.first, path.last, 1, int(path.grad_seen)]
        return self.sums.flatten(), seen


def _hook(out, path):
    """The gradient of a stage's last output: a pre-hook on the node that made it (a tensor hook
    for a leaf), holding the path by a weak reference: a graph that outlives the step holds no mask."""
    ref = weakref.ref(path)
    node = out.grad_fn
    if node is None:
        out.register_hook(partial(_on_grad, ref))
    else:
        node.register_prehook(partial(_on_grad_input, ref, out.output_nr))


def _on_grad_input(ref, k, grads):
    if grads[k] is not None:
        _on_grad(ref, grads[k])


def _on_grad(ref, g):
    """sum g^2 M and sum g^2 into the stage's views, accumulated in fp32; nothing read back."""
    path = ref()
    if path is None:
        return
    passed, energy = path.views[:2]
    sq = g.float().square()
    total = sq.sum()
    energy.copy_(total)
    # the mask as uint8: a float times a bool tensor takes a path several times slower on the CPU
    passed.copy_(total if path.mask is None else sq.mul_(path.mask.view(torch.uint8)).sum())
    path.grad_seen = True
