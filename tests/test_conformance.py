"""Every backend against a float64 reference, for every statistic the declarations hold.

``probes.stats`` declares each statistic (the raw sums it needs, its formula); a backend
(``probes.kernels``) only computes raw sums. Here every backend's raw sums, through the
declared formulas, must give what an independent float64 computation gives -- for every name
of every group (``TENSOR_STATS``, the cut statistics, ``WEIGHT_INPUT_STATS``, ``grad_norm``),
on odd shapes, in both memory formats (and a strided view), in every dtype. The backends: the
torch path and the C module directly; the C++ taps and hooks (where built) through a probe,
with the Python taps beside them; Triton's kernels under its interpreter, in a child process
(``TRITON_INTERPRET=1`` must be set before triton is imported; see tests/test_triton_sums.py).

A statistic declared without a reference here, or needing a raw sum that is not declared or
that a backend does not write, fails with a message naming it and the backend.
"""
import contextlib

import pytest
import torch
from torch import nn

from probes import SignalProbe, kernels
from probes import stats as S
from probes.kernels import cpp_hooks, torch_ops
from resnet_lab.networks.taps import make_taps
from triton_interpreter import INTERPRETING, interpreted_kernels, run_in_child

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
# name -> (shape, memory format): odd sizes; 37 rows: the C module's 4-row passes, tails, flushes
LAYOUTS = {"nchw": ((3, 5, 7, 9), "contiguous"), "channels_last": ((3, 5, 7, 9), "channels_last"),
           "rows": ((37, 6, 5, 3), "contiguous"), "rows_cl": ((37, 6, 5, 3), "channels_last"),
           "2d": ((11, 7), "contiguous"), "ones": ((1, 3, 1, 1), "contiguous"),
           "strided": ((4, 6, 10, 5), "strided")}


def per_channel(t):
    return t.transpose(0, 1).reshape(t.shape[1], -1)


# ---- the float64 references: one per declared name -----------------------------------------
# (reference of t in float64, and the power of t's scale the statistic has, for the tolerance)
TENSOR_REFERENCE = {
    "rms": (lambda t: t.square().mean().sqrt(), 1),
    "norm": (lambda t: t.square().sum().sqrt(), 1),
    "mean": (lambda t: t.mean(), 1),
    "std": (lambda t: t.std(unbiased=False), 1),
    "ch_sq_mean": (lambda t: per_channel(t).mean(1).square().mean(), 2),
    "ch_var": (lambda t: per_channel(t).var(1, unbiased=False).mean(), 2),
    "frac_neg": (lambda t: (t < 0).double().mean(), 0),
    "frac_zero": (lambda t: (t == 0).double().mean(), 0),
}
# of a unit: h its shortcut, out = f(y) its output; g_sum, g_out the gradients at sum and output
CUT_REFERENCE = {                 # a shortcut without energy loses none
    "shortcut_cut": lambda u: (u["h"].square() * (u["out"] == 0)).sum() / u["h"].square().sum()
    if u["h"].any() else torch.tensor(0.0),
    "grad_cut": lambda u: 1 - u["g_sum"].square().sum() / u["g_out"].square().sum(),
}
WEIGHT_INPUT_REFERENCE = {
    "in_mean_mean": (lambda x: per_channel(x).mean(1).mean(), 1),
    "in_mean_var": (lambda x: per_channel(x).mean(1).var(unbiased=False), 2),
    "in_var_mean": (lambda x: per_channel(x).var(1, unbiased=False).mean(), 2),
    "in_var_var": (lambda x: per_channel(x).var(1, unbiased=False).var(unbiased=False), 4),
}
PARAMS_REFERENCE = {"grad_norm": lambda grads: torch.stack([g.double().square().sum() for g in grads]).sum().sqrt()}
GROUPS = {"TENSOR": (S.TENSOR, TENSOR_REFERENCE), "CUT": (S.CUT, CUT_REFERENCE),
          "WEIGHT_INPUT": (S.WEIGHT_INPUT, WEIGHT_INPUT_REFERENCE), "PARAMS": (S.PARAMS, PARAMS_REFERENCE)}


def unsupported(groups, backends) -> list:
    """Why the declarations cannot be checked or computed, one line each: a statistic without a
    reference here, a raw sum not declared in RAW_SUMS, a backend that does not write RAW_ROW."""
    lines = []
    for group, (declared, reference) in groups.items():
        for stat in declared:
            if stat.name not in reference:
                lines.append(f"statistic {stat.name!r} ({group}) has no float64 reference: add one to "
                             f"{group}_REFERENCE in tests/test_conformance.py")
            lines += [f"statistic {stat.name!r} needs raw sum {raw!r}, which probes/stats.py does not "
                      "declare (RAW_ROW / RAW_SUMS)" for raw in stat.needs if raw not in S.RAW_SUMS]
    for name, row in backends.items():
        lines += [f"backend {name!r} does not write raw sum {raw!r} of RAW_ROW (its row: {tuple(row)})"
                  for raw in S.RAW_ROW if raw not in row]
    return lines


def backend_rows() -> dict:
    """Every backend's raw-sum row, also of those this machine does not run."""
    rows = {"torch": tuple(torch_ops.ROW_SUMS), "c": kernels.c_module.CModuleKernels.row}
    try:
        from probes.kernels import triton_sums
        rows["triton"] = triton_sums.ROW
    except ImportError:
        pass
    return rows


def test_every_declaration_has_a_reference_and_every_backend_its_raw_sums():
    assert not unsupported(GROUPS, backend_rows()), "\n".join(unsupported(GROUPS, backend_rows()))


def test_each_statistic_needs_what_it_declares():
    """A TENSOR formula reads only the raw sums it declares (``needs`` decides, e.g., whether the
    torch path computes the sign sums): the others set to NaN leave it finite."""
    f64 = dict(dtype=torch.float64)
    for stat in S.TENSOR:
        row = torch.tensor([[9.0] if raw in stat.needs else [float("nan")] for raw in S.RAW_ROW], **f64)
        s1c = torch.tensor([1.0, -2.0] if "s1c" in stat.needs else [float("nan")] * 2, **f64)
        sums = S.TensorSums(s1c, torch.tensor([0, 0]), row, torch.tensor([3.0], **f64), torch.tensor([2.0], **f64))
        assert torch.isfinite(stat.formula(sums)).all(), f"{stat.name} reads a raw sum it does not declare"


def test_a_statistic_declared_without_support_fails_saying_what_is_missing():
    """A made-up statistic of an undeclared raw sum, and a backend whose row lacks one."""
    made_up = S.Statistic("made_up", ("sum_7th", "sum_sq"), lambda s: s.sum_7th / s.n, "E t^7 / N")
    groups = {**GROUPS, "TENSOR": (S.TENSOR + (made_up,), TENSOR_REFERENCE)}
    rows = {**backend_rows(), "c": S.RAW_ROW[:-1]}
    lines = unsupported(groups, rows)
    assert any("'made_up' (TENSOR) has no float64 reference" in line for line in lines)
    assert any("'made_up' needs raw sum 'sum_7th'" in line for line in lines)
    assert any(f"backend 'c' does not write raw sum {S.RAW_ROW[-1]!r}" in line for line in lines)


# ---- the backends, directly -----------------------------------------------------------------

def sample(layout, dtype, seed):
    """Zeros, negatives and positives, in the layout's shape and memory format."""
    shape, fmt = LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    t[t.abs() < 0.4] = 0
    t = t.to(DTYPES[dtype])
    if fmt == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    return t[:, :, ::2] if fmt == "strided" else t


def close(got, expected, scale, name):
    """Equal to fp32 accumulation of the sums (cancellation included: atol in the statistic's
    units, from the tensor's scale)."""
    got, expected = float(got), float(expected.detach()) if torch.is_tensor(expected) else float(expected)
    if expected != expected:                                 # NaN: a gradient without energy
        assert got != got, (name, got, expected)
        return
    assert abs(got - expected) <= 2e-5 * abs(expected) + 2e-6 * scale, (name, got, expected)


@pytest.fixture(params=["torch", "c", "triton"])
def backend(request):
    if request.param == "triton":
        return interpreted_kernels().TritonKernels()
    if INTERPRETING:
        pytest.skip("the child process checks the Triton kernels only")
    if request.param == "c" and kernels.C_MODULE is None:
        pytest.skip("the C module is not built")
    return kernels.available()[request.param]


def raw_sums(backend, t, masked=None):
    """One slot's TensorSums by ``backend`` (the probe's views and scratch)."""
    c = t.shape[1]
    s1c, row = torch.full((c,), 7.0), torch.full((len(S.RAW_ROW),), 7.0)    # stale values
    bufs = [torch.empty(t.numel()), torch.empty(t.numel())]
    backend.raw_sums(t, s1c, (row, tuple(row[k] for k in range(len(S.RAW_ROW)))), lambda k, like: bufs[k][:like.numel()],
                     masked)
    f64 = dict(dtype=torch.float64)
    return S.TensorSums(s1c.double(), torch.zeros(c, dtype=torch.long), row.double().reshape(-1, 1),
                        torch.tensor([t.numel() / c], **f64), torch.tensor([c], **f64))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_backend_statistics_equal_float64(backend, layout, dtype, monkeypatch):
    """Every TENSOR, CUT and WEIGHT_INPUT statistic from the backend's raw sums, every declared
    name, against its reference; and the parameter-gradient norm."""
    t, h = sample(layout, dtype, 0), sample(layout, dtype, 1)
    if backend.name != "torch" and layout != "strided" and not (backend.name == "triton" and dtype == "fp64"):
        def torch_path(*args):           # a tensor the backend reads itself must not get here
            raise AssertionError(f"{backend.name} left a {layout} {dtype} tensor to the torch path")
        monkeypatch.setattr(torch_ops, "channel_view", torch_path)
    t64, scale = t.double(), t.double().square().mean().sqrt().item()
    sums = raw_sums(backend, t)
    for stat in S.TENSOR:
        reference, power = TENSOR_REFERENCE[stat.name]
        close(stat.formula(sums)[0], reference(t64), t64.numel() ** 0.5 * scale if stat.name == "norm" else scale ** power,
              (stat.name, layout, dtype))
    # a unit: output f(y) = relu(t) read with its shortcut h in one pass; gradients t (at sum), h (at output)
    out = torch.relu(t)
    energy = torch.full((2,), 7.0)
    at_out, at_h = raw_sums(backend, out, masked=(h, energy[1])), raw_sums(backend, h)
    units = {"forward": S.UnitSums({"shortcut": torch.sqrt(at_h.sum_sq).numpy()}.get, energy[1:].double().numpy()),
             "backward": S.UnitSums({"sum": torch.sqrt(sums.sum_sq).numpy(),
                                     "output": torch.sqrt(at_h.sum_sq).numpy()}.get)}
    assert energy[0].item() == 7.0                           # the 0-d output's neighbour untouched
    tensors = {"h": h.double(), "out": out.double(), "g_sum": t64, "g_out": h.double()}
    for stat in S.CUT:
        close(stat.formula(units[stat.direction])[0], CUT_REFERENCE[stat.name](tensors), 1, (stat.name, layout, dtype))
    c = t.shape[1]
    s1c, s2c = torch.full((c,), 7.0), torch.full((c,), 7.0)
    backend.channel_moments(t, s1c, s2c)
    moments = S.ChannelMoments(s1c.double(), s2c.double(), torch.zeros(c, dtype=torch.long),
                               torch.tensor([t.numel() / c], dtype=torch.float64), torch.tensor([c], dtype=torch.float64))
    for stat in S.WEIGHT_INPUT:
        reference, power = WEIGHT_INPUT_REFERENCE[stat.name]
        close(stat.formula(moments)[0], reference(t64), scale ** power, (stat.name, layout, dtype))
    grads = [t.float().contiguous(), h.float().contiguous().reshape(-1), out.float().contiguous()]
    sq = backend.grouped_sq_sums(grads, torch.tensor([0, 1, 0]), 2)
    for stat in S.PARAMS:
        values = stat.formula(sq)
        for unit, members in ((0, [grads[0], grads[2]]), (1, [grads[1]])):
            close(values[unit], PARAMS_REFERENCE[stat.name](members), 1e-6 * values[unit], (stat.name, unit))


@pytest.mark.slow
def test_triton_under_interpreter():
    """This file's Triton cases, in a child process under TRITON_INTERPRET=1."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton; Linux only)")
    run_in_child(__file__, "triton and not under_interpreter")


# ---- through a probe: the Python taps and hooks, and the C++ ones ----------------------------

class OddUnit(nn.Module):
    """A tapped unit whose tensors have the test's shape, memory format and dtype:
    h = x * a (or x itself), F = x * b + c, y = h + F, out = relu(y)."""

    def __init__(self, c, index, dtype, identity):
        super().__init__()
        self.taps, self.stage, self.index, self.identity = make_taps(), 1, index, identity
        g = torch.Generator().manual_seed(index)
        self.b, self.c = (nn.Parameter(torch.randn(c, generator=g).to(dtype)) for _ in range(2))
        self.a = None if identity else nn.Parameter(torch.randn(c, generator=g).to(dtype))

    def forward(self, x):
        view = (1, -1) + (1,) * (x.dim() - 2)               # broadcast over the channel dimension
        x = self.taps.input(x)
        h = self.taps.shortcut(x if self.identity else x * self.a.view(view))
        y = self.taps.sum(h + self.taps.branch(x * self.b.view(view) + self.c.view(view)))
        return self.taps.output(torch.relu(y))


class OddNet(nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        self.blocks = nn.ModuleList([OddUnit(c, 0, dtype, identity=False), OddUnit(c, 1, dtype, identity=True)])

    def units(self):
        return list(self.blocks)

    def forward(self, x):
        for unit in self.blocks:
            x = unit(x)
        return x


def reference_step(net, x, weights):
    """Every tapped tensor of one forward, its gradient, and the parameters' gradients."""
    kept, hooks = {}, []
    for u, unit in enumerate(net.units()):
        for tap, module in unit.taps.items():
            hooks.append(module.register_forward_hook(lambda m, a, out, key=(u, tap): kept.__setitem__(key, out)))
    net.zero_grad()
    loss = (net(x).float() * weights).sum()
    for hook in hooks:
        hook.remove()
    keys = list(kept)
    grads = torch.autograd.grad(loss, [kept[k] for k in keys] + list(net.parameters()))
    params = {name: g for (name, _), g in zip(net.named_parameters(), grads[len(keys):])}
    return kept, dict(zip(keys, grads[: len(keys)])), params


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "rows", "2d", "ones"])
@pytest.mark.parametrize("taps", ["C++", "Python", "torch"])
def test_probe_rows_equal_float64(taps, layout, dtype):
    """Three probed steps of a two-unit net; the third's rows (read by the layouts the C++ taps
    keep, where built) against float64 references of its tensors and gradients: every name of
    TENSOR_STATS at every tap and direction, the cut statistics, grad_norm."""
    if INTERPRETING:
        pytest.skip("the child process checks the Triton kernels only")
    if taps == "C++" and cpp_hooks.load() is None:
        pytest.skip("the C++ taps and hooks are not built")
    x = sample(layout, dtype, 5).requires_grad_()           # a leaf: its gradient by a tensor hook
    net = OddNet(x.shape[1], DTYPES[dtype])
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    with kernels.forced("torch") if taps == "torch" else contextlib.nullcontext():
        probe = SignalProbe(net, cpp_hooks=taps == "C++")
        for _ in range(3):
            with probe:
                net.zero_grad()
                (net(x).float() * weights).sum().backward()
                probe.step()
    assert bool(probe._taps.cpp) == (taps == "C++")
    kept, grads, params = reference_step(net, x, weights)
    rows = probe.collect().query("step == 3").set_index(["unit", "tap", "direction", "stat"])["value"]
    for (u, tap), t in kept.items():
        for direction, tensor in (("forward", t), ("backward", grads[(u, tap)])):
            t64 = tensor.double()
            scale = t64.square().mean().sqrt().item()
            for name in S.TENSOR_STATS:
                reference, power = TENSOR_REFERENCE[name]
                close(rows[(u, tap, direction, name)], reference(t64),
                      t64.numel() ** 0.5 * scale if name == "norm" else scale ** power, (u, tap, direction, name))
        unit = {"h": kept[(u, "shortcut")].double(), "out": kept[(u, "output")].double(),
                "g_sum": grads[(u, "sum")].double(), "g_out": grads[(u, "output")].double()}
        for stat in S.CUT:
            close(rows[(u, "sum", stat.direction, stat.name)], CUT_REFERENCE[stat.name](unit), 1, (u, stat.name))
        members = [g for name, g in params.items() if name.startswith(f"blocks.{u}.")]
        for stat in S.PARAMS:
            expected = PARAMS_REFERENCE[stat.name](members)
            close(rows[(u, "params", "backward", stat.name)], expected, 1e-6 * float(expected), (u, stat.name))
