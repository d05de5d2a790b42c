"""Shortcuts h(x) and after-addition functions f(y), each a small module that declares its formula.

A residual unit computes ``out = f(h(x) + F(x))`` (``resnet_lab.networks.units``). What varies between
He et al.'s designs is which h and which f; each is a module here that says, beside the code
that computes it:

* ``kind``: its name in tables (``units.csv``'s ``shortcut_kind``);
* ``formula``: one line for docs and reports;
* ``reference(...)``: the formula written from the paper in plain torch, not by calling the
  module, so the formula check (``units.reference_formula``, ``probes.FormulaCheck``) compares
  the taps with the paper, not the code with itself.

A shortcut's ``mix(x) -> (h, w)`` gives h and the weight its unit multiplies the branch F
with before the addition (``None``: F as it is); only the variants of He et al. 2016 Table 1
that scale the branch (constant scaling, exclusive gating) return one. The unit's ``branch``
tap holds the weighted F, so ``sum = shortcut + branch`` holds for every shortcut.

Nothing here modifies a tensor in place (the tap contract).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---- shortcuts ---------------------------------------------------------------------------

class Shortcut(nn.Module):
    """Base of every shortcut: ``mix`` and the declaration (``kind``, ``formula``,
    ``branch_formula``, ``reference``)."""
    kind = "identity"
    formula = "h = x"
    branch_formula = "F"

    def mix(self, x):
        """(h, weight of the branch F or None); a subclass that weighs the branch overrides it."""
        return self(x), None

    def reference(self, x):
        """h(x) from the paper, in plain torch, in ``x``'s dtype."""
        raise NotImplementedError


class Identity(Shortcut):
    """The identity shortcut, h = x: the same tensor object passes (the tap contract's
    ``identity_shortcut``: the shortcut tap *is* the input tap)."""

    def forward(self, x):
        return x

    def reference(self, x):
        return x


class ZeroPad(Shortcut):
    """Option A of He et al. 2015: subsample by ``stride``, pad the new channels with zeros.

    It has no parameters, so the CIFAR nets keep the published parameter counts.
    """
    kind = "A"
    formula = "h = [x[::s, ::s]; 0] (option A: subsample, zero channels)"

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def reference(self, x):
        sub = x[:, :, :: self.stride, :: self.stride]
        zeros = sub.new_zeros(sub.shape[0], self.extra, *sub.shape[2:])
        return torch.cat([sub, zeros], dim=1)

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.extra}"


def _conv1x1_reference(conv: nn.Conv2d, x):
    bias = None if conv.bias is None else conv.bias.to(x.dtype)
    return F.conv2d(x, conv.weight.to(x.dtype), bias, conv.stride)


def batch_norm_reference(bn: nn.BatchNorm2d, y):
    """BN as the paper writes it: batch statistics (biased variance) in training, running
    averages in evaluation, then the affine map."""
    if bn.training:
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = bn.running_mean.to(y.dtype).view(1, -1, 1, 1)
        var = bn.running_var.to(y.dtype).view(1, -1, 1, 1)
    normed = (y - mean) / torch.sqrt(var + bn.eps)
    return normed * bn.weight.to(y.dtype).view(1, -1, 1, 1) + bn.bias.to(y.dtype).view(1, -1, 1, 1)


class Projection(Shortcut, nn.Sequential):
    """Option B of He et al. 2015 with BN: h = BN(W x), W a 1x1 convolution of ``stride``
    (a Sequential, so its parameters keep the names ``shortcut.0.weight``, ``shortcut.1.*``)."""
    kind = "B"
    formula = "h = BN(W_s x) (option B: 1x1 conv, BN)"

    def __init__(self, in_channels, out_channels, stride, kind="B"):
        nn.Sequential.__init__(self, nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                               nn.BatchNorm2d(out_channels))
        self.kind = kind

    def reference(self, x):
        return batch_norm_reference(self[1], _conv1x1_reference(self[0], x))


class BareProjection(Shortcut, nn.Conv2d):
    """Option B without BN, as the official pre-activation code: h = W x, W a 1x1 convolution
    (the module *is* the convolution, so its weight keeps the name ``shortcut.weight``)."""
    kind = "B"
    formula = "h = W_s x (option B: 1x1 conv)"

    def __init__(self, in_channels, out_channels, stride, kind="B"):
        nn.Conv2d.__init__(self, in_channels, out_channels, 1, stride, 0, bias=False)
        self.kind = kind

    def reference(self, x):
        return _conv1x1_reference(self, x)


def projection(in_channels, out_channels, stride, *, bn: bool, kind="B") -> Shortcut:
    """A 1x1-convolution shortcut, with or without BN."""
    cls = Projection if bn else BareProjection
    return cls(in_channels, out_channels, stride, kind=kind)


# ---- He et al. 2016 Table 1 (their Fig. 2): shortcuts on units that keep the shape ---------

class ConstantScaling(Shortcut):
    """Fig. 2(b): h = s x, and the branch weighted by b: y = s x + b F (Table 1: s = 0.5 with
    b = 1, and s = b = 0.5)."""

    def __init__(self, shortcut_scale: float, branch_scale: float = 1.0):
        super().__init__()
        self.shortcut_scale, self.branch_scale = float(shortcut_scale), float(branch_scale)
        self.kind = f"scale_{shortcut_scale:g}_{branch_scale:g}"
        self.formula = f"h = {shortcut_scale:g} x"
        self.branch_formula = "F" if branch_scale == 1 else f"{branch_scale:g} F"

    def forward(self, x):
        return self.shortcut_scale * x

    def mix(self, x):
        return self(x), None if self.branch_scale == 1 else self.branch_scale

    def reference(self, x):
        return self.shortcut_scale * x

    def extra_repr(self):
        return f"shortcut_scale={self.shortcut_scale:g}, branch_scale={self.branch_scale:g}"


class Gating(Shortcut):
    """Fig. 2(c), (d): a gate g(x) = sigmoid(W_g x + b_g), W_g a 1x1 convolution with a bias
    from ``channels`` to ``channels`` (an element-wise gate, as a highway network's; counted
    in the net's parameters: channels^2 + channels), its bias initialised to ``bias`` and its
    weight as every convolution's (He fan-out); h = (1 - g(x)) x.

    ``exclusive=True`` (exclusive gating, 2(c)): the branch is weighted by g(x),
    y = (1 - g) x + g F. ``exclusive=False`` (shortcut-only gating, 2(d)): F is added as it is.
    A negative bias starts the gate near 0, the shortcut near the identity (1 - g ~ 1).
    """

    def __init__(self, channels: int, bias: float, exclusive: bool):
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1, bias=True)
        nn.init.constant_(self.gate.bias, bias)
        self.exclusive, self.bias_init = exclusive, float(bias)
        self.kind = f"{'exclusive' if exclusive else 'shortcut'}_gate_{bias:g}"
        self.formula = "h = (1 - g(x)) x, g(x) = sigmoid(W_g x + b_g)"
        self.branch_formula = "g(x) F" if exclusive else "F"

    def mix(self, x):
        g = torch.sigmoid(self.gate(x))
        return (1 - g) * x, g if self.exclusive else None

    def forward(self, x):
        return self.mix(x)[0]

    def reference(self, x):
        g = torch.sigmoid(_conv1x1_reference(self.gate, x))
        return (1 - g) * x

    def extra_repr(self):
        return f"exclusive={self.exclusive}, bias_init={self.bias_init:g}"


class DropoutShortcut(Shortcut):
    """Fig. 2(f): dropout on the identity shortcut, at ratio ``p`` (0.5 in Table 1).

    He et al. (Sec. 3.1): dropout "statistically imposes a scale of lambda with an expectation
    of 0.5 on the shortcut, and similar to constant scaling by 0.5, it impedes signal
    propagation". That holds for dropout as Srivastava et al. define it, which is what this
    is: in training h = m x, m a fresh Bernoulli(1 - p) mask per element, *not* rescaled by
    1/(1 - p) (so E[h] = (1 - p) x); in evaluation h = (1 - p) x, the expectation. (The
    "inverted" dropout of torch.nn.Dropout would make E[h] = x, the identity on average, and
    contradict the reason He et al. give for the failure.) The mask of the last forward is
    kept (``mask``) so that ``reference`` can state h in training.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout ratio must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.kind = f"dropout_{p:g}"
        self.formula = f"h = m x, m ~ Bernoulli({1 - p:g}) (training); h = {1 - p:g} x (evaluation)"
        self.mask = None

    def forward(self, x):
        if not self.training:
            return (1 - self.p) * x
        self.mask = torch.empty_like(x).bernoulli_(1 - self.p)
        return self.mask * x

    def reference(self, x):
        if not self.training:
            return (1 - self.p) * x
        if self.mask is None or self.mask.shape != x.shape:
            raise ValueError("a dropout shortcut's reference in training needs the mask of a "
                             "forward on the same input")
        return self.mask.to(x.dtype) * x

    def extra_repr(self):
        return f"p={self.p:g}"


# ---- after-addition functions (also a unit's shared pre-activation) -----------------------

class Activation(nn.Module):
    """Base of the functions a unit applies after the addition (f) or, shared by both paths,
    before them: ``kind``, ``formula``, ``reference(y)``."""
    kind = "identity"
    formula = "f(y) = y"

    def reference(self, y):
        raise NotImplementedError


class ReLUAfter(Activation, nn.ReLU):
    """f(y) = max(y, 0): the original unit (V1)."""
    kind = "relu"
    formula = "f(y) = max(y, 0)"

    def reference(self, y):
        return torch.relu(y)


class IdentityAfter(Activation, nn.Identity):
    """f(y) = y: the pre-activation units (V2) and relu_before_add."""

    def reference(self, y):
        return y


class BNReLUAfter(Activation, nn.Sequential):
    """f(y) = ReLU(BN(y)) (He et al. 2016 Fig. 4(b), and a pre-activation unit's shared
    BN-ReLU): a Sequential, so its parameters keep the names ``after.0.*``."""
    kind = "bn_relu"
    formula = "f(y) = max(BN(y), 0)"

    def __init__(self, channels):
        nn.Sequential.__init__(self, nn.BatchNorm2d(channels), nn.ReLU())

    def reference(self, y):
        return torch.relu(batch_norm_reference(self[0], y))


AFTERS = {"relu": ReLUAfter, "identity": IdentityAfter, "bn_relu": BNReLUAfter}


def make_after(name: str, channels: int) -> Activation:
    """The after-addition function called ``name`` (one of ``AFTERS``)."""
    if name not in AFTERS:
        raise ValueError(f"unknown after-addition function {name!r}; valid: {', '.join(AFTERS)}")
    return BNReLUAfter(channels) if name == "bn_relu" else AFTERS[name]()


# ---- the named variants: what a net's ``shortcut_variant`` (a sweep cell's factor) builds ----

class Variant:
    """A named change to every unit of a net (and maybe its final activation).

    ``same_shape(channels, unit_kind) -> Shortcut`` is the shortcut of a unit whose input has
    the unit's shape (None: the identity); a unit that changes the shape keeps its option A/B
    shortcut, as He et al. 2016 Table 1 does (a gate or a scale needs x in the unit's shape).
    ``after``: every unit's after-addition function (None: the unit kind's); ``final_bn_relu``:
    a BN-ReLU before pooling (None: the unit kind's); ``unit_kinds``: where it makes sense.
    """

    def __init__(self, name, doc, same_shape=None, after=None, final_bn_relu=None,
                 unit_kinds=("original", "full_preact")):
        self.name, self.doc, self.same_shape = name, doc, same_shape
        self.after, self.final_bn_relu, self.unit_kinds = after, final_bn_relu, unit_kinds

    def shortcut(self, channels: int, unit_kind: str) -> Shortcut:
        return Identity() if self.same_shape is None else self.same_shape(channels, unit_kind)

    def __repr__(self):
        return f"Variant({self.name!r})"


def _conv_every_unit(channels, unit_kind):
    # the unit's own projection convention: conv1x1+BN after-activation, bare conv pre-activation
    return projection(channels, channels, 1, bn=unit_kind not in ("relu_only_preact", "full_preact"),
                      kind="conv1x1")


VARIANTS = {v.name: v for v in (
    Variant("identity", "the unit as built (He et al.'s 'original')"),
    Variant("scale_0.5_1", "constant scaling: h = 0.5 x, F unscaled",
            lambda c, k: ConstantScaling(0.5, 1.0)),
    Variant("scale_0.5_0.5", "constant scaling: h = 0.5 x, 0.5 F",
            lambda c, k: ConstantScaling(0.5, 0.5)),
    Variant("exclusive_gate_0", "exclusive gating, gate bias 0", lambda c, k: Gating(c, 0.0, True)),
    Variant("exclusive_gate_-6", "exclusive gating, gate bias -6", lambda c, k: Gating(c, -6.0, True)),
    Variant("exclusive_gate_-7", "exclusive gating, gate bias -7", lambda c, k: Gating(c, -7.0, True)),
    Variant("shortcut_gate_0", "shortcut-only gating, gate bias 0", lambda c, k: Gating(c, 0.0, False)),
    Variant("shortcut_gate_-6", "shortcut-only gating, gate bias -6",
            lambda c, k: Gating(c, -6.0, False)),
    Variant("conv1x1", "a 1x1 convolution shortcut on every unit", _conv_every_unit),
    Variant("dropout_0.5", "dropout (ratio 0.5) on the shortcut", lambda c, k: DropoutShortcut(0.5)),
    # the interventions of issue 36 on V1's after-addition ReLU and its logit scale
    Variant("no_after_relu", "V1 without its after-addition ReLU (f = identity; nothing else "
            "changed -- not relu_before_add)", after="identity", unit_kinds=("original",)),
    Variant("final_bn_relu", "V1 with a BN-ReLU before pooling (only the net's final changes)",
            final_bn_relu=True, unit_kinds=("original",)),
)}


def variant(name: str, unit_kind: str) -> Variant:
    """The variant called ``name``, checked against the unit kind (ValueError naming the valid)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown shortcut variant {name!r}; valid: {', '.join(VARIANTS)}")
    found = VARIANTS[name]
    if unit_kind not in found.unit_kinds:
        raise ValueError(f"shortcut variant {name!r} is for unit kinds {', '.join(found.unit_kinds)}, "
                         f"not {unit_kind!r}")
    return found


# He et al. 2016, Table 1: ResNet-110 on CIFAR-10, test error (%) of the original unit with
# each shortcut; None where they report "fail" (the error stays high). Beside the variants so
# that an experiment and the report read the same column.
HE2016_TABLE1 = (
    # variant, case in their words, on the shortcut, on F, test error %
    ("identity", "original", "1", "1", 6.61),
    ("scale_0.5_1", "constant scaling", "0.5", "1", None),
    ("scale_0.5_0.5", "constant scaling", "0.5", "0.5", 12.35),
    ("exclusive_gate_0", "exclusive gating (init b_g = 0)", "1 - g(x)", "g(x)", None),
    ("exclusive_gate_-6", "exclusive gating (init b_g = -6)", "1 - g(x)", "g(x)", 8.70),
    ("exclusive_gate_-7", "exclusive gating (init b_g = -7)", "1 - g(x)", "g(x)", 9.81),
    ("shortcut_gate_0", "shortcut-only gating (init b_g = 0)", "1 - g(x)", "1", 12.86),
    ("shortcut_gate_-6", "shortcut-only gating (init b_g = -6)", "1 - g(x)", "1", 6.91),
    ("conv1x1", "1x1 conv shortcut", "1x1 conv", "1", 12.22),
    ("dropout_0.5", "dropout shortcut", "dropout 0.5", "1", None),
)
HE2016_TABLE1_COLUMNS = ("variant", "case", "on_shortcut", "on_F", "he_error")
