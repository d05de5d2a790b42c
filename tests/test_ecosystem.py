"""probes.adapters.tapping on the real torchvision and timm models, and the Lightning callback on one.

`make test-ecosystem` runs this file (with test_tapping, test_integrations and test_tutorial)
in an environment where torchvision and timm import: PyPI's default torch build with the
torchvision built for it, timm and Lightning (versions: Makefile ECOSYSTEM,
docs/integrations.md). In the default environment torchvision does not import beside the CPU
build of torch, and this file is one skip; tests/test_tapping.py's copies of the blocks are
the fast path there.

Every torchvision ResNet constructor and a list of timm ResNet / ResNetV2 models (untrained,
small inputs), each:
* tapped, computes bitwise what the untapped model computes: the output, every parameter
  gradient and every buffer, with drop_path (and drop_block) drawing; every residual block of
  the model -- by the library's own classes -- is tapped, with the stage and index of its
  container; ``remove()`` gives the model back;
* probed, records at every tap of every unit what an independent computation gives: the
  tensor's own statistics and those of ``torch.autograd.grad`` of the loss with respect to it,
  the V1 cut statistics, the parameter gradient norms; and the taps obey the unit formulas.
And the fast path's copies of the blocks compute bitwise what the libraries' blocks compute.
"""
import pytest

try:
    import timm
    import torchvision
except Exception as e:                # torchvision's wheel beside the CPU torch: RuntimeError
    pytest.skip(f"torchvision / timm do not import here ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                "`make test-ecosystem` runs these tests where they do", allow_module_level=True)

import copy

import torch
import torch.nn.functional as F
from timm.models import resnet as timm_resnet
from timm.models import resnetv2 as timm_resnetv2
from torchvision.models import resnet as tv_resnet

from probes.adapters.tapping import tap_model, untap_model

import reference_resnets
import reference_timm
from tap_checks import assert_bitwise_the_original, assert_probe_matches_autograd

# Every ResNet constructor torchvision has (test_every_torchvision_resnet_is_listed checks).
TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
# timm: the post-activation family with its variants (deep stems, average-pool downsampling,
# SE / ECA attention, anti-aliasing by average or blur pooling, GroupNorm, ResNeXt), the
# pre-activation ResNetV2s (BiT, BatchNorm, GroupNorm, EvoNorm, FRN), and resnetv2's
# non-pre-activation Bottleneck inside a hybrid ViT.
TIMM = ("resnet18", "resnet34", "resnet50", "resnet50d", "resnet26t", "seresnet50", "ecaresnet50t",
        "resnetaa50", "resnetblur50", "resnetrs50", "resnet50_gn", "resnext50_32x4d",
        "seresnext26d_32x4d", "resnetv2_18", "resnetv2_18d", "resnetv2_34d", "resnetv2_50",
        "resnetv2_50d", "resnetv2_50t", "resnetv2_50x1_bit", "resnetv2_50d_gn", "resnetv2_50d_evos",
        "resnetv2_50d_frn", "vit_small_r26_s32_224")
BLOCKS = (tv_resnet.BasicBlock, tv_resnet.Bottleneck, timm_resnet.BasicBlock, timm_resnet.Bottleneck,
          timm_resnetv2.PreActBasic, timm_resnetv2.PreActBottleneck, timm_resnetv2.Bottleneck)
PRE_ACTIVATION = (timm_resnetv2.PreActBasic, timm_resnetv2.PreActBottleneck)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # a shared 2-core machine; and bitwise comparisons
    yield
    torch.set_num_threads(threads)


def create(name, random_layers=True):
    """An untrained model, 10 classes; ``random_layers``: drop_path (and timm resnet's
    drop_block) switched on, so that the tapped model has to draw what the original draws."""
    torch.manual_seed(0)
    if name.startswith("torchvision_"):
        return getattr(torchvision.models, name.removeprefix("torchvision_"))(weights=None, num_classes=10)
    name = name.removeprefix("timm_")
    kwargs = {"img_size": 64} if name.startswith("vit_") else {}
    if random_layers:
        kwargs["drop_path_rate"] = 0.2
        if name.startswith(("resnet", "seres", "ecares")) and not name.startswith("resnetv2"):
            kwargs["drop_block_rate"] = 0.2
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


MODELS = [f"torchvision_{n}" for n in TORCHVISION] + [f"timm_{n}" for n in TIMM]


def batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def expected_positions(model):
    """(stage, index) of every block, from the library's own classes and containers."""
    names = [n for n, m in model.named_modules() if isinstance(m, BLOCKS)]
    parents = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
    counts = {}
    out = []
    for n in names:
        parent = n.rpartition(".")[0]
        out.append((parents.index(parent) + 1, counts.setdefault(parent, 0)))
        counts[parent] += 1
    return names, out


@pytest.mark.parametrize("name", MODELS)
def test_tapped_model_is_bitwise_the_original(name):
    model = create(name)
    x, y = batch()
    names, positions = expected_positions(model)
    handle, rows = assert_bitwise_the_original(model, x, y)
    tapped = handle.model
    assert [n for n, m in tapped.named_modules() if m in handle.units] == names   # every block
    assert [(u.stage, u.index) for u in handle.units] == positions
    assert rows["unit"].nunique() == len(names) > 0
    handle.remove()
    assert not any(hasattr(m, "taps") or "forward" in m.__dict__ for m in tapped.modules())
    tapped.eval(), model.eval()
    assert torch.equal(tapped(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_probe_rows_match_autograd_at_every_tap(name):
    model = create(name, random_layers=False).train()
    handle = tap_model(model)
    post_activation = not isinstance(handle.units[0], PRE_ACTIVATION)
    assert all(isinstance(u, PRE_ACTIVATION) != post_activation for u in handle.units)
    df = assert_probe_matches_autograd(model, handle.units, *batch(), post_activation)
    if post_activation:                              # the ReLU after the addition stops some
        assert (df.xs("grad_cut", level="stat") > 0).any()


def block_pairs():
    """(the library's block, the fast path's copy of it), the same configuration."""
    from timm.layers import DropPath
    timm_down = timm_resnet.downsample_avg(16, 128, 1, stride=2)       # avg_down (resnet50d)
    copy_down = reference_timm._downsample(16, 128, 2, avg_down=True)
    return [
        (tv_resnet.BasicBlock(16, 16), reference_resnets.BasicBlock(16, 16)),
        (tv_resnet.Bottleneck(64, 16), reference_resnets.Bottleneck(64, 16)),
        (timm_resnet.BasicBlock(16, 32, 2, tv_resnet.conv1x1(16, 32, 2), attn_layer="se",
                                aa_layer=torch.nn.AvgPool2d, drop_path=DropPath(0.3)),
         reference_timm.BasicBlock(16, 32, 2, reference_resnets.conv1x1(16, 32, 2), attn=True, aa=True,
                                   drop_path=reference_resnets.DropPath(0.3))),
        (timm_resnet.Bottleneck(16, 32, 2, timm_down, attn_layer="se", aa_layer=torch.nn.AvgPool2d,
                                drop_path=DropPath(0.3)),
         reference_timm.Bottleneck(16, 32, 2, copy_down, attn=True, aa=True,
                                   drop_path=reference_resnets.DropPath(0.3))),
        (timm_resnetv2.PreActBasic(64, 64, drop_path_rate=0.3),
         reference_resnets.PreActBasic(64, 64, drop_path_rate=0.3)),
        (timm_resnetv2.PreActBottleneck(64, 128, stride=2, proj_layer=timm_resnetv2.DownsampleConv,
                                        drop_path_rate=0.3),
         reference_resnets.PreActBottleneck(64, 128, stride=2, proj_layer=reference_resnets.DownsampleConv,
                                            drop_path_rate=0.3)),
    ]


def test_the_fast_path_copies_compute_what_the_libraries_do():
    """tests/test_tapping.py's copies (reference_resnets, reference_timm) have the libraries'
    module trees (their state dicts load strictly) and compute bitwise what they compute."""
    for real, copied in block_pairs():
        copied.load_state_dict(real.state_dict())
        x = torch.randn(2, real.conv1.in_channels, 16, 16)
        outs = []
        for block in (real, copied):
            xi = x.clone().requires_grad_()
            torch.manual_seed(2)                        # the same drop_path draws
            out = block.train()(xi)
            out.square().sum().backward()
            outs.append((out, xi.grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), type(real)


def test_every_torchvision_resnet_is_listed():
    """A torchvision release that adds a ResNet constructor adds it to what is tested."""
    found = {n for n in torchvision.models.list_models(module=torchvision.models)
             if n.startswith(("resnet", "resnext", "wide_resnet"))}
    assert found == set(TORCHVISION)


def test_timm_refuses_what_it_cannot_tap_by_name():
    model = timm.create_model("resnet18", pretrained=False, act_layer="silu")
    with pytest.raises(ValueError, match=r"^timm resnet BasicBlock layer1\.0: its after-addition "
                                         r"activation act2 is SiLU; tap_model supports nn\.ReLU there only$"):
        tap_model(model)
    assert not any(hasattr(m, "taps") for m in model.modules())     # nothing was tapped
    assert untap_model(model) == 0


@pytest.mark.filterwarnings("ignore:.*LeafSpec", "ignore:.*does not have many workers", "ignore:.*srun")
def test_lightning_callback_on_a_timm_resnet_equals_a_hand_run_probe():
    """Lightning taps the untapped timm model itself; its rows equal a probe run by hand."""
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    from probes import SignalProbe
    from probes.adapters.lightning import SignalProbeCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = create("timm_resnet18", random_layers=False)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(*batch(n=6, size=32)), batch_size=2)
    module = Module()
    by_hand = copy.deepcopy(module)
    callback = SignalProbeCallback(every=2, stats=("norm", "rms", "grad_cut"))
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    got = callback.collect()
    assert len(callback.tap_handle.units) == 8 and sorted(got["step"].unique()) == [1, 3]

    tap_model(by_hand.net)
    optimizer = by_hand.configure_optimizers()
    with SignalProbe(by_hand, stats=("norm", "rms", "grad_cut"), every=2) as probe:
        for x, y in data:
            optimizer.zero_grad()
            by_hand.training_step((x, y), 0).backward()
            probe.step()
            optimizer.step()
    keys = ["step", "unit", "tap", "direction", "stat", "layer"]
    got, expected = (df.sort_values(keys).reset_index(drop=True) for df in (got, probe.collect()))
    assert len(got) == len(expected) > 0
    assert got[keys].equals(expected[keys])
    assert torch.allclose(torch.tensor(got["value"].to_numpy()), torch.tensor(expected["value"].to_numpy()),
                          rtol=1e-6, atol=1e-9)
