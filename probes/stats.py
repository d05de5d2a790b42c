"""The statistics a SignalProbe records, and how each follows from a few raw sums.

Hooks only compute raw sums on the tensor's device (channel sums, the sum of squares and
two sign counts: one read of the tensor, by the C module ``_fastsums`` on the CPU and by the
Triton kernels of ``_triton_sums`` on a GPU; torch operations where neither applies);
everything below is derived once per step, for all taps at once.
For a tapped tensor t with N elements in C channels of M = N / C elements each
(batch and space), channel sums s1_c = sum t, s2_c = sum t^2 over those M elements:

=============  =================================================================
``rms``        sqrt(sum t^2 / N)
``norm``       sqrt(sum t^2)                      (L2 norm of the whole tensor)
``mean``       sum t / N
``std``        sqrt(sum t^2 / N - mean^2)         (population standard deviation)
``ch_sq_mean`` mean over channels of (s1_c / M)^2 (Brock et al. 2021, SPP: squared channel mean)
``ch_var``     mean over channels of s2_c / M - (s1_c / M)^2  (SPP: channel variance)
``frac_neg``   share of elements < 0
``frac_zero``  share of elements == 0
=============  =================================================================

Forward statistics describe the activation, backward ones the gradient of the loss with
respect to that same tensor. Two statistics describe the after-addition function f of a
unit, and are recorded at its ``sum`` tap only:

``shortcut_cut`` (forward)
    The share of the shortcut's energy that f zeroes: sum h^2 [f(y) = 0] / sum h^2, with h
    the shortcut tensor, y = h + F the sum. For f = ReLU (V1) the mask is [y <= 0], the
    article's [y < 0] up to the measure-zero set y = 0. Where f is the identity (V2), f
    zeroes nothing and the value is 0 exactly.
``grad_cut`` (backward)
    The share of gradient energy that f stops: 1 - ||dL/dy||^2 / ||dL/d out||^2. For V1,
    dL/dy = dL/d out * [y > 0], so this is the energy on the units the ReLU shuts; where f
    is the identity, dL/dy is dL/d out and the value is 0 by construction. (It can be
    negative where f amplifies the gradient, e.g. BN after the addition.)

Weight-layer inputs (``weight_inputs=True``, claim C6), per Conv2d / Linear input with
channel means m_c = s1_c / M and channel variances v_c = s2_c / M - m_c^2:
``in_mean_mean`` = mean_c m_c, ``in_mean_var`` = var_c m_c, ``in_var_mean`` = mean_c v_c,
``in_var_var`` = var_c v_c (population variances over channels). A normalised input has
channel means near 0 and channel variances near 1.

``grad_norm`` (tap ``params``): the L2 norm of the gradient of all parameters of a unit.
"""
from __future__ import annotations

import numpy as np
import torch

TENSOR_STATS = ("rms", "norm", "mean", "std", "ch_sq_mean", "ch_var", "frac_neg", "frac_zero")
FORWARD_STATS = TENSOR_STATS + ("shortcut_cut",)
BACKWARD_STATS = TENSOR_STATS + ("grad_cut",)
WEIGHT_INPUT_STATS = ("in_mean_mean", "in_mean_var", "in_var_mean", "in_var_var")
ALL_STATS = tuple(dict.fromkeys(FORWARD_STATS + BACKWARD_STATS + WEIGHT_INPUT_STATS + ("grad_norm",)))
SIGN_STATS = ("frac_neg", "frac_zero")


try:   # after torch: its OpenMP runtime must be the one loaded (see _fastsums.c)
    from .kernels import _fastsums      # C, built by setup.py: every sum in one read of the tensor
except ImportError:              # not built (no compiler at install): torch operations
    _fastsums = None
_triton_sums = None
if torch.cuda.is_available():    # only a GPU runs them: no triton import (0.2 s) elsewhere
    try:                         # Triton kernels for CUDA tensors; torch operations without
        from .kernels import triton_sums as _triton_sums
    except ImportError:
        pass


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


def cpu_blocks(t: torch.Tensor, h: torch.Tensor | None = None):
    """``(outer, C, inner)`` when ``t`` is an fp32 CPU tensor whose memory is the blocks
    [outer][C][inner] the C module reads (NCHW or (N, C): inner = H*W or 1; channels-last:
    outer = N*H*W, inner = 1) -- and ``h``, if given, is laid out exactly as ``t`` (one pass
    reads both); None when the torch operations must do it. The answer depends only on the
    shapes, strides, dtypes and devices, so a caller may keep it while those stay."""
    if _fastsums is None or not t.is_cpu or t.dtype != torch.float32 or t.dim() < 2 or t.numel() == 0:
        return None
    if h is not None and (h.shape != t.shape or h.stride() != t.stride() or not h.is_cpu
                          or h.dtype != torch.float32):
        return None
    if t.is_contiguous():
        return t.shape[0], t.shape[1], t.numel() // (t.shape[0] * t.shape[1])
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.numel() // t.shape[1], t.shape[1], 1
    return None


def layout(t: torch.Tensor, h: torch.Tensor | None = None):
    """What decides how ``one_pass`` reads ``t`` and the shortcut ``h`` read in the same pass,
    besides their values: shapes, strides, dtypes, device -- and on CUDA whether each address
    is 16-byte aligned (Triton compiles a kernel per alignment)."""
    key = t.shape, t.stride(), t.dtype, t.device, h is not None and (h.shape, h.stride(), h.dtype)
    if t.is_cuda:
        key += (t.data_ptr() % 16 == 0, h is None or h.data_ptr() % 16 == 0)
    return key


def one_pass(t: torch.Tensor, out_s1c: torch.Tensor, row: torch.Tensor, masked=None):
    """``raw_sums(t, out_s1c, (row, ...), masked=masked)`` worked out once, as a function
    ``again(t, masked)`` that repeats it for any tensor of the same ``layout(t, h)`` into the
    same outputs (``masked = (h, out)``: out may change, not its alignment) -- the C module's
    arguments on the CPU, the Triton kernel's launch plan on a GPU; None where neither reads
    ``t`` in one pass. A caller that keeps it per tensor it meets at every step skips the
    checks and arithmetic of ``raw_sums`` from the second step on."""
    h = None if masked is None else masked[0]
    blocks = cpu_blocks(t, h)
    if blocks is not None and (h is None or (masked[1].is_cpu and masked[1].dtype == torch.float32)):
        args = (*blocks, out_s1c.data_ptr(), 0, row.data_ptr())
        if h is None:
            return lambda t, masked: _fastsums.channel_sums(t.data_ptr(), *args, torch.get_num_threads())
        return lambda t, masked: _fastsums.channel_sums(t.data_ptr(), *args, torch.get_num_threads(),
                                                        masked[0].data_ptr(), masked[1].data_ptr())
    if _triton_sums is not None:
        return _triton_sums.plan_raw_sums(t, out_s1c, row, masked)
    return None


def as_fp32(t: torch.Tensor) -> torch.Tensor:
    """A detached fp32 view: statistics accumulate in fp32 (also under autocast) and
    ``out=`` reductions must not enter the autograd graph."""
    t = t.detach()
    return t if t.dtype == torch.float32 else t.float()


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


def raw_sums(t: torch.Tensor, out_s1c: torch.Tensor, out_scalars, scratch=None, masked=None) -> bool:
    """The hook's whole work for one tensor: its raw sums written into preallocated views.

    ``out_s1c`` (C,) gets the channel sums s1_c; ``out_scalars`` -- a contiguous (3,) fp32
    tensor and its three 0-d element views -- gets sum t^2, sum sign(t) = n_pos - n_neg and
    sum sign(t)^2 = n_pos + n_neg. Everything in ``TENSOR_STATS`` follows from these
    (``ch_var`` needs only the total: mean_c s2_c / M = sum t^2 / N). ``masked``: optional
    ``(h, out)``, with ``t`` a unit's output f(y): also ``masked_energy(h, t, out, ...)``.

    On the CPU the C module reads the tensor once (and h in the same pass), on a GPU one
    Triton kernel (any of fp32, bf16, fp16, no fp32 copy; h in the same pass too). Otherwise
    torch operations do it: the sign counts only when ``scratch`` is given -- ``scratch(k, like)`` returns reused
    flat fp32 buffer ``k`` (0 or 1) of ``like.numel()`` elements on ``like``'s device. Two
    float reductions of sign(t) written into a reused buffer are many times cheaper than
    boolean counts, and reusing the buffer avoids the page faults of fresh allocations.
    Returns True when buffer 0 holds sign(t).
    """
    row, (total2, sign_sum, sign_sq) = out_scalars
    if masked is not None:
        if _fused_masked_sums(t, out_s1c, row, *masked):
            return False
        signed = raw_sums(t, out_s1c, out_scalars, scratch)
        masked_energy(masked[0], t, masked[1], scratch, sign_ready=signed)
        return False                     # masked_energy may have reused buffer 0
    if _triton_sums is not None and _triton_sums.channel_sums(t, out_s1c, None, row):
        return False
    t = t if t.dtype == torch.float32 else t.detach().float()
    blocks = cpu_blocks(t)
    if blocks is not None:               # reads memory only: no detach needed
        _fastsums.channel_sums(t.data_ptr(), *blocks, out_s1c.data_ptr(), 0, row.data_ptr(),
                               torch.get_num_threads())
        return False
    t = t.detach()
    channel_sum(t, out_s1c)
    flat = t.reshape(-1)
    torch.dot(flat, flat, out=total2)
    if scratch is None:
        return False
    s = torch.sign(flat, out=scratch(0, flat))
    torch.sum(s, dim=0, out=sign_sum)
    torch.dot(s, s, out=sign_sq)
    return True


def _fused_masked_sums(f_out, out_s1c, row, h, out) -> bool:
    """raw_sums of ``f_out`` and its masked energy under ``h`` in one read of both, by the
    Triton kernel (GPU) or the C module (fp32 CPU tensors), when both are laid out alike (the
    usual case: a unit's output and its shortcut). False: nothing done. Saves a second read
    of the output and a call (a launch, on a GPU) per unit."""
    if _triton_sums is not None and _triton_sums.channel_sums(f_out, out_s1c, None, row, (h, out)):
        return True
    blocks = cpu_blocks(f_out, h)
    if blocks is None or not out.is_cpu or out.dtype != torch.float32:
        return False
    _fastsums.channel_sums(f_out.data_ptr(), *blocks, out_s1c.data_ptr(), 0, row.data_ptr(),
                           torch.get_num_threads(), h.data_ptr(), out.data_ptr())
    return True


def masked_energy(h: torch.Tensor, f_out: torch.Tensor, out: torch.Tensor, scratch, sign_ready=False) -> None:
    """``out`` (0-d) = sum h^2 [f(y) = 0]: the shortcut energy where the unit's output is 0.

    The C module (CPU) or the Triton kernels (GPU) read both tensors once when they are
    laid out alike; otherwise torch operations use buffers 0 and 1 of ``scratch`` (see
    ``raw_sums``), of which the first holds sign(f_out) already when ``sign_ready``.
    """
    if _triton_sums is not None and _triton_sums.masked_energy(h, f_out, out):
        return
    h = h if h.dtype == torch.float32 else h.detach().float()
    f_out = f_out if f_out.dtype == torch.float32 else f_out.detach().float()
    if cpu_blocks(f_out, h) is not None:
        _fastsums.masked_energy(h.data_ptr(), f_out.data_ptr(), h.numel(), out.data_ptr(), torch.get_num_threads())
        return
    h, f_out = h.detach(), f_out.detach()
    flat_h = h.reshape(-1)               # logical order, as raw_sums' sign(f_out)
    nonzero = scratch(0, flat_h)
    if not sign_ready:
        torch.sign(f_out.reshape(-1), out=nonzero)
    torch.abs(nonzero, out=nonzero)
    kept = torch.addcmul(flat_h, flat_h, nonzero, value=-1, out=scratch(1, flat_h))   # h [f(y) = 0]
    torch.dot(kept, kept, out=out)


def grouped_norms(tensors, groups: torch.Tensor, n_groups: int, numels=None) -> torch.Tensor:
    """(n_groups,) float64: the L2 norm of all ``tensors`` of each group together;
    ``groups`` (int64, CPU) gives each tensor's group; ``numels`` (int64, CPU), if given,
    their sizes (the probe knows them from the parameters: 1 ms less per step at 3,000
    tensors). On the CPU one C call; elsewhere ``torch._foreach_norm`` (a few fused kernels
    on a GPU)."""
    if _fastsums is not None and all(t.is_cpu and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        ptrs = torch.from_numpy(np.fromiter(map(torch.Tensor.data_ptr, tensors), np.int64, len(tensors)))
        if numels is None:
            numels = torch.from_numpy(np.fromiter(map(torch.Tensor.numel, tensors), np.int64, len(tensors)))
        out = torch.zeros(n_groups, dtype=torch.float64)
        _fastsums.grouped_sq_sums(ptrs.data_ptr(), numels.data_ptr(), groups.data_ptr(), len(tensors),
                                  out.data_ptr(), n_groups, torch.get_num_threads())
        return out.sqrt()
    device = tensors[0].device
    norms = torch.stack(torch._foreach_norm(tensors)).double()
    total = torch.zeros(n_groups, dtype=torch.float64, device=device)
    total.index_add_(0, groups.to(device), norms * norms)
    return total.sqrt()


def tensor_stats(s1c, seg, scalars, count, channels):
    """All TENSOR_STATS for T slots at once.

    ``s1c``: channel sums of all slots laid end to end, ``seg[i]``: the slot of channel i;
    ``scalars`` (3, T): the rows ``raw_sums`` wrote, transposed; ``count``: elements per channel of
    each slot (T,); ``channels`` (T,). Returns a dict name -> (T,) tensor.
    """
    zeros = torch.zeros(count.shape[0], dtype=s1c.dtype, device=s1c.device)
    n = count * channels
    m = s1c / count[seg]
    mean = zeros.index_add(0, seg, s1c) / n
    total2, sign_sum, sign_sq = scalars
    ch_sq_mean = zeros.index_add(0, seg, m * m) / channels
    return {
        "rms": torch.sqrt(total2 / n),
        "norm": torch.sqrt(total2),
        "mean": mean,
        "std": torch.sqrt(torch.clamp(total2 / n - mean * mean, min=0)),
        "ch_sq_mean": ch_sq_mean,
        "ch_var": torch.clamp(total2 / n - ch_sq_mean, min=0),
        "frac_neg": (sign_sq - sign_sum) / (2 * n),
        "frac_zero": 1 - sign_sq / n,
    }


def channel_moments(t: torch.Tensor, out_s1c: torch.Tensor, out_s2c: torch.Tensor) -> None:
    """Channel sums s1_c and s2_c of a weight layer's input (``weight_inputs=True``)."""
    if _triton_sums is not None and _triton_sums.channel_sums(t, out_s1c, out_s2c, None):
        return
    t = as_fp32(t)
    blocks = cpu_blocks(t)
    if blocks is not None:
        _fastsums.channel_sums(t.data_ptr(), *blocks, out_s1c.data_ptr(), out_s2c.data_ptr(), 0,
                               torch.get_num_threads())
        return
    v, dims = channel_view(t)
    torch.sum(v, dim=dims, out=out_s1c)
    torch.sum(torch.linalg.vecdot(v, v), dim=0, out=out_s2c)


def weight_input_stats(s1, s2, seg, count, channels):
    """WEIGHT_INPUT_STATS for T weight layers at once (see the module docstring)."""
    T = count.shape[0]
    zeros = torch.zeros(T, dtype=s1.dtype, device=s1.device)
    per_ch_count = count[seg]
    m = s1 / per_ch_count
    v = s2 / per_ch_count - m * m
    mean_m = zeros.index_add(0, seg, m) / channels
    mean_v = zeros.index_add(0, seg, v) / channels
    return {
        "in_mean_mean": mean_m,
        "in_mean_var": zeros.index_add(0, seg, (m - mean_m[seg]) ** 2) / channels,
        "in_var_mean": mean_v,
        "in_var_var": zeros.index_add(0, seg, (v - mean_v[seg]) ** 2) / channels,
    }
