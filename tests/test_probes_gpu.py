"""SignalProbe on CUDA: same statistics as on CPU, the Triton kernels (probes.kernels.triton_sums) equal
to the torch path, and no host synchronisation in any hook.

Marked ``gpu``: skipped without CUDA; run with ``pytest -m gpu`` (``make test-gpu``, or
``experiments/gpu_check.py``, which also measures the probe's cost).
"""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from probes import SignalProbe, kernels
from probes.stats import RAW_ROW
from resnet_lab import cifar_resnet

pytestmark = pytest.mark.gpu
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture
def no_tf32():
    """fp32 on CUDA as the training engine's fp32: no TF32 (it would change the numbers)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def close_to_cpu(got, expected):
    """Relative agreement, except for values at the level of fp32 rounding of their statistic's
    largest value (e.g. the squared channel mean of a BN output: 1e-14 on one device, 0 on another)."""
    assert got.index.equals(expected.index)
    scale = expected.abs().groupby(level="stat").transform("max")
    bad = ~np.isclose(got, expected, rtol=2e-3, atol=0) & ((got - expected).abs() > 1e-5 * scale)
    assert not bad.any(), pd.DataFrame({"cpu": expected[bad], "cuda": got[bad]}).head(12).to_string()


def probed_step(net, x, y, autocast=False, steps=1):
    """The statistics of the last of ``steps`` probed steps on one batch (from the third on,
    the probe launches the plans it keeps per slot)."""
    with SignalProbe(net) as probe:
        for _ in range(steps):
            net.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(net(x), y)
            loss.backward()
            probe.step()
    rows = probe.collect()
    rows = rows[rows.step == rows.step.max()]
    return rows.set_index(["unit", "tap", "direction", "stat"])["value"].sort_index()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("version", [1, 2])
def test_cuda_statistics_equal_cpu(version, channels_last, no_tf32):
    """fp32 on CUDA (TF32 off), through the Triton kernels, gives the CPU's statistics: at the
    first step and at the third, through the kept launch plans."""
    assert kernels.TRITON is not None, "triton is not importable: the GPU path would use torch operations"
    torch.manual_seed(0)
    cpu = cifar_resnet(56, version=version)
    gpu = cifar_resnet(56, version=version)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    expected = probed_step(cpu, x, y)
    xg = x.cuda()
    if channels_last:                        # the training engine's layout on CUDA
        gpu, xg = gpu.to(memory_format=torch.channels_last), xg.contiguous(memory_format=torch.channels_last)
    close_to_cpu(probed_step(gpu, xg, y.cuda()), expected)
    close_to_cpu(probed_step(gpu, xg, y.cuda(), steps=3), expected)


def test_cuda_statistics_with_and_without_triton_agree(monkeypatch, no_tf32):
    torch.manual_seed(0)
    net = cifar_resnet(20, version=1).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,), device="cuda")
    with_triton = probed_step(net, x, y)
    monkeypatch.setitem(kernels.CHOSEN, "cuda", kernels.TORCH)
    close_to_cpu(probed_step(net, x, y), with_triton)


def sample(layout, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (2, 7) if layout == "2d" else (3, 5, 7, 9) if layout != "large" else (128, 64, 16, 16)
    t = torch.randn(shape, generator=g, device="cuda")
    t[t.abs() < 0.4] = 0
    t = t.to(DTYPES[dtype])
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d", "large"])
def test_triton_kernels_equal_torch_path_on_cuda(monkeypatch, layout, dtype):
    """Channel sums, sums of squares, sign counts and the masked energy: the kernels against
    the torch operations on the same CUDA tensors, to fp32 rounding."""
    assert kernels.TRITON is not None
    K = kernels.triton_sums
    t, h = sample(layout, dtype, 0), sample(layout, dtype, 1)
    f_out = torch.relu(t)
    c = t.shape[1]
    got = [torch.full((c,), 7.0, device="cuda"), torch.full((c,), 7.0, device="cuda"),
           torch.full((len(RAW_ROW),), 7.0, device="cuda"), torch.full((2,), 7.0, device="cuda")]
    assert K.channel_sums(t, got[0], got[1], got[2]) and K.masked_energy(h, f_out, got[3][1])
    torch_path = kernels.TORCH
    ref = [torch.zeros(c, device="cuda"), torch.zeros(c, device="cuda"), torch.zeros(len(RAW_ROW), device="cuda"),
           torch.zeros((), device="cuda")]
    bufs = [torch.empty(t.numel(), device="cuda"), torch.empty(t.numel(), device="cuda")]
    torch_path.raw_sums(t, ref[0], (ref[2], tuple(ref[2][k] for k in range(len(RAW_ROW)))), lambda k, like: bufs[k])
    torch_path.channel_moments(t, torch.zeros(c, device="cuda"), ref[1])
    torch_path.masked_energy(h, f_out, ref[3], lambda k, like: bufs[k])
    scale = t.float().abs().sum().item()
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=2e-6 * scale)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=0)
    torch.testing.assert_close(got[2][0], ref[2][0], rtol=1e-5, atol=0)
    assert got[2][1:].tolist() == ref[2][1:].tolist()                 # sign counts: exact
    torch.testing.assert_close(got[3][1], ref[3], rtol=1e-5, atol=0)
    assert got[3][0].item() == 7.0                                      # neighbours untouched


def _launch_all(K, t, h):
    """channel sums with moments, with the masked energy, and the masked energy alone."""
    c = t.shape[1]
    out = [torch.full((n,), 7.0, device="cuda") for n in (c, c, 3, c, 3, 2, 2)]
    assert K.channel_sums(t, out[0], out[1], out[2])
    assert K.channel_sums(t, out[3], None, out[4], (h, out[5][1]))
    assert K.masked_energy(h, t, out[6][1])
    return out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "large"])
def test_direct_launch_equals_the_jit_launch(monkeypatch, layout, dtype):
    """The compiled kernel launched directly (``DIRECT``, from the second call of a layout on)
    writes bit for bit what the JIT's launch writes, for new tensors of the layout and for a
    view off 16-byte alignment (a plan of its own: the JIT specialises on alignment);
    and the fused masked energy equals the one of the separate kernel."""
    K = kernels.triton_sums
    for k in range(3):
        t, h = torch.relu(sample(layout, dtype, 10 + k)), sample(layout, dtype, 20 + k)
        if k == 2:
            store = torch.empty(t.numel() + 8, dtype=t.dtype, device="cuda")
            view = store[1: 1 + t.numel()].as_strided(t.shape, t.stride())
            view.copy_(t)
            t = view
        monkeypatch.setattr(K, "DIRECT", False)
        K._plans.clear()
        jit = _launch_all(K, t, h)
        monkeypatch.setattr(K, "DIRECT", True)
        K._plans.clear()
        for _ in range(2):                       # compiled by the JIT, then launched directly
            direct = _launch_all(K, t, h)
        assert all(p is None or p.runner is not None for p in K._plans.values())
        for a, b in zip(jit, direct):
            assert torch.equal(a, b)
        assert torch.equal(direct[5], direct[6])     # fused and separate masked energy
        assert direct[5][0].item() == 7.0            # the neighbour of the 0-d output untouched


def test_kernel_sums_are_deterministic():
    """Many launches on one large tensor give the same bits: the last program's sum runs in a
    fixed order, and a missing barrier or fence (a race) would make the results move."""
    K = kernels.triton_sums
    t = torch.randn(128, 64, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    h = torch.randn_like(t)
    t = torch.relu(t)
    first = _launch_all(K, t, h)
    for _ in range(50):
        again = _launch_all(K, t, h)
        for a, b in zip(first, again):
            assert torch.equal(a, b)
    torch.testing.assert_close(first[0].double(), t.double().sum(dim=(0, 2, 3)), rtol=1e-5, atol=1e-2)


def test_bf16_autocast_statistics_close_to_fp32():
    torch.manual_seed(0)
    net = cifar_resnet(20, version=2).cuda()
    x, y = torch.randn(64, 3, 16, 16, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    fp32 = probed_step(net, x, y)
    bf16 = probed_step(net, x, y, autocast=True)
    assert bf16.index.equals(fp32.index)
    fwd = [s in ("rms", "norm", "std", "ch_var") for s in fp32.index.get_level_values("stat")]
    fwd = np.array(fwd) & (fp32.index.get_level_values("direction") == "forward")
    # bf16 keeps 8 bits of mantissa: forward scale statistics agree to a few percent.
    np.testing.assert_allclose(bf16[fwd].to_numpy(), fp32[fwd].to_numpy(), rtol=5e-2)


def test_probed_step_never_synchronises():
    net = cifar_resnet(110, version=1).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    probe = SignalProbe(net, weight_inputs=True)
    with probe:
        F.cross_entropy(net(x), y).backward()    # warm-up: buffers allocated
        probe.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), y)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        probe.step()
    assert len(probe.collect()) > 0
