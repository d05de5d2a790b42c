"""One read of a tapped tensor on the GPU: the raw sums of ``probes.stats`` in two Triton kernels.

The torch path of ``stats.raw_sums`` reads a tensor five times (channel sums, sum of squares,
``sign`` written to a buffer, two reductions of it); here one kernel reads it once and writes
per-program partial sums, and a second, tiny kernel adds the partials up into the probe's
preallocated output views -- the same numbers ``_fastsums.c`` writes on the CPU:

* ``channel_sums``: per-channel sums s1_c, optionally per-channel sums of squares s2_c, and
  the three scalars sum t^2, sum sign(t) = n_pos - n_neg, sum sign(t)^2 = n_pos + n_neg
  (NaN where t holds a NaN, as ``torch.sign`` makes them);
* ``masked_energy``: sum h^2 where f_out == 0, for two tensors laid out alike.

Why two stages and not atomics: the outputs need no zeroing first (a zeroing launch per
output would double the launches), the result does not depend on the order in which
programs finish (a probed run is reproducible bit for bit), and nothing synchronises with
the host: sizes come from shapes, the partials live in a fresh buffer of PyTorch's caching
allocator, and both launches are queued on the current stream.

Inputs are fp32, bf16 or fp16, NCHW-contiguous, channels-last or 2-D (N, C); the kernels
accumulate in fp32. Each function returns False (and writes nothing) for anything else --
another layout, another device, an empty tensor -- and the caller uses torch operations.

The tensor is read as blocks [outer][C][inner] like the C module: NCHW is outer = N,
inner = H*W; channels-last and (N, C) are outer = N*H*W (or N), inner = 1. A program sums
a range of ``outer`` for one slice of ``inner``, over all channels, into one row of the
partials: [s1_0 .. s1_C-1, (s2_0 .. s2_C-1,) sum t^2, sum sign t, sum sign^2 t].

Tests (``tests/test_triton_sums.py``) run the kernels on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``); ``tests/test_probes_gpu.py`` compares them on CUDA.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Devices the kernels run on; the interpreter tests add "cpu".
DEVICES = ("cuda",)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Elements of one tile (registers per accumulator: TILE / 128 per thread at 4 warps).
TILE = 2048
# Programs of the first stage to aim for: a few per streaming multiprocessor of a large GPU.
TARGET_PROGRAMS = 512
# Fused multiply-adds in the sums of squares (more accurate; stated, since Triton warns when
# the default is left implicit).
LAUNCH = dict(enable_fp_fusion=True)
# Integer arguments that change with the batch are not specialised on (Triton would compile
# a kernel per value class: 1, multiple of 16, other); those set by the layer's shape are.


@triton.jit(do_not_specialize=["outer", "rows"])
def _channel_partials(x_ptr, part_ptr, outer, C, inner, rows, W,
                      MOMENTS: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_I: tl.constexpr):
    """Program (p, q): outer rows [p * rows, (p + 1) * rows), inner positions of block q,
    every channel -> row p * num_programs(1) + q of ``part`` (W columns)."""
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
    for c0 in range(0, C, BLOCK_C):
        s1 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        s2 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        sg = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
        sg2 = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
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
        ch1 = tl.sum(tl.sum(s1, axis=2), axis=0)
        ch2 = tl.sum(tl.sum(s2, axis=2), axis=0)
        cmask = c0 + chans < C
        tl.store(out_row + c0 + chans, ch1, mask=cmask)
        if MOMENTS:
            tl.store(out_row + C + c0 + chans, ch2, mask=cmask)
        tot_sq += ch2
        tot_sign += tl.sum(tl.sum(sg, axis=2), axis=0)
        tot_sign2 += tl.sum(tl.sum(sg2, axis=2), axis=0)
    tl.store(out_row + W - 3, tl.sum(tot_sq, axis=0))
    tl.store(out_row + W - 2, tl.sum(tot_sign, axis=0))
    tl.store(out_row + W - 1, tl.sum(tot_sign2, axis=0))


@triton.jit(do_not_specialize=["n", "chunk"])
def _masked_partials(h_ptr, f_ptr, part_ptr, n, chunk, BLOCK: tl.constexpr):
    """Program p: sum of h^2 where f == 0 over elements [p * chunk, (p + 1) * chunk)."""
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


@triton.jit(do_not_specialize=["n_rows"])
def _sum_rows(part_ptr, n_rows, W, n_cols, a_ptr, A, b_ptr, B, c_ptr,
              BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Column sums of the first ``n_cols`` columns of ``part`` (n_rows, W): columns [0, A)
    -> a, [A, A + B) -> b, [A + B, n_cols) -> c. Each program owns BLOCK_W columns, so
    every output is written exactly once."""
    w = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)
    acc = tl.zeros([BLOCK_R, BLOCK_W], tl.float32)
    for r0 in range(0, n_rows, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)[:, None]
        mask = (r < n_rows) & (w[None, :] < n_cols)
        acc += tl.load(part_ptr + r * W + w[None, :], mask=mask, other=0.0)
    total = tl.sum(acc, axis=0)
    in_a, in_b = w < A, (w >= A) & (w < A + B)
    in_c = (w >= A + B) & (w < n_cols)
    # Offsets clamped to 0 where masked: no out-of-range address is ever formed.
    tl.store(a_ptr + tl.where(in_a, w, 0), total, mask=in_a)
    tl.store(b_ptr + tl.where(in_b, w - A, 0), total, mask=in_b)
    tl.store(c_ptr + tl.where(in_c, w - A - B, 0), total, mask=in_c)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def blocks(t: torch.Tensor):
    """``(outer, C, inner)`` of the [outer][C][inner] memory the kernels read, or None when
    ``t`` is not a tensor they take (device, dtype, layout, size)."""
    if t.device.type not in DEVICES or t.dtype not in DTYPES or t.dim() not in (2, 4) \
            or t.numel() == 0 or t.numel() >= 2**31:
        return None
    if t.is_contiguous():
        return t.shape[0], t.shape[1], t.numel() // (t.shape[0] * t.shape[1])
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.numel() // t.shape[1], t.shape[1], 1
    return None


def _writable(*outs) -> bool:
    return all(o.dtype == torch.float32 and o.is_contiguous() for o in outs)


def _finish(part, n_cols, out_a, out_b, b_len, out_c):
    """Second stage: the sums of the first ``n_cols`` columns of ``part`` into the output
    views: ``out_a`` gets the first out_a.numel(), ``out_b`` the next ``b_len``, ``out_c``
    the rest."""
    n_rows, W = part.shape
    block_w = min(_pow2(n_cols), 128)
    _sum_rows[(triton.cdiv(n_cols, block_w),)](part, n_rows, W, n_cols, out_a, out_a.numel(),
                                               out_b, b_len, out_c,
                                               BLOCK_R=min(_pow2(n_rows), 32), BLOCK_W=block_w,
                                               **LAUNCH)


def channel_sums(t: torch.Tensor, out_s1c: torch.Tensor, out_s2c, out_scalars) -> bool:
    """Per-channel sums of ``t`` into ``out_s1c`` (C,); per-channel sums of squares into
    ``out_s2c`` (C,) unless None; sum t^2, n_pos - n_neg, n_pos + n_neg into ``out_scalars``
    (3,) unless None. All outputs fp32 and contiguous. False: not done (see ``blocks``)."""
    shape = blocks(t)
    outs = [o for o in (out_s1c, out_s2c, out_scalars) if o is not None]
    if shape is None or not _writable(*outs) or any(o.device != t.device for o in outs):
        return False
    outer, C, inner = shape
    moments = out_s2c is not None
    W = C * (2 if moments else 1) + 3
    block_i = min(_pow2(inner), TILE)
    block_c = min(_pow2(C), max(TILE // block_i, 1))
    block_o = max(TILE // (block_c * block_i), 1)
    n_inner = triton.cdiv(inner, block_i)
    # Rows per program: enough programs to fill the GPU, whole tiles each.
    per_program = triton.cdiv(outer, max(TARGET_PROGRAMS // n_inner, 1))
    rows = triton.cdiv(per_program, block_o) * block_o
    n_outer = triton.cdiv(outer, rows)
    part = torch.empty((n_outer * n_inner, W), dtype=torch.float32, device=t.device)
    _channel_partials[(n_outer, n_inner)](t, part, outer, C, inner, rows, W, MOMENTS=moments,
                                          BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_I=block_i, **LAUNCH)
    # Columns: s1 -> out_s1c, s2 -> out_s2c, the three totals -> out_scalars (or left out).
    n_cols = W if out_scalars is not None else W - 3
    _finish(part, n_cols, out_s1c, out_s2c if moments else out_s1c, C if moments else 0,
            out_scalars if out_scalars is not None else out_s1c)
    return True


def masked_energy(h: torch.Tensor, f_out: torch.Tensor, out: torch.Tensor) -> bool:
    """``out`` (0-d fp32) = sum h^2 where f_out == 0 (NaN in f_out counts as not zero, as in
    the C module), for ``h`` and ``f_out`` of the same shape and memory layout. False: not
    done (see ``blocks``)."""
    if blocks(h) is None or blocks(f_out) is None or h.shape != f_out.shape \
            or h.stride() != f_out.stride() or not _writable(out) or out.device != h.device:
        return False
    n = h.numel()
    block = 1024
    chunk = triton.cdiv(triton.cdiv(n, TARGET_PROGRAMS), block) * block
    n_programs = triton.cdiv(n, chunk)
    part = torch.empty((n_programs, 1), dtype=torch.float32, device=h.device)
    _masked_partials[(n_programs,)](h, f_out, part, n, chunk, BLOCK=block, **LAUNCH)
    _finish(part, 1, out.view(1), out.view(1), 0, out.view(1))
    return True
