"""probes.ShortcutPath against hand computations made without autograd.

A toy net of tapped units, ``out = f(h(x) + F(x))``, whose loss is ``sum(w * out)``: the
gradient at the end is ``w`` itself, so the shortcut path's gradient is written out by hand
(element-wise products of scales, masks and the gate's derivative) from the forward's own
tensors, in float64.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes.shortcut_path import ShortcutPath
from resnet_lab import cifar_resnet
from resnet_lab.networks.taps import make_taps

U = 2.0 ** -24


class ToyUnit(nn.Module):
    """h = shortcut(x), F = a 1x1 convolution of x, y = h + F, out = f(y)."""

    def __init__(self, channels, shortcut, after, *, stage=1, index=0):
        super().__init__()
        self.stage, self.index = stage, index
        self.taps = make_taps()
        self.shortcut, self.after = shortcut, after
        self.branch = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x):
        x = self.taps["input"](x)
        h = self.taps["shortcut"](self.shortcut(x))
        branch = self.taps["branch"](self.branch(x))
        y = self.taps["sum"](h + branch)
        return self.taps["output"](self.after(y))


class Scale(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return self.s * x


class Gate(nn.Module):
    """h = (1 − sigmoid(a x + b)) x, element-wise (a gate whose derivative the path carries)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return (1 - torch.sigmoid(self.a * x + self.b)) * x


class Toy(nn.Module):
    def __init__(self, units):
        super().__init__()
        self.body = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(units[0].branch.in_channels)   # a buffer to put back

    def units(self):
        return list(self.body)

    def forward(self, x):
        return self.body(self.bn(x))


def _measure(net, x, w):
    kept = {}

    def keep(key):
        def hook(module, args, out):       # the first forward's tensors (returns None)
            kept.setdefault(key, out.detach().double())
        return hook

    hooks = [u.taps[name].register_forward_hook(keep((k, name)))
             for k, u in enumerate(net.units()) for name in ("input", "shortcut", "sum")]
    rows = ShortcutPath(net).measure(lambda: (net(x) * w).sum())
    for h in hooks:
        h.remove()
    return rows, kept


def _share(path, w):
    w = w.double()
    return float((path ** 2).sum() / (w ** 2).sum())


def _close(value, expected, n):
    gamma = n * U / (1 - n * U)
    assert value == pytest.approx(expected, rel=50 * gamma, abs=1e-12)


def test_identity_relu_is_the_product_of_masks():
    torch.manual_seed(0)
    net = Toy([ToyUnit(3, nn.Identity(), nn.ReLU(), index=k) for k in range(4)]).train()
    x, w = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    (row,), kept = _measure(net, x, w)
    mask = torch.ones_like(w, dtype=torch.float64)
    for k in range(4):
        mask = mask * (kept[(k, "sum")] > 0)
    _close(row["share"], _share(w.double() * mask, w), w.numel())
    assert 0 < row["share"] < 1 and row["n_units"] == 4 and row["first_index"] == 0


def test_scaled_shortcut_carries_the_scale_squared_per_unit():
    torch.manual_seed(1)
    net = Toy([ToyUnit(2, Scale(0.5), nn.Identity(), index=k) for k in range(3)]).train()
    x, w = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    (row,), _ = _measure(net, x, w)
    _close(row["share"], 0.25 ** 3, w.numel())
    assert row["log10_share"] == pytest.approx(3 * math.log10(0.25), abs=1e-5)


def test_gate_and_relu_by_hand():
    torch.manual_seed(2)
    a, b = 0.7, -0.3
    net = Toy([ToyUnit(2, Gate(a, b), nn.ReLU(), index=k) for k in range(3)]).train()
    x, w = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    (row,), kept = _measure(net, x, w)
    # backward by hand: at each unit, from the top, d out/d x = [y > 0] * h'(x),
    # h'(x) = (1 − s) − x s (1 − s) a, s = sigmoid(a x + b)
    g = w.double()
    for k in reversed(range(3)):
        xin = kept[(k, "input")]
        s = 1 / (1 + np.exp(-(a * xin.numpy() + b)))
        dh = torch.from_numpy((1 - s) - xin.numpy() * s * (1 - s) * a)
        g = g * (kept[(k, "sum")] > 0) * dh
    _close(row["share"], _share(g, w), w.numel())


def test_dropout_masks_are_the_first_forwards_and_the_model_is_put_back():
    torch.manual_seed(3)
    net = Toy([ToyUnit(2, nn.Dropout(0.5), nn.Identity(), index=k) for k in range(2)]).train()
    x, w = torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3)
    before = [b.clone() for b in net.buffers()]
    state = torch.get_rng_state()
    (row,), kept = _measure(net, x, w)
    # the hooks saw the first forward: its masks (h = 2x or 0) give the share by hand
    mask = torch.ones_like(w, dtype=torch.float64)
    for k in range(2):
        xin, h = kept[(k, "input")], kept[(k, "shortcut")]
        mask = mask * torch.where(xin != 0, h / xin, torch.zeros_like(h))
    _close(row["share"], _share(w.double() * mask, w), w.numel())
    assert all(torch.equal(b, c) for b, c in zip(net.buffers(), before))   # BN stats back
    assert all(p.grad is None for p in net.parameters())
    after_one = torch.get_rng_state()
    torch.set_rng_state(state)
    net(x)                                              # one forward draws this much
    assert torch.equal(torch.get_rng_state(), after_one)


def test_full_preact_shares_everything_and_original_matches_its_masks():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    v2 = cifar_resnet(20, version=2, width=4).train()
    rows = ShortcutPath(v2).measure(lambda: F.cross_entropy(v2(x), y))
    assert [r["stage"] for r in rows] == [1, 2, 3]
    assert all(abs(r["log10_share"]) < 1e-6 for r in rows)
    v1 = cifar_resnet(20, version=1, width=4).train()
    rows = ShortcutPath(v1).measure(lambda: F.cross_entropy(v1(x), y))
    assert all(r["log10_share"] < 0 for r in rows)
    # stages 2 and 3 start at their second unit (the first changes the shape)
    assert [(r["first_index"], r["n_units"]) for r in rows] == [(0, 3), (1, 2), (1, 2)]


def test_identity_shortcuts_agree_with_the_probes_element_wise_path_share():
    """For identity shortcuts the autograd instrument and the probe's path_share (the product
    of the after-addition masks, probes.identity_path) measure the same thing: two
    implementations, one number per stage."""
    from probes import SignalProbe
    torch.manual_seed(5)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    net = cifar_resnet(29, version=1, width=4).train()
    state = torch.get_rng_state()
    rows = ShortcutPath(net).measure(lambda: F.cross_entropy(net(x), y))
    torch.set_rng_state(state)
    probe = SignalProbe(net, taps=("input", "output", "sum"), stats=("norm", "path_share"))
    with probe:
        F.cross_entropy(net(x), y).backward()
        probe.step()
    shares = probe.collect().query("stat == 'path_share'").sort_values("stage")["value"]
    assert len(shares) == len(rows) == 3
    for r, share in zip(rows, shares):
        assert r["share"] == pytest.approx(share, rel=1e-4)
