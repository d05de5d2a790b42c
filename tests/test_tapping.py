"""probes.adapters.tapping on ResNets built elsewhere: torchvision's and timm's post-activation blocks and
timm resnetv2's pre-activation blocks (faithful copies in tests/reference_resnets.py and
tests/reference_timm.py: PyPI's torchvision does not import beside this torch build; the real
libraries are tested by tests/test_ecosystem.py, `make test-ecosystem`).

The tapped model must compute bitwise what the original computes, forward and backward;
``remove()`` must give the original back; and SignalProbe on the tapped model must agree with
an independent computation on the untouched model (block hooks and autograd)."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import SignalProbe
from probes.adapters.tapping import SUPPORTED, find_units, tap_model, untap_model
from resnet_lab import TAP_NAMES, Tap, cifar_resnet
from resnet_lab.networks.taps import tapped_units

import reference_timm
from reference_resnets import BasicBlock, ResNetV2, resnet18, resnet50
from fp32_bounds import ratio_tolerance, tolerance
from tap_checks import (assert_bitwise_the_original, assert_grad_norm, assert_probe_matches_autograd,
                        no_random_draws, tensor_stats, train_step)

MODELS = {
    "torchvision_resnet18": lambda: resnet18(num_classes=10),
    "torchvision_resnet50": lambda: resnet50(num_classes=10),
    "timm_preact_basic": lambda: ResNetV2([2, 2], basic=True),
    "timm_preact_bottleneck": lambda: ResNetV2([2, 2], drop_path_rate=0.3),   # drop_path on
    # timm's post-activation resnet: attention (se), anti-aliasing (aa), drop_path, avg_down
    "timm_resnet_basic": lambda: reference_timm.ResNet(
        reference_timm.BasicBlock, [2, 2, 1, 1], attn=True, aa=True, drop_path_rate=0.3),
    "timm_resnet_bottleneck": lambda: reference_timm.ResNet(
        reference_timm.Bottleneck, [2, 2, 1, 1], channels=(8, 16, 32, 32), avg_down=True,
        attn=True, aa=True, drop_path_rate=0.3),
}
POST_ACTIVATION = ("torchvision_resnet18", "torchvision_resnet50", "timm_resnet_basic",
                   "timm_resnet_bottleneck")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def batch(n=4, size=32):
    return torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))


@pytest.mark.parametrize("name", list(MODELS))
def test_tapped_model_is_bitwise_the_original(name):
    handle, rows = assert_bitwise_the_original(MODELS[name](), *batch())
    assert len(rows) > 0 and len(handle.units) > 0


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_preact_basic", "timm_resnet_bottleneck"])
def test_nothing_changes_in_place_after_a_tap(name):
    """The tap contract: torchvision's in-place addition and ReLU must not reach tapped tensors."""
    model = MODELS[name]().train()
    tap_model(model)
    seen = []
    hooks = [m.register_forward_hook(lambda m, a, out: seen.append((out, out._version)))
             for m in model.modules() if isinstance(m, Tap)]
    train_step(model, *batch())
    for h in hooks:
        h.remove()
    assert len(seen) == 5 * len(tapped_units(model))
    assert all(t._version == version for t, version in seen)


def test_remove_restores_the_original_forward():
    model = resnet18(num_classes=10)
    names = [n for n, _ in model.named_modules()]
    keys = list(model.state_dict())
    block = model.layer2[0]
    block.__dict__["stage"] = "theirs"              # an attribute the model had is given back
    x, y = batch()
    model.eval()
    before = model(x)
    handle = tap_model(model)
    assert list(model.state_dict()) == keys          # taps hold no state
    assert block.stage == 2 and block.index == 0 and tuple(block.taps) == TAP_NAMES
    assert torch.equal(model(x), before)
    handle.remove()
    assert [n for n, _ in model.named_modules()] == names
    for b in model.modules():
        assert "forward" not in b.__dict__ and not hasattr(b, "taps") and not hasattr(b, "index")
    assert block.stage == "theirs"
    assert torch.equal(model(x), before)
    handle.remove()                                  # twice is harmless
    assert untap_model(model) == 0
    with tap_model(model):                           # a context manager removes at the end
        assert untap_model(model) == 8               # and untap_model removes all
        tap_model(model)
    assert not any(hasattr(b, "taps") for b in model.modules())


def test_stages_and_indices_follow_the_containers():
    model = resnet50(num_classes=10)
    handle = tap_model(model)
    assert tapped_units(model) == handle.units
    positions = [(u.stage, u.index) for u in handle.units]
    assert positions == [(s, i) for s, n in enumerate((3, 4, 6, 3), 1) for i in range(n)]
    assert [n for n, _ in find_units(model)][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    timm = ResNetV2([2, 3])
    tap_model(timm)
    assert [(u.stage, u.index) for u in tapped_units(timm)] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert tapped_units(timm)[2] is timm.stages[1].blocks[0]
    some = resnet18(num_classes=10)
    tap_model(some, units=[some.layer3[1], some.layer2[0]])   # a few: their places in the model
    assert [(u.stage, u.index) for u in tapped_units(some)] == [(2, 0), (3, 1)]


def reference(model, x, y):
    """On the untouched model: every block's input, output and shortcut (the downsample's
    output, else the input), the loss gradient with respect to inputs and outputs, and
    the parameter gradients."""
    blocks = [b for _, b in find_units(model)]
    kept = {}
    hooks = []
    for u, b in enumerate(blocks):
        hooks.append(b.register_forward_pre_hook(lambda m, a, u=u: kept.__setitem__((u, "input"), a[0])))
        hooks.append(b.register_forward_hook(lambda m, a, o, u=u: kept.__setitem__((u, "output"), o)))
        if b.downsample is not None:
            hooks.append(b.downsample.register_forward_hook(
                lambda m, a, o, u=u: kept.__setitem__((u, "shortcut"), o)))
    loss = F.cross_entropy(model(x), y)
    for h in hooks:
        h.remove()
    for u in range(len(blocks)):
        kept.setdefault((u, "shortcut"), kept[(u, "input")])
    keys = [k for k in kept if k[1] != "shortcut"]
    grads = dict(zip(keys, torch.autograd.grad(loss, [kept[k] for k in keys], retain_graph=True)))
    loss.backward()                                  # and the parameter gradients
    return blocks, kept, grads


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_preact_bottleneck", "timm_resnet_basic"])
def test_probe_statistics_match_autograd(name):
    torch.manual_seed(0)
    original = no_random_draws(MODELS[name]().train())
    tapped = copy.deepcopy(original)
    tap_model(tapped)
    x, y = batch()
    blocks, acts, grads = reference(original, x, y)
    with SignalProbe(tapped) as probe:
        F.cross_entropy(tapped(x), y).backward()
        probe.step()
    df = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    post_activation = name in POST_ACTIVATION
    for u, block in enumerate(blocks):
        for tap in ("input", "output"):
            for direction, t in (("forward", acts[(u, tap)]), ("backward", grads[(u, tap)])):
                for stat in ("norm", "rms", "mean"):
                    value = tensor_stats(t)[stat]
                    assert df[(u, tap, direction, stat)] == pytest.approx(value.item(), rel=0, abs=tolerance(stat, t)), \
                        (u, tap, direction, stat)
        h, out, g_out = acts[(u, "shortcut")].double(), acts[(u, "output")], grads[(u, "output")].double()
        # f = ReLU: dL/dy = dL/dout [out > 0]; it cuts the shortcut where out == 0. f = identity: nothing.
        cut = (h.square() * (out == 0)).sum() / h.square().sum() if post_activation else torch.tensor(0.)
        grad_cut = 1 - (g_out * (out > 0)).square().sum() / g_out.square().sum() if post_activation \
            else torch.tensor(0.)
        share = ratio_tolerance(h.numel())
        assert df[(u, "sum", "forward", "shortcut_cut")] == pytest.approx(cut.item(), rel=0, abs=share)
        assert df[(u, "sum", "backward", "grad_cut")] == pytest.approx(grad_cut.item(), rel=0, abs=share)
        assert_grad_norm(df[(u, "params", "backward", "grad_norm")], block)
    if post_activation:
        assert (df.xs("grad_cut", level="stat") > 0).all()


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_resnet_bottleneck", "timm_preact_basic"])
def test_every_tap_matches_autograd_on_the_tapped_model(name):
    """All five taps and every tensor statistic, as tests/test_probes.py checks native nets."""
    model = no_random_draws(MODELS[name]().train())
    handle = tap_model(model)
    assert_probe_matches_autograd(model, handle.units, *batch(), name in POST_ACTIVATION)


def test_tapped_model_deep_copies_and_saves():
    model = resnet18(num_classes=10)
    tap_model(model)
    twin = copy.deepcopy(model)
    assert twin.layer1[0].forward.args[0] is twin.layer1[0]   # the copy routes its own modules
    x, _ = batch()
    model.eval(), twin.eval()
    assert torch.equal(twin(x), model(x))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.eval()(x), model(x)) and len(tapped_units(loaded)) == 8


class MyBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def test_unknown_blocks_are_named():
    with pytest.raises(ValueError, match="MyBlock.*supported: torchvision BasicBlock"):
        tap_model(nn.Sequential(nn.Conv2d(3, 3, 1), MyBlock()))
    with pytest.raises(ValueError, match="Sequential.*PreActBottleneck"):
        tap_model(nn.Sequential(nn.Conv2d(3, 3, 1)))
    model = nn.Sequential(MyBlock(), BasicBlock(3, 3))
    with pytest.raises(ValueError, match="^MyBlock is not a residual block") as err:
        tap_model(model, units=[model[0]])
    assert SUPPORTED in str(err.value)
    other = BasicBlock(3, 3)
    other.relu = nn.GELU()                           # f is not a ReLU: refused, by name
    with pytest.raises(ValueError, match=r"^torchvision BasicBlock 0: its after-addition activation "
                                         r"relu is GELU; tap_model supports nn.ReLU there only$"):
        tap_model(nn.Sequential(other), units=[other])
    with pytest.raises(ValueError, match="torchvision BasicBlock 1: .* relu is GELU"):
        tap_model(nn.Sequential(BasicBlock(3, 3), other))   # found: nothing is tapped
    with pytest.raises(ValueError, match="not a submodule"):
        tap_model(model, units=[BasicBlock(3, 3)])
    fresh = copy.deepcopy(model)
    assert tap_model(model, units=[model[1]]).units == [model[1]]
    with pytest.warns(DeprecationWarning):           # the old keyword still works
        assert tap_model(fresh, blocks=[fresh[1]]).units == [fresh[1]]
    with pytest.raises(ValueError, match="already tapped"):
        tap_model(model)
    with pytest.raises(ValueError, match="already has tapped units"):
        tap_model(cifar_resnet(20, version=1))
