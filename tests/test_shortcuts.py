"""Shortcuts and after-addition functions (resnet_lab.networks.shortcuts): each module's formula against
an fp64 hand computation, He et al. 2016 Table 1's variants built, counted and checked by the
formula check, and every existing net unchanged bit for bit."""
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from probes import FormulaCheck
from resnet_lab import cifar_resnet
from resnet_lab.networks.shortcuts import HE2016_TABLE1, VARIANTS, DropoutShortcut, Gating
from resnet_lab.runs.sweep import Cell, build
from resnet_lab.networks.units import UNIT_KINDS, ResidualUnit, reference_formula

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = [row[0] for row in HE2016_TABLE1]
SHORTCUT_VARIANTS = [v for v in VARIANTS.values() if v.same_shape is not None or v.name == "identity"]


def _taps_and_raw_branch(unit, x):
    """Every tap of one forward, and the branch's output before any weighting ("raw")."""
    seen = {}
    hooks = [tap.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n, tap in unit.taps.items()]
    hooks.append(unit.branch.register_forward_hook(lambda m, i, o: seen.__setitem__("raw", o)))
    unit(x)
    for h in hooks:
        h.remove()
    return seen


def _conv1x1(weight, x, bias=None):
    """A 1x1 convolution as a sum over input channels (not F.conv2d)."""
    out = torch.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _bn_train(y, bn):
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (y - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def _hand_shortcut(name, unit, x, raw):
    """(h, the branch tap) of He et al. 2016 Fig. 2, computed by hand from x and raw F."""
    s = unit.shortcut
    if name == "identity":
        return x, raw
    if name.startswith("scale_"):
        a, b = (float(t) for t in name.split("_")[1:])
        return a * x, b * raw
    if "gate" in name:
        g = 1 / (1 + torch.exp(-_conv1x1(s.gate.weight, x, s.gate.bias)))
        return (1 - g) * x, (g * raw if name.startswith("exclusive") else raw)
    if name == "conv1x1":
        conv = s[0] if unit.unit_kind == "original" else s
        h = _conv1x1(conv.weight, x)
        return (_bn_train(h, s[1]) if unit.unit_kind == "original" else h), raw
    raise AssertionError(name)


@pytest.mark.parametrize("kind", ["original", "full_preact"])
@pytest.mark.parametrize("name", [v.name for v in SHORTCUT_VARIANTS if not v.name.startswith("dropout")])
def test_each_shortcut_obeys_its_formula_in_fp64(name, kind):
    torch.manual_seed(0)
    unit = ResidualUnit(kind, "basic", 6, 6, same_shape=VARIANTS[name].same_shape).double().train()
    with torch.no_grad():
        for p in unit.parameters():                       # not the init's special values only
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(5, 6, 7, 7, dtype=torch.float64)
        t = _taps_and_raw_branch(unit, x)
        h, branch = _hand_shortcut(name, unit, x, t["raw"])
    eps = 1e-12
    torch.testing.assert_close(t["shortcut"], h, rtol=eps, atol=eps)
    torch.testing.assert_close(t["branch"], branch, rtol=eps, atol=eps)
    torch.testing.assert_close(t["sum"], h + branch, rtol=eps, atol=eps)
    out = torch.clamp(t["sum"], min=0) if kind == "original" else t["sum"]
    torch.testing.assert_close(t["output"], out, rtol=0, atol=0)
    assert unit.shortcut.kind == name
    assert (t["shortcut"] is x) == (name == "identity")


@pytest.mark.parametrize("kind, after", [("original", "relu"), ("original", "identity"),
                                         ("bn_after_add", "bn_relu"), ("full_preact", "identity"),
                                         ("full_preact", "relu")])
def test_each_after_addition_function_obeys_its_formula_in_fp64(kind, after):
    torch.manual_seed(1)
    unit = ResidualUnit(kind, "basic", 6, 6, after=after).double().train()
    with torch.no_grad():
        for p in unit.parameters():
            p.add_(0.1 * torch.randn_like(p))
        t = _taps_and_raw_branch(unit, torch.randn(5, 6, 7, 7, dtype=torch.float64))
    y = t["sum"]
    hand = {"relu": torch.clamp(y, min=0), "identity": y,
            "bn_relu": torch.clamp(_bn_train(y, unit.after[0]) if after == "bn_relu" else y, min=0)}
    torch.testing.assert_close(t["output"], hand[after], rtol=1e-12, atol=1e-12)
    assert unit.after.kind == after
    torch.testing.assert_close(unit.after.reference(y), hand[after], rtol=1e-12, atol=1e-12)


def test_gate_bias_minus_6_starts_the_shortcut_near_the_identity():
    torch.manual_seed(2)
    for exclusive in (True, False):
        net = cifar_resnet(20, version=1, width=8, shortcut_variant=
                           "exclusive_gate_-6" if exclusive else "shortcut_gate_-6")
        gated = [u.shortcut for u in net.units() if isinstance(u.shortcut, Gating)]
        assert len(gated) == 7 and all(float(g.gate.bias.detach().mean()) == -6 for g in gated)
        x = torch.randn(16, gated[0].gate.in_channels, 8, 8)      # unit-variance input
        with torch.no_grad():
            g = torch.sigmoid(gated[0].gate(x))
        # sigmoid(-6) = 0.00247; the He-initialised weights add N(0, 2) before the sigmoid
        assert float((1 - g).mean()) > 0.99 and float((1 - g).median()) > 0.99
        with torch.no_grad():
            g0 = torch.sigmoid(Gating(8, 0.0, exclusive).gate(x[:, :8]))
        assert abs(float(g0.mean()) - 0.5) < 0.1              # bias 0: half the shortcut


def test_dropout_shortcut_keeps_half_unscaled_in_training_and_its_expectation_in_evaluation():
    torch.manual_seed(3)
    drop = DropoutShortcut(0.5)
    x = torch.randn(64, 8, 8, 8).double()
    h = drop.train()(x)
    kept = h != 0
    assert torch.equal(h[kept], x[kept])                  # not rescaled by 1 / (1 - p)
    n = x.numel()
    assert abs(float(kept.double().mean()) - 0.5) < 5 * (0.25 / n) ** 0.5   # 5 binomial sd
    assert torch.equal(drop.reference(x), h)              # the mask of that forward
    assert torch.equal(drop.eval()(x), 0.5 * x)           # evaluation: E[h] = 0.5 x
    assert torch.equal(drop.reference(x), 0.5 * x)
    with pytest.raises(ValueError, match="mask"):
        DropoutShortcut(0.5).train().reference(x)


def _count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("kind", ["original", "full_preact"])
def test_parameters_of_the_gates_and_the_1x1_shortcuts_counted_by_hand(kind):
    depth, width = 20, 4
    base = _count(cifar_resnet(depth, unit_kind=kind, width=width))
    # units that keep their shape: n = 3 per stage, all but the first of stages 2 and 3
    same = [(width, 3), (2 * width, 2), (4 * width, 2)]
    gates = sum(k * (c * c + c) for c, k in same)                     # W_g and b_g
    convs = sum(k * (c * c + (2 * c if kind == "original" else 0)) for c, k in same)  # + BN
    for name in ("exclusive_gate_0", "shortcut_gate_-6"):
        assert _count(cifar_resnet(depth, unit_kind=kind, width=width, shortcut_variant=name)) == base + gates
    assert _count(cifar_resnet(depth, unit_kind=kind, width=width, shortcut_variant="conv1x1")) == base + convs
    for name in ("scale_0.5_1", "scale_0.5_0.5", "dropout_0.5"):
        assert _count(cifar_resnet(depth, unit_kind=kind, width=width, shortcut_variant=name)) == base


@pytest.mark.parametrize("name", list(VARIANTS))
def test_formula_check_passes_for_every_variant_at_every_unit(name):
    for kind in VARIANTS[name].unit_kinds:
        torch.manual_seed(4)
        for depth in (20, 29):                             # basic (option A), bottleneck (B)
            net = cifar_resnet(depth, unit_kind=kind, width=4, in_channels=1, shortcut_variant=name)
            for train in (True, False):
                net.train(train)
                with FormulaCheck(net, reference_formula) as check, torch.no_grad():
                    net(torch.randn(8, 1, 8, 8))
                assert len(check.rows) == len(net.units())
                worst = max(max(r["error"], r["error_sum"]) for r in check.rows)
                assert worst < 1e-5, (name, kind, depth, train, worst)


def test_the_formula_check_tells_a_declared_gate_from_the_identity():
    """The check is not vacuous: an identity net whose shortcuts claim a scale fails it."""
    torch.manual_seed(5)
    net = cifar_resnet(20, version=1, width=4, in_channels=1, shortcut_variant="scale_0.5_1")
    for unit in net.units():
        if unit.shortcut_kind == "scale_0.5_1":
            unit.shortcut.forward = lambda x: x                # computes h = x, declares 0.5 x
    with FormulaCheck(net, reference_formula) as check, torch.no_grad():
        net(torch.randn(8, 1, 8, 8))
    assert sum(r["error"] > 0.01 for r in check.rows) == 7


def test_variants_named_by_a_cell_factor_and_bad_names_name_the_valid_ones():
    data = SimpleNamespace(num_classes=10, in_channels=1)
    plain = Cell(20, "original", 0, width=4)
    torch.manual_seed(0)
    direct = cifar_resnet(20, unit_kind="original", width=4, in_channels=1).state_dict()
    built = build(plain, data).state_dict()
    assert list(built) == list(direct) and all(torch.equal(built[k], direct[k]) for k in built)
    assert plain.name == "d20_w4_original_s0"                   # names unchanged
    gated = Cell(20, "original", 0, width=4, factors=(("shortcut_variant", "exclusive_gate_-6"),))
    assert {u.shortcut_kind for u in build(gated, data).units()} == {"A", "exclusive_gate_-6"}
    assert gated.ids("x")["shortcut_variant"] == "exclusive_gate_-6"
    no_relu = Cell(20, "original", 0, width=4, factors=(("after", "identity"),))
    assert {u.after.kind for u in build(no_relu, data).units()} == {"identity"}
    with pytest.raises(ValueError, match="valid: identity, scale_0.5_1"):
        cifar_resnet(20, version=1, shortcut_variant="gates")
    with pytest.raises(ValueError, match="for unit kinds original"):
        cifar_resnet(20, version=2, shortcut_variant="no_after_relu")
    with pytest.raises(ValueError, match="valid: relu, identity, bn_relu"):
        cifar_resnet(20, version=1, after="tanh")


def test_the_interventions_change_only_what_they_name():
    torch.manual_seed(6)
    v1 = cifar_resnet(20, version=1, width=4)
    torch.manual_seed(6)
    no_relu = cifar_resnet(20, version=1, width=4, shortcut_variant="no_after_relu")
    assert all(u.after.kind == "identity" and u.unit_kind == "original" for u in no_relu.units())
    assert {k: v.shape for k, v in v1.state_dict().items()} == \
        {k: v.shape for k, v in no_relu.state_dict().items()}
    torch.manual_seed(6)
    final = cifar_resnet(20, version=1, width=4, shortcut_variant="final_bn_relu")
    assert isinstance(final.final[0], torch.nn.BatchNorm2d)
    assert all(u.after.kind == "relu" for u in final.units())


def test_he_et_al_table_1_is_beside_every_variant_of_theirs():
    assert set(TABLE1) <= set(VARIANTS)
    errors = {row[0]: row[-1] for row in HE2016_TABLE1}
    assert errors["identity"] == 6.61 and errors["shortcut_gate_-6"] == 6.91
    assert [n for n, e in errors.items() if e is None] == ["scale_0.5_1", "exclusive_gate_0", "dropout_0.5"]


# ---- every existing net, bit for bit as before the shortcuts became modules ----------------

LEGACY_COMMIT = "394cae4"        # the last commit with shortcuts as strings


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """resnet_lab's units and networks as they were at LEGACY_COMMIT, as a package."""
    folder = tmp_path_factory.mktemp("legacy") / "legacy_resnet_lab"
    folder.mkdir()
    for name in ("taps.py", "units.py", "networks.py"):
        text = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:resnet_lab/{name}"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
        (folder / name).write_text(text)
    (folder / "__init__.py").write_text("")
    sys.path.insert(0, str(folder.parent))
    try:
        yield importlib.import_module("legacy_resnet_lab.networks")
    finally:
        sys.path.remove(str(folder.parent))


@pytest.mark.parametrize("depth", [20, 29, 32])
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_every_existing_net_gives_the_same_bits_as_before(legacy, kind, depth):
    runs = []
    for builder in (legacy.cifar_resnet, cifar_resnet):
        torch.manual_seed(7)
        net = builder(depth, unit_kind=kind, width=4, in_channels=3)
        x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(8))
        out = net(x)
        out.square().sum().backward()
        runs.append((out, {k: p.grad for k, p in net.named_parameters()}, net.state_dict()))
    (out_old, grad_old, state_old), (out_new, grad_new, state_new) = runs
    assert list(state_old) == list(state_new)                     # names, in order
    assert all(torch.equal(state_old[k], state_new[k]) for k in state_old)
    assert torch.equal(out_old, out_new)
    assert all(torch.equal(grad_old[k], grad_new[k]) for k in grad_old)
