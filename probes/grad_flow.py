"""The gradient-flow experiment's analysis: its summary table and its four figures.

Everything here reads the tidy tables ``experiments/grad_flow.py`` wrote (no model code
runs), so ``experiments/make_figures.py grad_flow RUN_DIR`` redraws the figures from the
CSVs alone. Figures are saved as PNG and PDF through ``resnet_lab.plotting`` (one theme,
V1 and V2 always in the same colours).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from resnet_lab import plotting  # noqa: E402
from resnet_lab import runs  # noqa: E402

from .analysis import first_to_last, forward_growth, mean_over_units, select, stage_boundaries  # noqa: E402

RUN_KEYS = ["depth", "version", "seed", "step"]


def _version_label(df):
    df = df.copy()
    df["version"] = "V" + df["version"].astype(str)
    return df


def gradient_per_unit(probe: pd.DataFrame, folder, name="fig1_gradient_per_unit"):
    """Fig. 1: gradient norm at each unit's input vs unit index, one panel per depth."""
    rows = _version_label(select(probe, tap="input", direction="backward", stat="norm"))
    depths = sorted(rows["depth"].unique())
    steps = sorted(rows["step"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(3.2 * len(depths), 3.4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        panel = rows[rows["depth"] == depth]
        sns.lineplot(data=panel, x="unit", y="value", hue="version", size="step",
                     sizes=(0.6, 2.0) if len(steps) > 1 else None, size_order=steps[::-1],
                     palette=plotting.version_palette(), estimator="mean", errorbar=None, ax=ax,
                     legend=ax is axes[0][-1])
        plotting.mark_stage_boundaries(ax, stage_boundaries(panel))
        ax.set_yscale("log")
        ax.set_title(f"{depth} layers")
        ax.set_xlabel("unit index")
        ax.set_ylabel("‖∂L/∂x_l‖ (unit input)" if ax is axes[0][0] else "")
    if len(steps) > 1:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="version / step")
    fig.suptitle("Gradient reaching each unit's input (thin: initialisation, thick: later steps)")
    return plotting.save_figure(fig, folder, name)


def first_to_last_vs_depth(probe: pd.DataFrame, folder, name="fig2_first_to_last_vs_depth"):
    """Fig. 2: first-to-last gradient ratio vs depth (log-log), V1 vs V2, spread over seeds."""
    ratio = first_to_last(probe, RUN_KEYS, name="ratio")
    ratio = _version_label(ratio[ratio["step"] == ratio["step"].min()])
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    sns.lineplot(data=ratio, x="depth", y="ratio", hue="version", palette=plotting.version_palette(),
                 marker="o", estimator="median", errorbar=("pi", 100), ax=ax)
    sns.scatterplot(data=ratio, x="depth", y="ratio", hue="version", palette=plotting.version_palette(),
                    alpha=0.4, s=14, legend=False, ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("‖g‖ first unit / ‖g‖ last unit")
    ax.set_title("Gradient ratio across the net at initialisation\n(line: median, band: range over seeds)")
    return plotting.save_figure(fig, folder, name)


def signal_propagation(probe: pd.DataFrame, folder, depth=None, name="fig3_signal_propagation"):
    """Fig. 3: the signal-propagation plot (Brock et al. 2021) of the deepest net at init."""
    depth = depth or probe["depth"].max()
    rows = select(probe, depth=depth, tap="output", direction="forward", stat=["ch_var", "ch_sq_mean"])
    rows = _version_label(rows[rows["step"] == rows["step"].min()])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, stat, label in zip(axes, ("ch_var", "ch_sq_mean"),
                               ("average channel variance", "average squared channel mean")):
        sns.lineplot(data=rows[rows["stat"] == stat], x="unit", y="value", hue="version",
                     palette=plotting.version_palette(), errorbar=("pi", 100), ax=ax)
        plotting.mark_stage_boundaries(ax, stage_boundaries(rows))
        ax.set_yscale("log")
        ax.set_xlabel("unit index")
        ax.set_ylabel(label)
    fig.suptitle(f"Signal propagation at each unit's output, {depth} layers, initialisation")
    return plotting.save_figure(fig, folder, name)


def relu_cuts(probe: pd.DataFrame, folder, name="fig4_relu_cuts"):
    """Fig. 4: shortcut_cut and grad_cut per unit of V1, every depth (unit position scaled to 0-1)."""
    rows = select(probe, version=1, tap="sum", stat=["shortcut_cut", "grad_cut"]).copy()
    rows["position"] = rows["unit"] / rows.groupby("depth")["unit"].transform("max").clip(lower=1)
    rows["when"] = (rows["step"] == rows["step"].min()).map({True: "initialisation", False: "later steps"})
    g = sns.relplot(data=rows, x="position", y="value", hue="depth", col="stat", style="when",
                    kind="line", palette="crest", errorbar=None, height=3.2, aspect=1.2,
                    facet_kws={"sharey": False})
    g.set_axis_labels("relative unit position (0 = first, 1 = last)", "share cut by the after-addition ReLU")
    g.set_titles("V1 {col_name}")
    g.figure.suptitle("How much the ReLU after the addition cuts off the shortcut (V1)", y=1.03)
    return plotting.save_figure(g.figure, folder, name)


def grad_flow_figures(probe: pd.DataFrame, folder) -> list:
    """Every figure of experiments/grad_flow.py; returns the files written."""
    plotting.set_style()
    written = []
    for draw in (gradient_per_unit, first_to_last_vs_depth, signal_propagation, relu_cuts):
        written += draw(probe, folder)
    return written


# ---- summary ------------------------------------------------------------------------------

def summary(probe: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Per depth and version (median over seeds): the gradient at the first unit relative to
    the last, as total L2 norm and per-element rms (stages change tensor sizes, so both), at
    the first and the last probed step; mean ``shortcut_cut`` and ``grad_cut`` over units and
    the forward growth of ``ch_var`` at initialisation; the training loss at the first and last
    step (mean of the seeds)."""
    keys = ["depth", "version", "seed", "step"]
    first, last = probe["step"].min(), probe["step"].max()
    parts = [first_to_last(probe, keys, stat="norm", name="grad_ratio_norm"),
             first_to_last(probe, keys, stat="rms", name="grad_ratio_rms"),
             mean_over_units(probe, keys, stat="shortcut_cut", direction="forward", name="shortcut_cut"),
             mean_over_units(probe, keys, stat="grad_cut", direction="backward", name="grad_cut"),
             forward_growth(probe, keys, name="ch_var_growth")]
    table = parts[0]
    for part in parts[1:]:
        table = table.merge(part, on=keys, how="outer")
    at = lambda step, cols, suffix: (table[table["step"] == step]
                                     .groupby(["depth", "version"])[cols].median().add_suffix(suffix))
    out = at(first, ["grad_ratio_norm", "grad_ratio_rms", "shortcut_cut", "grad_cut", "ch_var_growth"], "_init")
    out = out.join(at(last, ["grad_ratio_norm", "shortcut_cut"], f"_step{last}"))
    loss = select(train, split="train", metric="loss")
    by_run = loss.sort_values("step").groupby(["depth", "version", "seed"])["value"]
    losses = pd.DataFrame({"loss_first": by_run.first(), "loss_last": by_run.last()})
    out = out.join(losses.groupby(["depth", "version"]).mean())
    return out.reset_index()


# ---- what the reference results keep --------------------------------------------------------

FIGURE_ROWS = [  # (tap, direction, stats) the figures and the summary read
    ("input", "backward", ("norm", "rms")),
    ("input", "forward", ("ch_var",)),
    ("output", "forward", ("ch_var", "ch_sq_mean")),
    ("sum", "forward", ("shortcut_cut",)),
    ("sum", "backward", ("grad_cut",)),
]


def figure_rows(probe: pd.DataFrame) -> pd.DataFrame:
    """The probe rows that the figures and the summary use (the committed reference keeps these)."""
    keep = pd.Series(False, index=probe.index)
    for tap, direction, stats in FIGURE_ROWS:
        keep |= (probe["tap"] == tap) & (probe["direction"] == direction) & probe["stat"].isin(stats)
    return probe[keep]


def draw_figures(run_dir) -> list:
    """Redraw every grad_flow figure from ``run_dir``'s probe table alone."""
    run_dir = Path(run_dir)
    table = run_dir / "probe.csv.gz"
    if not table.exists():
        raise ValueError(f"{table} not found: is {run_dir} a grad_flow run folder?")
    return grad_flow_figures(pd.read_csv(table), run_dir / "figures")


def publish(run_dir, dest) -> Path:
    """Copy a run into ``dest`` (e.g. results/paper/grad_flow) keeping only the probe rows the
    figures and the summary use, and redraw the figures there from that copy."""
    return runs.publish(run_dir, dest, files=("config.json", "train.csv", "cells.csv", "summary.csv"),
                        tables={"probe.csv.gz": figure_rows(pd.read_csv(Path(run_dir) / "probe.csv.gz"))},
                        draw_figures=draw_figures)
