"""Claims C2, C3 and C4: the first iterations of deep V1 and V2 nets (He et al. 2016, Fig. 1).

``experiments/early_training.py`` trains V1 (original unit) and V2 (full pre-activation) at
bottleneck depths up to 1001 -- one width for the whole series -- from the same seeds (a seed
fixes the initialisation stream, the batches and the augmentation), for the first iterations
of the paper's 64k-iteration schedule: lr 0.01 until the training error is below 80% (at most
400 iterations), then 0.1. It probes every unit's input and output (norms, forward and
backward) and sum (the share the after-addition ReLU cuts) at evenly spaced steps.

Per net (``summary.csv``):

``err_window``     the mean training error (train mode, each iteration's batch) over the
                   window (``WINDOW`` of the run: iterations 121-200 of 200 in the quick
                   preset), after every net's warm-up: how far a net got at lr 0.1, without
                   rewarding a low starting loss; iterations after a divergence count as
                   chance error (a diverged net did not train);
``warmup_end``     iterations at lr 0.01 (NaN: the warm-up never ended);
``loss_rel``       the mean loss over the window / the mean loss of the 10 iterations before
                   lr reached 0.1;
``steps_to_half``  the first iteration after the warm-up at which the 10-iteration mean
                   error is at most 50% (``censored`` at the run's length if never);
``rho_init``,      |log10 rho_first / rho_last| at the first and last probed step, rho =
``rho_last``       ||dL/dx|| ||x|| (first unit's input, last unit's output; 0 = the signal
                   reaches every unit alike, ``analysis.signal_propagation.transmission``);
``grad_cut_*``,    V1's after-addition ReLU: the share of gradient / shortcut energy / the
``shortcut_cut_*`` share of negative sums, mean over units, at init, at the last probed step
``frac_neg_*``     and averaged over the probed steps (V2's f is the identity: 0).

The primary tests (``PRIMARY``, declared here before any data; Holm within a claim):

C2  V1 at 1001 layers: the share of gradient energy the after-addition ReLU stops (mean over
    units and probed steps) exceeds 1%.
C3  at 1001 layers: ``err_window`` V1 − V2 > 0, margin 5 points.
C4  at 1001 layers: ``rho_init`` and ``rho_last`` V1 − V2 > 0, margin 0.3 decades.
A primary depth missing from a run (e.g. the smoke preset) is "not testable here". Secondary
rows: the same measures at the other depths, loss_rel, steps_to_half (censored sign test),
and He et al.'s two statements on the ReLU's cut: more frequent at 1000 layers than at 164
(equal width), and fading with training.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from resnet_lab import plotting, settings
from resnet_lab.runs import read_table
from resnet_lab.schedule import PAPER_ITERATIONS, Schedule
from resnet_lab.sweep import Cell

from . import claims as C
from .cells import train_cell, train_context
from .figures import band, error_gap_figure, seeds_dots
from .signal_propagation import transmission
from .tables import spread, version_label

NAME = "early_training"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits 8x8, the bottleneck series at width 4 (1001
    # layers at the paper's width 16 does not fit the time), 5 seeds, the first 200 iterations
    # (in the pilot every net had left the warm-up by iteration 110).
    "quick": dict(depths=[29, 65, 164, 1001], widths={"basic": 16, "bottleneck": 4},
                  seeds=[0, 1, 2, 3, 4], steps=200, checkpoints=5, lr=0.1, batch_size=128,
                  dataset="digits"),
    # He et al. Fig. 1: CIFAR-10 at the paper's width, the first 10,000 iterations; a GPU.
    "paper": dict(depths=[164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=10_000, checkpoints=11, lr=0.1, batch_size=128,
                  dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29, 47], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2],
                  steps=10, checkpoints=3, lr=0.1, batch_size=16, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "lr", "dataset")
VERSIONS = ("original", "full_preact")
WINDOW = (0.6, 1.0)          # err_window: iterations (0.6 S, S] of an S-iteration run
SMOOTH = 10                  # iterations of the running mean behind steps_to_half and loss_rel
HALF = 0.5
PRIMARY_DEPTH = 1001
# The primary tests: claim -> (measure, what it is, direction, margin, why that margin).
PRIMARY = {
    "C2": ("grad_cut_mean", "V1: share of gradient energy the after-addition ReLU stops, mean "
           "over units and probed steps, minus 1%", "greater", 0.0,
           "the null is 1% of the gradient energy: a smaller cut could not slow training"),
    "C3": ("err_window", "training error over the window at lr 0.1 (mean of batches), V1 − V2",
           "greater", 0.05, "5 points of training error: about the seed-to-seed spread of one "
           "version in the pilot runs; a smaller gap is not a visibly slower start"),
    "C4": ("rho", "|log10 rho_first / rho_last|, rho = ||dL/dx|| ||x||, V1 − V2", "greater", 0.3,
           "0.3 decades = a factor 2 between the net's two ends; smaller gaps lie within the "
           "spread between seeds of one version"),
}
PROBE = dict(taps=("input", "output", "sum"), stats=("norm", "shortcut_cut", "grad_cut", "frac_neg"),
             param_grads=False)
CUTS = ("grad_cut", "shortcut_cut", "frac_neg")
NET = ["depth", "version", "seed"]
FILES = ("config.json", "claims.csv", "cells.csv", "summary.csv", "cuts.csv")
WORK = train_cell


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/early_training.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3, min_checkpoints=2)
    s["probe_every"] = settings.checkpoint_spacing(s["steps"], s["checkpoints"])
    s["eval_every"] = s["steps"]
    # The first iterations of the paper's 64k-iteration run: warm-up, then lr, no division yet.
    s["schedule"] = Schedule.paper(max(PAPER_ITERATIONS, 2 * s["steps"]), s["lr"]).as_dict()
    return s


def window(s) -> list:
    """The iterations (first, last] of ``err_window``: the end of the run."""
    return [round(WINDOW[0] * s["steps"]), s["steps"]]


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in VERSIONS]


def context(s) -> dict:
    return train_context(s, probe=PROBE)


def describe(s) -> str:
    return (f"early_training ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"the first {s['steps']} iterations of batch {s['batch_size']} (lr 0.01 until the "
            f"training error < 80%, then {s['lr']}); window {window(s)}; probed every "
            f"{s['probe_every']}; on {s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, summary and claims."""
    train, probe = tables["train"], tables["probe"]
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv.gz", train)
    run.write_csv("probe.csv.gz", probe)
    cuts = cut_table(probe)
    run.write_csv("cuts.csv", cuts)
    table = summary(train, probe, cuts, window=window(s), steps=s["steps"],
                    num_classes=data.num_classes)
    run.write_csv("summary.csv", table)
    C.write_claims(run.path, claims_rows(table, dataset=s["dataset"]))


def results_text(run_dir) -> str:
    """What the script prints: the primary tests and the per-version means."""
    table = read_table(run_dir, "summary", "an early_training run folder")
    means = table.groupby(["depth", "version"])[["warmup_end", "err_window", "rho_last",
                                                  "grad_cut_mean"]].mean()
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        return C.claims_text(Path(run_dir) / C.CLAIMS_FILE) + "\n" + means.to_string()


# --------------------------------------------------------------------------- tables
def training_curves(train: pd.DataFrame) -> pd.DataFrame:
    """One row per net and iteration: loss, error and lr side by side."""
    rows = train[train["split"] == "train"]
    # unstack, not pivot_table: a diverged net's NaN losses must stay (pivot_table drops them)
    wide = rows.set_index(NET + ["width", "step", "metric"])["value"].unstack("metric").reset_index()
    wide.columns.name = None
    return wide.sort_values(NET + ["step"], kind="stable").reset_index(drop=True)


def loss_measures(curve: pd.DataFrame, *, window, steps, chance) -> dict:
    """The training measures of one net's curve (see the module docstring)."""
    curve = curve.sort_values("step")
    lr = curve["lr"].to_numpy()
    warm = np.nonzero(lr > lr[0])[0] if len(lr) else []
    warmup_end = int(curve["step"].iloc[warm[0]] - 1) if len(warm) else np.nan
    error = pd.Series(curve["error"].to_numpy(), index=curve["step"].to_numpy())
    finite = np.isfinite(curve["loss"].to_numpy())
    diverged = int(curve["step"].iloc[np.argmin(finite)]) if not finite.all() else np.nan
    full = error.reindex(range(1, steps + 1))
    if np.isfinite(diverged):
        full[full.index >= diverged] = chance        # a diverged net did not train
    full = full.fillna(chance)
    err_window = float(full.loc[window[0] + 1: window[1]].mean())
    loss = pd.Series(curve["loss"].to_numpy(), index=curve["step"].to_numpy())
    loss_rel = np.nan
    if np.isfinite(warmup_end) and warmup_end >= 1:
        before = loss.loc[max(1, warmup_end - SMOOTH + 1): warmup_end].mean()
        loss_rel = float(loss.loc[window[0] + 1: window[1]].mean() / before)
    smooth = full.rolling(SMOOTH, min_periods=1).mean()
    after = smooth[smooth.index > (warmup_end if np.isfinite(warmup_end) else steps)]
    reached = after[after <= HALF]
    return {"warmup_end": warmup_end, "window_start": window[0], "window_end": window[1],
            "err_window": err_window, "loss_rel": loss_rel,
            "steps_to_half": int(reached.index[0]) if len(reached) else steps,
            "censored": not len(reached), "diverged_at": diverged,
            "loss_init": float(loss.iloc[0]) if len(loss) else np.nan}


def cut_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: the after-addition function's cuts, mean over units."""
    rows = probe[(probe["tap"] == "sum") & probe["stat"].isin(CUTS)]
    table = rows.groupby(NET + ["width", "step", "stat"])["value"].mean().unstack("stat")
    table.columns.name = None
    return table.reset_index()


def summary(train, probe, cuts, *, window, steps, num_classes) -> pd.DataFrame:
    """One row per net: the measures of the module docstring (``steps``: the run's length;
    a diverged net's rows stop early)."""
    curves = training_curves(train)
    chance = 1 - 1 / num_classes
    rows = [{**dict(zip(NET + ["width"], key)), **loss_measures(part, window=window, steps=steps,
                                                                   chance=chance)}
            for key, part in curves.groupby(NET + ["width"])]
    table = pd.DataFrame(rows).set_index(NET)
    gaps = transmission(probe, NET)
    first = gaps[gaps["step"] == gaps.groupby(NET)["step"].transform("min")].set_index(NET)
    last = gaps[gaps["step"] == gaps.groupby(NET)["step"].transform("max")].set_index(NET)
    table["rho_init"], table["rho_last"] = first["abs_log_rho_ratio"], last["abs_log_rho_ratio"]
    table["grad_ratio_init"], table["grad_ratio_last"] = first["abs_log_grad_ratio"], last["abs_log_grad_ratio"]
    table["probe_step_last"] = last["step"]
    by = cuts.groupby(NET)
    for stat in CUTS:
        table[f"{stat}_init"] = cuts.loc[by["step"].idxmin()].set_index(NET)[stat]
        table[f"{stat}_last"] = cuts.loc[by["step"].idxmax()].set_index(NET)[stat]
        table[f"{stat}_mean"] = by[stat].mean()
    return table.reset_index().sort_values(NET, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- claims
def claims_rows(table: pd.DataFrame, *, dataset: str) -> list[dict]:
    """The primary and secondary rows of the module docstring."""
    depths = sorted(table["depth"].unique())
    extra = dict(dataset=dataset)
    rows = c2_rows(table, depths, extra)
    measure, text, direction, margin, reason = PRIMARY["C3"]
    for depth in [PRIMARY_DEPTH] + [d for d in depths if d != PRIMARY_DEPTH]:
        role = "primary" if depth == PRIMARY_DEPTH else "secondary"
        rows += C.paired_rows(table, measure, claim="C3", role=role, experiment=NAME, measure=text,
                              depths=[depth], direction=direction, margin=margin,
                              margin_reason=reason, **extra)
    rows += C.paired_rows(table, "loss_rel", claim="C3", role="secondary", experiment=NAME,
                          measure="loss over the window / loss when lr reached 0.1, V1 − V2",
                          depths=depths, **extra)
    rows += censored_rows(table, depths, extra)
    rows += c4_rows(table, depths, extra)
    return rows


def c2_rows(table, depths, extra) -> list[dict]:
    measure, text, direction, margin, reason = PRIMARY["C2"]
    v1 = table[table["version"] == 1]
    deep = v1[v1["depth"] == PRIMARY_DEPTH]
    result = C.one_sample(deep[measure], null=0.01, direction=direction, margin=margin) if len(deep) \
        else C.not_testable(0, f"no {PRIMARY_DEPTH}-layer V1 net in this run")
    rows = [C.claim_row("C2", "primary", NAME, text, PRIMARY_DEPTH, result, margin_reason=reason,
                        **extra)]
    if len(depths) > 1:       # He et al. §4.1 (a): more frequent at 1000 layers (equal width)
        deepest, ref = depths[-1], depths[-2]
        for stat in CUTS:
            a, b = v1[v1["depth"] == deepest], v1[v1["depth"] == ref]
            result = C.independent_difference(a[f"{stat}_init"], b[f"{stat}_init"])
            rows.append(C.claim_row("C2", "secondary", NAME, f"V1 {stat} at init (mean over units): "
                                    f"{deepest} − {ref} layers", int(deepest), result, **extra))
    for depth in depths:      # (b) after some training the cut fades
        part = v1[v1["depth"] == depth]
        for stat in CUTS:
            result = C.paired_difference(part[f"{stat}_init"], part[f"{stat}_last"])
            rows.append(C.claim_row("C2", "secondary", NAME, f"V1 {stat}: at init − at the last "
                                    "probed step (the cut fades)", int(depth), result, **extra))
    return rows


def censored_rows(table, depths, extra) -> list[dict]:
    rows = []
    for depth in depths:
        at = table[table["depth"] == depth]
        steps, censored = spread(at, "seed", "version", "steps_to_half"), spread(at, "seed", "version", "censored")
        if not {1, 2} <= set(steps.columns):
            continue
        result = C.paired_censored(steps[1], steps[2], censored_a=censored[1].astype(bool),
                                   censored_b=censored[2].astype(bool))
        rows.append(C.claim_row("C3", "secondary", NAME, "iterations until the 10-iteration mean "
                                "training error is at most 50%, V1 − V2", int(depth), result, **extra))
    return rows


def c4_rows(table, depths, extra) -> list[dict]:
    _, text, direction, margin, reason = PRIMARY["C4"]
    rows = []
    for column, when in (("rho_init", "at initialisation"), ("rho_last", "at the last probed step")):
        for depth in [PRIMARY_DEPTH] + [d for d in depths if d != PRIMARY_DEPTH]:
            role = "primary" if depth == PRIMARY_DEPTH else "secondary"
            rows += C.paired_rows(table, column, claim="C4", role=role, experiment=NAME,
                                  measure=f"{text}, {when}", depths=[depth], direction=direction,
                                  margin=margin, margin_reason=reason, **extra)
    rows += C.paired_rows(table, "grad_ratio_last", claim="C4", role="secondary", experiment=NAME,
                          measure="|log10 ||g_first|| / ||g_last|||, raw gradient, at the last "
                                  "probed step, V1 − V2", depths=depths, **extra)
    return rows


# --------------------------------------------------------------------------- figures
def figure_training(train: pd.DataFrame, table: pd.DataFrame, folder, name="c3_training_error"):
    """Fig. 1 on our data: training error (10-iteration mean) per depth, V1 vs V2 (line: mean
    over seeds, band: range), the window of ``err_window`` shaded."""
    curves = version_label(training_curves(train))
    curves["smooth"] = curves.groupby(NET)["error"].transform(
        lambda e: e.rolling(SMOOTH, min_periods=1).mean()) * 100
    depths = sorted(curves["depth"].unique())
    fig, axes = plotting.new_figure("two", 1.9, 1, len(depths), sharey=True)
    for ax, depth in zip(axes[0], depths):
        for version in ("V1", "V2"):
            prof = curves[(curves["depth"] == depth) & (curves["version"] == version)] \
                .groupby("step")["smooth"].agg(["mean", "min", "max"])
            band(ax, prof.index, prof["mean"], prof["min"], prof["max"], version)
        at = table[table["depth"] == depth]
        ax.axvspan(at["window_start"].iloc[0], at["window_end"].iloc[0], color="0.9", zorder=0, lw=0)
        ax.set_title(f"{depth} layers, width {int(table.loc[table['depth'] == depth, 'width'].iloc[0])}")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("training error (%)")
    plotting.legend_above(fig, axes[0][0])
    return plotting.save_figure(fig, folder, name)


def figure_gap(claims: pd.DataFrame, folder, name="c3_gap_vs_depth"):
    """``err_window`` V1 − V2 with its 95% CI against depth."""
    return error_gap_figure(claims, "C3", PRIMARY["C3"][3], folder, name)


def figure_transmission(table: pd.DataFrame, folder, name="c4_transmission"):
    """|log10 rho_first / rho_last| per net at init and at the last probed step."""
    depths = sorted(table["depth"].unique())
    fig, axes = plotting.new_figure("two", 2.0, 1, 2, sharey=True)
    for ax, (column, title) in zip(axes[0], (("rho_init", "initialisation"),
                                             ("rho_last", "last probed step"))):
        seeds_dots(ax, table, column, depths)
        ax.set_title(title)
    axes[0][0].set_ylabel(r"$|\log_{10} \rho_{first} / \rho_{last}|$")
    axes[0][1].legend(loc="upper left")
    return plotting.save_figure(fig, folder, name)


def figure_cuts(cuts: pd.DataFrame, folder, name="c2_cut_over_training"):
    """V1's after-addition ReLU over the first iterations: mean over units and seeds."""
    v1 = cuts[cuts["version"] == 1]
    depths = sorted(v1["depth"].unique())
    colors = dict(zip(depths, matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(depths)))))
    fig, axes = plotting.new_figure("two", 2.0, 1, len(CUTS))
    labels = {"grad_cut": "gradient energy cut", "shortcut_cut": "shortcut energy cut",
              "frac_neg": "share of sums y < 0"}
    for ax, stat in zip(axes[0], CUTS):
        for depth in depths:
            mean = v1[v1["depth"] == depth].groupby("step")[stat].mean()
            ax.plot(mean.index, mean.values, color=colors[depth], marker="o", label=f"{depth} layers")
        ax.set_title(labels[stat])
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("V1, mean over units")
    plotting.legend_above(fig, axes[0][-1])
    return plotting.save_figure(fig, folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    run_dir = Path(run_dir)
    what = "an early_training run folder"
    train = read_table(run_dir, "train", what)
    table = read_table(run_dir, "summary", what)
    cuts = read_table(run_dir, "cuts", what)
    claims = C.read_claims(run_dir / C.CLAIMS_FILE)
    plotting.set_style()
    folder = run_dir / "figures"
    return (figure_training(train, table, folder) + figure_gap(claims, folder)
            + figure_transmission(table, folder) + figure_cuts(cuts, folder))


def published_tables(run_dir) -> dict:
    """The training loss, error and lr rows (every iteration; the figures and measures use them)."""
    train = read_table(run_dir, "train", "an early_training run folder")
    return {"train.csv.gz": train[(train["split"] == "train") & (train["metric"] != "seconds")]}
