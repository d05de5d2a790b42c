"""One read of a tapped tensor on the GPU: the raw sums of ``probes.stats`` in one Triton launch.

The torch path (``torch_ops``) reads a tensor five times (channel sums, sum of squares,
``sign`` written to a buffer, two reductions of it) in five launches; here one kernel reads it
once and writes the same numbers ``_fastsums.c`` writes on the CPU:

* ``channel_sums``: per-channel sums s1_c, optionally per-channel sums of squares s2_c, and
  the three scalars sum t^2, sum sign(t) = n_pos - n_neg, sum sign(t)^2 = n_pos + n_neg
  (NaN where t holds a NaN, as ``torch.sign`` makes them); optionally, in the same pass, the
  masked energy sum h^2 where t == 0 of a tensor h laid out as t (a unit's shortcut under its
  output: the numerator of ``shortcut_cut``);
* ``masked_energy``: that masked energy alone.

Why one launch: on a GPU the probe's cost is the host's, not the device's. A ResNet-1001 step
measures ~1,700 distinct tensors, and on an H200's host one Triton launch through the JIT
costs ~40 us (an earlier version, two launches and an allocation per tensor: 97 us a tensor,
1.9x a plain step). So each tensor gets one launch, no allocation, and on CUDA the compiled
kernel is launched directly once the JIT has made it (``DIRECT``; see ``_Plan``).

How one launch finishes the sums without atomics on the outputs: every program writes its
partial sums to one row of a scratch buffer, then takes a ticket from a counter
(``atomic_add``, acquire-release); the program that draws the last ticket adds the rows up
in a fixed order, writes the outputs and puts the counter back to 0. So the outputs need no
zeroing first, the result does not depend on the order in which programs finish (a probed
run is reproducible bit for bit), and nothing synchronises with the host. The scratch and the
counter are per CUDA stream (launches on one stream run one after another) and stay
allocated: at most ``TARGET_PROGRAMS`` rows of W = 2C + 1 + len(RAW_ROW) floats (~530 KB at C = 256).

Inputs are fp32, bf16 or fp16, NCHW-contiguous, channels-last or 2-D (N, C); the kernels
accumulate in fp32. Each function returns False (and writes nothing) for anything else --
another layout, another device, an empty tensor -- and the caller uses torch operations.

The tensor is read in the channel layout [outer][C][inner] like the C module: NCHW is outer = N,
inner = H*W; channels-last and (N, C) are outer = N*H*W (or N), inner = 1. A program sums
a range of ``outer`` for one slice of ``inner``, over all channels, into one row of the
partials: [s1_0 .. s1_C-1, (s2_0 .. s2_C-1,) (masked,) sum t^2, sum sign t, sum sign^2 t].

Tests (``tests/test_triton_sums.py``) run the kernels on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``) and compile them for sm_90; ``tests/test_probes_gpu.py`` compares
them on CUDA, the direct launch included.
"""
from __future__ import annotations

import warnings

import torch
import triton
import triton.language as tl

from ..stats import RAW_ROW
from . import torch_ops
from .loading import row_positions
from .torch_ops import TorchBackend

# The raw sums each launch computes besides the channel sums, in the kernel's order. Where each
# goes is probes/stats.py's RAW_ROW: the last len(RAW_ROW) columns of a program's partial row
# hold the row, each sum at its position there (ROW_AT; -1: not in the row). Loading refuses a
# RAW_ROW naming a sum not computed here (loading.row_positions).
SUMS = ("sum_sq", "sign_sum", "sign_sq")
ROW_AT = row_positions("the Triton backend", SUMS, "probes/kernels/triton_sums.py")
ROW_W = len(RAW_ROW)
# Devices the kernels run on; the interpreter tests add "cpu".
DEVICES = ("cuda",)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Elements of one tile (registers per accumulator: TILE / 128 per thread at 4 warps).
TILE = 2048
# Programs to aim for: about two per streaming multiprocessor of a large GPU. Also the rows
# of partials the last program adds up, so not more.
TARGET_PROGRAMS = 256
# Tile of the last program's sum over the partials: rows x columns.
FINISH_R, FINISH_W = 32, 128
# Fused multiply-adds in the sums of squares (more accurate; stated, since Triton warns when
# the default is left implicit).
LAUNCH = dict(enable_fp_fusion=True)
# Launch the compiled kernel directly (CompiledKernel[grid]) once the JIT has compiled it for
# a plan, skipping the JIT's argument binding and cache lookup at every call
# (experiments/gpu_check.py measures both ways).
DIRECT = True


@triton.jit
def _finish(part_ptr, count_ptr, n_cols, W, a_ptr, A, b_ptr, B, c_ptr, Cn, d_ptr,
            BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Called by every program after writing its row of partials: the program that takes the
    last ticket adds the first ``n_cols`` columns of all rows up, in row order, and writes
    columns [0, A) -> a, [A, A+B) -> b, [A+B, A+B+Cn) -> c, the rest -> d."""
    # Every thread's stores of this program's row happen before its ticket (release).
    tl.debug_barrier()
    n_rows = tl.num_programs(0) * tl.num_programs(1)
    ticket = tl.atomic_add(count_ptr, 1, sem="acq_rel")
    if ticket == n_rows - 1:
        for w0 in range(0, n_cols, BLOCK_W):
            w = w0 + tl.arange(0, BLOCK_W)
            acc = tl.zeros([BLOCK_R, BLOCK_W], tl.float32)
            for r0 in range(0, n_rows, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)[:, None]
                mask = (r < n_rows) & (w[None, :] < n_cols)
                # .cg: from L2, where the other programs' rows are, not a stale L1 line.
                acc += tl.load(part_ptr + r * W + w[None, :], mask=mask, other=0.0, cache_modifier=".cg")
            total = tl.sum(acc, axis=0)
            in_a = w < A
            in_b = (w >= A) & (w < A + B)
            in_c = (w >= A + B) & (w < A + B + Cn)
            in_d = (w >= A + B + Cn) & (w < n_cols)
            # Offsets clamped to 0 where masked: no out-of-range address is ever formed.
            tl.store(a_ptr + tl.where(in_a, w, 0), total, mask=in_a)
            tl.store(b_ptr + tl.where(in_b, w - A, 0), total, mask=in_b)
            tl.store(c_ptr + tl.where(in_c, w - A - B, 0), total, mask=in_c)
            tl.store(d_ptr + tl.where(in_d, w - A - B - Cn, 0), total, mask=in_d)
        tl.atomic_xchg(count_ptr, 0)         # ready for the next launch on this stream


@triton.jit
def _store_row(row_ptr, sq, sign, sign2, AT_SQ: tl.constexpr, AT_SIGN: tl.constexpr,
               AT_SIGN2: tl.constexpr):
    """The row (the last ROW_W columns of a partial row): each sum at its place in RAW_ROW
    (``ROW_AT``; -1: not in the row)."""
    if AT_SQ >= 0:
        tl.store(row_ptr + AT_SQ, sq)
    if AT_SIGN >= 0:
        tl.store(row_ptr + AT_SIGN, sign)
    if AT_SIGN2 >= 0:
        tl.store(row_ptr + AT_SIGN2, sign2)


@triton.jit(do_not_specialize=["outer", "rows"])
def _channel_sums(x_ptr, h_ptr, part_ptr, count_ptr, s1_ptr, s2_ptr, m_ptr, sc_ptr,
                  outer, C, inner, rows, W, n_cols,
                  MOMENTS: tl.constexpr, MASKED: tl.constexpr, BLOCK_O: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, ROW_W: tl.constexpr,
                  AT_SQ: tl.constexpr, AT_SIGN: tl.constexpr, AT_SIGN2: tl.constexpr):
    """Program (p, q): outer rows [p * rows, (p + 1) * rows), inner positions of block q,
    every channel -> row p * num_programs(1) + q of ``part`` (W columns); then ``_finish``."""
    p, q = tl.program_id(0), tl.program_id(1)
    out_row = part_ptr + (p * tl.num_programs(1) + q) * W
    o = tl.arange(0, BLOCK_O)[:, None, None]
    c = tl.arange(0, BLOCK_C)[None, :, None]
    i = q * BLOCK_I + tl.arange(0, BLOCK_I)[None, None, :]
    chans = tl.arange(0, BLOCK_C)
    o_start = p * rows
    o_stop = tl.minimum(o_start + rows, outer)
    # Totals over all channels, kept per channel lane until the end.
    tot_sq = tl.zeros([BLOCK_C], tl.float32)
    tot_sign = tl.zeros([BLOCK_C], tl.float32)
    tot_sign2 = tl.zeros([BLOCK_C], tl.float32)
    tot_masked = tl.zeros([BLOCK_C], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        s1 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        s2 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        sg = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        sg2 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        hm = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        for o0 in range(o_start, o_stop, BLOCK_O):
            mask = (o0 + o < o_stop) & (c0 + c < C) & (i < inner)
            offs = (o0 + o) * (C * inner) + (c0 + c) * inner + i
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            # sign(x), NaN for NaN (x != x), so that NaN reaches both sign sums.
            sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, tl.where(x == x, 0.0, x)))
            s1 += x
            s2 += x * x
            sg += sign
            sg2 += sign * sign
            if MASKED:                       # h^2 where t == 0 (NaN in t counts as not zero)
                h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                hm += tl.where(x == 0, h * h, 0.0)
        ch2 = tl.sum(tl.sum(s2, axis=2), axis=0)
        cmask = c0 + chans < C
        tl.store(out_row + c0 + chans, tl.sum(tl.sum(s1, axis=2), axis=0), mask=cmask)
        if MOMENTS:
            tl.store(out_row + C + c0 + chans, ch2, mask=cmask)
        tot_sq += ch2
        tot_sign += tl.sum(tl.sum(sg, axis=2), axis=0)
        tot_sign2 += tl.sum(tl.sum(sg2, axis=2), axis=0)
        if MASKED:
            tot_masked += tl.sum(tl.sum(hm, axis=2), axis=0)
    if MASKED:
        tl.store(out_row + W - ROW_W - 1, tl.sum(tot_masked, axis=0))
    _store_row(out_row + W - ROW_W, tl.sum(tot_sq, axis=0), tl.sum(tot_sign, axis=0),
               tl.sum(tot_sign2, axis=0), AT_SQ, AT_SIGN, AT_SIGN2)
    # Columns: s1 -> s1, s2 -> s2 (when MOMENTS), masked -> m (when MASKED), the row -> sc
    # (left out when n_cols = W - ROW_W).
    _finish(part_ptr, count_ptr, n_cols, W, s1_ptr, C, s2_ptr, C if MOMENTS else 0,
            m_ptr, 1 if MASKED else 0, sc_ptr, BLOCK_R, BLOCK_W)


@triton.jit(do_not_specialize=["n", "chunk"])
def _masked_energy(h_ptr, f_ptr, part_ptr, count_ptr, out_ptr, n, chunk,
                   BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program p: sum of h^2 where f == 0 over elements [p * chunk, (p + 1) * chunk) -> row p
    of ``part``; then ``_finish`` (one column) into ``out``."""
    p = tl.program_id(0)
    start = p * chunk
    stop = tl.minimum(start + chunk, n)
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(start, stop, BLOCK):
        idx = s + tl.arange(0, BLOCK)
        mask = idx < stop
        h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        f = tl.load(f_ptr + idx, mask=mask, other=1.0).to(tl.float32)
        acc += tl.where(f == 0, h * h, 0.0)
    tl.store(part_ptr + p, tl.sum(acc, axis=0))
    _finish(part_ptr, count_ptr, 1, 1, out_ptr, 1, out_ptr, 0, out_ptr, 0, out_ptr, BLOCK_R, BLOCK_W)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def channel_layout(t: torch.Tensor):
    """``(outer, C, inner)`` of the [outer][C][inner] memory the kernels read, or None when
    ``t`` is not a tensor they take (device, dtype, layout, size)."""
    if t.device.type not in DEVICES or t.dtype not in DTYPES or t.dim() not in (2, 4) \
            or t.numel() == 0 or t.numel() >= 2**31:
        return None
    return torch_ops.channel_layout(t)


class _Scratch:
    """Rows of partial sums and the ticket counter of one stream, kept between launches."""

    def __init__(self, device):
        self.count = torch.zeros(1, dtype=torch.int32, device=device)
        self.part = torch.empty(0, dtype=torch.float32, device=device)

    def rows(self, n: int) -> torch.Tensor:
        if self.part.numel() < n:            # grows to the largest tensor's need, then stays
            self.part = torch.empty(n, dtype=torch.float32, device=self.part.device)
        return self.part


_scratch: dict = {}


def scratch_bytes() -> int:
    """Bytes the kernels keep between launches (partial rows and counters of every stream)."""
    return sum(s.part.numel() * 4 + s.count.numel() * 4 for s in _scratch.values())


def _scratch_for(device) -> _Scratch:
    """The scratch of the current stream of ``device`` (the CPU's one under the interpreter)."""
    key = (device, torch._C._cuda_getCurrentRawStream(device.index) if device.type == "cuda" else 0)
    s = _scratch.get(key)
    if s is None:
        s = _scratch[key] = _Scratch(device)
    return s


class _Plan:
    """How one layout is launched: the kernel, its grid, the integers and block sizes, the
    scratch rows it needs; and, on CUDA, the compiled kernel's launcher once the JIT has
    made it. A plan is kept per key (shapes, strides, dtypes, devices, which outputs, and
    whether each pointer is 16-byte aligned: what the JIT specialises on), so the launcher
    it keeps is the one the JIT would pick for the same arguments."""
    __slots__ = ("kernel", "grid", "ints", "consts", "need", "runner")

    def __init__(self, kernel, grid, ints, consts, need):
        self.kernel, self.grid, self.ints, self.consts, self.need = kernel, grid, ints, consts, need
        self.runner = None

    def launch(self, pointers):
        scratch = _scratch_for(pointers[0].device)
        args = (*pointers[:2], scratch.rows(self.need), scratch.count, *pointers[2:], *self.ints, *self.consts)
        if self.runner is not None:
            try:
                self.runner(*args)
                return
            except Exception as err:         # this Triton's launcher wants other arguments
                _no_direct_launch(err)       # (nothing was launched): the JIT launches it
                self.runner = None
        compiled = self.kernel[self.grid](*args, **LAUNCH)
        if DIRECT and pointers[0].is_cuda and hasattr(compiled, "function"):
            self.runner = compiled[self.grid]


def _no_direct_launch(err):
    global DIRECT
    if DIRECT:
        warnings.warn(f"probes._triton_sums: launching the compiled kernel directly failed "
                      f"({type(err).__name__}: {err}); every launch goes through the JIT from now on")
    DIRECT = False


_plans: dict = {}
_MAX_PLANS = 4096                            # a bound, for callers that feed endless new shapes


def _aligned(*tensors) -> tuple:
    return tuple(t.data_ptr() % 16 == 0 for t in tensors)


def _fits(t, outs) -> bool:
    return all(o.dtype == torch.float32 and o.is_contiguous() and o.device == t.device for o in outs)


def _keep(key, plan):
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    _plans[key] = plan
    return plan


def _channel_plan(t, h, moments, scalars):
    """The plan for channel sums of ``t`` (with the masked energy under ``h`` unless None), or
    None when the kernel does not take them."""
    shape = channel_layout(t)
    if shape is None or (h is not None and (h.shape != t.shape or h.stride() != t.stride()
                                            or h.dtype not in DTYPES or h.device != t.device)):
        return None
    outer, C, inner = shape
    W = C * (2 if moments else 1) + (1 if h is not None else 0) + ROW_W
    block_i = min(_pow2(inner), TILE)
    block_c = min(_pow2(C), max(TILE // block_i, 1))
    block_o = max(TILE // (block_c * block_i), 1)
    n_inner = triton.cdiv(inner, block_i)
    # Rows per program: enough programs to fill the GPU, whole tiles each.
    per_program = triton.cdiv(outer, max(TARGET_PROGRAMS // n_inner, 1))
    rows = triton.cdiv(per_program, block_o) * block_o
    n_outer = triton.cdiv(outer, rows)
    n_cols = W if scalars else W - ROW_W
    consts = (moments, h is not None, block_o, block_c, block_i, FINISH_R, min(_pow2(n_cols), FINISH_W),
              ROW_W, *ROW_AT)
    return _Plan(_channel_sums, (n_outer, n_inner), (outer, C, inner, rows, W, n_cols), consts,
                 n_outer * n_inner * W)


def _channel_sums_plan(t, out_s1c, out_s2c, out_scalars, h, out_m):
    """The kept plan for these arguments (see ``channel_sums``), or None."""
    outs = [o for o in (out_s1c, out_s2c, out_m, out_scalars) if o is not None]
    if not _fits(t, outs):
        return None
    key = (t.shape, t.stride(), t.dtype, t.device, out_s2c is not None, out_scalars is not None,
           None if h is None else (h.shape, h.stride(), h.dtype, h.device), _aligned(t, *outs),
           h is None or h.data_ptr() % 16 == 0)
    plan = _plans.get(key, False)
    if plan is False:
        plan = _keep(key, _channel_plan(t, h, out_s2c is not None, out_scalars is not None))
    return plan


def channel_sums(t: torch.Tensor, out_s1c: torch.Tensor, out_s2c, out_scalars, masked=None) -> bool:
    """Per-channel sums of ``t`` into ``out_s1c`` (C,); per-channel sums of squares into
    ``out_s2c`` (C,) unless None; sum t^2, n_pos - n_neg, n_pos + n_neg into ``out_scalars``
    (3,) unless None; with ``masked = (h, out)``, sum h^2 where t == 0 into ``out`` (one
    element), h laid out as t. All outputs fp32 and contiguous. False: not done (see
    ``channel_layout``)."""
    h, out_m = (None, None) if masked is None else masked
    plan = _channel_sums_plan(t, out_s1c, out_s2c, out_scalars, h, out_m)
    if plan is None:
        return False
    # Outputs left out are never written: any fp32 pointer stands in for them.
    plan.launch((t, t if h is None else h, out_s1c, out_s2c if out_s2c is not None else out_s1c,
                 out_m if out_m is not None else out_s1c, out_scalars if out_scalars is not None else out_s1c))
    return True


def plan_raw_sums(t: torch.Tensor, out_s1c: torch.Tensor, row: torch.Tensor, masked=None):
    """``channel_sums(t, out_s1c, None, row, masked)`` as a function ``again(t, masked)`` for
    tensors of t's layout and alignment (``TritonBackend.layout``) into the same ``out_s1c`` and
    ``row`` (a masked output of the same alignment), without the checks; None where the kernel
    does not take them. ``TritonBackend.plan`` hands it to the probe, which keeps it per slot."""
    h, out_m = (None, None) if masked is None else masked
    plan = _channel_sums_plan(t, out_s1c, None, row, h, out_m)
    if plan is None:
        return None
    if h is None:
        return lambda t, masked: plan.launch((t, t, out_s1c, out_s1c, out_s1c, row))
    return lambda t, masked: plan.launch((t, masked[0], out_s1c, out_s1c, masked[1], row))


def masked_energy(h: torch.Tensor, f_out: torch.Tensor, out: torch.Tensor) -> bool:
    """``out`` (one fp32 element) = sum h^2 where f_out == 0 (NaN in f_out counts as not zero,
    as in the C module), for ``h`` and ``f_out`` of the same shape and memory layout. False:
    not done (see ``channel_layout``)."""
    if not _fits(h, (out,)):
        return False
    key = ("masked", h.shape, h.stride(), h.dtype, h.device, f_out.shape, f_out.stride(), f_out.dtype,
           f_out.device, _aligned(h, f_out, out))
    plan = _plans.get(key, False)
    if plan is False:
        plan = None
        if channel_layout(h) is not None and channel_layout(f_out) is not None and h.shape == f_out.shape \
                and h.stride() == f_out.stride() and h.device == f_out.device:
            n = h.numel()
            block = 1024
            chunk = triton.cdiv(triton.cdiv(n, TARGET_PROGRAMS), block) * block
            n_programs = triton.cdiv(n, chunk)
            plan = _Plan(_masked_energy, (n_programs,), (n, chunk), (block, FINISH_R, 1), n_programs)
        _keep(key, plan)
    if plan is None:
        return False
    plan.launch((h, f_out, out))
    return True


class TritonBackend(TorchBackend):
    """The Triton kernels' reads (one launch per tensor); the torch path for the rest."""
    name = "triton"
    row = SUMS

    def layout(self, t, h=None):
        """As the torch path's, and on CUDA whether each address is 16-byte aligned (Triton
        compiles a kernel per alignment)."""
        key = super().layout(t, h)
        if t.is_cuda:
            key += (t.data_ptr() % 16 == 0, h is None or h.data_ptr() % 16 == 0)
        return key

    def plan(self, t, out_s1c, row, masked=None):
        return plan_raw_sums(t, out_s1c, row, masked)

    def scratch_bytes(self) -> int:
        return scratch_bytes()

    def _read(self, t, out_s1c, row) -> bool:
        return channel_sums(t, out_s1c, None, row)

    def _read_masked(self, t, out_s1c, row, h, out) -> bool:
        return channel_sums(t, out_s1c, None, row, (h, out))

    def _read_masked_energy(self, h, f_out, out) -> bool:
        return masked_energy(h, f_out, out)

    def _read_moments(self, t, out_s1c, out_s2c) -> bool:
        return channel_sums(t, out_s1c, out_s2c, None)
