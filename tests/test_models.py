"""The networks: shapes, gradients, exact parameter counts, the unit formulas at the taps, bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab import (TAP_NAMES, UNIT_KINDS, ResidualUnit, Tap, cifar_resnet, create_model,
                        imagenet_resnet, list_models, resnet34_v1, resnet34_v2)


def _small_input(name):
    return torch.randn(2, 3, 32, 32) if not name.startswith("cifar") else torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    # The deepest CIFAR nets at a reduced width keep the suite fast; their structure is the same.
    overrides = {"width": 4} if name.startswith(("cifar_resnet1001", "cifar_resnet1202")) else {}
    net = create_model(name, num_classes=7, **overrides)
    x = _small_input(name)
    out = net(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    units = net.units()
    assert [(u.stage, u.index) for u in units] == sorted((u.stage, u.index) for u in units)
    for u in units:
        assert list(u.taps) == list(TAP_NAMES) and all(isinstance(t, Tap) for t in u.taps.values())


def test_registry_names_do_not_collide_between_families():
    names = list_models()
    assert len(names) == len(set(names))
    assert "cifar_resnet50_v1" not in names or "imagenet_resnet50_v1" in names
    assert {"imagenet_resnet50_v1", "imagenet_resnet50_v2"} <= set(names)
    assert cifar_resnet(50, version=1).units()[0].block == "basic"  # 50 = 6*8+2 exists for CIFAR too


# ---- parameter counts ---------------------------------------------------------------------

# torchvision's published counts (torchvision.models docs, "Params" column).
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_v1_matches_torchvision(depth):
    assert count(imagenet_resnet(depth, version=1)) == TORCHVISION_PARAMS[depth]


def test_article_resnet34_pair():
    # V1 is torchvision's ResNet-34 once the needless layer1 projection is gone.
    assert count(resnet34_v1()) == 21_797_672
    # V2 moves BN before each conv, so BN widths follow the conv *inputs*, plus a final BN(512).
    bn = lambda c: 2 * c
    delta = 0
    for cin, cout, n in ((64, 64, 3), (64, 128, 4), (128, 256, 6), (256, 512, 3)):
        v1 = n * (bn(cout) + bn(cout))
        v2 = (bn(cin) + bn(cout)) + (n - 1) * (bn(cout) + bn(cout))
        delta += v2 - v1
    assert count(resnet34_v2()) == 21_797_672 + delta + bn(512)
    out = resnet34_v1()(torch.randn(1, 3, 64, 64))  # any input size, not only 224
    assert out.shape == (1, 1000)


def _cifar_basic_expected(depth, width, preact, classes=10):
    """Hand count of He et al. 2015's CIFAR net (option A shortcuts have no parameters)."""
    n = (depth - 2) // 6
    total = 3 * 9 * width + (0 if preact else 2 * width)           # stem conv (+BN for V1)
    cin = width
    for w in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += 9 * cin * w + 9 * w * w                        # two 3x3 convs
            total += 2 * (cin + w) if preact else 2 * (w + w)       # BN before / after each conv
            cin = w
    if preact:
        total += 2 * 4 * width                                      # final BN
    return total + 4 * width * classes + classes


def _cifar_bottleneck_expected(depth, width, preact, classes=10):
    """Hand count of the official resnet-1k-layers structure (and its V1 counterpart)."""
    n = (depth - 2) // 9
    total = 3 * 9 * width + (0 if preact else 2 * width)
    cin = width
    for w in (4 * width, 8 * width, 16 * width):
        m = w // 4
        for i in range(n):
            total += cin * m + 9 * m * m + m * w                   # 1x1, 3x3, 1x1
            total += 2 * (cin + m + m) if preact else 2 * (m + m + w)
            if i == 0:
                total += cin * w + (0 if preact else 2 * w)         # projection (+BN in V1)
            cin = w
    if preact:
        total += 2 * 16 * width
    return total + 16 * width * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 1202])
@pytest.mark.parametrize("version", [1, 2])
def test_cifar_basic_parameter_counts(depth, version):
    assert count(cifar_resnet(depth, version=version)) == _cifar_basic_expected(depth, 16, version == 2)


def test_cifar_published_counts():
    # He et al. 2015 Table 6: ResNet-110 "1.7M", ResNet-1202 "19.4M"; 2016 Table 3: 164 "1.7M", 1001 "10.2M".
    assert count(cifar_resnet(110, version=1)) == 1_727_962
    assert count(cifar_resnet(1202, version=1)) == 19_421_274
    assert round(count(cifar_resnet(164, version=2)) / 1e6, 1) == 1.7
    # 1001: 10,327,706 of which 10,200,960 sit in the 330 identity-shortcut units.
    assert count(cifar_resnet(1001, version=2)) == 10_327_706


@pytest.mark.parametrize("depth", [164, 1001])
@pytest.mark.parametrize("version", [1, 2])
def test_cifar_bottleneck_parameter_counts(depth, version):
    assert count(cifar_resnet(depth, version=version)) == _cifar_bottleneck_expected(depth, 16, version == 2)


def test_imagenet_resnet200_count_by_hand():
    expected = 3 * 49 * 64 + 2 * 64
    cin = 64
    for w, n in ((256, 3), (512, 24), (1024, 36), (2048, 3)):
        m = w // 4
        for i in range(n):
            expected += cin * m + 9 * m * m + m * w + 2 * (m + m + w)
            if i == 0:
                expected += cin * w + 2 * w
            cin = w
    expected += 2048 * 1000 + 1000
    assert count(imagenet_resnet(200, version=1)) == expected


def test_v2_bottleneck_structure_follows_official_code():
    net = cifar_resnet(164, version=2)
    assert isinstance(net.stem, nn.Conv2d) and net.stem.out_channels == 16   # bare 3x3 stem
    first = net.units()[0]
    assert first.shares_preact and isinstance(first.shortcut, nn.Conv2d)    # shared BN-ReLU feeds both
    assert [u.out_channels for u in net.units()[:: len(net.units()) // 3]] == [64, 128, 256]
    assert isinstance(net.final[0], nn.BatchNorm2d) and isinstance(net.final[1], nn.ReLU)
    conv = first.branch[0]
    k, cout = conv.kernel_size[0], conv.out_channels
    assert abs(conv.weight.std().item() - (2 / (k * k * cout)) ** 0.5) < 0.25 * (2 / (k * k * cout)) ** 0.5


# ---- the unit formulas at the taps ---------------------------------------------------------

def _record_taps(unit, x):
    seen = {}
    hooks = [tap.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n, tap in unit.taps.items()]
    unit(x)
    for h in hooks:
        h.remove()
    return seen


def _after_addition(kind, y, unit):
    """f from the paper, written independently of the unit's code."""
    if kind == "original":
        return torch.clamp(y, min=0)
    if kind == "bn_after_add":
        bn = unit.after[0]
        mu, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=False, keepdim=True)
        return torch.clamp((y - mu) / torch.sqrt(var + bn.eps), min=0)   # weight 1, bias 0 at init
    return y


@pytest.mark.parametrize("kind", UNIT_KINDS)
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("shape", [(16, 16, 1, "B"), (8, 16, 2, "A"), (8, 16, 2, "B")])
def test_unit_formula_holds_at_taps(kind, block, shape):
    cin, cout, stride, shortcut = shape
    unit = ResidualUnit(kind, block, cin, cout, stride, shortcut=shortcut)
    x = torch.randn(4, cin, 8, 8)
    t = _record_taps(unit, x)
    assert t["input"] is x
    assert torch.equal(t["sum"], t["shortcut"] + t["branch"])
    torch.testing.assert_close(t["output"], _after_addition(kind, t["sum"], unit), rtol=1e-5, atol=1e-5)
    if cin == cout and stride == 1:
        assert t["shortcut"] is x                          # identity shortcut
    elif shortcut == "A":
        expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, cout - cin))
        assert torch.equal(t["shortcut"], expected)


def test_v2_identity_unit_output_minus_input_is_branch():
    unit = ResidualUnit("full_preact", "basic", 16, 16)
    x = torch.randn(4, 16, 8, 8)
    t = _record_taps(unit, x)
    torch.testing.assert_close(t["output"] - x, t["branch"], rtol=0, atol=1e-6)


def test_v1_output_is_relu_of_shortcut_plus_branch():
    unit = ResidualUnit("original", "basic", 16, 16)
    t = _record_taps(unit, torch.randn(4, 16, 8, 8))
    assert torch.equal(t["output"], torch.relu(t["shortcut"] + t["branch"]))
    assert (t["sum"] < 0).any()                           # the ReLU really cuts something


def test_1001_layer_net_forward_and_backward():
    for version in (1, 2):
        net = cifar_resnet(1001, version=version, width=2)
        assert len(net.units()) == 333
        net(torch.randn(2, 3, 8, 8)).logsumexp(1).sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_gradient_checkpointing_gives_same_gradients_and_bn_stats():
    torch.manual_seed(1)
    a = cifar_resnet(20, version=1)
    b = cifar_resnet(20, version=1)
    b.load_state_dict(a.state_dict())
    b.grad_checkpointing = True
    x = torch.randn(4, 3, 8, 8)
    for net in (a, b):
        net(x).square().sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)
    for (n, s), t in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(s, t, msg=n)            # running stats updated once, not twice


# ---- bad input -----------------------------------------------------------------------------

def test_impossible_depth_names_nearest_valid_depths():
    with pytest.raises(ValueError) as err:
        cifar_resnet(1000, version=1)
    msg = str(err.value)
    assert "998" in msg and "1004" in msg and "1001" in msg     # 6n+2 below/above, 9n+2 above


@pytest.mark.parametrize("call, valid", [
    (lambda: cifar_resnet(20, unit_kind="post"), "full_preact"),
    (lambda: cifar_resnet(20, version=3), "1, 2"),
    (lambda: create_model("resnet50"), "imagenet_resnet50_v1"),
    (lambda: imagenet_resnet(42, version=1), "18, 34, 50"),
    (lambda: cifar_resnet(20, version=1, block="wide"), "basic, bottleneck"),
])
def test_bad_input_lists_valid_choices(call, valid):
    with pytest.raises(ValueError, match=valid):
        call()


def test_cli_prints_summary_and_rejects_bad_name(capsys):
    from resnet_lab.__main__ import main
    assert main(["cifar_resnet20_v2"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20_v2: 269,722 parameters, 9 residual units, 45 taps" in out
    assert main(["cifar_resnet21_v2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid:" in err
