"""The step state of one direction: raw sums per slot, in buffers on the tensors' device.

Hooks write into views of these buffers and never read a value back; ``finalize()`` turns
every slot's raw sums into every tensor statistic at once (``probes.stats``).
"""
from __future__ import annotations

import torch

from . import kernels
from . import stats as S

_ROW = len(S.RAW_ROW)


class Slots:
    """Raw sums of one direction: one slot per (unit, tap), filled by hooks during a step.

    A slot's channel sums live at a fixed offset of one flat buffer ``s1c``, assigned when the
    slot is first measured (the buffer grows only during the first probed step); its row of
    ``RAW_ROW`` sums is a row of ``scalars``. ``source[i]``: the slot whose tensor slot i held
    (a tensor that passes several taps is measured once).
    """

    def __init__(self, n_slots):
        self.n = n_slots
        self.offset = [-1] * n_slots         # start of the slot's channels in ``s1c``
        self.channels = [0] * n_slots
        self.count = [0] * n_slots           # elements per channel this step
        self.source = list(range(n_slots))
        self.seen = [False] * n_slots
        self.s1c = None
        self.scalars = None
        self.backend = None                  # the backend of the buffers' device
        self.views = [None] * n_slots        # per slot: (s1c view, (its row, the row's 0-d views))
        self.kept = [None] * n_slots         # per slot: (layout, the plan that reads it)
        self.used = 0
        self._layout = None                  # cached device tensors (seg, channels)
        self._per_step = None                # cached (count list, source list, their tensors)
        self.on_moved = None                 # called with a slot whose views were remade

    def ensure(self, device):
        if self.scalars is None or self.scalars.device != device:
            self.backend = kernels.for_device(device)
            self.scalars = torch.zeros(self.n, _ROW, device=device)
            self.s1c = torch.zeros(max(self.used, 1024), device=device)
            self._layout = None
            self.kept = [None] * self.n
            self._make_views()

    def measure(self, slot, t, scratch, masked=None):
        """A hook's work: the raw sums of ``t`` (with ``masked = (h, out)``: also the masked
        energy of the unit's shortcut h into ``out``) into this slot's views. Returns True when
        scratch buffer 0 holds sign(t) (``TorchBackend.raw_sums``).

        A slot sees tensors laid out alike at every step, so how to read them is worked out
        once and kept per slot (the backend's ``plan``) while the layout stays: comparing
        layouts costs a third of working the arguments out again (docs/PERFORMANCE.md)."""
        self.source[slot] = slot
        self.seen[slot] = True
        h = None if masked is None else masked[0]
        kept = self.kept[slot]
        if kept is not None and kept[0] == self.backend.layout(t, h):
            kept[1](t, masked)
            return False
        c = t.shape[1]
        if self.offset[slot] < 0:
            self._allocate(slot, c)
        self.count[slot] = t.numel() // c
        s1c, scalars = self.views[slot]
        again = self.backend.plan(t, s1c, scalars[0], masked)
        self.kept[slot] = None if again is None else (self.backend.layout(t, h), again)
        return self.backend.raw_sums(t, s1c, scalars, scratch, masked)

    def alias(self, slot, source):
        self.source[slot] = source
        self.seen[slot] = True

    def merge(self, seen, source):
        """Slots the C++ taps or hooks measured (or aliased to ``source``) this step."""
        for i, s in zip(seen, source):
            self.seen[i] = True
            self.source[i] = s

    def valid(self):
        """Slots with a value this step: measured, or aliased to a measured slot."""
        return [self.seen[i] and self.seen[self.source[i]] for i in range(self.n)]

    def finalize(self):
        """All TENSOR statistics of this step, (len(TENSOR_STATS), n) float64 on the device."""
        device = self.scalars.device
        if self._layout is None:
            self._layout = channel_layout(self.offset, self.channels, self.used, device)
        seg, chans = self._layout
        count, source = self._count_and_source(device)
        values = S.tensor_stats(self.s1c[: self.used].double(), seg, self.scalars.double().t(), count, chans)
        out = torch.stack([values[name] for name in S.TENSOR_STATS])
        return out[:, source]

    def reset(self):
        self.seen = [False] * self.n
        self.source = list(range(self.n))

    def trim(self):
        """Give back the slack of growing by doubling, once the slots are laid out (after the
        first probed step): a 1001-layer V1 net at width 16 held 1.9 MB instead of 1.0."""
        if self.s1c is not None and self.s1c.numel() > max(self.used, 1):
            self.s1c = self.s1c[: max(self.used, 1)].clone()
            self._make_views()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.s1c, self.scalars) if t is not None)

    def _count_and_source(self, device):
        """``count`` and ``source`` as device tensors. They are the same at every step of a
        fixed batch size, and comparing two lists costs microseconds where making tensors
        of them costs a millisecond per step at 1,001 layers."""
        cached = self._per_step
        if cached is None or cached[0] != self.count or cached[1] != self.source or cached[2].device != device:
            count = torch.tensor([max(c, 1) for c in self.count], dtype=torch.float64)
            source = torch.tensor(self.source)
            cached = self._per_step = (list(self.count), list(self.source),
                                       count.to(device, non_blocking=True), source.to(device, non_blocking=True))
        return cached[2], cached[3]

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
        self.views[i] = (self.s1c[off: off + self.channels[i]], (row, tuple(row[k] for k in range(_ROW))))
        self.kept[i] = None                  # the buffers' addresses changed
        if self.on_moved is not None:
            self.on_moved(i)


def channel_layout(offset, channels, used, device):
    """(seg, channels) on ``device``: the slot of each of the ``used`` channels of a flat
    buffer (int64), and each slot's channel count (float64, at least 1)."""
    seg = torch.empty(used, dtype=torch.long)
    for i, (off, c) in enumerate(zip(offset, channels)):
        if off >= 0:
            seg[off: off + c] = i
    chans = torch.tensor([max(c, 1) for c in channels], dtype=torch.float64)
    return seg.to(device), chans.to(device)


class Scratch:
    """Reused flat fp32 buffers 0 and 1 for the torch path (``TorchBackend.raw_sums``), held
    only during a probed step: fresh megabyte-sized allocations in every hook would cost more
    than the reductions themselves on the CPU."""

    def __init__(self):
        self.bufs = [None, None]

    def __call__(self, k, like):
        n = like.numel()
        buf = self.bufs[k]
        if buf is None or buf.numel() < n or buf.device != like.device:
            buf = self.bufs[k] = torch.empty(n, device=like.device)
        return buf[:n]

    def release(self):
        self.bufs = [None, None]
