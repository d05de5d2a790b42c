"""The Triton kernels of probes.kernels.triton_sums against the torch path, on the CPU.

Triton's interpreter (``TRITON_INTERPRET=1``) runs a kernel on CPU tensors with numpy, so the
kernels' arithmetic, masks and index maps are checked without a GPU. The variable must be set
before triton is imported (``tl.sum``, ``tl.zeros`` are themselves kernels, made interpreted or
compiled at import), so ``test_kernels_under_interpreter`` runs this file again in a child
process that has it; there the comparisons run, here they are skipped. The kernels take CPU
tensors there (``DEVICES``). ``test_kernels_compile_for_h100`` compiles the kernels for sm_90
with Triton's bundled ptxas: what the interpreter does not check (types, layouts, register
allocation). On CUDA, ``tests/test_probes_gpu.py`` compares them again.
"""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probes import SignalProbe
from probes import kernels as K
from probes.stats import RAW_ROW
from resnet_lab import cifar_resnet
from triton_interpreter import INTERPRETING, interpreted_kernels, run_in_child

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton; Linux only)")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = ["nchw", "channels_last", "2d"]
ROW = len(RAW_ROW)                  # raw sums in a row (probes.stats)


@pytest.mark.slow
def test_kernels_under_interpreter():
    """This file's comparisons, in a child process under TRITON_INTERPRET=1."""
    run_in_child(__file__, "not under_interpreter")


@pytest.fixture(scope="module")
def kernels():
    """probes.kernels.triton_sums with interpreted kernels, taking CPU tensors."""
    return interpreted_kernels()


def sample(layout, dtype, seed=0):
    """Odd sizes, with zeros, negatives and positives."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 7) if layout == "2d" else (3, 5, 7, 9)
    t = torch.randn(shape, generator=g)
    t[t.abs() < 0.4] = 0
    t = t.to(DTYPES[dtype])
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def torch_path(monkeypatch, name, *args):
    """Run the backend method ``name`` with torch operations only."""
    return getattr(K.TORCH, name)(*args)


def triton_backend(kernels):
    """The Triton backend (``TritonBackend``) over the interpreted kernels."""
    return kernels.TritonBackend()


def scalar_views():
    row = torch.zeros(ROW)
    return row, (row, tuple(row[k] for k in range(ROW)))


def close(got, expected, scale):
    """Equal to fp32 rounding of the sums' magnitude (sums with cancellation included)."""
    np.testing.assert_allclose(got.double().numpy(), expected.double().numpy(), rtol=2e-6,
                               atol=2e-6 * float(scale))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_raw_sums_kernel_equals_torch_path(kernels, monkeypatch, layout, dtype):
    t = sample(layout, dtype)
    c = t.shape[1]
    expected_s1c, (expected_row, expected_views) = torch.zeros(c), scalar_views()
    torch_path(monkeypatch, "raw_sums", t, expected_s1c, expected_views,
               lambda k, like: torch.empty(like.numel()))
    s1c = torch.full((c,), 7.0)                      # stale values: the kernel overwrites them
    row = torch.full((ROW,), 7.0)
    assert kernels.channel_sums(t, s1c, None, row)
    scale = t.float().abs().sum()
    close(s1c, expected_s1c, scale)
    close(row[:1], expected_row[:1], t.float().square().sum())
    assert row[1:].tolist() == expected_row[1:].tolist()      # sign counts: exact integers


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_moments_kernel_equals_torch_path(kernels, monkeypatch, layout, dtype):
    t = sample(layout, dtype, seed=1)
    c = t.shape[1]
    expected = torch.zeros(c), torch.zeros(c)
    torch_path(monkeypatch, "channel_moments", t, *expected)
    got = torch.full((c,), 7.0), torch.full((c,), 7.0)
    assert kernels.channel_sums(t, got[0], got[1], None)
    close(got[0], expected[0], t.float().abs().sum())
    close(got[1], expected[1], t.float().square().sum())


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_masked_energy_kernel_equals_torch_path(kernels, monkeypatch, layout, dtype):
    h = sample(layout, dtype, seed=2)
    f_out = torch.relu(sample(layout, dtype, seed=3))          # zeros where the sample was <= 0
    expected = torch.zeros(())
    torch_path(monkeypatch, "masked_energy", h, f_out, expected,
               lambda k, like: torch.empty(like.numel()))
    cut = torch.full((4,), 7.0)                                 # the probe passes one element
    assert kernels.masked_energy(h, f_out, cut[1])
    close(cut[1:2], expected.reshape(1), h.float().square().sum())
    assert cut[[0, 2, 3]].tolist() == [7.0] * 3


def test_many_programs_and_tiles(kernels, monkeypatch):
    """Enough rows for several programs of several tiles each, channels over two blocks."""
    torch.manual_seed(0)
    for t in (torch.randn(600, 33, 3, 1), torch.randn(4100, 3), torch.randn(2, 3, 40, 70)):
        t[t.abs() < 0.2] = 0
        c = t.shape[1]
        expected = torch.zeros(c), torch.zeros(c)
        torch_path(monkeypatch, "channel_moments", t, *expected)
        got, row = (torch.zeros(c), torch.zeros(c)), torch.zeros(ROW)
        assert kernels.channel_sums(t, got[0], got[1], row)
        close(got[0], expected[0], t.abs().sum())
        close(got[1], expected[1], t.square().sum())
        assert row[1].item() == torch.sign(t).sum().item() and row[2].item() == (t != 0).sum().item()


def test_nan_reaches_sign_sums_as_in_torch(kernels):
    t = torch.randn(3, 4, 2, 2)
    t[1, 2, 0, 1] = float("nan")
    s1c, row = torch.zeros(4), torch.zeros(ROW)
    assert kernels.channel_sums(t, s1c, None, row)
    assert torch.isnan(row).all() and torch.isnan(s1c[2]) and not torch.isnan(s1c[[0, 1, 3]]).any()


def test_other_inputs_are_left_to_torch(kernels):
    """Strided views, 3-D tensors, fp64, empty tensors or unlike layouts: nothing written."""
    t = torch.randn(4, 6, 5, 5)
    out, row = torch.full((6,), 7.0), torch.full((ROW,), 7.0)
    for bad in (t[:, :, ::2], t[0], t.double(), t[:0]):
        assert not kernels.channel_sums(bad, out[: bad.shape[1]] if bad.dim() > 1 else out, None, row)
    assert not kernels.masked_energy(t, t.contiguous(memory_format=torch.channels_last), out[0])
    assert not kernels.channel_sums(t, torch.zeros(12)[::2], None, row)       # strided output
    assert out.tolist() == [7.0] * 6 and row.tolist() == [7.0] * ROW


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_masked_energy_in_the_same_pass_equals_torch_path(kernels, monkeypatch, layout, dtype):
    """channel_sums with ``masked=(h, out)``: the channel sums and sign counts of f(y) and the
    shortcut energy where f(y) == 0, from one launch, equal the torch path's."""
    h = sample(layout, dtype, seed=4)
    f_out = torch.relu(sample(layout, dtype, seed=5))
    c = f_out.shape[1]
    expected_s1c, (expected_row, views) = torch.zeros(c), scalar_views()
    expected_cut = torch.zeros(())
    bufs = [torch.empty(f_out.numel()), torch.empty(f_out.numel())]    # kept: buffer 0 holds sign(f(y))
    torch_path(monkeypatch, "raw_sums", f_out, expected_s1c, views, lambda k, like: bufs[k], (h, expected_cut))
    s1c, row, cut = torch.full((c,), 7.0), torch.full((ROW,), 7.0), torch.full((3,), 7.0)
    assert kernels.channel_sums(f_out, s1c, None, row, (h, cut[1]))
    close(s1c, expected_s1c, f_out.float().abs().sum())
    close(row[:1], expected_row[:1], f_out.float().square().sum())
    assert row[1:].tolist() == expected_row[1:].tolist()
    close(cut[1:2], expected_cut.reshape(1), h.float().square().sum())
    assert cut[[0, 2]].tolist() == [7.0, 7.0]
    # A shortcut laid out otherwise is not read in the same pass: nothing written.
    other = h.contiguous() if layout == "channels_last" else h.contiguous(memory_format=torch.channels_last) \
        if layout == "nchw" else h.t().contiguous().t()
    assert not kernels.channel_sums(f_out, s1c, None, row, (other, cut[1]))


def test_a_kept_plan_serves_new_values_and_leaves_the_counter_at_zero(kernels):
    """The launch plan kept for a layout gives the right sums for new tensors of that layout;
    a pointer of another alignment gets a plan of its own (the JIT specialises on it); every
    launch leaves its ticket counter at 0 for the next."""
    torch.manual_seed(1)
    kernels._plans.clear()
    kernels._scratch.clear()
    store = torch.zeros(4 * 5 * 6 * 7 + 1)
    for k in range(3):
        t = torch.randn(4, 5, 6, 7)
        if k == 2:                                   # the same layout 4 bytes off 16-byte alignment
            store[1:].copy_(t.reshape(-1))
            t = store[1:].view(4, 5, 6, 7)
        s1c, s2c, row = torch.zeros(5), torch.zeros(5), torch.zeros(ROW)
        assert kernels.channel_sums(t, s1c, s2c, row)
        close(s1c, t.sum(dim=(0, 2, 3)), t.abs().sum())
        close(s2c, t.square().sum(dim=(0, 2, 3)), t.square().sum())
        assert row[2].item() == t.numel()
        assert all(s.count.item() == 0 for s in kernels._scratch.values())
        assert len(kernels._plans) == (1 if k < 2 else 2)
    # The partial rows kept: one row of W = 2C + 3 floats per program, at most TARGET_PROGRAMS.
    assert 4 * (2 * 5 + 3) < kernels.scratch_bytes() <= 4 * (kernels.TARGET_PROGRAMS * (2 * 5 + 3) + 1)


def test_stats_route_a_units_output_and_shortcut_to_one_launch(kernels, monkeypatch):
    """raw_sums with ``masked``: one channel_sums call reads f(y) and h together."""
    calls = []
    original = kernels.channel_sums
    monkeypatch.setattr(kernels, "channel_sums", lambda *a: calls.append(len(a)) or original(*a))
    backend = triton_backend(kernels)
    h, f_out = sample("nchw", "fp32", 6), torch.relu(sample("nchw", "fp32", 7))
    s1c, (_row, views) = torch.zeros(5), scalar_views()
    assert backend.raw_sums(f_out, s1c, views, lambda k, like: torch.empty(like.numel()), (h, torch.zeros(()))) is False
    assert calls == [5]


def test_stats_functions_route_to_the_kernels(kernels, monkeypatch):
    """raw_sums, channel_moments and masked_energy call the kernels when they take the tensor."""
    calls = []
    for name in ("channel_sums", "masked_energy"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a))
    backend = triton_backend(kernels)
    t = sample("nchw", "bf16")
    s1c, (_row, views) = torch.zeros(5), scalar_views()
    assert backend.raw_sums(t, s1c, views, lambda k, like: torch.empty(like.numel())) is False   # no sign scratch
    backend.channel_moments(t, torch.zeros(5), torch.zeros(5))
    backend.masked_energy(t, torch.relu(t), torch.zeros(()), lambda k, like: torch.empty(like.numel()))
    assert calls == ["channel_sums", "channel_sums", "masked_energy"]


def test_signal_probe_with_kernels_equals_c_module(kernels):
    """Whole probed steps through the kernels (views into the probe's buffers, the 0-d cut
    numerators) give the statistics of the C module: the first steps through ``raw_sums``,
    the third through the launch plans the probe keeps per slot (made at the second: the
    first step moves the buffers as they grow)."""
    torch.manual_seed(0)
    net = cifar_resnet(8, version=1, width=4)
    batches = [(torch.randn(3, 3, 8, 8), torch.randint(0, 10, (3,))) for _ in range(3)]
    frames = []
    for routed in (False, True):                           # routed: nothing but the kernels reads
        with K.forced(triton_backend(kernels)) if routed else contextlib.nullcontext(), \
                SignalProbe(net, weight_inputs=True) as probe:
            for x, y in batches:
                net.zero_grad()
                F.cross_entropy(net(x), y).backward()
                probe.step()
        if routed:                                         # the third step used kept plans
            assert sum(k is not None for k in probe._recorder.fwd.kept + probe._recorder.bwd.kept) > 10
        frames.append(probe.collect())
    a, b = frames
    assert a[["unit", "tap", "direction", "stat", "layer"]].equals(b[["unit", "tap", "direction", "stat", "layer"]])
    scale = a.groupby("stat")["value"].transform(lambda v: v.abs().max())
    assert (np.abs(a.value - b.value) <= 1e-5 * np.abs(a.value) + 1e-6 * scale).all()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_h100(dtype):
    """Compile every kernel for sm_90 (H100/H200) without a GPU: catches type and layout
    errors the interpreter lets pass."""
    if INTERPRETING:
        pytest.skip("the interpreter's kernels are not compiled")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as err:
        pytest.skip(f"this triton cannot compile ahead of time: {err}")
    from probes.kernels import triton_sums as K
    elem = {"fp32": "*fp32", "bf16": "*bf16"}[dtype]
    outs = dict.fromkeys(["part_ptr", "s1_ptr", "s2_ptr", "m_ptr", "sc_ptr"], "*fp32")
    ints = dict.fromkeys(["outer", "C", "inner", "rows", "W", "n_cols"], "i32")
    block = dict.fromkeys(["MOMENTS", "MASKED", "BLOCK_O", "BLOCK_C", "BLOCK_I", "BLOCK_R", "BLOCK_W",
                           "ROW_W", "AT_SQ", "AT_SIGN", "AT_SIGN2"], "constexpr")
    cases = [(K._channel_sums, {"x_ptr": elem, "h_ptr": elem, "count_ptr": "*i32", **outs, **ints, **block},
              {"MOMENTS": moments, "MASKED": masked, "BLOCK_O": o, "BLOCK_C": c, "BLOCK_I": i,
               "BLOCK_R": K.FINISH_R, "BLOCK_W": K.FINISH_W, "ROW_W": K.ROW_W,
               **dict(zip(["AT_SQ", "AT_SIGN", "AT_SIGN2"], K.ROW_AT))})
             for moments, masked in [(False, True), (True, False)]
             for o, c, i in [(1, 32, 64), (128, 16, 1), (2048, 1, 1)]]
    cases.append((K._masked_energy, {"h_ptr": elem, "f_ptr": elem, "part_ptr": "*fp32", "count_ptr": "*i32",
                                     "out_ptr": "*fp32", "n": "i32", "chunk": "i32", "BLOCK": "constexpr",
                                     "BLOCK_R": "constexpr", "BLOCK_W": "constexpr"},
                  {"BLOCK": 1024, "BLOCK_R": K.FINISH_R, "BLOCK_W": 1}))
    for fn, signature, constants in cases:
        compiled = triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", 90, 32),
                                  options=K.LAUNCH)
        assert compiled.asm["cubin"], (fn.__name__, constants)
