"""SignalProbe against an independent computation: forward hooks keep every tapped tensor,
autograd gives its gradient, plain torch computes each statistic."""
import contextlib
import gc
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import SignalProbe, kernels
from probes import stats as S
from probes.kernels import c_module, cpp_hooks
from probes.recorder import TapRecorder
from resnet_lab import TAP_NAMES, ResidualUnit, cifar_resnet
from resnet_lab.networks.families import ResNet

from fp32_bounds import ratio_tolerance, tolerance
from tap_checks import assert_grad_norm


def reference_stats(t):
    t = t.detach().double()
    c = t.shape[1]
    per_ch = t.transpose(0, 1).reshape(c, -1)
    m = per_ch.mean(1)
    v = per_ch.var(1, unbiased=False)
    return {"rms": t.square().mean().sqrt(), "norm": t.norm(), "mean": t.mean(),
            "std": t.std(unbiased=False), "ch_sq_mean": (m * m).mean(), "ch_var": v.mean(),
            "frac_neg": (t < 0).double().mean(), "frac_zero": (t == 0).double().mean()}


def small_net(kind):
    """A two-stage net: identity units and a dimension-changing unit with a projection."""
    units = [[ResidualUnit(kind, "basic", 8, 8, stage=1, index=0),
              ResidualUnit(kind, "basic", 8, 8, stage=1, index=1)],
             [ResidualUnit(kind, "basic", 8, 16, 2, shortcut="B", stage=2, index=0),
              ResidualUnit(kind, "bottleneck", 16, 16, stage=2, index=1)]]
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    return ResNet(stem, units, nn.Identity(), 16, 5)


def run_reference(net, x, y):
    """Every tapped tensor and the gradient of the loss with respect to it."""
    kept = {}
    hooks = []
    for u, unit in enumerate(net.units()):
        for tap in TAP_NAMES:
            hooks.append(unit.taps[tap].register_forward_hook(
                lambda m, a, out, key=(u, tap): kept.__setitem__(key, out)))
    loss = F.cross_entropy(net(x), y)
    for h in hooks:
        h.remove()
    keys = list(kept)
    grads = torch.autograd.grad(loss, [kept[k] for k in keys])
    return kept, dict(zip(keys, grads))


@pytest.fixture(params=["C++ hooks", "C", "torch"])
def backend(request, monkeypatch):
    """The ways the statistics are computed on the CPU: the C module's kernel (gradients read
    by the C++ hooks, or by the Python hooks where those are not built) and torch operations
    (Python hooks)."""
    if request.param == "C":
        monkeypatch.setattr(cpp_hooks, "load", lambda: None)
    with kernels.forced("torch") if request.param == "torch" else contextlib.nullcontext():
        yield request.param


def scalar_views(row):
    """A raw-sum row and its 0-d views, as the probe hands them to a backend."""
    return row, tuple(row[k] for k in range(len(S.RAW_ROW)))


def test_c_module_is_built():
    # setup.py builds it as optional; a silent build failure would only show as a slow probe.
    assert c_module._fastsums is not None, "probes.kernels._fastsums is not built: pip install -e . needs a C compiler"


def test_cpp_hooks_are_built():
    # make install builds them; a failed build falls back to the Python hooks, silently slower.
    assert cpp_hooks.load() is not None, "probes' C++ gradient hooks did not build: python -m probes.kernels.cpp_hooks"


def test_an_unbuildable_cpp_extension_falls_back_to_python_saying_why_once(monkeypatch):
    from torch.utils import cpp_extension

    def no_ninja(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")
    monkeypatch.setattr(cpp_hooks, "_tried", False)
    monkeypatch.setattr(cpp_hooks, "_module", None)
    monkeypatch.setattr(cpp_extension, "load", no_ninja)
    with pytest.warns(RuntimeWarning, match="Ninja is required.*Python"):
        assert cpp_hooks.load() is None
    torch.manual_seed(0)
    net = small_net("original")
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    probe = SignalProbe(net)
    for _ in range(3):                   # tried once: no second build, no second warning
        with probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
    assert probe._taps.cpp is False and len(probe.collect().query("step == 3")) > 100


def test_cpp_taps_and_hooks_take_over_from_the_second_step(monkeypatch):
    """The probe's first step runs its Python taps (laying the buffers out) and creates the C++
    recorder; from the second step its taps are C++. Python then sees a tensor only while its
    slot has no kept layout: in the second step (buffers trimmed: every view remade) and the
    first step of a new batch size; in between the C++ taps and hooks read everything."""
    calls = {"_on_tap": 0, "_measure_forward": 0, "_measure_grad": 0}
    for name in calls:                   # the Python taps and what the C++ ones call back
        method = getattr(TapRecorder, name[1:])
        monkeypatch.setattr(TapRecorder, name[1:], lambda self, *a, _m=method, _n=name:
                            (calls.__setitem__(_n, calls[_n] + 1), _m(self, *a))[1])
    torch.manual_seed(0)
    net = small_net("original")
    probe = SignalProbe(net)
    per_step = []
    for n in (6, 6, 6, 5, 5):
        x, y = torch.randn(n, 3, 8, 8), torch.randint(0, 5, (n,))
        with probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
        per_step.append(dict(calls))
        calls.update(dict.fromkeys(calls, 0))
    assert type(probe._taps.cpp).__name__ == "Recorder"
    assert per_step[0]["_on_tap"] == 20 and per_step[0]["_measure_grad"] > 8
    assert per_step[1]["_on_tap"] == 0 and per_step[1]["_measure_forward"] > 8 and per_step[1]["_measure_grad"] > 8
    assert per_step[3] == per_step[1] and per_step[2] == per_step[4] == dict.fromkeys(calls, 0)
    assert (probe.collect().query("stat == 'rms'").groupby(["step", "direction"]).size() > 8).all()


def _forward(net, x, checkpointed):
    """The net's forward, its units under torch.utils.checkpoint's reentrant variant when asked."""
    from torch.utils.checkpoint import checkpoint
    if not checkpointed:
        return net(x)
    h = net.stem(x)
    for unit in net.units():
        h = checkpoint(unit, h, use_reentrant=True)
    return net.fc(net.pool(net.final(h)).flatten(1))


@pytest.mark.parametrize("case", ["original", "full_preact", "bn_after_add", "sum tap only", "no signs",
                                  "weight inputs", "every 2", "no_grad step", "checkpoint", "reentrant checkpoint",
                                  "nested"])
def test_cpp_taps_and_hooks_equal_the_python_ones(case):
    """Five steps (the third and later with another batch size) through the C++ taps and hooks
    and through the Python ones record the same rows, bit for bit: the same kernel reads in
    both; what differs is who decides what to read."""
    kinds = {"full_preact": "full_preact", "bn_after_add": "bn_after_add"}
    kwargs = {"sum tap only": dict(taps="sum"), "no signs": dict(taps=("branch", "output"), stats=("rms", "norm")),
              "weight inputs": dict(weight_inputs=True), "every 2": dict(every=2)}.get(case, {})
    frames = {}
    for cpp in (True, False):
        torch.manual_seed(0)
        net = small_net(kinds.get(case, "original"))
        net.grad_checkpointing = case == "checkpoint"
        probes = [SignalProbe(net, cpp_hooks=cpp, **kwargs)]
        if case == "nested":
            probes.append(SignalProbe(net, taps="sum", cpp_hooks=cpp))
        for step in range(5):
            n = 6 if step < 2 else 5
            x, y = torch.randn(n, 3, 8, 8), torch.randint(0, 5, (n,))
            with contextlib.ExitStack() as stack:
                for probe in probes:
                    stack.enter_context(probe)
                if case == "no_grad step" and step == 3:
                    with torch.no_grad():
                        net(x)
                else:
                    F.cross_entropy(_forward(net, x, case == "reentrant checkpoint"), y).backward()
                for probe in reversed(probes):
                    probe.step()
        assert all(bool(p._taps.cpp) == cpp for p in probes)
        frames[cpp] = [p.collect() for p in probes]
    for with_cpp, with_python in zip(frames[True], frames[False]):
        assert with_cpp.step.nunique() == (3 if case == "every 2" else 5)
        pd.testing.assert_frame_equal(with_cpp, with_python)


def test_cpp_hooks_outlive_their_probe():
    """A graph probed and then kept past its probe's life still runs its hooks: they read into
    buffers that they keep alive and no probe reads, or find the probe gone; the backward pass
    is unharmed, and freeing the graph frees the hooks and their recorder."""
    torch.manual_seed(0)
    net = small_net("original")
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    probe = SignalProbe(net)
    for _ in range(2):                   # layouts kept: the hooks now read without Python
        with probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
    with probe:
        loss = F.cross_entropy(net(x), y)
    ref = weakref.ref(probe)
    del probe
    gc.collect()
    assert ref() is None
    for retain in (True, False):         # the last backward frees the graph, its hooks and the recorder
        net.zero_grad()
        loss.backward(retain_graph=retain)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    del loss
    gc.collect()


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d", "strided"])
def test_raw_sums_c_module_and_torch_agree(layout):
    torch.manual_seed(0)
    t = torch.randn(37, 6, 5, 3)               # 37 rows: 4-row passes, tails, several flushes
    t[t.abs() < 0.3] = 0                       # zeros, negatives and positives
    t = {"nchw": t, "channels_last": t.contiguous(memory_format=torch.channels_last),
         "2d": t.reshape(37 * 6, 15)[:, :6].contiguous(), "strided": t[:, :, ::2]}[layout]
    expected = reference_stats(t)
    for fast in (kernels.C_MODULE, kernels.TORCH):
        s1c, row = torch.zeros(t.shape[1]), torch.zeros(len(S.RAW_ROW))
        fast.raw_sums(t, s1c, scalar_views(row), lambda k, like: torch.empty(like.numel()))
        n, c = t.numel(), t.shape[1]
        got = S.tensor_stats(s1c.double(), torch.arange(c).div(c, rounding_mode="floor"),
                             row.double().reshape(-1, 1), torch.tensor([n / c], dtype=torch.float64),
                             torch.tensor([c], dtype=torch.float64))
        for stat, value in expected.items():
            assert got[stat].item() == pytest.approx(value.item(), rel=1e-6, abs=1e-9), (layout, fast, stat)


def test_masked_energy_c_module_and_torch_agree():
    torch.manual_seed(0)
    h, y = torch.randn(9, 4, 6, 6), torch.randn(9, 4, 6, 6)
    out = torch.relu(y)
    expected = (h.double().square() * (out == 0)).sum().item()
    for f_out in (out, out.contiguous(memory_format=torch.channels_last)):   # alike, then not
        got = torch.zeros(())
        kernels.C_MODULE.masked_energy(h, f_out, got, lambda k, like: torch.empty(like.numel()))
        assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["original", "full_preact", "bn_after_add"])
def test_every_statistic_matches_independent_computation(kind, backend):
    torch.manual_seed(0)
    net = small_net(kind)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    acts, grads = run_reference(net, x, y)
    net.zero_grad()
    with SignalProbe(net) as probe:
        F.cross_entropy(net(x), y).backward()
        probe.step()
    df = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    for (u, tap), t in acts.items():
        for direction, tensor in (("forward", t), ("backward", grads[(u, tap)])):
            for stat, expected in reference_stats(tensor).items():
                got = df[(u, tap, direction, stat)]
                assert got == pytest.approx(expected.item(), rel=0, abs=tolerance(stat, tensor)), \
                    (u, tap, direction, stat)
        if tap == "sum":
            h, out = acts[(u, "shortcut")], acts[(u, "output")]
            cut = (h.square() * (out == 0)).sum() / h.square().sum() if out is not t else torch.tensor(0.0)
            share = ratio_tolerance(h.numel())
            assert df[(u, "sum", "forward", "shortcut_cut")] == pytest.approx(cut.item(), rel=0, abs=share)
            g_y, g_out = grads[(u, "sum")], grads[(u, "output")]
            expected = 1 - g_y.double().square().sum() / g_out.double().square().sum()
            assert df[(u, "sum", "backward", "grad_cut")] == pytest.approx(expected.item(), rel=0, abs=share)
    for u, unit in enumerate(net.units()):
        assert_grad_norm(df[(u, "params", "backward", "grad_norm")], unit)


def test_later_steps_and_a_new_batch_size_match_independent_computation(backend):
    """A slot keeps its tensor's layout from step to step (the C module's arguments are
    reused while it holds): steps 2 and 3, the last with another batch size, are checked."""
    torch.manual_seed(0)
    net = small_net("original")
    probe = SignalProbe(net, param_grads=False)
    batches = [torch.randn(n, 3, 8, 8) for n in (6, 6, 5)]
    labels = [torch.randint(0, 5, (len(x),)) for x in batches]
    expected = []
    for x, y in zip(batches, labels):
        acts, grads = run_reference(net, x, y)
        expected.append((acts, grads))
        with probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
    df = probe.collect().set_index(["step", "unit", "tap", "direction", "stat"])["value"]
    for step in (2, 3):
        acts, grads = expected[step - 1]
        for (u, tap), t in acts.items():
            for direction, tensor in (("forward", t), ("backward", grads[(u, tap)])):
                for stat, value in reference_stats(tensor).items():
                    got = df[(step, u, tap, direction, stat)]
                    assert got == pytest.approx(value.item(), rel=0, abs=tolerance(stat, tensor)), \
                        (step, u, tap, direction, stat)
            if tap == "output":
                h = acts[(u, "shortcut")]
                cut = (h.square() * (t == 0)).sum() / h.square().sum()
                assert df[(step, u, "sum", "forward", "shortcut_cut")] == pytest.approx(
                    cut.item(), rel=0, abs=ratio_tolerance(h.numel()))


def test_collector_paused_exactly_while_a_probed_step_runs():
    """Python's garbage collector is off from a probed step's first tap to step() (or leaving
    the ``with``), on while an unprobed step runs, back as it was afterwards, also when the
    step raises and when probes nest; ``pause_gc=False`` leaves it alone."""
    torch.manual_seed(0)
    net = cifar_resnet(20, version=1)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    seen = []
    net.fc.register_forward_hook(lambda *_: seen.append(gc.isenabled()))
    assert gc.isenabled()
    probe = SignalProbe(net, every=2)
    with probe:
        for enabled in (False, True, False):      # probed, unprobed, probed
            F.cross_entropy(net(x), y).backward()
            assert gc.isenabled() is enabled
            probe.step()
            assert gc.isenabled()
    assert seen == [False, True, False] and gc.isenabled()
    with pytest.raises(RuntimeError):
        with SignalProbe(net):
            net(x)
            raise RuntimeError("the step failed")
    assert gc.isenabled()
    outer, inner = SignalProbe(net), SignalProbe(net)
    with outer:
        with inner:
            net(x)
            inner.step()
            assert not gc.isenabled()            # the outer probe's step still runs
        outer.step()
    assert gc.isenabled()
    with SignalProbe(net, pause_gc=False) as probe:
        net(x)
        assert gc.isenabled()
        probe.step()
    gc.disable()
    try:
        with SignalProbe(net) as probe:
            net(x)
            probe.step()
        assert not gc.isenabled()                # left as it was found
    finally:
        gc.enable()


def test_v1_relu_cuts_and_v2_cuts_nothing():
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    result = {}
    for version in (1, 2):
        net = cifar_resnet(20, version=version)
        with SignalProbe(net, taps="sum", stats=("shortcut_cut", "grad_cut")) as probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
        result[version] = probe.collect().groupby("stat")["value"]
    assert (result[2].max() == 0).all() and (result[2].min() == 0).all()   # identity f: exactly 0
    assert (result[1].min() > 0).all() and (result[1].max() < 1).all()


def test_weight_inputs_match_independent_computation(backend):
    net = small_net("original")
    x = torch.randn(6, 3, 8, 8)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
             for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with SignalProbe(net, weight_inputs=True) as probe:
        net(x)
        probe.step()
    for h in hooks:
        h.remove()
    df = probe.collect()
    df = df[df.tap == "weight_input"].set_index(["layer", "stat"])["value"]
    assert len(inputs) == 12                       # stem, 2+2+3 convs, a projection, 3, fc
    for name, t in inputs.items():
        t = t.double()
        per_ch = (t.transpose(0, 1).reshape(t.shape[1], -1))
        m, v = per_ch.mean(1), per_ch.var(1, unbiased=False)
        expected = {"in_mean_mean": m.mean(), "in_mean_var": m.var(unbiased=False),
                    "in_var_mean": v.mean(), "in_var_var": v.var(unbiased=False)}
        for stat, value in expected.items():
            assert df[(name, stat)] == pytest.approx(value.item(), rel=0, abs=tolerance(stat, t)), (name, stat)


def test_no_host_sync_inside_hooks(monkeypatch):
    net = cifar_resnet(20, version=1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    calls = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=original, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    probe = SignalProbe(net, weight_inputs=True)
    with probe:
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        assert calls == []                       # forward and backward hooks never synchronise
        probe.step()
    assert calls.count("cpu") == 1               # one transfer per step
    monkeypatch.undo()
    assert len(probe.collect()) > 0


def test_hooks_removed_after_context_and_exception_and_no_activation_kept():
    net = cifar_resnet(20, version=2)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    probe = SignalProbe(net)
    with pytest.raises(RuntimeError, match="boom"):
        with probe:
            net(x)
            raise RuntimeError("boom")
    taps = [m for m in net.modules() if type(m).__name__ == "Tap"]
    global_hooks = torch.nn.modules.module._global_forward_hooks

    def untouched():   # no hook and no instance forward left on any tap
        return all(not m._forward_hooks and "forward" not in m.__dict__ for m in taps) and not global_hooks

    assert untouched()
    with probe:
        out = net(x)
        ref = weakref.ref(out)
        F.cross_entropy(out, y).backward()
        probe.step()
    del out
    gc.collect()
    assert ref() is None
    assert untouched()


def test_checkpointed_forward_gives_same_statistics():
    torch.manual_seed(0)
    a = cifar_resnet(20, version=1)
    b = cifar_resnet(20, version=1)
    b.load_state_dict(a.state_dict())
    b.grad_checkpointing = True
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    frames = []
    for net in (a, b):
        with SignalProbe(net) as probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
        frames.append(probe.collect())
    assert len(frames[0]) == len(frames[1])
    np.testing.assert_allclose(frames[0]["value"], frames[1]["value"], rtol=1e-5, atol=1e-8)


def test_reentrant_checkpoint_counts_each_gradient_once():
    from torch.utils.checkpoint import checkpoint
    net = cifar_resnet(20, version=2)
    x, y = torch.randn(4, 3, 8, 8).requires_grad_(), torch.randint(0, 10, (4,))

    def forward(model, inp, ckpt):
        h = model.stem(inp)
        for unit in model.units():
            h = checkpoint(unit, h, use_reentrant=True) if ckpt else unit(h)
        return model.fc(model.pool(model.final(h)).flatten(1))

    frames = []
    for ckpt in (False, True):
        with SignalProbe(net, param_grads=False) as probe:
            F.cross_entropy(forward(net, x, ckpt), y).backward()
            probe.step()
        frames.append(probe.collect())
    assert len(frames[0]) == len(frames[1])
    np.testing.assert_allclose(frames[0]["value"], frames[1]["value"], rtol=1e-5, atol=1e-8)


def test_no_grad_records_forward_only_and_every_k_skips():
    net = cifar_resnet(20, version=1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    with SignalProbe(net, every=3) as probe:
        for _ in range(7):
            F.cross_entropy(net(x), y).backward()
            probe.step()
        with torch.no_grad():
            net(x)
        probe.step()                                   # step 8: not probed
    df = probe.collect()
    assert sorted(df.step.unique()) == [1, 4, 7]       # steps count from 1, as the engine's
    with SignalProbe(net, param_grads=False) as probe:
        with torch.no_grad():
            net(x)
        probe.step()
    assert set(probe.collect().direction) == {"forward"}


def test_schema_and_memory():
    net = cifar_resnet(1001, version=2, width=2)
    with SignalProbe(net) as probe:
        F.cross_entropy(net(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1])).backward()
        probe.step()
    df = probe.collect()
    assert list(df.columns)[:8] == ["step", "unit", "stage", "index", "tap", "direction", "stat", "value"]
    assert df.unit.nunique() == 333 and np.isfinite(df.value).all()
    assert probe.nbytes() < 1_000_000


def test_probe_memory_is_trimmed_to_its_layout():
    """After the first probed step the buffers hold exactly the channels measured (growing by
    doubling left ResNet-1001 V1 at width 16 at 1.9 MB; trimmed: 1.04 MB, the GPU check's
    target being < 2 MB)."""
    net = cifar_resnet(164, version=1, width=16)
    probe = SignalProbe(net)
    for _ in range(2):
        with probe:
            F.cross_entropy(net(torch.randn(2, 3, 4, 4)), torch.tensor([0, 1])).backward()
            probe.step()
    slots, units = probe._index.n_slots, len(probe._index.units)
    channels = probe._taps.fwd.used + probe._taps.bwd.used
    assert probe.nbytes() == 4 * (channels + 2 * 3 * slots + units)
    assert probe.collect().groupby("step").size().nunique() == 1       # same rows after trimming


def test_bad_input():
    with pytest.raises(ValueError, match="no tapped residual units"):
        SignalProbe(nn.Sequential(nn.Conv2d(3, 3, 1)))
    net = cifar_resnet(20, version=1)
    with pytest.raises(ValueError, match="input, shortcut, branch, sum, output"):
        SignalProbe(net, taps=("inputs",))
    with pytest.raises(ValueError, match="rms"):
        SignalProbe(net, stats=("variance",))
    with pytest.raises(ValueError, match="cpp_hooks must be True or False, got 'no'"):
        SignalProbe(net, cpp_hooks="no")


def test_probe_leaves_gradient_accumulation_in_place():
    """Holding a gradient would make autograd sum the two gradients of every unit input
    out of place (an extra allocation and pass per unit): the probe must not."""
    from torch.profiler import profile
    torch.manual_seed(0)
    net = cifar_resnet(20, version=1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    counts = []
    for probed in (False, True):
        probe = SignalProbe(net)
        with profile() as prof:
            if probed:
                with probe:
                    F.cross_entropy(net(x), y).backward()
            else:
                F.cross_entropy(net(x), y).backward()
        counts.append(sum(e.count for e in prof.key_averages() if e.key == "aten::add"))
    assert counts[1] == counts[0]


def test_grouped_norms_c_module_and_torch_agree():
    torch.manual_seed(0)
    tensors = [torch.randn(n) for n in (3, 5000, 1, 77, 4096 * 3 + 1)]
    groups = torch.tensor([0, 2, 0, 2, 1])
    expected = [torch.cat([t for t, g in zip(tensors, groups) if g == k]).double().norm().item() for k in range(3)]
    for fast in (kernels.C_MODULE, kernels.TORCH):
        got = fast.grouped_sq_sums(tensors, groups, 3).sqrt()
        assert got.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_raw_sums_with_masked_energy_fused_and_torch_agree(layout):
    """At a unit's output the C module reads the output and the shortcut in one pass."""
    torch.manual_seed(0)
    h, y = torch.randn(9, 4, 6, 6), torch.randn(9, 4, 6, 6)
    out = torch.relu(y)
    if layout == "channels_last":
        h, out = (t.contiguous(memory_format=torch.channels_last) for t in (h, out))
    expected_energy = (h.double().square() * (out == 0)).sum().item()
    results = []
    for fast in (kernels.C_MODULE, kernels.TORCH):
        s1c, row, energy = torch.zeros(4), torch.zeros(len(S.RAW_ROW)), torch.zeros(2)
        buffers = [torch.empty(out.numel()), torch.empty(out.numel())]     # reused, as the probe's
        fast.raw_sums(out, s1c, scalar_views(row), lambda k, like: buffers[k], masked=(h, energy[1]))
        assert energy[1].item() == pytest.approx(expected_energy, rel=1e-6) and energy[0] == 0
        results.append(torch.cat([s1c, row]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-5)


def test_shortcut_cut_without_measuring_the_output_tap(backend):
    """Only the sum tap and shortcut_cut asked for: the masked energy is measured alone."""
    torch.manual_seed(0)
    net = small_net("original")
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    values = []
    for stats in (("shortcut_cut",), None):
        with SignalProbe(net, taps="sum", stats=stats) as probe:
            F.cross_entropy(net(x), y).backward()
            probe.step()
        df = probe.collect()
        values.append(df[df.stat == "shortcut_cut"].set_index("unit")["value"])
    assert len(values[0]) == 4 and (values[0] > 0).all()
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6)


def test_nested_probes_both_measure_and_leave_the_taps_as_they_were():
    torch.manual_seed(0)
    net = cifar_resnet(20, version=1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    with SignalProbe(net, param_grads=False) as alone:
        F.cross_entropy(net(x), y).backward()
        alone.step()
    with SignalProbe(net, param_grads=False) as outer:
        with SignalProbe(net, taps="sum", param_grads=False) as inner:
            F.cross_entropy(net(x), y).backward()
            inner.step()
        outer.step()
    taps = [m for m in net.modules() if type(m).__name__ == "Tap"]
    assert all("forward" not in m.__dict__ for m in taps)
    expected = alone.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
    for probe in (outer, inner):
        got = probe.collect().set_index(["unit", "tap", "direction", "stat"])["value"]
        np.testing.assert_allclose(got, expected.loc[got.index], rtol=1e-6, atol=1e-9)
    assert len(outer.collect()) == len(expected)


def test_probe_state_round_trips_through_a_checkpoint():
    """A probe's records are its state: saved with torch.save and read back under
    ``weights_only=True`` into a new probe of the same model, they give the same rows, and
    the probe records on from there."""
    import io
    torch.manual_seed(0)
    net = small_net("original")
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    probe = SignalProbe(net, weight_inputs=True, every=2)
    for step in range(3):
        with probe:
            if step == 2:
                with torch.no_grad():          # a forward-only step: no backward part
                    net(x)
            else:
                F.cross_entropy(net(x), y).backward()
            probe.step()
    buffer = io.BytesIO()
    torch.save(probe.state_dict(), buffer)
    buffer.seek(0)
    again = SignalProbe(net, weight_inputs=True)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    pd.testing.assert_frame_equal(again.collect(), probe.collect(), check_exact=True)
    assert sorted(again.collect().step.unique()) == [1, 3]
    assert set(again.collect().query("step == 3 and tap != 'params'").direction) == {"forward"}
