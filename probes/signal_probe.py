"""SignalProbe: statistics of every tapped tensor and its gradient, at every step, cheaply.

How it stays cheap (``experiments/bench_probes.py`` measures it):

* A hook writes a few raw sums of its tensor into preallocated buffers on the tensor's
  device (``stats.raw_sums``: one read of the tensor by the C module on the CPU, by one
  Triton launch on a GPU, five ``out=`` reductions elsewhere); it never reads a value back,
  so it never synchronises with the host. ``step()`` derives every statistic of every tap
  at once and moves them to the host in one transfer.
* Gradients are held by weak references only, so autograd still accumulates in place.
* A tensor that passes several taps is measured once: the output of unit k is the input of
  unit k+1, an identity shortcut returns its input, and the sum of a V2 unit is its output.
  Backward likewise: the gradient of a sum is the same tensor object as the gradient of the
  branch that fed it.
* Taps are reached without hooks: while the probe is in, each Tap module (an identity) has
  an instance ``forward`` that measures its tensor and returns it (see ``_sync_hooks``).
* On the CPU, from the second probed step, the taps' forwards and the gradient hooks are
  C++ (``cpp_hooks``, ``_cpp_hooks.cpp``): they run the same logic without the interpreter
  (~5 us less per tap, ~12 us per gradient hook) and call back into this module only for a
  layout they have not kept. The Python taps and hooks below do the first step, and all of
  it on a GPU (whose reads are launched from Python anyway) or where the C++ is not built.
* ``every=k``: on unprobed steps nothing is installed at all.
* A slot's tensor has the same layout at every step, so how to read it (the C module's
  arguments, the Triton kernel's launch plan) is kept and only checked (shape, strides,
  dtype, device) on later steps.
* Python's garbage collector is paused while a probed step runs (``_CollectorPause``).

Correctness under ``torch.utils.checkpoint``: a forward that runs inside the backward pass
is a recomputation; it records no forward statistics (no double counting) and only
registers gradient hooks (which fire for the reentrant variant, whose first forward ran
without grad). Under ``torch.no_grad`` only forward statistics are recorded.

DistributedDataParallel: the probe sees the wrapped module's taps and measures the local
rank's batch; statistics are not reduced across ranks. The training engine collects them
on rank 0 only.
"""
from __future__ import annotations

import gc
import weakref
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from resnet_lab.taps import TAP_INDEX, TAP_NAMES, tapped_units

from . import stats as S

_F32 = torch.float32
_threads = torch.get_num_threads

PROBE_COLUMNS = ["step", "unit", "stage", "index", "tap", "direction", "stat", "value", "layer"]
_SCALARS = 3          # sum t^2, sum sign(t), sum sign(t)^2
# A unit's five taps occupy consecutive slots: slot = unit * _PER_UNIT + position.
_PER_UNIT = len(TAP_NAMES)
_SHORTCUT, _SUM, _OUTPUT = TAP_INDEX["shortcut"], TAP_INDEX["sum"], TAP_INDEX["output"]


def _chained(first, then, x):
    """The forward of a Tap that two probes measure: the newer probe's, then the older's."""
    return then(first(x))


def _in_backward() -> bool:
    """True while the autograd engine runs, i.e. for a checkpoint's recomputed forward."""
    return torch._C._current_graph_task_id() != -1


class _CollectorPause:
    """Python's cyclic garbage collector, paused while any probe's probed step runs.

    A probed step's Python gradient hooks (on a GPU, or where the C++ ones are not built) hang
    ~3 small objects each on the autograd graph (~3,000 at 1001 layers: the node's Python object
    and its hook dict, made by PyTorch), alive until the graph is freed. Collections during the
    step find them alive, promote them, and every ~20 steps that triggers a full collection of a
    1001-layer net's ~420,000 objects (~200 ms): 14.7 ms a step on average against 0.7 ms
    unprobed (measured, 2-core CPU). Nothing the step allocates is cyclic garbage the collector
    is needed for (reference counts free it). Pauses nest across probes; the collector's state
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


class _Slots:
    """Raw sums of one direction: one slot per (unit, tap), filled by hooks during a step.

    A slot's channel sums live at a fixed offset of one flat buffer, assigned when the
    slot is first measured (the buffer grows only during the first probed step).
    """

    def __init__(self, n_slots):
        self.n = n_slots
        self.offset = [-1] * n_slots         # start of the slot's channels in ``s1c``
        self.channels = [0] * n_slots
        self.count = [0] * n_slots           # elements per channel this step
        self.source = list(range(n_slots))   # a slot measured as another (same tensor)
        self.seen = [False] * n_slots
        self.s1c = None
        self.scalars = None
        self.views = [None] * n_slots       # per slot: (s1c view, (scalar row, its three 0-d views))
        self.kept = [None] * n_slots        # per slot: (layout, its stats.one_pass function)
        self.used = 0
        self._layout = None                  # cached device tensors (seg, channels)
        self._per_step = None                # cached (count list, source list, their tensors)
        self.on_moved = None                 # called with a slot whose views were remade

    def ensure(self, device):
        if self.scalars is None or self.scalars.device != device:
            self.scalars = torch.zeros(self.n, _SCALARS, device=device)
            self.s1c = torch.zeros(max(self.used, 1024), device=device)
            self._layout = None
            self.kept = [None] * self.n
            self._make_views()

    def measure(self, slot, t, scratch, masked=None):
        """Hook body: reductions of ``t`` into this slot's views (``stats.raw_sums``).

        A slot sees tensors laid out alike at every step, so the work of reading them is
        worked out once and kept per slot (``kept``: the layout it holds for, the function
        ``stats.one_pass`` made: the C module's arguments, or the Triton kernel's launch
        plan) and reused while the layout stays. On the CPU comparing layouts costs a third
        of working the arguments out again (measured: 0.7 against 2.6 us; 1.2 against 3.9
        with the shortcut read in the same pass), at ~1,700 calls a step; on a GPU it skips
        the checks of the kernel's arguments and the search for its plan (measured on the
        CPU, the launch left out: 1.6 against 4.1 us; 3.0 against 6.3 with the shortcut)."""
        self.source[slot] = slot
        self.seen[slot] = True
        h = None if masked is None else masked[0]
        kept = self.kept[slot]
        if kept is not None and kept[0] == S.layout(t, h):
            kept[1](t, masked)
            return False
        c = t.shape[1]
        if self.offset[slot] < 0:
            self._allocate(slot, c)
        self.count[slot] = t.numel() // c
        s1c, scalars = self.views[slot]
        again = S.one_pass(t, s1c, scalars[0], masked)
        self.kept[slot] = None if again is None else (S.layout(t, h), again)
        return S.raw_sums(t, s1c, scalars, scratch, masked)

    def alias(self, slot, source):
        self.source[slot] = source
        self.seen[slot] = True

    def _allocate(self, slot, c):
        self.offset[slot], self.channels[slot] = self.used, c
        self.used += c
        self._layout = None
        if self.used > self.s1c.numel():     # grow by doubling: all views move
            grown = torch.zeros(2 * self.used, device=self.s1c.device)
            grown[: self.used - c] = self.s1c[: self.used - c]
            self.s1c = grown
            self._make_views()
        else:
            self._make_view(slot)

    def _make_views(self):
        for i, off in enumerate(self.offset):
            if off >= 0:
                self._make_view(i)

    def _make_view(self, i):
        """Views into the buffers, made once: slicing in every hook call costs time."""
        off = self.offset[i]
        row = self.scalars[i]
        self.views[i] = (self.s1c[off: off + self.channels[i]], (row, tuple(row[k] for k in range(_SCALARS))))
        self.kept[i] = None                  # the buffers' addresses changed
        if self.on_moved is not None:
            self.on_moved(i)

    def finalize(self):
        """All TENSOR_STATS of this step, (len(TENSOR_STATS), n) float64 on the device."""
        device = self.scalars.device
        if self._layout is None:
            measured = [i for i in range(self.n) if self.offset[i] >= 0]
            seg = torch.empty(self.used, dtype=torch.long)
            for i in measured:
                seg[self.offset[i]: self.offset[i] + self.channels[i]] = i
            chans = torch.tensor([max(c, 1) for c in self.channels], dtype=torch.float64)
            self._layout = (seg.to(device), chans.to(device))
        seg, chans = self._layout
        count, source = self._count_and_source(device)
        values = S.tensor_stats(self.s1c[: self.used].double(), seg, self.scalars.double().t(), count, chans)
        out = torch.stack([values[name] for name in S.TENSOR_STATS])
        return out[:, source]

    def _count_and_source(self, device):
        """``count`` and ``source`` as device tensors. They are the same at every step of a
        fixed batch size, and comparing two lists costs microseconds where making tensors
        of them costs a millisecond per step at 1,001 layers (measured)."""
        cached = self._per_step
        if cached is None or cached[0] != self.count or cached[1] != self.source or cached[2].device != device:
            count = torch.tensor([max(c, 1) for c in self.count], dtype=torch.float64)
            source = torch.tensor(self.source)
            cached = self._per_step = (list(self.count), list(self.source),
                                       count.to(device, non_blocking=True), source.to(device, non_blocking=True))
        return cached[2], cached[3]

    def merge(self, seen, source):
        """Slots the C++ taps or hooks measured (or aliased to ``source``) this step."""
        for i, s in zip(seen, source):
            self.seen[i] = True
            self.source[i] = s

    def valid(self):
        """Slots with a value this step: measured, or aliased to a measured slot."""
        return [self.seen[i] and self.seen[self.source[i]] for i in range(self.n)]

    def reset(self):
        self.seen = [False] * self.n
        self.source = list(range(self.n))

    def trim(self):
        """Give back the slack of growing by doubling, once the slots are laid out (after the
        first probed step): a 1001-layer V1 net at width 16 held 1.9 MB instead of 1.0."""
        if self.s1c is not None and self.s1c.numel() > max(self.used, 1):
            self.s1c = self.s1c[: max(self.used, 1)].clone()
            self._make_views()


def _call_probe(probe_ref, name, *args):
    """The C++ taps' and hooks' way back into a probe's method, by a weak reference: a graph
    that outlives the probe keeps its hooks, not the probe."""
    probe = probe_ref()
    return None if probe is None else getattr(probe, name)(*args)


class SignalProbe:
    """Record forward and backward statistics at the taps of any model built from resnet_lab units.

    Args:
        model: a module with tapped residual units (``resnet_lab.taps``: each unit owns the
            five taps in ``unit.taps``; ``net.units()`` lists them in order).
        taps: which of ``input, shortcut, branch, sum, output`` to report.
        stats: which statistics to report (``probes.stats`` defines each); default all.
        every: probe one step in ``every``; the others cost (almost) nothing.
        weight_inputs: also record the channel statistics of every Conv2d / Linear input.
        param_grads: also record each unit's parameter-gradient norm at ``step()``.
        first_step: the number of the first step in the rows (``step`` column); later steps
            count on from it, probed or not. Steps are numbered as the training engine numbers
            its updates: step s is the s-th update, so the first forward/backward is step 1.
        pause_gc: pause Python's cyclic garbage collector from a probed step's first tap to
            ``step()`` (or leaving the ``with``); see ``_CollectorPause`` for why.
        cpp_hooks: from the second probed step, measure CPU tensors and their gradients by
            taps and hooks in C++ where they are built (``probes.cpp_hooks``); False: by the
            Python ones throughout (the same statistics, bit for bit; slower).

    Use it as a context manager -- hooks exist only inside the ``with`` -- and call
    ``step()`` once after each backward (or after each forward when there is none).
    """

    def __init__(self, model: nn.Module, taps=TAP_NAMES, stats=None, every=1,
                 weight_inputs=False, param_grads=True, first_step=1, pause_gc=True, cpp_hooks=True):
        taps = (taps,) if isinstance(taps, str) else tuple(taps)
        bad = [t for t in taps if t not in TAP_NAMES]
        if bad:
            raise ValueError(f"unknown tap {bad[0]!r}; valid: {', '.join(TAP_NAMES)}")
        stats = S.ALL_STATS if stats is None else ((stats,) if isinstance(stats, str) else tuple(stats))
        bad = [s for s in stats if s not in S.ALL_STATS]
        if bad:
            raise ValueError(f"unknown stat {bad[0]!r}; valid: {', '.join(S.ALL_STATS)}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not isinstance(cpp_hooks, bool):
            raise ValueError(f"cpp_hooks must be True or False, got {cpp_hooks!r}")
        self.model, self.taps, self.stats, self.every = model, taps, stats, every
        self.weight_inputs, self.param_grads = weight_inputs, param_grads and "grad_norm" in stats
        self._signs = any(s in stats for s in S.SIGN_STATS)
        self._cut = "shortcut_cut" in stats and "sum" in taps
        # Taps measured: those asked for, and those the two cut statistics are derived from.
        measured = set(taps)
        if self._cut:
            measured.add("shortcut")
        if "grad_cut" in stats and "sum" in taps:
            measured.add("output")
        self._measured = [tap in measured for tap in TAP_NAMES]
        self._find_taps(model)
        self._fwd, self._bwd = _Slots(len(self._slot_meta)), _Slots(len(self._slot_meta))
        self._layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))] \
            if weight_inputs else []
        self._layer_slot = {layer: i for i, (_, layer) in enumerate(self._layers)}
        self._win = _Slots(len(self._layers))
        self._win_s2c = None
        self._handles = []
        # (Tap module, the forward installed on it while in) and what it had before
        self._tap_forwards = [(module, partial(self._tap_forward, slot)) for module, slot in self._tap_slot.items()]
        # One gradient hook per slot, made once: a new function per registration is garbage
        # the collector would have to look at (output_nr 0 is the rule; others are made on use).
        self._grad_hooks = [partial(self._on_grad_input, slot, 0) for slot in range(len(self._slot_meta))]
        self._pause_gc, self._paused = pause_gc, False
        self._recorder = None if cpp_hooks else False   # C++ taps and hooks (None: not tried yet)
        self._cpp_forwards = None            # (Tap module, its C++ forward), once a recorder exists
        self._installed = self._saved_forwards = None   # the forwards installed, what they replaced
        self._inside = False
        self._records = []
        self._calls = 0                      # step() calls so far
        self.first_step = first_step
        self._clear_step_refs()

    # ---- discovery -----------------------------------------------------------------------
    def _find_taps(self, model):
        units = tapped_units(model)
        names = {m: n for n, m in model.named_modules()}
        self._units = units
        self._unit_of = {id(m): u for u, unit in enumerate(units) for m in unit.modules()}
        self._slot_meta = []          # (unit number, stage, index, tap name, module name)
        self._tap_slot = {}           # Tap module -> slot
        for u, unit in enumerate(units):
            for tap in TAP_NAMES:
                module = unit.taps[tap]
                self._tap_slot[module] = len(self._slot_meta)
                self._slot_meta.append((u, getattr(unit, "stage", -1), getattr(unit, "index", u),
                                        tap, names.get(module, "")))
        params = [(u, p) for u, unit in enumerate(units) for p in unit.parameters() if p.requires_grad]
        self._params = [p for _, p in params]
        self._param_unit = torch.tensor([u for u, _ in params], dtype=torch.int64)
        self._param_numel = torch.tensor([p.numel() for _, p in params], dtype=torch.int64)

    # ---- context -------------------------------------------------------------------------
    def __enter__(self):
        self._inside = True
        self._clear_step_refs()
        self._sync_hooks()
        return self

    def __exit__(self, *exc):
        self._inside = False
        self._sync_hooks()
        self._clear_step_refs()
        self._resume_collector()
        return False

    def _resume_collector(self):
        if self._paused:
            self._paused = False
            _CollectorPause.release()

    def _sync_hooks(self):
        """Tap functions installed exactly while inside the ``with`` on a probed step.

        Each Tap module gets an instance ``forward`` (``_tap_forward`` for its slot, or once the
        C++ recorder exists its ``tap_function``); leaving removes it, so the class's identity
        ``forward`` is back. Not hooks, because of what they cost at every step (measured per
        call, 2-core CPU): a process-wide module hook sends every module call through PyTorch's
        slow path (+2.6 us for each of ~6,300 modules of a 1001-layer net: ~2% of a step), and
        one hook per tap costs 5 us to register and remove (1,665 taps: 8 ms a step); setting
        and deleting an instance attribute costs 0.1 us, and the call stays on the fast path.
        Probes on one model nest: each installs its function in front of the one it finds and
        puts that one back on leaving (leave them in reverse order, as ``with`` blocks do).
        Weight-layer inputs use a process-wide pre-hook (``weight_inputs=True`` only).
        """
        want = self._inside and self._active
        if want and self._saved_forwards is None:
            self._installed = self._cpp_forwards or self._tap_forwards
            self._saved_forwards = [module.__dict__.get("forward") for module, _ in self._installed]
            for (module, forward), before in zip(self._installed, self._saved_forwards):
                module.__dict__["forward"] = forward if before is None else partial(_chained, forward, before)
            if self._layers:
                self._handles.append(register_module_forward_pre_hook(self._on_module_input))
        elif not want and self._saved_forwards is not None:
            for (module, _), before in zip(self._installed, self._saved_forwards):
                if before is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.__dict__["forward"] = before
            self._saved_forwards = None
            for h in self._handles:
                h.remove()
            self._handles.clear()

    def _tap_forward(self, slot, t):
        """A Tap's forward while the probe is in: measure the tensor, return it unchanged."""
        if isinstance(t, torch.Tensor):
            self._on_tap(slot, t)
        return t

    def _on_module_input(self, module, args):
        i = self._layer_slot.get(module)
        if i is not None and args:
            self._on_weight_input(i, args[0])

    def _clear_step_refs(self):
        if self._recorder:
            self._recorder.clear_step()
        self._active = self._calls % self.every == 0
        self._last_fwd = (None, -1)          # (tensor, slot) most recently measured
        self._sign_of = None                 # the tensor whose sign() scratch 0 holds
        self._recent_grads = []              # [(weakref to a gradient, its version, slot)]
        self._unit_h = None                  # this unit's shortcut and sum tensors
        self._unit_y = None
        self._scratch_bufs = [None, None]

    # ---- hooks ---------------------------------------------------------------------------
    def _begin_step(self):
        """A probed step's first tap: the collector pauses (``_CollectorPause``)."""
        if self._pause_gc and not self._paused:
            self._paused = True
            _CollectorPause.acquire()

    def _on_tap(self, slot, t):
        """A tap in Python: the probe's first step, or where the C++ taps are not used (a GPU,
        not built) or hand a tensor back (not on the CPU; a checkpoint's recomputation)."""
        if not self._active:
            return
        if not self._paused:
            self._begin_step()
        if self._recorder is None:
            self._recorder = self._new_recorder(t)
        tap = slot % _PER_UNIT
        if _in_backward():                   # a checkpoint's recomputation
            if self._measured[tap] and t.requires_grad:
                self._hook_grad(slot, t)
            return
        # At an output tap: (h, the unit's cut numerator) when its masked energy is wanted.
        masked = self._shortcut_cut(slot, tap, t) if self._cut else None
        if self._measured[tap]:
            last, last_slot = self._last_fwd
            self._fwd.ensure(t.device)
            if t is last:                    # the same tensor as the previous tap
                self._fwd.alias(slot, last_slot)
                if t.requires_grad:
                    self._bwd.alias(slot, last_slot)
            else:                            # masked energy in the same read (``raw_sums``)
                signed = self._fwd.measure(slot, t, self._scratch if self._signs or masked else None, masked)
                self._sign_of = t if signed else None
                self._last_fwd = (t, slot)
                masked = None
                if t.requires_grad:
                    self._hook_grad(slot, t)
        if masked is not None:               # the output tap itself is not measured
            S.masked_energy(masked[0], t, masked[1], self._scratch, sign_ready=self._sign_of is t)

    def _hook_grad(self, slot, t):
        rec = self._recorder                 # made by the first tap (``_on_tap``)
        if rec and t.is_cpu and rec.hook(t, slot):
            return
        node = t.grad_fn
        if node is None:                     # a leaf that requires grad: a tensor hook
            t.register_hook(lambda g, slot=slot: self._on_grad(slot, g))
            return
        # A pre-hook on the node that made t receives the same (accumulated) gradient as a
        # tensor hook would, and registering it costs 3 us instead of 30 (measured; ~1,000
        # per step at 1001 layers).
        k = t.output_nr
        node.register_prehook(self._grad_hooks[slot] if k == 0 else partial(self._on_grad_input, slot, k))

    def _new_recorder(self, t):
        """The C++ taps and gradient hooks (``cpp_hooks``) for a probe of CPU tensors, or False
        where they or the C module (they read by its kernel) are not built. Its taps replace
        the Python ones from the next probed step on."""
        from .kernels import cpp_hooks      # here: ``python -m probes.cpp_hooks`` imports probes first
        sums = getattr(S._fastsums, "SUMS_INTO", None)
        ext = cpp_hooks.load() if t.is_cpu and sums is not None else None
        if ext is None:
            return False
        if self._cut and self._cut_num is None:
            self._cut_numerators(t.device)
        rec = ext.Recorder(len(self._slot_meta), self._measured, self._cut_num if self._cut else None,
                           partial(_call_probe, weakref.ref(self)), sums)
        self._fwd.on_moved, self._bwd.on_moved = partial(rec.forget, 0), partial(rec.forget, 1)
        self._cpp_forwards = [(module, rec.tap_function(slot)) for module, slot in self._tap_slot.items()]
        return rec

    def _measure_forward(self, slot, t, h, unit):
        """A C++ tap's tensor that it has no kept layout for (and the unit's shortcut ``h``,
        whose cut is read in the same pass, or None): measured here; see ``_kept_read``."""
        self._fwd.ensure(t.device)
        masked = None if h is None else (h, self._cut_views[unit])
        self._fwd.measure(slot, t, self._scratch if self._signs or masked else None, masked)
        return self._kept_read(self._fwd, slot, t, h)

    def _measure_grad(self, slot, g):
        """A C++ hook's gradient that it has no kept layout for: measured here; see ``_kept_read``."""
        self._bwd.ensure(g.device)
        self._bwd.measure(slot, g, self._scratch if self._signs else None)
        return self._kept_read(self._bwd, slot, g)

    @staticmethod
    def _kept_read(slots, slot, t, h=None):
        """What the C++ side keeps to read the slot's next tensors of this layout itself --
        ``(outer, C, inner, channel-sums view, scalars row)`` -- or None (the C module does not
        read it: Python does, every time)."""
        blocks = S.cpu_blocks(t, h)
        if blocks is None or slots.kept[slot] is None:
            return None
        s1c, (row, _) = slots.views[slot]
        return (*blocks, s1c, row)

    def _masked_energy(self, h, t, unit):
        """A C++ tap's cut numerator when the output tap itself is not measured."""
        S.masked_energy(h, t, self._cut_views[unit], self._scratch)

    def _on_grad_input(self, slot, k, grads):
        """A node pre-hook: the gradient of the node's output ``k`` is the tap's."""
        if grads[k] is not None:
            self._on_grad(slot, grads[k])

    def _on_grad(self, slot, g):
        # The same gradient object often reaches several taps (a sum and the branch that
        # fed it). It is recognised by a weak reference and its version counter: a strong
        # reference would stop autograd from accumulating into it in place, and cost an
        # out-of-place add at every unit's input (measured: ~5% of a ResNet-164 step).
        self._bwd.ensure(g.device)
        for ref, version, source in self._recent_grads:
            if ref() is g and g._version == version:
                self._bwd.alias(slot, source)
                return
        self._bwd.measure(slot, g, self._scratch if self._signs else None)
        self._recent_grads = [(weakref.ref(g), g._version, slot)] + self._recent_grads[:2]

    def _shortcut_cut(self, slot, tap, t):
        """Forward numerator of ``shortcut_cut``, sum h^2 [f(y) = 0]: remembers the unit's
        shortcut h and sum y at their taps; at the output tap returns ``(h, out)`` -- the
        numerator is ``masked_energy(h, t)`` into the 0-d view ``out`` -- or None (f is the
        identity: it zeroes nothing, the numerator is 0)."""
        if tap == _SHORTCUT:
            self._unit_h = t
        elif tap == _SUM:
            self._unit_y = t
        elif tap == _OUTPUT and self._unit_h is not None:
            if self._cut_num is None or self._cut_num.device != t.device:
                self._cut_numerators(t.device)
            u = slot // _PER_UNIT
            h, y = self._unit_h, self._unit_y
            self._unit_h = self._unit_y = None
            if t is y:
                self._cut_views[u].zero_()
            else:
                return h, self._cut_views[u]
        return None

    _cut_num = None

    def _cut_numerators(self, device):
        """The per-unit buffer of ``shortcut_cut`` numerators, and its 0-d views (made once:
        indexing costs)."""
        self._cut_num = torch.zeros(len(self._units), device=device)
        self._cut_views = [self._cut_num[u] for u in range(len(self._units))]

    def _scratch(self, k, like):
        """Reused flat fp32 buffer ``k`` (0 or 1) of ``like.numel()`` elements on the device of
        ``like``, for the torch-operation path of ``stats`` (the C module needs none).

        Held only during a probed step (released by ``step()``): fresh megabyte-sized
        allocations in every hook would cost more than the reductions themselves on CPU.
        """
        n = like.numel()
        buf = self._scratch_bufs[k]
        if buf is None or buf.numel() < n or buf.device != like.device:
            buf = self._scratch_bufs[k] = torch.empty(n, device=like.device)
        return buf[:n]

    def _on_weight_input(self, i, x):
        if not self._active or _in_backward() or not isinstance(x, torch.Tensor):
            return
        win = self._win
        win.ensure(x.device)
        c = x.shape[1]
        if win.offset[i] < 0:
            win._allocate(i, c)
        if self._win_s2c is None or self._win_s2c.numel() < win.s1c.numel() \
                or self._win_s2c.device != x.device:
            grown = torch.zeros(win.s1c.numel(), device=x.device)
            if self._win_s2c is not None:
                grown[: self._win_s2c.numel()] = self._win_s2c
            self._win_s2c = grown
        off = win.offset[i]
        S.channel_moments(x, win.s1c[off:off + c], self._win_s2c[off:off + c])
        win.count[i] = x.numel() // c
        win.seen[i] = True

    # ---- per step ------------------------------------------------------------------------
    def step(self):
        """Close one step: derive all statistics and move them to the host in one transfer."""
        if self._active:
            if self._recorder:
                (fwd, fwd_source), (bwd, bwd_source) = self._recorder.take()
                self._fwd.merge(fwd, fwd_source)
                self._bwd.merge(bwd, bwd_source)
            parts, layout = [], []
            for name, slots in (("forward", self._fwd), ("backward", self._bwd)):
                valid = slots.valid()
                if any(valid):
                    parts.append(slots.finalize().flatten())
                    layout.append((name, valid))
            if self._cut_num is not None and any(self._fwd.seen):
                parts.append(self._cut_num.double())
                layout.append(("cut", None))
            if self._layers and any(self._win.seen):
                parts.append(self._finalize_weight_inputs())
                layout.append(("weight_input", list(self._win.seen)))
            grad_norms = self._param_grad_norms()
            if grad_norms is not None:
                parts.append(grad_norms)
                layout.append(("params", None))
            if parts:
                host = torch.cat(parts).cpu().numpy()      # the step's one transfer
                self._records.append((self.first_step + self._calls, host, layout))
            for slots in (self._fwd, self._bwd, self._win):
                slots.reset()
                slots.trim()
            if self._win_s2c is not None and self._win_s2c.numel() > self._win.s1c.numel():
                self._win_s2c = self._win_s2c[: self._win.s1c.numel()].clone()
        self._calls += 1
        self._clear_step_refs()
        self._sync_hooks()
        self._resume_collector()

    def _finalize_weight_inputs(self):
        win = self._win
        if win._layout is None:
            seg = torch.empty(win.used, dtype=torch.long)
            for i in range(win.n):
                if win.offset[i] >= 0:
                    seg[win.offset[i]: win.offset[i] + win.channels[i]] = i
            win._layout = (seg.to(win.s1c.device),
                           torch.tensor([max(c, 1) for c in win.channels], dtype=torch.float64).to(win.s1c.device))
        seg, chans = win._layout
        count = torch.tensor([max(c, 1) for c in win.count], dtype=torch.float64).to(win.s1c.device)
        values = S.weight_input_stats(win.s1c[: win.used].double(), self._win_s2c[: win.used].double(),
                                      seg, count, chans)
        return torch.stack([values[n] for n in S.WEIGHT_INPUT_STATS]).flatten()

    def _param_grad_norms(self):
        if not self.param_grads:
            return None
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):    # some parameters got no gradient this step
            have = [i for i, g in enumerate(grads) if g is not None]
            if not have:
                return None
            grads, owner, numels = [grads[i] for i in have], self._param_unit[have], self._param_numel[have]
        else:
            owner, numels = self._param_unit, self._param_numel
        return S.grouped_norms(grads, owner, len(self._units), numels)

    # ---- results -------------------------------------------------------------------------
    def collect(self) -> pd.DataFrame:
        """All recorded steps as a tidy DataFrame (DESIGN.md probe schema, plus ``layer``)."""
        frames = [self._frame(step, host, layout) for step, host, layout in self._records]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
                PROBE_COLUMNS, ["int64", "int64", "int64", "int64", "object", "object", "object",
                                "float64", "object"])})
        return pd.concat(frames, ignore_index=True)

    def _frame(self, step, host, layout):
        meta = np.array(self._slot_meta, dtype=object)
        n_slots, n_units = len(self._slot_meta), len(self._units)
        want_tap = np.isin(meta[:, 3], self.taps)
        pieces, pos = [], 0
        norms = {}
        for kind, seen in layout:
            if kind in ("forward", "backward"):
                block = host[pos: pos + len(S.TENSOR_STATS) * n_slots].reshape(len(S.TENSOR_STATS), n_slots)
                pos += block.size
                keep = np.asarray(seen) & want_tap
                norms[kind] = (block[S.TENSOR_STATS.index("norm")], np.asarray(seen))
                for k, stat in enumerate(S.TENSOR_STATS):
                    if stat in self.stats:
                        pieces.append(self._rows(meta[keep], kind, stat, block[k][keep]))
            elif kind == "cut":
                values = host[pos: pos + n_units]
                pos += n_units
                norms["cut"] = values
            elif kind == "weight_input":
                n = len(self._layers)
                block = host[pos: pos + len(S.WEIGHT_INPUT_STATS) * n].reshape(-1, n)
                pos += block.size
                keep = np.asarray(seen)
                wmeta = np.array([self._layer_meta(*nl) for nl in self._layers], dtype=object)
                for k, stat in enumerate(S.WEIGHT_INPUT_STATS):
                    if stat in self.stats:
                        pieces.append(self._rows(wmeta[keep], "forward", stat, block[k][keep]))
            elif kind == "params":
                values = host[pos: pos + n_units]
                pos += n_units
                umeta = np.array([(u, *self._slot_meta[u * _PER_UNIT][1:3], "params", "") for u in range(n_units)],
                                 dtype=object)
                pieces.append(self._rows(umeta, "backward", "grad_norm", values))
        pieces += self._cut_rows(norms)
        df = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=PROBE_COLUMNS)
        df.insert(0, "step", step)
        return df[PROBE_COLUMNS]

    def _cut_rows(self, norms):
        """``shortcut_cut`` and ``grad_cut`` at every measured ``sum`` tap."""
        if "sum" not in self.taps:
            return []
        meta = np.array(self._slot_meta, dtype=object)
        sum_slots = np.arange(_SUM, len(self._slot_meta), _PER_UNIT)
        shortcut_slots = sum_slots - _SUM + _SHORTCUT
        output_slots = sum_slots - _SUM + _OUTPUT
        pieces = []
        if "cut" in norms and "shortcut_cut" in self.stats and "forward" in norms:
            norm, seen = norms["forward"]
            h_energy = norm[shortcut_slots] ** 2
            keep = seen[sum_slots] & seen[shortcut_slots]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(h_energy > 0, norms["cut"] / h_energy, 0.0)
            pieces.append(self._rows(meta[sum_slots][keep], "forward", "shortcut_cut", value[keep]))
        if "grad_cut" in self.stats and "backward" in norms:
            norm, seen = norms["backward"]
            keep = seen[sum_slots] & seen[output_slots]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = 1 - (norm[sum_slots] / norm[output_slots]) ** 2
            pieces.append(self._rows(meta[sum_slots][keep], "backward", "grad_cut", value[keep]))
        return pieces

    def _layer_meta(self, name, layer):
        u = self._unit_of.get(id(layer), -1)
        if u < 0:                            # stem or classifier
            return (-1, -1, -1, "weight_input", name)
        return (u, *self._slot_meta[u * _PER_UNIT][1:3], "weight_input", name)

    @staticmethod
    def _rows(meta, direction, stat, values):
        return pd.DataFrame({"unit": meta[:, 0].astype(np.int64), "stage": meta[:, 1].astype(np.int64),
                             "index": meta[:, 2].astype(np.int64), "tap": meta[:, 3],
                             "direction": direction, "stat": stat,
                             "value": np.asarray(values, dtype=np.float64), "layer": meta[:, 4]})

    def nbytes(self) -> int:
        """Bytes of device buffers the probe holds between steps, with the Triton kernels'
        scratch (partial sums kept per CUDA stream, shared by all probes) where they ran."""
        tensors = [self._fwd.s1c, self._fwd.scalars, self._bwd.s1c, self._bwd.scalars,
                   self._win.s1c, self._win.scalars, self._win_s2c, self._cut_num]
        kernels = 0 if S._triton_sums is None else S._triton_sums.scratch_bytes()
        return kernels + sum(t.numel() * t.element_size() for t in tensors if t is not None)
