"""The CPU backend: the C module ``_fastsums.c`` reads an fp32 tensor once for all its raw sums,
and from a probe's second step the C++ taps and hooks (``cpp_hooks``) read by its kernel.

The C module is built by ``setup.py`` (``pip install -e .``; optional: without a compiler the
CPU uses the torch path, same values, slower) and runs on PyTorch's own OpenMP threads, so
torch is imported first. It says which raw sums it computes (``SUMS``) and is told where each
goes in a row of ``probes.stats.RAW_ROW`` (``set_row``); loading refuses a module that does
not compute every sum of ``RAW_ROW``, or not their values (``loading.check_values``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..stats import RAW_ROW
from .loading import check_values, row_positions
from .torch_ops import TorchBackend, as_fp32, channel_layout

try:   # after torch: its OpenMP runtime must be the one loaded (see _fastsums.c)
    from . import _fastsums
except ImportError:              # not built (no compiler at install): the torch path
    _fastsums = None


# The raw sums the C module computes, in its order (its SUMS; none: a module built from an
# older _fastsums.c, refused), and where each goes in a row of RAW_ROW, told to the module at
# load (-1: not in the row). Not built: the torch path serves the CPU.
SUMS = tuple(getattr(_fastsums, "SUMS", "").split()) if _fastsums is not None else RAW_ROW
if _fastsums is not None and not hasattr(_fastsums, "set_row"):
    raise ImportError("probes/kernels/_fastsums: built from an older _fastsums.c (it cannot be told "
                      "RAW_ROW's order); rebuild it: pip install -e .")
if _fastsums is not None:
    _fastsums.set_row(*row_positions("the C module", SUMS, "probes/kernels/_fastsums.c"))


def cpu_channel_layout(t: torch.Tensor, h: torch.Tensor | None = None):
    """``(outer, C, inner)`` when ``t`` is an fp32 CPU tensor whose memory is the channel layout
    [outer][C][inner] the C module reads (NCHW or (N, C): inner = H*W or 1; channels-last:
    outer = N*H*W, inner = 1) -- and ``h``, if given, is laid out exactly as ``t`` (one pass
    reads both); None when the torch path must do it. The answer depends only on the
    shapes, strides, dtypes and devices, so a caller may keep it while those stay."""
    if _fastsums is None or not t.is_cpu or t.dtype != torch.float32 or t.dim() < 2 or t.numel() == 0:
        return None
    if h is not None and (h.shape != t.shape or h.stride() != t.stride() or not h.is_cpu
                          or h.dtype != torch.float32):
        return None
    return channel_layout(t)


_threads = torch.get_num_threads     # PyTorch's threads: the C module runs on its OpenMP pool


class CModuleBackend(TorchBackend):
    """The C module's reads of fp32 CPU tensors; the torch path for the rest."""
    name = "c"
    row = SUMS                         # what the module computes; it writes RAW_ROW's order

    def plan(self, t, out_s1c, row, masked=None):
        h = None if masked is None else masked[0]
        layout = cpu_channel_layout(t, h)
        if layout is None or (h is not None and not (masked[1].is_cpu and masked[1].dtype == torch.float32)):
            return None
        args = (*layout, out_s1c.data_ptr(), 0, row.data_ptr())
        if h is None:
            return lambda t, masked: _fastsums.channel_sums(t.data_ptr(), *args, _threads())
        return lambda t, masked: _fastsums.channel_sums(t.data_ptr(), *args, _threads(),
                                                        masked[0].data_ptr(), masked[1].data_ptr())

    def grouped_sq_sums(self, tensors, groups, n_groups, numels=None) -> torch.Tensor:
        """One C call for thousands of small tensors (the probe knows ``numels`` from the
        parameters: 1 ms less per step at 3,000 tensors)."""
        if not all(t.is_cpu and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
            return super().grouped_sq_sums(tensors, groups, n_groups, numels)
        ptrs = torch.from_numpy(np.fromiter(map(torch.Tensor.data_ptr, tensors), np.int64, len(tensors)))
        if numels is None:
            numels = torch.from_numpy(np.fromiter(map(torch.Tensor.numel, tensors), np.int64, len(tensors)))
        out = torch.zeros(n_groups, dtype=torch.float64)
        _fastsums.grouped_sq_sums(ptrs.data_ptr(), numels.data_ptr(), groups.data_ptr(), len(tensors),
                                  out.data_ptr(), n_groups, _threads())
        return out

    def cpp_recorder(self, n_slots, measured, cut_num, callbacks):
        """The C++ taps and gradient hooks (``cpp_hooks``), reading by this module's kernel
        (its capsule ``SUMS_INTO``), or None where they are not built."""
        from . import cpp_hooks              # here: ``python -m probes.kernels.cpp_hooks`` imports probes first
        ext = cpp_hooks.load()
        if ext is None:
            return None
        return ext.Recorder(n_slots, measured, cut_num, callbacks, _fastsums.SUMS_INTO)

    @staticmethod
    def kept_read(t, h, s1c, row):
        """What the C++ side keeps to read a slot's next tensors of ``t``'s layout itself --
        ``(outer, C, inner, channel-sums view, row)`` -- or None (Python reads them)."""
        layout = cpu_channel_layout(t, h)
        return None if layout is None else (*layout, s1c, row)

    def _read(self, t, out_s1c, row) -> bool:
        t = t if t.dtype == torch.float32 else t.detach().float()
        layout = cpu_channel_layout(t)
        if layout is None:
            return False
        _fastsums.channel_sums(t.data_ptr(), *layout, out_s1c.data_ptr(), 0, row.data_ptr(), _threads())
        return True

    def _read_masked(self, t, out_s1c, row, h, out) -> bool:
        """The output's sums and the shortcut's masked energy in one read of both, when both
        are laid out alike (the usual case): saves a second read of the output and a call."""
        layout = cpu_channel_layout(t, h)
        if layout is None or not out.is_cpu or out.dtype != torch.float32:
            return False
        _fastsums.channel_sums(t.data_ptr(), *layout, out_s1c.data_ptr(), 0, row.data_ptr(), _threads(),
                               h.data_ptr(), out.data_ptr())
        return True

    def _read_masked_energy(self, h, f_out, out) -> bool:
        h = h if h.dtype == torch.float32 else h.detach().float()
        f_out = f_out if f_out.dtype == torch.float32 else f_out.detach().float()
        if cpu_channel_layout(f_out, h) is None:
            return False
        _fastsums.masked_energy(h.data_ptr(), f_out.data_ptr(), h.numel(), out.data_ptr(), _threads())
        return True

    def _read_moments(self, t, out_s1c, out_s2c) -> bool:
        t = as_fp32(t)
        layout = cpu_channel_layout(t)
        if layout is None:
            return False
        _fastsums.channel_sums(t.data_ptr(), *layout, out_s1c.data_ptr(), out_s2c.data_ptr(), 0, _threads())
        return True


if _fastsums is not None:
    check_values(CModuleBackend(), "cpu", "probes/kernels/_fastsums.c")
