"""Claims C5 and C6: V1 and V2 trained to fit, below and at 164 layers (He et al. 2016, Fig. 6).

``experiments/full_training.py`` trains V1 (original unit) and V2 (full pre-activation) with
the paper's whole schedule -- a fixed warm-up at lr 0.01 shared by both nets of a pair, the
main lr, /10 at 1/2 and 3/4 of the run -- at basic-unit depths below 164 and the 164-layer
bottleneck net at the same width, from the same seeds; evaluates every net on its whole train
and test split at the end (eval mode), and records the channel statistics of every weight
layer's input at evenly spaced steps (``SignalProbe(weight_inputs=True)``).

Per net (``summary.csv``): ``err_early`` and ``err_late`` (the mean training error, train mode,
over the first tenth of the run after the switch to the main lr and over the tenth before the
first division), ``warmup_error`` (over the warm-up's last epoch), ``max_loss_after`` (the
largest loss in the epoch after the switch: a blow-up), the final train and test loss and
error (eval mode), the generalization gaps ``gap_error`` and ``gap_loss`` (test − train),
``train_loss_final`` (train mode, last 10% of the iterations, as He et al. Fig. 6 plots it),
``fits`` (eval-mode training error at most ``controls.FIT_ERROR``) and the input ``distance``
of the weight layers after each addition from (0, 1) at init and at the last probed step:

  ``mean_rms``  = sqrt(mean_c m_c^2)       = sqrt(in_mean_mean^2 + in_mean_var)
  ``var_dev``   = sqrt(mean_c (v_c - 1)^2) = sqrt((in_var_mean - 1)^2 + in_var_var)
  ``distance``  = sqrt(mean_rms^2 + var_dev^2)

(m_c, v_c: the channel means and variances of a layer's input). A layer right after BN-ReLU
sees ReLU of a standardised signal: channel mean 1/sqrt(2 pi) = 0.40, variance 0.34 (distance
0.77); "normalized" in the article means that, not exactly (0, 1).

The positive controls (``CONTROLS``, He et al. 2015/2016's baselines in this very setting)
come first; the primary tests (``PRIMARY``, declared here before any data; Holm within a
claim) need them:

C5  at 56 and 110 layers: ``err_early`` and ``err_late`` V1 − V2 < 5 points (non-inferiority:
    V1 not slower than V2 by more than C3's margin). 20 layers (both versions at the floor)
    and 164 are secondary rows.
C6  at 110 and 164 layers, where He et al. report it: ``gap_error`` V1 − V2 > 0 (V2's Fig. 6
    pattern: higher training loss, lower test error -- a smaller generalization gap);
    power-checked against He et al.'s test-error differences (0.24 and 0.47 points).
Mechanism check (C6, true by construction): V1's weight layers after an addition see inputs
further from normalized than V2's. Secondary: the final test error and the training loss
(He et al. Fig. 6: V2 higher), the gap in loss.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from probes import WEIGHT_INPUT_STATS
from resnet_lab import plotting
from resnet_lab.runs import settings
from resnet_lab.io.folders import read_table
from resnet_lab.runs.sweep import ID_COLUMNS, Cell

from . import claims as C
from . import controls as K
from . import probing
from .cells import train_cell, train_context
from .figures import error_gap_figure, figure_inputs, seeds_dots, training_error_figure
from .measures import NET, first_division, per_net_curves, warmup_length
from .tables import spread, write_raw

NAME = "full_training"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits 8x8 at width 16, 5 seeds, 500 iterations (~45
    # epochs): 50 at lr 0.01, then 0.05 -- the largest of 0.1, 0.05, 0.02 at which V1-56 fits
    # digits (the pilot table: docs/EXPERIMENTS.md) -- /10 at 250 and 375.
    "quick": dict(depths=[20, 56, 110, 164], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=500, warmup_steps=50, probe_steps=5, lr=0.05,
                  batch_size=128, dataset="digits"),
    # He et al. 2016: CIFAR-10, width 16, 64k iterations, 400 of them at 0.01; a GPU.
    "paper": dict(depths=[20, 56, 110, 164], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=64_000, warmup_steps=400, probe_steps=9, lr=0.1,
                  batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 14], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2], steps=10,
                  warmup_steps=2, probe_steps=2, lr=0.1, batch_size=32, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "warmup_steps", "batch_size", probing.PROBE_STEPS, "lr",
           "dataset")
FINAL_FRACTION = 0.1         # "final train loss": the mean over the last tenth of the steps
WINDOW_FRACTION = 0.1        # err_early / err_late: a tenth of the run each
DEGRADATION_MARGIN = 0.01    # controls C, D: deeper no worse by more than 1 point
CONTROLS = {
    "W": K.Control("W", "the warm-up gets V1 started: every V1-110 net ends it below 80% "
                   "training error (mean over its last epoch)",
                   "He et al. 2015: ResNet-110 at lr 0.01 until the training error is below "
                   "80% (about 400 iterations), then 0.1"),
    "A": K.Control("A", "V1-56 fits its training set at the main lr (eval-mode training error "
                   "at most 2%, every seed)", "He et al. 2015: ResNet-56 trains at lr 0.1"),
    "B": K.Control("B", "V1-110 fits its training set after the warm-up (every seed)",
                   "He et al. 2015: ResNet-110 trains after the warm-up"),
    "C": K.Control("C", "no degradation in V1: V1-110's final training error no worse than "
                   "V1-56's by more than 1 point (mean over seeds)",
                   "He et al. 2015: ResNet-110 beats ResNet-56 (6.43 vs 6.97% test error)"),
    "D": K.Control("D", "the same for V2: V2-56 and V2-110 fit, 110 no worse than 56",
                   "He et al. 2016: pre-activation ResNet-110 trains (6.37%)"),
}
C5 = dict(direction="noninferior", margin=0.05, margin_reason="C3's margin: a gap smaller "
          "than what C3 calls a slower start is 'small'", depths=(56, 110), paper_effect=0.0,
          paper_source="He et al. train V1 and V2 at 110 layers with one recipe (final test "
          "errors 6.61 / 6.37%); the article expects no difference here",
          requires=("W", "A", "B", "C", "D"))
C6 = dict(claim="C6", measure="gap_error", text="generalization gap in error (test − train, "
          "eval mode), V1 − V2", direction="greater", margin=0.0, margin_reason="He et al.'s "
          "effects (0.24 and 0.47 points of test error) leave no room for a margin",
          requires=("A", "B", "D"), on_test_set=True)
PRIMARY = [
    C.Primary(claim="C5", measure="err_early", text="training error over the first tenth of "
              "the run at the main lr (mean of batches), V1 − V2", **C5),
    C.Primary(claim="C5", measure="err_late", text="training error over the tenth of the run "
              "before the first lr division (mean of batches), V1 − V2", **C5),
    C.Primary(depths=(110,), paper_effect=0.0024, paper_source="He et al. 2016 Table 3: "
              "ResNet-110 6.61 vs 6.37% test error (both fit CIFAR-10: the gaps differ at least "
              "as much)", **C6),
    C.Primary(depths=(164,), paper_effect=0.0047, paper_source="He et al. 2016 Fig. 6: "
              "ResNet-164 5.93 vs 5.46% test error, V2's training loss higher", **C6),
]
WEIGHT_STATS = ["in_mean_mean", "in_mean_var", "in_var_mean", "in_var_var"]
RELU_NORMAL_MEAN = 1 / math.sqrt(2 * math.pi)            # E[ReLU(z)], z ~ N(0, 1)
RELU_NORMAL_VAR = 0.5 - 1 / (2 * math.pi)                # Var[ReLU(z)]
WORK = train_cell
FILES = ("config.json", "claims.csv", "controls.csv", "summary.csv", "final.csv", "cells.csv",
         "weight_inputs.csv.gz")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/full_training.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3, min_probe_steps=2)
    settings.check_main_lr_phase(s)
    s["schedule"] = settings.paper_schedule(s)
    s["probe_every"] = probing.probe_spacing(s["steps"], s["probe_steps"])
    s["eval_every"] = max(1, s["steps"] // 10)
    return s


def windows(s) -> dict:
    """The iterations (first, last] of ``err_early`` (right after the switch to the main lr)
    and ``err_late`` (right before the first division)."""
    k, w, end = max(1, round(WINDOW_FRACTION * s["steps"])), warmup_length(s), first_division(s)
    return {"early": (w, min(w + k, end)), "late": (max(w, end - k), end)}


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in ("original", "full_preact")]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=(), stats=WEIGHT_INPUT_STATS, weight_inputs=True),
                         final_eval=True)


def describe(s) -> str:
    return (f"full_training ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"{s['steps']} iterations of batch {s['batch_size']} (lr 0.01 for "
            f"{warmup_length(s)}, then {s['lr']}, /10 at {list(s['schedule']['milestones'])}); "
            f"windows {windows(s)}; weight inputs probed every {s['probe_every']}; on "
            f"{s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, summary, controls and claims."""
    write_raw(run, data, cells_table, {"train.csv.gz": tables["train"], "final.csv": tables["final"],
                                       "probe.csv.gz": tables["probe"]})
    weight_inputs = weight_input_table(tables["probe"])
    run.write_csv("weight_inputs.csv.gz", weight_inputs)
    table = summary(tables["train"], tables["final"], weight_inputs, s,
                    num_classes=data.num_classes, epoch=len(data.train_x) // s["batch_size"])
    run.write_csv("summary.csv", table)
    controls = control_rows(table)
    K.write_controls(run.path, controls)
    C.write_claims(run.path, claims_rows(table, controls, dataset=s["dataset"],
                                         n_test=len(data.test_y)))


def results_text(run_dir) -> str:
    """What the script prints: the controls, the primary tests and the per-version means."""
    table = read_table(run_dir, "summary", "a full_training run folder")
    means = table.groupby(["depth", "version"])[["err_early", "err_late", "train_error",
                                                  "test_error", "gap_error"]].mean()
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        return (K.controls_text(run_dir) + "\n" + C.claims_text(Path(run_dir) / C.CLAIMS_FILE)
                + "\n" + means.to_string())


# --------------------------------------------------------------------------- tables
def _role(layer: str, first_branch: bool) -> str:
    if layer.startswith("stem"):
        return "stem"
    if layer.startswith("fc"):
        return "classifier"
    if ".shortcut" in layer or first_branch:
        return "unit input"          # sees the unit's input x_l, i.e. the previous sum's f(y)
    return "inside branch"


def _branch_index(layer: str) -> float:
    parts = layer.split(".")
    if "branch" in parts and parts.index("branch") + 1 < len(parts):
        return float(parts[parts.index("branch") + 1])
    return math.nan


def weight_input_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Probe rows (tap ``weight_input``) -> one row per (net, step, layer), with the four
    statistics, ``layer_pos`` (0 = the stem, in module order), ``position`` (0..1), ``role``
    and the distances of the module docstring.

    Roles: ``unit input`` — a unit's first branch convolution or its projection shortcut,
    whose input is the previous unit's output, i.e. what follows the addition;
    ``inside branch`` — the other branch convolutions; ``stem`` and ``classifier``.
    """
    rows = probe[probe["tap"] == "weight_input"]
    if rows.empty:
        raise ValueError("no weight_input rows in the probe table (SignalProbe(weight_inputs=True))")
    keys = [c for c in ID_COLUMNS if c in rows.columns] + ["step", "unit", "stage", "index", "layer"]
    # set_index + unstack, not pivot_table(dropna=False): that one builds the product of all
    # key levels (millions of rows for a 326-layer net) before dropping the empty ones.
    wide = (rows[rows["stat"].isin(WEIGHT_STATS)].set_index(keys + ["stat"])["value"]
            .unstack("stat").reset_index())
    wide.columns.name = None
    wide = wide.dropna(subset=WEIGHT_STATS)
    # Module order: the order the probe listed the layers in (named_modules order).
    first = rows.drop_duplicates(subset=[*NET, "layer"])[[*NET, "layer"]].copy()
    first["layer_pos"] = first.groupby(NET).cumcount()
    first["n_layers"] = first.groupby(NET)["layer"].transform("size")
    wide = wide.merge(first, on=[*NET, "layer"], how="left")
    wide["position"] = wide["layer_pos"] / (wide["n_layers"] - 1).clip(lower=1)
    wide["branch_k"] = [_branch_index(name) for name in wide["layer"]]
    lowest = wide.groupby([*NET, "step", "unit"])["branch_k"].transform("min")
    wide["role"] = [_role(name, k == low) for name, k, low in
                    zip(wide["layer"], wide["branch_k"], lowest)]
    wide["mean_rms"] = np.sqrt(wide["in_mean_mean"] ** 2 + wide["in_mean_var"])
    wide["var_dev"] = np.sqrt((wide["in_var_mean"] - 1) ** 2 + wide["in_var_var"])
    wide["distance"] = np.sqrt(wide["mean_rms"] ** 2 + wide["var_dev"] ** 2)
    wide = wide.drop(columns=["branch_k", "n_layers"])
    return wide.sort_values([*NET, "step", "layer_pos"], kind="stable").reset_index(drop=True)


AFTER_ADDITION = ("unit input", "classifier")


def input_distance(weight_inputs: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: the mean of ``distance``, ``mean_rms`` and ``var_dev`` over
    the weight layers that follow an addition — the article's "next weight layer": each
    unit's first convolution and projection, and the classifier. (The layers inside a
    branch follow a BN-ReLU in both versions, and the stem sees the data.)"""
    rows = weight_inputs[weight_inputs["role"].isin(AFTER_ADDITION)]
    return (rows.groupby([*NET, "step"])[["distance", "mean_rms", "var_dev"]].mean()
            .reset_index())


def summary(train, final, weight_inputs, s, *, num_classes, epoch) -> pd.DataFrame:
    """One row per net: see the module docstring."""
    steps = s["steps"]
    out = per_net_curves(train, windows=windows(s), steps=steps, chance=1 - 1 / num_classes,
                         warmup=warmup_length(s), epoch=epoch).set_index(NET)
    loss = train[(train["split"] == "train") & (train["metric"] == "loss")]
    out["train_loss_final"] = loss[loss["step"] > steps * (1 - FINAL_FRACTION)] \
        .groupby(NET)["value"].mean()
    wide = spread(final, NET, ["split", "metric"])
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    out = out.join(wide, how="left")
    out["gap_error"] = out["test_error"] - out["train_error"]
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    out["fits"] = out["train_error"] <= K.FIT_ERROR
    if weight_inputs is not None and not weight_inputs.empty:
        dist = input_distance(weight_inputs)
        out["distance_init"] = dist.loc[dist.groupby(NET)["step"].idxmin()].set_index(NET)["distance"]
        out["distance_final"] = dist.loc[dist.groupby(NET)["step"].idxmax()].set_index(NET)["distance"]
    return out.reset_index().sort_values(NET, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- controls, claims
def control_rows(table: pd.DataFrame) -> list[dict]:
    """He et al.'s baselines on this run's nets: controls W, A, B, C and D."""
    fit = dict(column="train_error", limit=K.FIT_ERROR, what="eval-mode training error")
    worse = dict(column="train_error", margin=DEGRADATION_MARGIN, what="final training error")
    return [K.all_below(CONTROLS["W"], NAME, table, depth=110, version=1, column="warmup_error",
                        limit=0.8, what="training error over the warm-up's last epoch"),
            K.all_below(CONTROLS["A"], NAME, table, depth=56, version=1, **fit),
            K.all_below(CONTROLS["B"], NAME, table, depth=110, version=1, **fit),
            K.no_worse(CONTROLS["C"], NAME, table, deep=110, shallow=56, version=1, **worse),
            K.all_below(CONTROLS["D"], NAME, table, depth=56, version=2, **fit),
            K.all_below(CONTROLS["D"], NAME, table, depth=110, version=2, **fit),
            K.no_worse(CONTROLS["D"], NAME, table, deep=110, shallow=56, version=2, **worse)]


def claims_rows(table: pd.DataFrame, controls, *, dataset: str, n_test: int) -> list[dict]:
    """The primary, mechanism and secondary rows of the module docstring."""
    depths = sorted(table["depth"].unique())
    failed = K.failed(controls)
    rows = []
    for primary in PRIMARY:
        rows += C.primary_rows(table, primary, experiment=NAME, failed_controls=failed,
                               n_test=n_test, dataset=dataset)
    for primary in PRIMARY[:2]:              # C5's measures where the claim does not vote
        others = tuple(d for d in depths if d not in primary.depths)
        rows += [{**r, "role": "secondary"} for r in C.primary_rows(
            table, dataclasses.replace(primary, depths=others), experiment=NAME, dataset=dataset)]
    if "distance_init" in table.columns:
        rows += C.paired_rows(table, "distance_init", claim="C6", role="mechanism", experiment=NAME,
                              measure="input distance from (0, 1) of the weight layers after each "
                                      "addition, at init, V1 − V2", depths=depths, dataset=dataset)
    for column, text, flip in (("test_error", "final test error, V1 − V2", False),
                               ("gap_loss", "generalization gap in loss, V1 − V2", False),
                               ("train_loss_final", "final train loss (train mode), V2 − V1 "
                                "(He et al. Fig. 6: V2 higher)", True)):
        part = table.assign(version=3 - table["version"]) if flip else table
        rows += C.paired_rows(part, column, claim="C6", role="secondary", experiment=NAME,
                              measure=text, depths=depths, dataset=dataset)
    return rows


# --------------------------------------------------------------------------- figures
def figure_final(table: pd.DataFrame, folder, name="c6_final_metrics"):
    """Training error, test error (eval mode) and their gap at the end, one dot per seed, V1
    and V2 of a seed joined (the pairing the tests use)."""
    depths = sorted(table["depth"].unique())
    panels = [("train_error", "training error (%)"), ("test_error", "test error (%)"),
              ("gap_error", "gap: test − training (points)")]
    fig, axes = plotting.new_figure("two", 2.0, 1, len(panels))
    for ax, (column, label) in zip(axes[0], panels):
        seeds_dots(ax, table, column, depths, scale=100)
        ax.set_ylabel(label)
    axes[0][0].axhline(K.FIT_ERROR * 100, color="0.5", lw=0.6, ls=":")
    axes[0][0].legend(loc="upper left")
    return plotting.save_figure(fig, folder, name)


def figure_distance(table: pd.DataFrame, folder, name="c6_input_distance"):
    """How far the inputs of the weight layers after each addition are from (0, 1), at init and
    at the last probed step (the mechanism the article names)."""
    depths = sorted(table["depth"].unique())
    fig, axes = plotting.new_figure("one", 2.0, 1, 2, sharey=True)
    for ax, (column, title) in zip(axes[0], (("distance_init", "initialisation"),
                                             ("distance_final", "last probed step"))):
        seeds_dots(ax, table, column, depths)
        ax.axhline(math.sqrt(RELU_NORMAL_MEAN ** 2 + (RELU_NORMAL_VAR - 1) ** 2), color="0.5",
                   lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0][0].set_ylabel("input distance from (0, 1)")
    plotting.legend_above(fig, axes[0][1])
    return plotting.save_figure(fig, folder, name)


def figure_gap(claims: pd.DataFrame, folder, name="c5_gap_vs_depth"):
    """C5's windows, V1 − V2 with their intervals against depth, and the margin."""
    return error_gap_figure(claims, "C5", C5["margin"], folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    train, table, claims, folder = figure_inputs(run_dir, NAME, "train", "summary", "claims")
    return (training_error_figure(train, table, folder, "c5_training_error")
            + figure_gap(claims, folder) + figure_final(table, folder)
            + figure_distance(table, folder))


def published_tables(run_dir) -> dict:
    """The training loss, error and lr rows and the test rows (what the figures and measures use)."""
    train = read_table(run_dir, "train", "a full_training run folder")
    return {"train.csv.gz": train[train["metric"] != "seconds"]}
