"""The torch path: the raw sums of ``probes.stats`` by torch operations, on any device.

It is the backend of a device no other serves, what the others fall back to for a tensor
they do not read (another layout or dtype), and the reference they are tested against. It
reads a tensor five times (channel sums, sum of squares, sign(t) written into a reused
buffer, two reductions of it); the other backends read it once.

``TorchBackend`` is also the interface every backend offers (``probes.kernels``): a backend
subclasses it and overrides the ``_read*`` methods with its one-pass reads, returning False
for a tensor it leaves to the torch operations here.
"""
from __future__ import annotations

import torch

from ..stats import RAW_ROW


def as_fp32(t: torch.Tensor) -> torch.Tensor:
    """A detached fp32 view: statistics accumulate in fp32 (also under autocast) and
    ``out=`` reductions must not enter the autograd graph."""
    t = t.detach()
    return t if t.dtype == torch.float32 else t.float()


def channel_layout(t: torch.Tensor):
    """``(outer, C, inner)`` when ``t``'s memory is the channel layout [outer][C][inner] the one-pass
    backends read -- NCHW or (N, C): outer = N, inner = H*W or 1; channels-last: outer = N*H*W,
    inner = 1 -- else None."""
    if t.is_contiguous():
        return t.shape[0], t.shape[1], t.numel() // (t.shape[0] * t.shape[1])
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.numel() // t.shape[1], t.shape[1], 1
    return None


def channel_view(t: torch.Tensor):
    """A view of ``t`` as (groups, channels, rest) -- no copy for NCHW or channels-last.

    Reducing a contiguous view over its outer and inner dimensions is several times
    faster on CPU than ``var_mean(t, dim=(0, 2, 3))``.
    """
    if t.dim() == 2:
        return t.unsqueeze(-1), (0, 2)
    if t.is_contiguous():
        return t.view(t.shape[0], t.shape[1], -1), (0, 2)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(1, -1, t.shape[1]).transpose(1, 2), (0, 2)
    t = t.contiguous()
    return t.view(t.shape[0], t.shape[1], -1), (0, 2)


def channel_sum(t: torch.Tensor, out: torch.Tensor) -> None:
    """s1_c into ``out``. On CPU, two single-axis reductions in the right order beat one
    reduction over (batch, space): space first when it is large, batch first when it is
    small (up to 9x faster at 2x2 maps, measured); on GPU one kernel is best."""
    v, dims = channel_view(t)
    if t.device.type != "cpu" or not v.is_contiguous():
        torch.sum(v, dim=dims, out=out)
    elif v.shape[2] >= 32:
        torch.sum(torch.sum(v, 2), 0, out=out)
    else:
        torch.sum(torch.sum(v, 0), 1, out=out)


# Each raw sum of the row, from the flat tensor and sign(t) (None when no sign sum is wanted).
# Two float reductions of sign(t) written into a reused buffer are many times cheaper than
# boolean counts, and reusing the buffer avoids the page faults of fresh allocations.
ROW_SUMS = {
    "sum_sq": lambda flat, signs, out: torch.dot(flat, flat, out=out),
    "sign_sum": lambda flat, signs, out: signs is None or torch.sum(signs, dim=0, out=out),
    "sign_sq": lambda flat, signs, out: signs is None or torch.dot(signs, signs, out=out),
}


class TorchBackend:
    """The raw sums by torch operations, and the interface of every backend."""
    name = "torch"
    row = tuple(ROW_SUMS)                 # the raw sums of the row this backend writes

    def layout(self, t: torch.Tensor, h: torch.Tensor | None = None):
        """What decides how ``plan`` reads ``t`` (and the shortcut ``h`` read in the same pass),
        besides their values: shapes, strides, dtypes, device."""
        return t.shape, t.stride(), t.dtype, t.device, h is not None and (h.shape, h.stride(), h.dtype)

    def plan(self, t, out_s1c, row, masked=None):
        """``raw_sums(t, out_s1c, (row, ...), masked=masked)`` worked out once, as a function
        ``again(t, masked)`` that repeats it for any tensor of the same ``layout(t, h)`` into
        the same outputs (``masked = (h, out)``: out may change, not its alignment); None
        where this backend does not read ``t`` in one pass. A caller that keeps it per tensor
        it meets at every step skips the checks of ``raw_sums`` from the second step on."""
        return None

    def raw_sums(self, t, out_s1c, out_scalars, scratch=None, masked=None) -> bool:
        """A hook's whole work for one tensor: its raw sums written into preallocated views.

        ``out_s1c`` (C,) gets the channel sums; ``out_scalars`` -- a contiguous fp32 row of
        ``RAW_ROW`` and its 0-d element views -- gets the row. ``masked``: optional ``(h, out)``,
        with ``t`` a unit's output f(y): also ``masked_energy(h, t, out, ...)``. The torch
        operations compute the sign sums only when ``scratch`` is given: ``scratch(k, like)``
        returns reused flat fp32 buffer ``k`` (0 or 1) of ``like.numel()`` elements. Returns
        True when buffer 0 holds sign(t).
        """
        row, views = out_scalars
        if masked is not None:
            if self._read_masked(t, out_s1c, row, *masked):
                return False
            signed = self.raw_sums(t, out_s1c, out_scalars, scratch)
            self.masked_energy(masked[0], t, masked[1], scratch, sign_ready=signed)
            return False                   # masked_energy may have reused buffer 0
        if self._read(t, out_s1c, row):
            return False
        t = as_fp32(t)
        channel_sum(t, out_s1c)
        flat = t.reshape(-1)
        signs = None if scratch is None else torch.sign(flat, out=scratch(0, flat))
        for name, out in zip(RAW_ROW, views):
            ROW_SUMS[name](flat, signs, out)
        return signs is not None

    def masked_energy(self, h, f_out, out, scratch, sign_ready=False) -> None:
        """``out`` (0-d) = sum h^2 [f(y) = 0]: the shortcut energy where the unit's output is 0.
        The torch operations use buffers 0 and 1 of ``scratch`` (see ``raw_sums``), of which
        the first holds sign(f_out) already when ``sign_ready``."""
        if self._read_masked_energy(h, f_out, out):
            return
        h, f_out = as_fp32(h), as_fp32(f_out)
        flat_h = h.reshape(-1)               # logical order, as raw_sums' sign(f_out)
        nonzero = scratch(0, flat_h)
        if not sign_ready:
            torch.sign(f_out.reshape(-1), out=nonzero)
        torch.abs(nonzero, out=nonzero)
        kept = torch.addcmul(flat_h, flat_h, nonzero, value=-1, out=scratch(1, flat_h))   # h [f(y) = 0]
        torch.dot(kept, kept, out=out)

    def channel_moments(self, t, out_s1c, out_s2c) -> None:
        """Channel sums s1_c and s2_c of a weight layer's input (``weight_inputs=True``)."""
        if self._read_moments(t, out_s1c, out_s2c):
            return
        v, dims = channel_view(as_fp32(t))
        torch.sum(v, dim=dims, out=out_s1c)
        torch.sum(torch.linalg.vecdot(v, v), dim=0, out=out_s2c)

    def grouped_sq_sums(self, tensors, groups, n_groups, numels=None) -> torch.Tensor:
        """(n_groups,) float64: the sum of squares of all ``tensors`` of each group together;
        ``groups`` (int64, CPU) gives each tensor's group, ``numels`` (int64, CPU), if given,
        their sizes. ``torch._foreach_norm``: a few fused kernels on a GPU; bf16 and fp16
        tensors in fp32 (their own precision would round each norm to 3 or 4 digits)."""
        device = tensors[0].device
        tensors = [t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors]
        norms = torch.stack(torch._foreach_norm(tensors)).double()
        total = torch.zeros(n_groups, dtype=torch.float64, device=device)
        total.index_add_(0, groups.to(device), norms * norms)
        return total

    def cpp_recorder(self, n_slots, measured, cut_num, callbacks):
        """The C++ taps and gradient hooks for this device's tensors, or None (see c_module)."""
        return None

    @staticmethod
    def kept_read(t, h, s1c, row):
        """What the C++ taps keep to read ``t``'s layout themselves, or None (see c_module)."""
        return None

    def scratch_bytes(self) -> int:
        """Bytes this backend keeps between calls (shared by all probes)."""
        return 0

    # ---- a backend's one-pass reads: True when done, False to leave it to the torch path --
    def _read(self, t, out_s1c, row) -> bool:
        return False

    def _read_masked(self, t, out_s1c, row, h, out) -> bool:
        return False

    def _read_masked_energy(self, h, f_out, out) -> bool:
        return False

    def _read_moments(self, t, out_s1c, out_s2c) -> bool:
        return False
