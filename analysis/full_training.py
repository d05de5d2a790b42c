"""Claims C5 and C6: V1 and V2 trained to fit, below 164 layers (He et al. 2016, Fig. 6).

``experiments/full_training.py`` trains V1 (original unit) and V2 (full pre-activation) with
the paper's whole schedule -- lr 0.01 until the training error is below 80% (at most 400
iterations), then 0.1, /10 at 1/2 and 3/4 of the run -- at basic-unit depths below 164, one
width for the series, from the same seeds, evaluates every net on its whole train and test
split at the end (eval mode), and records the channel statistics of every weight layer's input
at evenly spaced steps (``SignalProbe(weight_inputs=True)``).

Per net (``summary.csv``): ``err_window`` (the mean training error, train mode, over the 100
iterations before the first lr division: the C3 measure of ``analysis.early_training``, here
for nets below 164 layers), the final train and test loss and error (eval mode), the
generalization gaps ``gap_error`` and ``gap_loss`` (test − train), ``train_loss_final`` (train
mode, last 10% of the iterations, as He et al. Fig. 6 plots it), ``fits`` (eval-mode training
error at most ``FIT_ERROR``) and the input ``distance`` of the weight layers after each
addition from (0, 1) at init and at the last probed step:

  ``mean_rms``  = sqrt(mean_c m_c^2)       = sqrt(in_mean_mean^2 + in_mean_var)
  ``var_dev``   = sqrt(mean_c (v_c - 1)^2) = sqrt((in_var_mean - 1)^2 + in_var_var)
  ``distance``  = sqrt(mean_rms^2 + var_dev^2)

(m_c, v_c: the channel means and variances of a layer's input). A layer right after BN-ReLU
sees ReLU of a standardised signal: channel mean 1/sqrt(2 pi) = 0.40, variance 0.34 (distance
0.77); "normalized" in the article means that, not exactly (0, 1).

The primary tests (``PRIMARY``, declared here before any data; Holm within a claim):

C5  at every depth of the run below 164: ``err_window`` V1 − V2 < 5 points (non-inferiority:
    V1 not slower than V2 by more than C3's margin).
C6  at every depth where both versions fit their training set (every net's eval-mode
    training error at most 2%): ``gap_error`` V1 − V2 > 0, margin 0.3 points; a depth where
    either version does not fit is "not testable here" (a gap between nets that did not fit
    measures underfitting, not overfitting).
Mechanism check (C6, true by construction): V1's weight layers after an addition see inputs
further from normalized than V2's. Secondary: the final test error, the gap in loss, and He et
al.'s Fig. 6 pattern (V2 ends with a higher training loss, V2 − V1 > 0).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from probes import WEIGHT_INPUT_STATS
from resnet_lab import plotting, settings
from resnet_lab.runs import read_table
from resnet_lab.schedule import Schedule
from resnet_lab.sweep import ID_COLUMNS, Cell

from . import claims as C
from .cells import train_cell, train_context
from .early_training import NET, loss_measures, training_curves
from .figures import error_gap_figure, seeds_dots
from .tables import spread

NAME = "full_training"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits 8x8, basic units at width 16, 5 seeds, 500
    # iterations (~45 epochs; /10 at 250 and 375).
    "quick": dict(depths=[20, 56, 110], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=500, checkpoints=5, lr=0.1, batch_size=128,
                  dataset="digits"),
    # He et al. 2016: CIFAR-10, width 16, 64k iterations; a GPU.
    "paper": dict(depths=[20, 56, 110], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=64_000, checkpoints=9, lr=0.1, batch_size=128,
                  dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 14], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2], steps=10,
                  checkpoints=2, lr=0.1, batch_size=32, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "lr", "dataset")
WINDOW_LENGTH = 0.2          # err_window: the last fifth of the run before its first lr division
FIT_ERROR = 0.02             # eval-mode training error at or below which a net fits its data
FINAL_FRACTION = 0.1         # "final train loss": the mean over the last tenth of the steps
BELOW = 164                  # C5: "below about 164 layers the difference is small"
PRIMARY = {
    "C5": ("err_window", "training error over the window at lr 0.1 (mean of batches), V1 − V2",
           "noninferior", 0.05, "C3's margin: a gap smaller than what C3 calls a slower start "
           "is 'small'"),
    "C6": ("gap_error", "generalization gap in error (test − train, eval mode), V1 − V2",
           "greater", 0.003, "0.3 points is about one test image of digits' 360; He et al.'s "
           "smallest gap difference (164 layers) is 0.5 points of CIFAR-10"),
}
WEIGHT_STATS = ["in_mean_mean", "in_mean_var", "in_var_mean", "in_var_var"]
RELU_NORMAL_MEAN = 1 / math.sqrt(2 * math.pi)            # E[ReLU(z)], z ~ N(0, 1)
RELU_NORMAL_VAR = 0.5 - 1 / (2 * math.pi)                # Var[ReLU(z)]
CELL = NET
WORK = train_cell
FILES = ("config.json", "claims.csv", "summary.csv", "final.csv", "cells.csv", "weight_inputs.csv.gz")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/full_training.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3, min_checkpoints=2)
    schedule = Schedule.paper(s["steps"], s["lr"])
    s["schedule"] = schedule.as_dict()
    s["probe_every"] = settings.checkpoint_spacing(s["steps"], s["checkpoints"])
    s["eval_every"] = max(1, s["steps"] // 10)
    return s


def window(s) -> list:
    """The iterations (first, last] of ``err_window``: the fifth of the run before the first
    lr division (all at lr 0.1 once the warm-up is over)."""
    milestones = s["schedule"]["milestones"]
    end = milestones[0] if milestones else s["steps"]
    return [end - max(1, round(WINDOW_LENGTH * s["steps"])), end]


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in ("original", "full_preact")]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=(), stats=WEIGHT_INPUT_STATS, weight_inputs=True),
                         final_eval=True)


def describe(s) -> str:
    return (f"full_training ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"{s['steps']} iterations of batch {s['batch_size']} (lr 0.01 until the training "
            f"error < 80%, then {s['lr']}, /10 at {list(s['schedule']['milestones'])}); window "
            f"{window(s)}; weight inputs probed every {s['probe_every']}; on {s['device']} "
            f"({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, summary and claims."""
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv.gz", tables["train"])
    run.write_csv("final.csv", tables["final"])
    run.write_csv("probe.csv.gz", tables["probe"])
    weight_inputs = weight_input_table(tables["probe"])
    run.write_csv("weight_inputs.csv.gz", weight_inputs)
    table = summary(tables["train"], tables["final"], weight_inputs, window=window(s),
                    steps=s["steps"], num_classes=data.num_classes)
    run.write_csv("summary.csv", table)
    C.write_claims(run.path, claims_rows(table, dataset=s["dataset"]))


def results_text(run_dir) -> str:
    """What the script prints: the primary tests and the per-version means."""
    table = read_table(run_dir, "summary", "a full_training run folder")
    means = table.groupby(["depth", "version"])[["err_window", "train_error", "test_error",
                                                  "gap_error"]].mean()
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        return C.claims_text(Path(run_dir) / C.CLAIMS_FILE) + "\n" + means.to_string()


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
    first = rows.drop_duplicates(subset=[*CELL, "layer"])[[*CELL, "layer"]].copy()
    first["layer_pos"] = first.groupby(CELL).cumcount()
    first["n_layers"] = first.groupby(CELL)["layer"].transform("size")
    wide = wide.merge(first, on=[*CELL, "layer"], how="left")
    wide["position"] = wide["layer_pos"] / (wide["n_layers"] - 1).clip(lower=1)
    wide["branch_k"] = [_branch_index(name) for name in wide["layer"]]
    lowest = wide.groupby([*CELL, "step", "unit"])["branch_k"].transform("min")
    wide["role"] = [_role(name, k == low) for name, k, low in
                    zip(wide["layer"], wide["branch_k"], lowest)]
    wide["mean_rms"] = np.sqrt(wide["in_mean_mean"] ** 2 + wide["in_mean_var"])
    wide["var_dev"] = np.sqrt((wide["in_var_mean"] - 1) ** 2 + wide["in_var_var"])
    wide["distance"] = np.sqrt(wide["mean_rms"] ** 2 + wide["var_dev"] ** 2)
    wide = wide.drop(columns=["branch_k", "n_layers"])
    return wide.sort_values([*CELL, "step", "layer_pos"], kind="stable").reset_index(drop=True)


AFTER_ADDITION = ("unit input", "classifier")


def input_distance(weight_inputs: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: the mean of ``distance``, ``mean_rms`` and ``var_dev`` over
    the weight layers that follow an addition — the article's "next weight layer": each
    unit's first convolution and projection, and the classifier. (The layers inside a
    branch follow a BN-ReLU in both versions, and the stem sees the data.)"""
    rows = weight_inputs[weight_inputs["role"].isin(AFTER_ADDITION)]
    return (rows.groupby([*CELL, "step"])[["distance", "mean_rms", "var_dev"]].mean()
            .reset_index())


def summary(train, final, weight_inputs, *, window, steps, num_classes) -> pd.DataFrame:
    """One row per net: see the module docstring (``steps``: the run's length)."""
    curves = training_curves(train)
    chance = 1 - 1 / num_classes
    out = pd.DataFrame([{**dict(zip(NET + ["width"], key)),
                         **loss_measures(part, window=window, steps=steps, chance=chance),
                         "train_loss_final": part.loc[part["step"] > steps * (1 - FINAL_FRACTION),
                                                      "loss"].mean()}
                        for key, part in curves.groupby(NET + ["width"])]).set_index(NET)
    wide = spread(final, NET, ["split", "metric"])
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    out = out.join(wide, how="left")
    out["gap_error"] = out["test_error"] - out["train_error"]
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    out["fits"] = out["train_error"] <= FIT_ERROR
    if weight_inputs is not None and not weight_inputs.empty:
        dist = input_distance(weight_inputs)
        out["distance_init"] = dist.loc[dist.groupby(NET)["step"].idxmin()].set_index(NET)["distance"]
        out["distance_final"] = dist.loc[dist.groupby(NET)["step"].idxmax()].set_index(NET)["distance"]
    return out.reset_index().sort_values(NET, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- claims
def claims_rows(table: pd.DataFrame, *, dataset: str) -> list[dict]:
    """The primary, mechanism and secondary rows of the module docstring."""
    depths = sorted(table["depth"].unique())
    extra = dict(dataset=dataset)
    measure, text, direction, margin, reason = PRIMARY["C5"]
    below = [d for d in depths if d < BELOW]
    rows = C.paired_rows(table, measure, claim="C5", role="primary", experiment=NAME, measure=text,
                         depths=below, direction=direction, margin=margin, margin_reason=reason,
                         **extra)
    if not below:
        rows.append(C.claim_row("C5", "primary", NAME, text, None, C.not_testable(
            0, f"no depth below {BELOW} in this run", direction=direction, margin=margin), **extra))
    rows += c6_rows(table, depths, extra)
    rows += C.paired_rows(table, "loss_rel", claim="C5", role="secondary", experiment=NAME,
                          measure="loss over the window / loss when lr reached 0.1, V1 − V2",
                          depths=depths, **extra)
    return rows


def c6_rows(table, depths, extra) -> list[dict]:
    measure, text, direction, margin, reason = PRIMARY["C6"]
    rows = []
    for depth in depths:
        at = table[table["depth"] == depth]
        unfit = at[~at["fits"].astype(bool)]
        if len(unfit):
            versions = ", ".join(f"V{v}: {int((unfit['version'] == v).sum())} of "
                                 f"{int((at['version'] == v).sum())}" for v in (1, 2))
            result = C.not_testable(len(at) // 2, f"not every net fits its training set (eval "
                                    f"error > {FIT_ERROR:.0%}; {versions})", margin=margin)
            rows.append(C.claim_row("C6", "primary", NAME, text, int(depth), result,
                                    margin_reason=reason, **extra))
        else:
            rows += C.paired_rows(table, measure, claim="C6", role="primary", experiment=NAME,
                                  measure=text, depths=[depth], direction=direction,
                                  margin=margin, margin_reason=reason, **extra)
    if "distance_init" in table.columns:
        rows += C.paired_rows(table, "distance_init", claim="C6", role="mechanism", experiment=NAME,
                              measure="input distance from (0, 1) of the weight layers after each "
                                      "addition, at init, V1 − V2", depths=depths, **extra)
    for column, text, flip in (("test_error", "final test error, V1 − V2", False),
                               ("gap_loss", "generalization gap in loss, V1 − V2", False),
                               ("train_loss_final", "final train loss (train mode), V2 − V1 "
                                "(He et al. Fig. 6: V2 higher)", True)):
        part = table.assign(version=3 - table["version"]) if flip else table
        rows += C.paired_rows(part, column, claim="C6", role="secondary", experiment=NAME,
                              measure=text, depths=depths, **extra)
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
    axes[0][0].axhline(FIT_ERROR * 100, color="0.5", lw=0.6, ls=":")
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
    """``err_window`` V1 − V2 with its 95% CI against depth, and C5's margin."""
    return error_gap_figure(claims, "C5", PRIMARY["C5"][3], folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    from .early_training import figure_training
    run_dir = Path(run_dir)
    what = "a full_training run folder"
    train = read_table(run_dir, "train", what)
    table = read_table(run_dir, "summary", what)
    claims = C.read_claims(run_dir / C.CLAIMS_FILE)
    plotting.set_style()
    folder = run_dir / "figures"
    return (figure_training(train, table, folder, name="c5_training_error")
            + figure_gap(claims, folder) + figure_final(table, folder)
            + figure_distance(table, folder))


def published_tables(run_dir) -> dict:
    """The training loss, error and lr rows and the test rows (what the figures and measures use)."""
    train = read_table(run_dir, "train", "a full_training run folder")
    return {"train.csv.gz": train[train["metric"] != "seconds"]}
