"""probes.tapping on ResNets built elsewhere: torchvision-style post-activation blocks and timm
resnetv2 pre-activation blocks (faithful copies in tests/reference_resnets.py: PyPI's
torchvision does not import beside this torch build).

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
from probes.adapters.tapping import SUPPORTED, find_blocks, tap_model, untap_model
from reference_resnets import BasicBlock, ResNetV2, resnet18, resnet50
from resnet_lab import TAP_NAMES, Tap, cifar_resnet
from resnet_lab.taps import tapped_units

MODELS = {
    "torchvision_resnet18": lambda: resnet18(num_classes=10),
    "torchvision_resnet50": lambda: resnet50(num_classes=10),
    "timm_preact_basic": lambda: ResNetV2([2, 2], basic=True),
    "timm_preact_bottleneck": lambda: ResNetV2([2, 2], drop_path_rate=0.3),   # drop_path on
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def batch(n=4, size=32):
    return torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))


def train_step(model, x, y, seed=1):
    """One forward and backward in train mode; the seed fixes drop_path's draws."""
    torch.manual_seed(seed)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_tapped_model_is_bitwise_the_original(name):
    original = MODELS[name]().train()
    tapped = copy.deepcopy(original)
    handle = tap_model(tapped)
    x, y = batch()
    expected = train_step(original, x, y)
    with SignalProbe(tapped) as probe:              # the probe's hooks only read
        got = train_step(tapped, x, y)
        probe.step()
    assert torch.equal(got, expected)
    for (n, p), q in zip(original.named_parameters(), tapped.parameters()):
        assert torch.equal(p.grad, q.grad), n
    for (n, b), c in zip(original.named_buffers(), tapped.buffers()):
        assert torch.equal(b, c), n                  # BN running statistics too
    assert len(probe.collect()) > 0 and len(handle.units) > 0


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_preact_basic"])
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
    assert [n for n, _ in find_blocks(model)][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    timm = ResNetV2([2, 3])
    tap_model(timm)
    assert [(u.stage, u.index) for u in tapped_units(timm)] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert tapped_units(timm)[2] is timm.stages[1].blocks[0]
    some = resnet18(num_classes=10)
    tap_model(some, blocks=[some.layer3[1], some.layer2[0]])   # a few: their places in the model
    assert [(u.stage, u.index) for u in tapped_units(some)] == [(2, 0), (3, 1)]


def reference(model, x, y):
    """On the untouched model: every block's input, output and shortcut (the downsample's
    output, else the input), the loss gradient with respect to inputs and outputs, and
    the parameter gradients."""
    blocks = [b for _, b in find_blocks(model)]
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


def torch_stats(t):
    t = t.detach().double()
    return {"norm": t.norm(), "rms": t.square().mean().sqrt(), "mean": t.mean()}


@pytest.mark.parametrize("name", ["torchvision_resnet18", "timm_preact_bottleneck"])
def test_probe_statistics_match_autograd(name):
    torch.manual_seed(0)
    original = MODELS[name]().train()
    for m in original.modules():                     # no random drop_path draws here
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.
    tapped = copy.deepcopy(original)
    tap_model(tapped)
    x, y = batch()
    blocks, acts, grads = reference(original, x, y)
    with SignalProbe(tapped) as probe:
        F.cross_entropy(tapped(x), y).backward()
        probe.step()
    df = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    post_activation = name.startswith("torchvision")
    for u, block in enumerate(blocks):
        for tap in ("input", "output"):
            for direction, t in (("forward", acts[(u, tap)]), ("backward", grads[(u, tap)])):
                for stat, value in torch_stats(t).items():
                    assert df[(u, tap, direction, stat)] == pytest.approx(value.item(), rel=1e-5, abs=1e-8), \
                        (u, tap, direction, stat)
        h, out, g_out = acts[(u, "shortcut")].double(), acts[(u, "output")], grads[(u, "output")].double()
        # f = ReLU: dL/dy = dL/dout [out > 0]; it cuts the shortcut where out == 0. f = identity: nothing.
        cut = (h.square() * (out == 0)).sum() / h.square().sum() if post_activation else torch.tensor(0.)
        grad_cut = 1 - (g_out * (out > 0)).square().sum() / g_out.square().sum() if post_activation \
            else torch.tensor(0.)
        assert df[(u, "sum", "forward", "shortcut_cut")] == pytest.approx(cut.item(), rel=1e-5, abs=1e-9)
        assert df[(u, "sum", "backward", "grad_cut")] == pytest.approx(grad_cut.item(), rel=1e-5, abs=1e-9)
        norm = torch.sqrt(sum(p.grad.double().square().sum() for p in block.parameters()))
        assert df[(u, "params", "backward", "grad_norm")] == pytest.approx(norm.item(), rel=1e-5)
    if post_activation:
        assert (df.xs("grad_cut", level="stat") > 0).all()


def all_tensor_stats(t):
    """Every tensor statistic of probes.stats, in plain torch (as tests/test_probes.py has it)."""
    t = t.detach().double()
    per_channel = t.transpose(0, 1).reshape(t.shape[1], -1)
    m, v = per_channel.mean(1), per_channel.var(1, unbiased=False)
    return {"rms": t.square().mean().sqrt(), "norm": t.norm(), "mean": t.mean(),
            "std": t.std(unbiased=False), "ch_sq_mean": (m * m).mean(), "ch_var": v.mean(),
            "frac_neg": (t < 0).double().mean(), "frac_zero": (t == 0).double().mean()}


def test_every_tap_matches_autograd_on_the_tapped_model():
    """All five taps and every tensor statistic, as tests/test_probes.py checks native nets."""
    handle = tap_model(resnet18(num_classes=10))
    model = handle.model
    x, y = batch()
    kept = {}
    hooks = [unit.taps[tap].register_forward_hook(lambda m, a, out, key=(u, tap): kept.__setitem__(key, out))
             for u, unit in enumerate(handle.units) for tap in TAP_NAMES]
    loss = F.cross_entropy(model(x), y)
    for h in hooks:
        h.remove()
    grads = dict(zip(kept, torch.autograd.grad(loss, list(kept.values()))))
    with SignalProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
        probe.step()
    df = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    assert len(kept) == 5 * 8
    for (u, tap), t in kept.items():
        for direction, tensor in (("forward", t), ("backward", grads[(u, tap)])):
            for stat, expected in all_tensor_stats(tensor).items():
                assert df[(u, tap, direction, stat)] == pytest.approx(expected.item(), rel=1e-5, abs=1e-7), \
                    (u, tap, direction, stat)


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
        tap_model(model, blocks=[model[0]])
    assert SUPPORTED in str(err.value)
    other = BasicBlock(3, 3)
    other.relu = nn.GELU()                           # same name, other structure: not known
    with pytest.raises(ValueError, match="BasicBlock is not"):
        tap_model(nn.Sequential(other), blocks=[other])
    with pytest.raises(ValueError, match="not a submodule"):
        tap_model(model, blocks=[BasicBlock(3, 3)])
    assert tap_model(model, blocks=[model[1]]).units == [model[1]]
    with pytest.raises(ValueError, match="already tapped"):
        tap_model(model)
    with pytest.raises(ValueError, match="already has tapped units"):
        tap_model(cifar_resnet(20, version=1))
