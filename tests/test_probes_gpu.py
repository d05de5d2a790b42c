"""SignalProbe on CUDA: same statistics as on CPU, and no host synchronisation in any hook.

Marked ``gpu``: skipped without CUDA; run with ``pytest -m gpu`` (``make test-gpu``).
"""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from probes import SignalProbe
from resnet_lab import cifar_resnet

pytestmark = pytest.mark.gpu


def probed_step(net, x, y, autocast=False):
    with SignalProbe(net) as probe:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        probe.step()
    return probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"].sort_index()


@pytest.mark.parametrize("version", [1, 2])
def test_cuda_statistics_equal_cpu(version):
    torch.manual_seed(0)
    cpu = cifar_resnet(56, version=version)
    gpu = cifar_resnet(56, version=version)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    expected = probed_step(cpu, x, y)
    # TF32 convolutions (PyTorch's CUDA default) would change the numbers being compared.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    got = probed_step(gpu, x.cuda(), y.cuda())
    assert got.index.equals(expected.index)
    # Relative agreement, except for values at the level of fp32 rounding of their statistic's
    # largest value (e.g. the squared channel mean of a BN output: 1e-14 on one device, 0 on another).
    scale = expected.abs().groupby(level="stat").transform("max")
    bad = ~np.isclose(got, expected, rtol=2e-3, atol=0) & ((got - expected).abs() > 1e-5 * scale)
    assert not bad.any(), pd.DataFrame({"cpu": expected[bad], "cuda": got[bad]}).head(12).to_string()


def test_bf16_autocast_statistics_close_to_fp32():
    torch.manual_seed(0)
    net = cifar_resnet(20, version=2).cuda()
    x, y = torch.randn(64, 3, 16, 16, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    fp32 = probed_step(net, x, y)
    net.zero_grad()
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
