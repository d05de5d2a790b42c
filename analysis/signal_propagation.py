"""Claims C1, C2 and C4 at initialisation: the unit formulas, and how signals travel.

The experiment of ``experiments/signal_propagation.py``. For every dataset (Gaussian N(0, 1)
inputs and real images), depth, version (V1 = original, V2 = full pre-activation) and seed
it builds the net, feeds it one batch in train mode (BN on batch statistics, as training
sees it) and back-propagates the cross-entropy once, with

* a ``SignalProbe`` on every tap (``input, shortcut, branch, sum, output``), forward and
  backward: the signal-propagation plot (SPP) of Brock et al. 2021 and its backward twin;
* a ``probes.FormulaCheck``, which reads every unit's five taps and compares the unit's output
  with the paper's formula evaluated in fp64 from the unit's own tensors (C1):
  ``out = f(x + F(x))`` for an identity shortcut (V1: f = ReLU; V2: f = identity, i.e.
  ``x_{l+1} = x_l + F(x_l)``), ``out = f(h + F)`` where the shortcut is a projection or
  zero-padding; and the ``sum`` tap against ``h + F``. An error is the largest absolute
  difference relative to the reference's root mean square. As a contrast it also scores
  the taps against the *other* version's f, which must fail.

Tables (``probe.csv.gz``: the probe rows; ``units.csv.gz``: one row per unit and net with
the formula errors and the analytic variance increment; ``linear_fits.csv``; ``gaps.csv``)
and claims rows -- none of them primary: the primary tests of C2 and C4 are at 1001 layers in
``analysis.early_training``, on the nets it trains; here the same quantities at init over
every depth and both input kinds are secondary rows, and C1 is a mechanism check:

C1   (mechanism) per version and depth: the per-net maximum formula error is equivalent to
     0 within ``TOLERANCE`` (one-sample TOST over nets = seeds x datasets).
C2   V1's after-addition ReLU at init, He et al.'s "more frequent at 1000 layers": the
     deepest net against the next shallower one of the same block (equal width, Welch).
C4   per dataset and depth, at initialisation: how much the
     loss's sensitivity to a *relative* perturbation of a unit's input, rho_l =
     ||dL/dx_l|| * ||x_l||, differs between the first unit's input and the last unit's
     output: |log10(rho_first / rho_last)|, V1 − V2 > 0 (paired by seed). Zero means the
     signal neither fades nor blows up between the two ends of the net. rho is used instead
     of the raw gradient because BN makes a unit's gradient scale as 1 / (the scale of its
     input): in a net whose activations grow, the raw gradient grows towards the input
     although nothing is lost on the way. The raw ratio |log10(||g_first|| / ||g_last||)|,
     He et al.'s own quantity (their eq. 5), is a second row per depth.
C4   the analytic law, V2: with BN-ReLU before every weight layer each V2
     unit adds an uncorrelated branch output of fixed channel variance delta to the shortcut,
     so the channel variance at the k-th unit's output grows linearly in k within a stage,
     and restarts where a dimension-changing unit halves (zero-padding, option A) or
     replaces (projection, option B) the shortcut. delta follows from He init
     (w ~ N(0, 2 / (K^2 C_out))) and a ReLU of a standardised input (E a^2 = 1/2,
     E a = 1/sqrt(2 pi)) through the branch's last convolution, zero padding included:

         delta = 2 C_in / (K^2 C_out) * [ 1/2 * S1 - 1/(2 pi) * S2 ],
         S1 = sum_k n_k / P,  S2 = sum_k (n_k / P)^2,

     n_k = the number of the P output positions at which kernel tap k falls inside the
     image (for a 1x1 convolution S1 = S2 = 1, delta = (C_in / C_out)(1 − 1/pi)). The row
     fits ch_var(out_k) − ch_var(out_0) against k·delta over every stage and seed (slope 1 =
     the law) and tests slope = 1 within ``LAW_MARGIN`` (equivalence); per-stage fits of
     ch_var on k (slope, intercept, R²) go to ``linear_fits.csv``.
C4   V1's law (derived *after* the first quick run showed V1 growing
     linearly too, at about a third of a unit per unit — so its agreement explains the data
     rather than testing a prediction made in advance). V1's branch ends in BN (gamma = 1),
     so it adds a zero-mean, unit-variance increment, and the ReLU after the addition maps
     every negative sum to 0: each element performs a random walk reflected at 0 (a Lindley
     process, x_{k+1} = max(x_k + F_k, 0)), which after k steps is distributed as |N(0, k)|:
     channel variance k (1 − 2/pi) = 0.363 k, squared channel mean 2k/pi. So delta_V1 =
     1 − 2/pi, independent of the geometry. It departs where the increments are not
     independent of the walk (narrow nets, small maps: the later stages of the width-4
     1001-layer net) and restarts where a shortcut resets the walk.

Depth and block are not confounded: the basic series (zero-padding shortcuts) and the
bottleneck series (projections) each hold one width (``PRESETS``). ``draw_figures(run_dir)``
redraws every figure (``c1_*``, ``c4_*``) from the CSVs alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from probes import FormulaCheck, SignalProbe
from resnet_lab import plotting
from resnet_lab.runs import settings
from resnet_lab.engine.data import Batches, load_dataset
from resnet_lab.networks.families import resolve_cifar_block
from resnet_lab.io.folders import read_table
from resnet_lab.runs.sweep import Cell, CellResult, build
from resnet_lab.networks.units import VERSION_UNIT_KINDS, reference_formula

from . import claims as C
from .cells import dataset as load_cached
from .figures import band, figure_inputs, gap_axis
from .measures import transmission
from .tables import select, stage_boundaries, version_label

NAME = EXPERIMENT = "signal_propagation"
PRESETS = {
    # 2 CPU cores, nothing downloaded: 5 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 29, 56, 65, 110, 164, 326, 1001],
                  widths={"basic": 16, "bottleneck": 4}, seeds=[0, 1, 2, 3, 4],
                  inputs=["gaussian", "real"], dataset="digits", batch_size=128),
    # the paper's widths on CIFAR-10 32x32 (and Gaussian images of that shape); a GPU.
    "paper": dict(depths=[20, 29, 56, 65, 110, 164, 326, 1001],
                  widths={"basic": 16, "bottleneck": 16}, seeds=[0, 1, 2, 3, 4],
                  inputs=["gaussian", "real"], dataset="cifar10", batch_size=128),
    # seconds: what the tests run (two basic and two bottleneck depths).
    "smoke": dict(depths=[20, 29, 32, 47], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2],
                  inputs=["gaussian", "real"], dataset="digits", batch_size=16),
}
OPTIONS = ("depths", "seeds", "width", "inputs", "dataset", "batch_size")
KINDS = tuple(VERSION_UNIT_KINDS.values())
TOLERANCE = 1e-5         # C1: largest relative error that still counts as "the formula holds"
LAW_MARGIN = 0.10        # C4 law: fitted slope / predicted slope within 1 ± 0.10
RELU_SQ = 0.5                         # E[ReLU(z)^2], z ~ N(0, 1)
RELU_MEAN_SQ = 1 / (2 * math.pi)      # E[ReLU(z)]^2
V1_INCREMENT = 1 - 2 / math.pi        # Var|N(0, 1)|: the reflected random walk's variance per step
PROBE_STATS = ("rms", "norm", "mean", "ch_var", "ch_sq_mean", "frac_neg", "frac_zero",
               "shortcut_cut", "grad_cut")
NET = ["dataset", "depth", "version", "seed"]   # what identifies a net here (the input kind too)
# The probe rows the figures and claims use (what the committed reference keeps).
KEEP_ROWS = [("input", "forward", ("norm",)),
             ("input", "backward", ("norm", "rms")),
             ("output", "forward", ("norm", "ch_var", "ch_sq_mean")),
             ("output", "backward", ("norm",))]
FILES = ("config.json", "claims.csv", "cells.csv", "linear_fits.csv", "gaps.csv")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/signal_propagation.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3)
    s["inputs"] = list(dict.fromkeys(s["inputs"]))
    s["datasets"] = [s["dataset"] if i == "real" else "gaussian" for i in s["inputs"]]
    return s


def cells(s) -> list:
    return [Cell(depth, kind, seed, s["widths"][depth], (("dataset", dataset),))
            for dataset in s["datasets"] for depth in s["depths"] for seed in s["seeds"]
            for kind in KINDS]


def context(s) -> dict:
    return dict(dataset=s["dataset"], data_dir=s["data_dir"], batch_size=s["batch_size"],
                device=s["device"])


def describe(s) -> str:
    return (f"signal_propagation ({s['preset']}): {len(cells(s))} nets (V1, V2) at init, inputs "
            f"{', '.join(s['datasets'])}, depths {s['depths']} "
            f"({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, batch "
            f"{s['batch_size']}, on {s['device']} ({s['workers']} processes x {s['threads']} threads)")


# --------------------------------------------------------------------------- C1 check
def other_f(unit, total: torch.Tensor) -> torch.Tensor:
    """The other version's after-addition function: identity for V1, ReLU for V2."""
    return total if unit.unit_kind == "original" else torch.relu(total)


def predicted_increment(unit, height: int, width: int) -> float:
    """delta of the module docstring: the channel variance a unit adds at init. V2 (a branch
    whose last layer is a convolution fed by BN-ReLU): the geometry formula; V1 (BN-ended
    branch, ReLU after the addition): the reflected random walk's 1 − 2/pi."""
    if unit.unit_kind == "original":
        return V1_INCREMENT
    convs = [m for m in unit.branch.modules() if isinstance(m, nn.Conv2d)]
    conv = convs[-1]
    k_h, k_w = conv.kernel_size
    p_h, p_w = conv.padding
    c_in, c_out = conv.in_channels, conv.out_channels
    var_w = 2.0 / (k_h * k_w * c_out)          # He fan-out init (resnet_lab.networks.families)

    def counts(size, k, p):                    # valid positions per kernel offset, stride 1
        return np.array([max(0, size - abs(o)) for o in range(-p, k - p)], dtype=float)

    n_h, n_w = counts(height, k_h, p_h), counts(width, k_w, p_w)
    positions = height * width
    s1 = n_h.sum() * n_w.sum() / positions
    s2 = (n_h ** 2).sum() * (n_w ** 2).sum() / positions ** 2
    return var_w * c_in * (RELU_SQ * s1 - RELU_MEAN_SQ * s2)


# --------------------------------------------------------------------------- measuring
def measure_net(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """One forward/backward in train mode with the probe and the formula check.

    Returns (probe rows of step 1, one row per unit: formula errors, delta)."""
    net.train()
    probe = SignalProbe(net, stats=PROBE_STATS)
    check = FormulaCheck(net, reference_formula, contrast=other_f)
    with probe, check:
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        probe.step()
    net.zero_grad(set_to_none=True)
    units = pd.DataFrame(check.rows).rename(columns={"error_contrast": "error_other_f"})
    found = net.units()
    units["shortcut_kind"] = [found[u].shortcut_kind for u in units["unit"]]
    units["delta"] = [predicted_increment(found[u], h, w)
                      for u, h, w in zip(units["unit"], units["map_h"], units["map_w"])]
    return probe.collect(), units.drop(columns="identity_shortcut")


def input_batch(dataset: str, *, data, seed: int, batch_size: int):
    """The batch a seed's nets see: the seed's first training batch (no augmentation) of the
    real data, or ``batch_size`` fresh N(0, 1) images (random labels) of the same shape."""
    if dataset == "gaussian":
        g = load_dataset("gaussian", seed=seed, num_train=batch_size, num_test=1,
                         image_size=data.image_size, channels=data.in_channels,
                         num_classes=data.num_classes)
        return g.train_x, g.train_y
    idx = Batches(len(data.train_x), batch_size, seed).indices(0)
    return data.train_x[idx], data.train_y[idx]


def measure_cell(cell, state, context, report) -> CellResult:
    """A sweep cell: the net of ``cell`` at initialisation, on its seed's batch."""
    data = load_cached(context["dataset"], context["data_dir"])
    x, y = input_batch(dict(cell.factors)["dataset"], data=data, seed=cell.seed,
                       batch_size=context["batch_size"])
    device = context["device"]
    probe, units = measure_net(build(cell, data).to(device), x.to(device), y.to(device))
    report(1)
    return CellResult({"probe": probe, "units": units}, steps_done=1)


WORK = measure_cell


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, fits, gaps and claims."""
    probe, units = tables["probe"], tables["units"]
    cells_table = cells_table.merge(units.groupby(["dataset", "depth", "unit_kind", "seed"])["error"]
                                    .max().rename("max_error").reset_index(),
                                    on=["dataset", "depth", "unit_kind", "seed"], how="left")
    run.write_csv("cells.csv", cells_table)
    run.write_csv("probe.csv.gz", probe)
    run.write_csv("units.csv.gz", units)
    fits = linear_fits(law_table(probe, units))
    run.write_csv("linear_fits.csv", fits)
    rows, gaps = claims_rows(probe, units)
    run.write_csv("gaps.csv", gaps)
    C.write_claims(run.path, rows)


def results_text(run_dir) -> str:
    """What the script prints: C1's checks and the per-stage fits of the analytic laws."""
    fits = read_table(run_dir, "linear_fits", "a signal_propagation run folder")
    stage = fits[fits["span"] == "stage"][["dataset", "depth", "version", "stage", "slope",
                                           "intercept", "r2", "predicted_slope"]]
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        return C.claims_text(Path(run_dir) / C.CLAIMS_FILE, roles=("mechanism",)) + "\n" + \
            stage.to_string(index=False)


def figure_rows(probe: pd.DataFrame) -> pd.DataFrame:
    keep = pd.Series(False, index=probe.index)
    for tap, direction, stats in KEEP_ROWS:
        keep |= (probe["tap"] == tap) & (probe["direction"] == direction) & probe["stat"].isin(stats)
    cols = [c for c in probe.columns if c not in ("layer", "experiment", "unit_kind")]
    return probe.loc[keep, cols]


# --------------------------------------------------------------------------- analysis
def rho_profile(probe: pd.DataFrame, keys) -> pd.DataFrame:
    """Per unit: rho at its input relative to rho at the last unit's output (for figures)."""
    keys = list(keys) + ["step"]
    norm = probe[(probe["stat"] == "norm")]
    at = keys + ["unit", "stage"]
    g = norm[(norm["tap"] == "input") & (norm["direction"] == "backward")].set_index(at)["value"]
    x = norm[(norm["tap"] == "input") & (norm["direction"] == "forward")].set_index(at)["value"]
    rho = (g * x).rename("rho").reset_index()
    last = norm[norm["tap"] == "output"]
    last = last[last["unit"] == last.groupby(keys)["unit"].transform("max")]
    end = (last[last["direction"] == "backward"].set_index(keys)["value"]
           * last[last["direction"] == "forward"].set_index(keys)["value"]).rename("rho_last")
    rho = rho.merge(end.reset_index(), on=keys)
    rho["relative"] = rho["rho"] / rho["rho_last"]
    gl = norm[(norm["direction"] == "backward")]
    glast = gl[(gl["tap"] == "output") & (gl["unit"] == gl.groupby(keys)["unit"].transform("max"))]
    glast = glast.set_index(keys)["value"].rename("g_last").reset_index()
    rho = rho.merge(glast, on=keys).merge(g.rename("g").reset_index(), on=at)
    rho["grad_relative"] = rho["g"] / rho["g_last"]
    return rho


def _output_var(probe: pd.DataFrame) -> pd.DataFrame:
    rows = probe[(probe["tap"] == "output") & (probe["direction"] == "forward")
                 & (probe["stat"] == "ch_var")]
    return rows[NET + ["unit", "stage", "index", "value"]]


def law_table(probe: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    """ch_var at each unit's output with the predicted increment delta and the per-stage
    excess over the stage's first unit (``rise``) against ``k·delta`` (``predicted_rise``)."""
    var = _output_var(probe).rename(columns={"value": "ch_var"})
    geo = units[NET + ["unit", "delta"]]
    var = var.merge(geo, on=NET + ["unit"], how="left")
    group = NET + ["stage"]
    var = var.sort_values(group + ["index"], kind="stable")
    first = var.groupby(group)["ch_var"].transform("first")
    # delta of the units after the first (they share one shape within a stage)
    step_delta = var.groupby(group)["delta"].transform(lambda d: d.iloc[1:].mean() if len(d) > 1 else d.iloc[0])
    var["rise"] = var["ch_var"] - first
    var["predicted_rise"] = var["index"] * step_delta
    var["stage_delta"] = step_delta
    return var.reset_index(drop=True)


def linear_fits(law: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, depth, version and stage (pooled over seeds): ch_var of the k-th unit's
    output fitted on k — slope, intercept, R² — over the whole stage and over its second
    half, next to the predicted slope (V2: delta; V1: 1 − 2/pi)."""
    rows = []
    for (dataset, depth, version, stage), part in law.groupby(["dataset", "depth", "version", "stage"]):
        n_units = part["index"].max() + 1
        for span, sel in (("stage", part), ("second half", part[part["index"] >= n_units // 2])):
            if sel["index"].nunique() < 3:
                continue
            fit, intercept, r2 = C.fit_line(sel["index"], sel["ch_var"], direction="greater")
            rows.append({"dataset": dataset, "depth": depth, "version": version, "stage": stage,
                         "span": span, "units": int(n_units), "n": fit.n, "slope": fit.effect,
                         "slope_ci_low": fit.ci_low, "slope_ci_high": fit.ci_high,
                         "intercept": intercept, "r2": r2,
                         "predicted_slope": float(sel["stage_delta"].iloc[0]),
                         "slope_over_predicted": fit.effect / float(sel["stage_delta"].iloc[0])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims
def claims_rows(probe: pd.DataFrame, units: pd.DataFrame):
    """The rows of the module docstring; returns (rows, gaps table)."""
    rows = c1_rows(units)
    gaps = transmission(probe, NET)
    gaps = gaps.merge(units.groupby(NET)["width"].first().reset_index(), on=NET, how="left")
    gaps["block"] = [resolve_cifar_block(int(d)) for d in gaps["depth"]]
    for dataset, part in gaps.groupby("dataset"):
        depths = sorted(part["depth"].unique())
        for column, text in (("abs_log_rho_ratio", "|log10 rho_first / rho_last| at init (rho = "
                              "||dL/dx|| ||x||), V1 − V2"),
                             ("abs_log_grad_ratio", "|log10 ||g_first|| / ||g_last||| at init "
                              "(raw gradient), V1 − V2")):
            rows += C.paired_rows(part, column, claim="C4", role="secondary", experiment=NAME,
                                  measure=text, depths=depths, dataset=dataset)
    rows += c2_rows(probe) + law_rows(law_table(probe, units))
    return rows, gaps


def c1_rows(units: pd.DataFrame) -> list[dict]:
    """C1, a mechanism check: per version and depth, the largest formula error of each net
    equivalent to 0 within ``TOLERANCE`` (nets = seeds x input kinds)."""
    rows = []
    per_net = units.groupby(NET)[["error", "error_sum", "error_other_f"]].max().reset_index()
    for (depth, version), part in per_net.groupby(["depth", "version"]):
        result = C.one_sample(part["error"], direction="equivalent", margin=TOLERANCE)
        f = "ReLU" if version == 1 else "identity"
        rows.append(C.claim_row(
            "C1", "mechanism", NAME, f"V{version}: largest relative error of a unit's output "
            f"against out = {f}(x + F(x)) (fp64; projection units: h + F), per net", int(depth),
            result, version=int(version), dataset="+".join(sorted(part["dataset"].unique())),
            margin_reason="float32 rounding over a unit's few operations stays below 1e-5",
            note=f"sum tap vs h + F: max {part['error_sum'].max():.2g}; against the other "
                 f"version's f: min {part['error_other_f'].min():.2g}"))
    return rows


def c2_rows(probe: pd.DataFrame) -> list[dict]:
    """C2 at initialisation, V1: He et al.'s "more frequent at 1000 layers" -- the deepest net
    against the next shallower one of the same block (equal width), per input kind."""
    cut = probe[(probe["tap"] == "sum") & (probe["version"] == 1)
                & probe["stat"].isin(["grad_cut", "shortcut_cut"])]
    per_net = cut.groupby(NET + ["stat"])["value"].mean().reset_index()
    per_net["block"] = [resolve_cifar_block(int(d)) for d in per_net["depth"]]
    rows = []
    for (dataset, block, stat), part in per_net.groupby(["dataset", "block", "stat"]):
        depths = sorted(part["depth"].unique())
        if len(depths) < 2:
            continue
        deep, ref = depths[-1], depths[-2]
        result = C.independent_difference(part.loc[part["depth"] == deep, "value"],
                                          part.loc[part["depth"] == ref, "value"])
        rows.append(C.claim_row("C2", "secondary", NAME, f"V1 {stat} at init (mean over units): "
                                f"{deep} − {ref} layers ({block} units, equal width)", int(deep),
                                result, dataset=dataset))
    return rows


def law_rows(law: pd.DataFrame) -> list[dict]:
    """C4's analytic laws (secondary): the within-stage rise of ch_var against k·delta."""
    rows = []
    for (version, dataset, depth), part in law.groupby(["version", "dataset", "depth"]):
        part = part[part["index"] > 0]
        fit, intercept, r2 = C.fit_line(part["predicted_rise"], part["rise"], null=1.0,
                                        direction="equivalent", margin=LAW_MARGIN)
        text = ("V2: within-stage rise of ch_var at unit outputs against the analytic law "
                "k·delta" if version == 2 else
                "V1: within-stage rise of ch_var at unit outputs against the reflected random "
                "walk k·(1 − 2/pi) (post hoc)")
        rows.append(C.claim_row(
            "C4", "secondary", NAME, f"{text} (effect = fitted slope − 1; 0 = the law)", int(depth),
            fit, dataset=dataset, version=int(version), intercept=intercept, r2=r2,
            note=f"intercept {intercept:.3g}, R² {r2:.3f}"))
    return rows


# --------------------------------------------------------------------------- figures
def _mean_profile(df, by, value="value"):
    return df.groupby(by)[value].agg(["mean", "min", "max"]).reset_index()


def figure_formula(units: pd.DataFrame, folder, name="c1_formula_check"):
    """Every unit's formula error (and against the other version's f) vs relative position."""
    units = version_label(units)
    units["position"] = units["unit"] / units.groupby(NET)["unit"].transform("max").clip(lower=1)
    fig, axes = plotting.new_figure("two", 2.1, 1, 2, sharey=True)
    floor = 1e-17
    for ax, version in zip(axes[0], ("V1", "V2")):
        part = units[units["version"] == version]
        ax.scatter(part["position"], part["error"].clip(lower=floor), s=2, alpha=0.4,
                   color=plotting.VERSION_COLORS[version], label="against its own formula",
                   rasterized=True)
        ax.scatter(part["position"], part["error_other_f"].clip(lower=floor), s=2, alpha=0.3,
                   color="0.6", label="against the other version's f", rasterized=True)
        ax.axhline(TOLERANCE, color="k", lw=0.6, ls="--", label=f"tolerance {TOLERANCE:g}")
        ax.set_yscale("log")
        f = "ReLU" if version == "V1" else "identity"
        ax.set_title(f"{plotting.VERSION_LABELS[version]}: out = {f}(x + F(x))")
        ax.set_xlabel("relative unit position")
    axes[0][0].set_ylabel("largest relative error")
    axes[0][1].legend(loc="center right", markerscale=3)
    return plotting.save_figure(fig, folder, name)


def figure_spp(probe: pd.DataFrame, units: pd.DataFrame, folder, dataset, name=None):
    """Signal propagation at init (Brock et al. 2021) in the deepest net of each block:
    channel variance at every unit's output (with the analytic laws, dotted) and the gradient
    rms at every unit's input; V1 vs V2 (mean over seeds, band: range)."""
    name = name or f"c4_spp_{dataset}"
    probe = probe[probe["dataset"] == dataset].copy()
    probe["block"] = [resolve_cifar_block(int(d)) for d in probe["depth"]]
    deepest = sorted(probe.groupby("block")["depth"].max().tolist())
    law = law_table(probe, units[units["dataset"] == dataset])
    panels = [("output", "forward", "ch_var", "channel variance,\nunit output"),
              ("input", "backward", "rms", "gradient rms,\nunit input")]
    fig, axes = plotting.new_figure("two", 3.2, len(panels), len(deepest))
    for j, depth in enumerate(deepest):
        at = probe[probe["depth"] == depth]
        for i, (tap, direction, stat, ylabel) in enumerate(panels):
            ax = axes[i][j]
            rows = version_label(select(at, tap=tap, direction=direction, stat=stat))
            for version in ("V1", "V2"):
                prof = _mean_profile(rows[rows["version"] == version], ["unit"])
                band(ax, prof["unit"], prof["mean"], prof["min"], prof["max"], version)
            if stat == "ch_var":
                _overlay_law(ax, law[law["depth"] == depth])
            plotting.mark_stage_boundaries(ax, stage_boundaries(at))
            ax.set_yscale("log")
            ax.set_title(f"{depth} layers, width {int(at['width'].iloc[0])}" if i == 0 else "")
            ax.set_ylabel(ylabel if j == 0 else "")
            ax.set_xlabel("unit index" if i == len(panels) - 1 else "")
    plotting.legend_above(fig, axes[0][0])
    return plotting.save_figure(fig, folder, name)


def _overlay_law(ax, law):
    """Each version's analytic law, anchored at its stage's first unit (dotted)."""
    for version in (1, 2):
        for i, (_, part) in enumerate(law[law["version"] == version].groupby("stage")):
            prof = part.groupby("unit")[["ch_var", "predicted_rise"]].mean()
            start = part[part["index"] == 0]["ch_var"].mean()
            ax.plot(prof.index.to_numpy(), start + prof["predicted_rise"].to_numpy(), color="k",
                    lw=0.6, ls=":", label="analytic law" if i == 0 and version == 2 else None)


def figure_gap(claims: pd.DataFrame, folder, name="c4_gap_vs_depth"):
    """C4 at init: V1 − V2 of |log10 rho_first / rho_last| with 95% CIs against depth, per
    input kind and block."""
    c4 = claims[(claims["claim"] == "C4") & claims["measure"].str.startswith("|log10 rho")]
    datasets = sorted(c4["dataset"].unique())
    fig, axes = plotting.new_figure("two", 2.2, 1, len(datasets), sharey=True)
    for ax, dataset in zip(axes[0], datasets):
        part = c4[c4["dataset"] == dataset]
        part = part.assign(block=[resolve_cifar_block(int(d)) for d in part["depth"]])
        for k, (block, rows) in enumerate(part.groupby("block")):
            gap_axis(ax, rows, label=f"{block} units", color=BLOCK_COLORS[block], offset=1 + 0.03 * k)
        ax.set_title(f"{dataset} inputs")
    axes[0][0].set_ylabel("V1 − V2 of |log10 rho_first / rho_last|\n(> 0: the signal travels better in V2)")
    axes[0][-1].legend(loc="upper left")
    return plotting.save_figure(fig, folder, name)


BLOCK_COLORS = {"basic": "0.55", "bottleneck": "0.05"}


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    probe, units, claims, folder = figure_inputs(run_dir, NAME, "probe", "units", "claims")
    written = figure_formula(units, folder)
    for dataset in sorted(probe["dataset"].unique()):
        written += figure_spp(probe, units, folder, dataset)
    return written + figure_gap(claims, folder)


def published_tables(run_dir) -> dict:
    """The probe rows the figures and claims use (``KEEP_ROWS``) and the unit rows."""
    what = "a signal_propagation run folder"
    return {"probe.csv.gz": figure_rows(read_table(run_dir, "probe", what)),
            "units.csv.gz": read_table(run_dir, "units", what)}
