"""The identity-path statistics (``probes.identity_path``, claim C2 element by element) against
independent computations: autograd through the shortcuts alone, cases whose answer is 1 by
construction, and a hand-built mask case whose shares were computed by hand."""
import contextlib
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import SignalProbe, kernels
from probes import stats as S
from probes.kernels import cpp_hooks
from resnet_lab import cifar_resnet
from resnet_lab.networks.taps import make_taps

PATH = ("path_share", "path_share_indep", "path_frac")
U = 2.0 ** -24                           # fp32 unit roundoff


def gamma(n):
    """Higham's bound on the relative error of an fp32 sum of n terms of one sign."""
    return n * U / (1 - n * U)


@pytest.fixture(params=["C++", "Python", "torch"])
def taps(request):
    """The probe's taps: C++ (from the second probed step), Python with the C module's reads,
    Python with torch's; the path statistics must hold alongside each."""
    if request.param == "C++" and cpp_hooks.load() is None:
        pytest.skip("the C++ taps and hooks are not built")
    with kernels.forced("torch") if request.param == "torch" else contextlib.nullcontext():
        yield request.param


def probed(net, x, target, taps, steps=3, stats=("norm", "grad_cut") + PATH, loss=None):
    """``steps`` probed steps (no update); the last one's rows by (unit, tap, direction, stat)."""
    probe = SignalProbe(net, stats=stats, cpp_hooks=taps == "C++")
    for _ in range(steps):
        with probe:
            net.zero_grad()
            (loss(net(x)) if loss else F.cross_entropy(net(x), target)).backward()
            probe.step()
    assert bool(probe._taps.cpp) == (taps == "C++")
    rows = probe.collect()
    return rows[rows["step"] == rows["step"].max()].set_index(["unit", "tap", "direction", "stat"])["value"]


def identity_paths(net):
    """Per stage: the units of its identity path (the run of identity shortcuts that ends at its
    last unit), from the units' own description (``shortcut_kind``), not the probe's."""
    units = net.units()
    stages = {}
    for u, unit in enumerate(units):
        stages.setdefault(unit.stage, []).append(u)
    paths = {}
    for stage, members in stages.items():
        path = []
        for u in reversed(members):
            if units[u].shortcut_kind != "identity":
                break
            path.insert(0, u)
        paths[stage] = path
    return paths


def reference(net, x, target):
    """Per stage, in float64 from autograd: the stage-end gradient g, g * M through the
    shortcuts alone, and each path unit's gradients at its sum and output."""
    units = net.units()
    kept, hooks = {}, []
    for u, unit in enumerate(units):
        for tap in ("sum", "output"):
            hooks.append(unit.taps[tap].register_forward_hook(
                lambda m, a, out, key=(u, tap): kept.__setitem__(key, out)))
    loss = F.cross_entropy(net(x), target)
    for h in hooks:
        h.remove()
    keys = list(kept)
    grads = dict(zip(keys, torch.autograd.grad(loss, [kept[k] for k in keys])))

    out = {}
    for stage, path in identity_paths(net).items():
        if not path:
            continue
        # the forward again, each path unit's branch detached: the gradient of the stage's end
        # reaches the path's input through the shortcuts and the after-addition functions only
        seen, hooks = {}, [units[u].branch.register_forward_hook(lambda m, a, o: o.detach()) for u in path]
        hooks.append(units[path[0]].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])))
        hooks.append(units[path[-1]].register_forward_hook(lambda m, a, o: seen.__setitem__("out", o)))
        net(x)
        for h in hooks:
            h.remove()
        g = grads[(path[-1], "output")]
        (g_masked,) = torch.autograd.grad(seen["out"], seen["x"], grad_outputs=g)
        mask = torch.ones_like(g, dtype=torch.bool)
        for u in path:
            mask &= kept[(u, "output")] > 0
        assert torch.equal(g_masked, g * mask), "the path's gradient is not g * prod_k [out_k > 0]"
        out[stage] = dict(
            unit=path[-1], n_units=len(path), g=g.double(), g_masked=g_masked.double(), mask=mask,
            single=[float((g.double().square() * (kept[(u, "output")] > 0)).sum() / g.double().square().sum())
                    for u in path],
            indep=float(np.prod([float(grads[(u, "sum")].double().square().sum()      # 1 - grad_cut
                                       / grads[(u, "output")].double().square().sum()) for u in path])))
    return out


@pytest.mark.parametrize("depth", [20, 29])
def test_path_share_equals_autograd_through_the_shortcuts(depth, taps):
    """V1 at init (basic units with zero-padding; bottleneck units with projections): per stage,
    path_share = ||g * M||^2 / ||g||^2 of the gradient autograd takes back through the shortcuts
    alone; path_frac = mean M; path_share_indep = prod_k (1 - grad_cut_k) from autograd's
    gradients; path_share no more than any single unit's share of the same g (M is a subset of
    each unit's mask)."""
    torch.manual_seed(1)
    net = cifar_resnet(depth, version=1, width=4, in_channels=1)
    x, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    rows = probed(net, x, target, taps)
    expected = reference(net, x, target)
    assert len(expected) == 3
    for stage, ref in expected.items():
        n = ref["g"].numel()
        share = float(ref["g_masked"].square().sum() / ref["g"].square().sum())
        assert 0 < share < 0.95, (stage, share)        # a case that tells a mask from none
        at = (ref["unit"], "output")
        got = rows[at + ("backward", "path_share")]
        assert abs(got - share) <= 3 * gamma(n) * share, (stage, got, share)
        assert got <= min(ref["single"]) + 3 * gamma(n), (stage, got, ref["single"])
        assert rows[at + ("forward", "path_frac")] == float(ref["mask"].double().mean()), stage
        indep = rows[at + ("backward", "path_share_indep")]
        assert abs(indep - ref["indep"]) <= 3 * ref["n_units"] * gamma(n) * ref["indep"], (stage, indep, ref["indep"])
        assert abs(indep - share) > 10 * gamma(n), "independence gave the path share: no test of the product"


def last_bn(branch):
    return [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def test_v1_with_every_sum_positive_passes_everything(taps):
    """A large positive bias on each branch's last BN makes every sum y = h + F positive (h >= 0:
    the V1 stem and units end in ReLU): nothing is cut, every share is 1."""
    torch.manual_seed(2)
    net = cifar_resnet(20, version=1, width=4, in_channels=1)
    for unit in net.units():
        nn.init.constant_(last_bn(unit.branch).bias, 100.0)     # |BN(z)| <= sqrt(batch * H * W) < 23
    x, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    sums = []
    hooks = [unit.taps.sum.register_forward_hook(lambda m, a, y: sums.append(y)) for unit in net.units()]
    net(x)
    for h in hooks:
        h.remove()
    assert all(bool((y > 0).all()) for y in sums)             # the construction holds
    rows = probed(net, x, target, taps)
    for stage, path in identity_paths(net).items():
        at = (path[-1], "output")
        assert rows[at + ("forward", "path_frac")] == 1.0
        assert abs(rows[at + ("backward", "path_share")] - 1) <= 4 * U
        assert abs(rows[at + ("backward", "path_share_indep")] - 1) <= 4 * len(path) * U


def without_relu_after_addition(net):
    for unit in net.units():
        unit.after = nn.Identity()
    return net


@pytest.mark.parametrize("make", [lambda: cifar_resnet(20, version=2, width=4, in_channels=1),
                                  lambda: cifar_resnet(29, version=2, width=4, in_channels=1),
                                  lambda: without_relu_after_addition(cifar_resnet(20, version=1, width=4, in_channels=1))],
                         ids=["V2-20", "V2-29", "V1-20 without its after-addition ReLU"])
def test_an_identity_after_addition_passes_everything(make, taps):
    """f = identity (V2; V1 with the ReLU after the addition removed): M is all ones, every share
    is exactly 1, on every stage (the projection units start each stage's path)."""
    torch.manual_seed(3)
    net = make()
    x, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    rows = probed(net, x, target, taps)
    paths = identity_paths(net)
    assert len(paths) == 3 and all(paths.values())
    for path in paths.values():
        at = (path[-1], "output")
        for direction, stat in (("backward", "path_share"), ("backward", "path_share_indep"), ("forward", "path_frac")):
            assert rows[at + (direction, stat)] == 1.0, (at, stat)
    assert set(rows.index.get_level_values("stat")) >= set(PATH)


# ---- a hand-built mask case -------------------------------------------------------------------

class MaskUnit(nn.Module):
    """A tapped unit on 2x2 maps: h = x (identity) or 2x, F = a * x + b, out = relu(h + F). The
    bias b sets each element's sign, so the unit's ReLU mask is the one the test chose."""

    def __init__(self, stage, index, a, b, identity=True):
        super().__init__()
        self.taps, self.stage, self.index, self.identity = make_taps(), stage, index, identity
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32).view(1, 1, 2, 2))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32).view(1, 1, 2, 2))

    def forward(self, x):
        x = self.taps.input(x)
        h = self.taps.shortcut(x if self.identity else 2 * x)
        y = self.taps.sum(h + self.taps.branch(x * self.a + self.b))
        return self.taps.output(torch.relu(y))


class MaskNet(nn.Module):
    """Stage 1: a unit with a non-identity shortcut, then three identity units with masks
    m1 = 1110, m2 = 1101, m3 = 1011; stage 2: a non-identity unit, then one with m5 = 1110.
    From x = 1: y1 = 4,4,4,-7; y2 = 5,5,-6,1; y3 = 11,-5,1,2; y4 = 23,1,3,5; y5 = 24,3,4,-90."""

    def __init__(self):
        super().__init__()
        zero = [0.0] * 4
        self.blocks = nn.ModuleList([
            MaskUnit(1, 0, zero, [1.0] * 4, identity=False),
            MaskUnit(1, 1, zero, [1, 1, 1, -10]),
            MaskUnit(1, 2, [0, 0, 0, 1], [1, 1, -10, 1]),
            MaskUnit(1, 3, [1, 0, 0, 0], [1, -10, 1, 1]),
            MaskUnit(2, 0, zero, [1.0] * 4, identity=False),
            MaskUnit(2, 1, [0, 1, 0, 1], [1, 1, 1, -100])])

    def units(self):
        return list(self.blocks)

    def forward(self, x):
        for unit in self.blocks:
            x = unit(x)
        return x


C = torch.tensor([1.0, 2, 3, 4]).view(1, 1, 2, 2)      # loss = sum C * out_5: g at stage 2's end


def test_hand_built_masks_give_the_hand_computed_shares(taps):
    """By hand (see MaskNet). Stage 2: g = C = 1,2,3,4, M = m5: share 14/30, one unit so
    independence gives the same; mean M = 3/4. Stage 1: g = 2 (C m5 (1 + a5)) = 2,8,6,0;
    M = m1 m2 m3 = 1000: share 4/104 = 1/26, mean M = 1/4. Per unit, its own gradient:
    unit 3 g = 2,8,6,0 passes 40/104 = 5/13; unit 2 g = (g m3)(1 + a3) = 4,0,6,0 passes 16/52
    = 4/13; unit 1 g = 4,0,0,0 passes 1: independence gives 20/169, three times the path's."""
    net = MaskNet()
    x = torch.ones(1, 1, 2, 2)
    rows = probed(net, x, None, taps, loss=lambda out: (C * out).sum())
    # unit: share, independence, mean M, the least single-unit share of the same g (m1: 104/104,
    # m2: 68/104, m3: 40/104 of stage 1's g)
    expected = {5: (Fraction(14, 30), Fraction(14, 30), Fraction(3, 4), Fraction(14, 30)),
                3: (Fraction(1, 26), Fraction(5, 13) * Fraction(4, 13), Fraction(1, 4), Fraction(40, 104))}
    for unit, (share, indep, frac, single) in expected.items():
        got = rows[(unit, "output", "backward", "path_share")]
        assert got == float(share)
        assert abs(rows[(unit, "output", "backward", "path_share_indep")] - float(indep)) <= 1e-12
        assert rows[(unit, "output", "forward", "path_frac")] == float(frac)
        assert got <= float(single)          # M is a subset of each unit's mask
    stats = set(rows.index.get_level_values("stat"))
    paths = rows[rows.index.get_level_values("stat").isin(PATH)]
    assert set(paths.index.get_level_values("unit")) == {3, 5} and stats >= set(PATH)


def test_a_forward_without_backward_records_the_open_share_only():
    net = MaskNet()
    probe = SignalProbe(net, stats=PATH)
    with probe, torch.no_grad():
        net(torch.ones(1, 1, 2, 2))
        probe.step()
    rows = probe.collect()
    assert set(zip(rows["unit"], rows["stat"])) == {(3, "path_frac"), (5, "path_frac")}
    assert sorted(rows["value"]) == [0.25, 0.75]


@pytest.mark.parametrize("case", ["checkpoint", "reentrant checkpoint", "channels_last"])
def test_recomputed_or_channels_last_forwards_give_the_same_path_rows(case):
    """Under gradient checkpointing (the net's own, non-reentrant: the hook goes on the first
    forward's graph; reentrant: on the recomputation's, the masks from the first forward) and in
    channels_last, the path rows equal the plain forward's."""
    from torch.utils.checkpoint import checkpoint

    def forward(net, x):
        if case != "reentrant checkpoint":
            return net(x)
        h = net.stem(x)
        for unit in net.units():
            h = checkpoint(unit, h, use_reentrant=True)
        return net.fc(net.pool(net.final(h)).flatten(1))

    frames = []
    for variant in (False, True):
        torch.manual_seed(5)
        net = cifar_resnet(20, version=1, width=4, in_channels=1)
        x, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        if variant and case == "checkpoint":
            net.grad_checkpointing = True
        if variant and case == "channels_last":
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        probe = SignalProbe(net, stats=PATH)
        for _ in range(2):
            with probe:
                F.cross_entropy(forward(net, x) if variant else net(x), target).backward()
                probe.step()
        frames.append(probe.collect())
    assert len(frames[0]) == 2 * 3 * 3
    plain, other = (f.set_index(["step", "unit", "direction", "stat"])["value"] for f in frames)
    assert set(other.index) == set(plain.index)
    assert np.allclose(other[plain.index], plain, rtol=1e-5, atol=0)


# ---- the other statistics are untouched -------------------------------------------------------

def test_the_path_statistics_are_asked_for_and_leave_the_others_bit_for_bit(taps):
    """The default probe records no path statistic; asking for them adds their rows and changes
    no other row (three steps, BN updating, the C++ taps from the second)."""
    assert not set(S.DEFAULT_STATS) & set(S.PATH_STATS) and set(S.ALL_STATS) >= set(S.PATH_STATS)
    frames = {}
    for stats in (None, S.DEFAULT_STATS + S.PATH_STATS):
        torch.manual_seed(4)
        net = cifar_resnet(20, version=1, width=4, in_channels=1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        probe = SignalProbe(net, stats=stats, cpp_hooks=taps == "C++")
        for _ in range(3):
            with probe:
                opt.zero_grad()
                F.cross_entropy(net(x), target).backward()
                probe.step()
            opt.step()
        frames[stats is None] = probe.collect()
    plain, with_path = frames[True], frames[False]
    assert not plain["stat"].isin(PATH).any()
    assert set(with_path["stat"]) - set(plain["stat"]) == set(PATH)
    rest = with_path[~with_path["stat"].isin(PATH)].reset_index(drop=True)
    assert rest.equals(plain)


def test_every_path_statistic_is_declared_with_its_raw_sums():
    """Each PATH name is checked above against an independent computation; its raw sums are the
    identity path's (PATH_SUMS) or a backend's (RAW_SUMS)."""
    assert S.PATH_STATS == PATH
    for stat in S.PATH:
        assert set(stat.needs) <= set(S.PATH_SUMS) | set(S.RAW_SUMS), stat.name
        assert stat.name in S.DECLARED and stat.name in S.ALL_STATS


def test_rows_survive_a_state_dict_round_trip():
    net = MaskNet()
    probe = SignalProbe(net, stats=PATH)
    with probe:
        (C * net(torch.ones(1, 1, 2, 2))).sum().backward()
        probe.step()
    again = SignalProbe(net, stats=PATH)
    again.load_state_dict(probe.state_dict())
    assert again.collect().equals(probe.collect()) and len(probe.collect()) == 6
