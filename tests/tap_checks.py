"""What a tapped model must satisfy, checked against independent computations; shared by
tests/test_tapping.py (copies of the libraries' blocks) and tests/test_ecosystem.py (the
libraries themselves). Float tolerances are fp32 rounding bounds (tests/fp32_bounds.py) that
hold whatever order a CPU adds in.

* ``assert_bitwise_the_original``: the tapped model computes bitwise what the untapped one
  computes -- output, every parameter gradient, every buffer (BN running statistics) -- with
  its random layers (drop_path, drop_block) drawing, while a probe records.
* ``assert_probe_matches_autograd``: at every tap of every unit the probe's rows equal the
  statistics of the tensor itself (captured by a forward hook on the tap, in another forward)
  and of the loss gradient with respect to it (``torch.autograd.grad``); the V1 cut statistics
  at the sum from the shortcut, output and output gradient; each unit's parameter gradient norm.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from fp32_bounds import norm_tolerance, ratio_tolerance, tolerance
from probes import SignalProbe
from probes.adapters.tapping import tap_model
from resnet_lab import TAP_NAMES


def train_step(model, x, y, seed=1):
    """One forward and backward in train mode; the seed fixes drop_path's and drop_block's draws."""
    torch.manual_seed(seed)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out


def no_random_draws(model):
    """``model`` with its drop_path and drop_block layers (timm's and the copies') switched off."""
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.
    return model


def assert_bitwise_the_original(original, x, y):
    """Tap a deep copy of ``original`` (in train mode), run one step of each, compare; returns
    the copy's TapHandle and the probe's rows."""
    original.train()
    tapped = copy.deepcopy(original)
    handle = tap_model(tapped)
    expected = train_step(original, x, y)
    with SignalProbe(tapped) as probe:              # the probe's hooks only read
        got = train_step(tapped, x, y)
        probe.step()
    assert torch.equal(got, expected)
    for (n, p), q in zip(original.named_parameters(), tapped.parameters()):
        assert torch.equal(p.grad, q.grad), n
    for (n, b), c in zip(original.named_buffers(), tapped.buffers()):
        assert torch.equal(b, c), n                  # BN running statistics too
    return handle, probe.collect()


def tensor_stats(t):
    """Every tensor statistic of probes.stats, in plain torch (as tests/test_probes.py has it)."""
    t = t.detach().double()
    per_channel = t.transpose(0, 1).reshape(t.shape[1], -1)
    m, v = per_channel.mean(1), per_channel.var(1, unbiased=False)
    return {"rms": t.square().mean().sqrt(), "norm": t.norm(), "mean": t.mean(),
            "std": t.std(unbiased=False), "ch_sq_mean": (m * m).mean(), "ch_var": v.mean(),
            "frac_neg": (t < 0).double().mean(), "frac_zero": (t == 0).double().mean()}


def assert_grad_norm(got, unit):
    """The probe's gradient norm of ``unit``'s parameters against float64, within fp32's bound."""
    grads = [p.grad.double() for p in unit.parameters()]
    norm = torch.sqrt(sum(g.square().sum() for g in grads)).item()
    assert got == pytest.approx(norm, rel=0, abs=norm_tolerance(norm, sum(g.numel() for g in grads)))


def taps_and_gradients(model, units, x, y):
    """Every tap's tensor (a forward hook on the tap) and the loss gradient with respect to it."""
    kept = {}
    hooks = [unit.taps[tap].register_forward_hook(lambda m, a, out, key=(u, tap): kept.__setitem__(key, out))
             for u, unit in enumerate(units) for tap in TAP_NAMES]
    try:
        loss = F.cross_entropy(model(x), y)
    finally:
        for h in hooks:
            h.remove()
    assert len(kept) == 5 * len(units)
    return kept, dict(zip(kept, torch.autograd.grad(loss, list(kept.values()))))


def assert_tap_formulas(kept, units, post_activation):
    """The tap contract on the captured tensors: sum = branch + shortcut, output = f(sum) with f
    = ReLU (V1) or the identity (V2), and an identity shortcut is the input itself."""
    for u, unit in enumerate(units):
        t = {tap: kept[(u, tap)] for tap in TAP_NAMES}
        assert torch.equal(t["sum"], t["branch"] + t["shortcut"]), u
        assert torch.equal(t["output"], torch.relu(t["sum"]) if post_activation else t["sum"]), u
        assert (t["shortcut"] is t["input"]) == (unit.downsample is None), u


def assert_probe_matches_autograd(model, units, x, y, post_activation):
    """``model`` is tapped (``units`` its tapped blocks) and draws nothing at random."""
    kept, grads = taps_and_gradients(model, units, x, y)
    assert_tap_formulas(kept, units, post_activation)
    model.zero_grad()
    with SignalProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
        probe.step()
    df = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    for (u, tap), t in kept.items():
        for direction, tensor in (("forward", t), ("backward", grads[(u, tap)])):
            stats = tensor_stats(tensor)
            for stat, expected in stats.items():
                assert df[(u, tap, direction, stat)] == pytest.approx(
                    expected.item(), rel=0, abs=tolerance(stat, tensor)), (u, tap, direction, stat)
    for u, unit in enumerate(units):
        h, out, g = kept[(u, "shortcut")].double(), kept[(u, "output")], grads[(u, "output")].double()
        # f = ReLU: it zeroes the shortcut where out == 0 and stops dL/dout there. f = identity: nothing.
        cut = (h.square() * (out == 0)).sum() / h.square().sum() if post_activation else torch.tensor(0.)
        grad_cut = 1 - (g * (out > 0)).square().sum() / g.square().sum() if post_activation else torch.tensor(0.)
        share = ratio_tolerance(h.numel())
        assert df[(u, "sum", "forward", "shortcut_cut")] == pytest.approx(cut.item(), rel=0, abs=share)
        assert df[(u, "sum", "backward", "grad_cut")] == pytest.approx(grad_cut.item(), rel=0, abs=share)
        assert_grad_norm(df[(u, "params", "backward", "grad_norm")], unit)
    return df
