"""The inputs of every weight layer (Conv2d / Linear), with ``weight_inputs=True`` (claim C6):
their channel sums and sums of squares during a probed step, their ``WEIGHT_INPUT``
statistics at ``step()``.

They are reached by one process-wide module pre-hook, registered only while a probed step
runs (a hook per layer would cost a registration per layer and step).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from . import kernels
from . import stats as S
from .recorder import in_backward
from .slots import channel_layout


class WeightInputs:
    """Per layer of ``model``: channel sums s1c and s2c in two flat buffers on the inputs'
    device (a layer's channels at a fixed offset, assigned at its first input)."""

    def __init__(self, model, index):
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.slot_of = {layer: i for i, (_, layer) in enumerate(self.layers)}
        # row labels: the unit a layer lies in (the stem and the classifier: -1)
        self.meta = [index.unit_meta(index.unit_of.get(id(layer), -1), "weight_input", name)
                     for name, layer in self.layers]
        n = len(self.layers)
        self.offset, self.channels, self.count = [-1] * n, [0] * n, [0] * n
        self.seen = [False] * n
        self.used = 0
        self.s1c = self.s2c = None
        self.backend = None
        self._layout = None
        self._handle = None

    def install(self):
        self._handle = register_module_forward_pre_hook(self._on_module_input)

    def remove(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_module_input(self, module, args):
        i = self.slot_of.get(module)
        if i is not None and args and isinstance(args[0], torch.Tensor) and not in_backward():
            self._measure(i, args[0])

    def _measure(self, i, x):
        self._ensure(x.device)
        c = x.shape[1]
        if self.offset[i] < 0:
            self._allocate(i, c)
        off = self.offset[i]
        self.backend.channel_moments(x, self.s1c[off:off + c], self.s2c[off:off + c])
        self.count[i] = x.numel() // c
        self.seen[i] = True

    def finish_step(self):
        """(values, layout entry) of this step -- every WEIGHT_INPUT statistic of every layer,
        flat, float64 on the device -- or None when no layer was measured."""
        if not any(self.seen):
            return None
        device = self.s1c.device
        if self._layout is None:
            self._layout = channel_layout(self.offset, self.channels, self.used, device)
        seg, chans = self._layout
        count = torch.tensor([max(c, 1) for c in self.count], dtype=torch.float64).to(device)
        values = S.weight_input_stats(self.s1c[: self.used].double(), self.s2c[: self.used].double(),
                                      seg, count, chans)
        return torch.stack([values[n] for n in S.WEIGHT_INPUT_STATS]).flatten(), ("weight_input", list(self.seen))

    def end_step(self):
        """Forget this step's layers; trim the buffers to the channels laid out."""
        self.seen = [False] * len(self.layers)
        if self.s1c is not None and self.s1c.numel() > max(self.used, 1):
            self.s1c = self.s1c[: max(self.used, 1)].clone()
            self.s2c = self.s2c[: max(self.used, 1)].clone()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.s1c, self.s2c) if t is not None)

    def _ensure(self, device):
        if self.s1c is None or self.s1c.device != device:
            self.backend = kernels.for_device(device)
            self.s1c = torch.zeros(max(self.used, 1024), device=device)
            self.s2c = torch.zeros(max(self.used, 1024), device=device)
            self._layout = None

    def _allocate(self, i, c):
        self.offset[i], self.channels[i] = self.used, c
        self.used += c
        self._layout = None
        if self.used > self.s1c.numel():     # grow by doubling
            self.s1c, self.s2c = (torch.cat([b[: self.used - c], b.new_zeros(self.used + c)])
                                  for b in (self.s1c, self.s2c))
