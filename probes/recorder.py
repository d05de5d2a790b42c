"""What happens at each tap and each gradient during a probed step: the probe's Python taps
and gradient hooks, and the C++ ones that take over on the CPU.

* A Tap's forward, while the probe is in, measures its tensor into the forward slots and
  hooks its gradient; the gradient hook measures the gradient into the backward slots.
* A tensor that passes several taps is measured once: the output of unit k is the input of
  unit k+1, an identity shortcut returns its input, and the sum of a V2 unit is its output.
  Backward likewise: the gradient of a sum is the same tensor object as the gradient of the
  branch that fed it. Gradients are recognised by a weak reference and their version
  counter, never held, so autograd still accumulates into them in place.
* A gradient is caught by a pre-hook on the node that made the tapped tensor (a tensor hook
  only for a leaf).
* From the second probed step on the CPU, the C++ taps and hooks (``kernels/_cpp_hooks.cpp``)
  do all of this without the interpreter and call back (``CppCallbacks``) for what they do not
  take. The Python ones stay the reference: both record the same rows, bit for bit.

Under ``torch.utils.checkpoint`` a forward that runs inside the backward pass is a
recomputation: it records no forward statistics and only registers gradient hooks (which fire
for the reentrant variant, whose first forward ran without grad). Under ``torch.no_grad``
only forward statistics are recorded.
"""
from __future__ import annotations

import gc
import weakref
from functools import partial

import torch

from . import kernels
from .shortcut_cut import ShortcutCut
from .slots import Scratch, Slots
from .tap_index import PER_UNIT


def in_backward() -> bool:
    """True while the autograd engine runs, i.e. for gradient checkpointing's recomputed forward."""
    return torch._C._current_graph_task_id() != -1


class TapRecorder:
    """A probe's taps and gradient hooks, and the raw sums they leave for ``step()``.

    ``measured[position]``: whether the tap at that position of a unit is measured; ``signs``:
    whether the sign sums are wanted (the torch path computes them only then); ``cut``: whether
    shortcut_cut's numerators are read; ``cpp``: whether the C++ taps may take over.
    """

    def __init__(self, index, measured, signs, cut, cpp, pause_gc):
        self.measured, self.signs = measured, signs
        self.fwd, self.bwd = Slots(index.n_slots), Slots(index.n_slots)
        self.cut = ShortcutCut(len(index.units)) if cut else None
        self.scratch = Scratch()
        self.cpp = None if cpp else False    # the C++ recorder (None: not tried yet; False: none)
        self.pause_gc, self.paused = pause_gc, False
        self._tap_slot = index.tap_slot
        self._python_forwards = [(module, partial(self.tap_forward, slot)) for module, slot in index.tap_slot.items()]
        self._cpp_forwards = None
        # One gradient hook per slot, made once: a new function per registration is garbage
        # the collector would have to look at (output_nr 0 is the rule; others are made on use).
        self._grad_hooks = [partial(self.on_grad_input, slot, 0) for slot in range(index.n_slots)]
        self.clear_step()

    def forwards(self):
        """(Tap module, the forward it gets while the probe is in): the C++ ones once made."""
        return self._cpp_forwards or self._python_forwards

    # ---- a step's beginning and end ----------------------------------------------------------
    def begin_step(self):
        """A probed step's first tap: the collector pauses (``CollectorPause``)."""
        if self.pause_gc and not self.paused:
            self.paused = True
            CollectorPause.acquire()

    def resume_collector(self):
        if self.paused:
            self.paused = False
            CollectorPause.release()

    def take(self):
        """The slots the C++ taps and hooks measured this step, merged into the Python ones."""
        if self.cpp:
            (fwd, fwd_source), (bwd, bwd_source) = self.cpp.take()
            self.fwd.merge(fwd, fwd_source)
            self.bwd.merge(bwd, bwd_source)

    def end_step(self):
        for slots in (self.fwd, self.bwd):
            slots.reset()
            slots.trim()

    def clear_step(self):
        """Drop every tensor held for the step (at its end, entering or leaving the ``with``)."""
        if self.cpp:
            self.cpp.clear_step()
        self.last_fwd = (None, -1)           # (tensor, slot) most recently measured
        self.sign_of = None                  # the tensor whose sign() scratch 0 holds
        self.recent_grads = []               # [(weakref to a gradient, its version, slot)]
        if self.cut is not None:
            self.cut.clear()
        self.scratch.release()

    def nbytes(self) -> int:
        return self.fwd.nbytes() + self.bwd.nbytes() + (0 if self.cut is None else self.cut.nbytes())

    # ---- the Python taps ------------------------------------------------------------------------
    def tap_forward(self, slot, t):
        """A Tap's forward while the probe is in: measure the tensor, return it unchanged."""
        if isinstance(t, torch.Tensor):
            self.on_tap(slot, t)
        return t

    def on_tap(self, slot, t):
        """A tap in Python: the probe's first step, or where the C++ taps are not used (a GPU,
        not built) or hand a tensor back (not on the CPU; gradient checkpointing's
        recomputation)."""
        self.begin_step()
        if self.cpp is None:
            self.cpp = self._new_cpp_recorder(t)
        tap = slot % PER_UNIT
        if in_backward():                    # gradient checkpointing's recomputation
            if self.measured[tap] and t.requires_grad:
                self.hook_grad(slot, t)
            return
        # At an output tap: (h, the unit's cut numerator) when its masked energy is wanted.
        masked = self.cut.at_tap(slot, tap, t) if self.cut is not None else None
        if self.measured[tap]:
            last, last_slot = self.last_fwd
            self.fwd.ensure(t.device)
            if t is last:                    # the same tensor as the previous tap
                self.fwd.alias(slot, last_slot)
                if t.requires_grad:
                    self.bwd.alias(slot, last_slot)
            else:                            # masked energy in the same read (``raw_sums``)
                signed = self.fwd.measure(slot, t, self.scratch if self.signs or masked else None, masked)
                self.sign_of = t if signed else None
                self.last_fwd = (t, slot)
                masked = None
                if t.requires_grad:
                    self.hook_grad(slot, t)
        if masked is not None:               # the output tap itself is not measured
            kernels.for_device(t.device).masked_energy(masked[0], t, masked[1], self.scratch,
                                                       sign_ready=self.sign_of is t)

    # ---- the Python gradient hooks --------------------------------------------------------------
    def hook_grad(self, slot, t):
        rec = self.cpp                       # made by the first tap (``on_tap``)
        if rec and t.is_cpu and rec.hook(t, slot):
            return
        node = t.grad_fn
        if node is None:                     # a leaf that requires grad: a tensor hook
            t.register_hook(lambda g, slot=slot: self.on_grad(slot, g))
            return
        # A pre-hook on the node that made t receives the same (accumulated) gradient as a
        # tensor hook would, and costs a tenth to register (docs/PERFORMANCE.md).
        k = t.output_nr
        node.register_prehook(self._grad_hooks[slot] if k == 0 else partial(self.on_grad_input, slot, k))

    def on_grad_input(self, slot, k, grads):
        """A node pre-hook: the gradient of the node's output ``k`` is the tap's."""
        if grads[k] is not None:
            self.on_grad(slot, grads[k])

    def on_grad(self, slot, g):
        # The same gradient object often reaches several taps (a sum and the branch that fed
        # it). A strong reference would stop autograd from accumulating into it in place.
        self.bwd.ensure(g.device)
        for ref, version, source in self.recent_grads:
            if ref() is g and g._version == version:
                self.bwd.alias(slot, source)
                return
        self.bwd.measure(slot, g, self.scratch if self.signs else None)
        self.recent_grads = [(weakref.ref(g), g._version, slot)] + self.recent_grads[:2]

    # ---- the C++ taps and hooks -----------------------------------------------------------------
    def _new_cpp_recorder(self, t):
        """The C++ taps and gradient hooks of the backend of ``t``'s device, or False where it
        has none (a GPU) or they are not built. Its taps replace the Python ones from the next
        probed step on."""
        backend = kernels.for_device(t.device)
        if self.cut is not None:
            self.cut.ensure(t.device)
        rec = backend.cpp_recorder(self.fwd.n, self.measured, None if self.cut is None else self.cut.numerators,
                                   CppCallbacks(self))
        if rec is None:
            return False
        self.fwd.on_moved, self.bwd.on_moved = partial(rec.forget, 0), partial(rec.forget, 1)
        self._cpp_forwards = [(module, rec.tap_function(slot)) for module, slot in self._tap_slot.items()]
        return rec

    def measure_forward(self, slot, t, h, unit):
        """A C++ tap's tensor that it has no kept layout for (and the unit's shortcut ``h``,
        whose cut is read in the same pass, or None): measured here; returns what the C++
        side keeps to read the next ones itself, or None."""
        self.fwd.ensure(t.device)
        masked = None if h is None else (h, self.cut.views[unit])
        self.fwd.measure(slot, t, self.scratch if self.signs or masked else None, masked)
        return self._kept_read(self.fwd, slot, t, h)

    def measure_grad(self, slot, g):
        """A C++ hook's gradient that it has no kept layout for: measured here (as above)."""
        self.bwd.ensure(g.device)
        self.bwd.measure(slot, g, self.scratch if self.signs else None)
        return self._kept_read(self.bwd, slot, g)

    def masked_energy(self, h, t, unit):
        """A C++ tap's cut numerator when the output tap is not measured."""
        kernels.for_device(t.device).masked_energy(h, t, self.cut.views[unit], self.scratch)

    @staticmethod
    def _kept_read(slots, slot, t, h=None):
        if slots.kept[slot] is None:         # no one-pass read of this layout: Python reads
            return None
        s1c, (row, _) = slots.views[slot]
        return slots.backend.kept_read(t, h, s1c, row)


class CppCallbacks:
    """The table through which the C++ taps and hooks call back into Python (``struct
    Callbacks`` of ``kernels/_cpp_hooks.cpp`` reads these six names), each through a weak
    reference to the recorder: a graph that outlives its probe keeps its hooks, not the probe."""
    __slots__ = ("_recorder",)

    def __init__(self, recorder):
        self._recorder = weakref.ref(recorder)

    def begin_step(self):
        rec = self._recorder()
        return None if rec is None else rec.begin_step()

    def on_tap(self, slot, x):
        rec = self._recorder()
        return None if rec is None else rec.on_tap(slot, x)

    def hook_grad(self, slot, x):
        rec = self._recorder()
        return None if rec is None else rec.hook_grad(slot, x)

    def masked_energy(self, h, x, unit):
        rec = self._recorder()
        return None if rec is None else rec.masked_energy(h, x, unit)

    def measure_forward(self, slot, x, h, unit):
        rec = self._recorder()
        return None if rec is None else rec.measure_forward(slot, x, h, unit)

    def measure_grad(self, slot, g):
        rec = self._recorder()
        return None if rec is None else rec.measure_grad(slot, g)


class CollectorPause:
    """Python's cyclic garbage collector, paused while any probe's probed step runs.

    A probed step's Python gradient hooks (on a GPU, or where the C++ ones are not built) hang
    ~3 small objects each on the autograd graph (~3,000 at 1001 layers), alive until the graph
    is freed; collections during the step find them alive, promote them, and end in full
    collections of the whole model (docs/PERFORMANCE.md). Nothing the step allocates is cyclic
    garbage the collector is needed for. Pauses nest across probes; the collector's state
    before the first is put back after the last.
    """
    held = 0
    was_enabled = False

    @classmethod
    def acquire(cls):
        if cls.held == 0:
            cls.was_enabled = gc.isenabled()
            gc.disable()
        cls.held += 1

    @classmethod
    def release(cls):
        cls.held -= 1
        if cls.held == 0 and cls.was_enabled:
            gc.enable()
