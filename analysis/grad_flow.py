"""Gradient flow through the shortcuts of V1 and V2 ResNets, 20 to 1001 layers: the main job.

For every depth, version (or unit kind) and seed ``experiments/grad_flow.py`` builds a CIFAR
ResNet, trains it for the first iterations of the paper's recipe and probes every tap of every
unit, forward and backward, at initialisation and at evenly spaced steps. This module holds
its presets, cells, summary table and four figures. The figures read the tidy tables alone
(no model code runs), so ``experiments/make_figures.py grad_flow RUN_DIR`` redraws them.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from resnet_lab import plotting, settings  # noqa: E402
from resnet_lab.runs import read_table  # noqa: E402
from resnet_lab.schedule import PAPER_ITERATIONS, Schedule  # noqa: E402
from resnet_lab.sweep import Cell  # noqa: E402

from .cells import train_context  # noqa: E402
from .tables import first_to_last, forward_growth, mean_over_units, select, stage_boundaries  # noqa: E402

NAME = "grad_flow"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits (8x8), width 16 (basic) and 4 (bottleneck units).
    "quick": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2], steps=21, checkpoints=3,
                  batch_size=64, widths={"basic": 16, "bottleneck": 4}, dataset="digits"),
    # the paper's widths, CIFAR-10 32x32 from --data-dir, batch 128; meant for a GPU.
    "paper": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2, 3, 4], steps=401, checkpoints=5,
                  batch_size=128, widths={"basic": 16, "bottleneck": 16}, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 56], seeds=[0, 1], steps=3, checkpoints=2,
                  batch_size=16, widths={"basic": 4, "bottleneck": 4}, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "dataset", "versions",
           "unit_kinds")
RUN_KEYS = ["depth", "version", "seed", "step"]
FILES = ("config.json", "train.csv", "cells.csv", "summary.csv")


# ---- settings and cells -------------------------------------------------------------------

def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/grad_flow.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS)
    if s.get("versions") and s.get("unit_kinds"):
        raise ValueError("give --versions or --unit-kinds, not both")
    s["unit_kinds"] = settings.unit_kinds(s)
    s["probe_every"] = settings.checkpoint_spacing(s["steps"], s["checkpoints"])
    s["eval_every"] = -(-s["steps"] // s["probe_every"]) * s["probe_every"]
    # The first iterations of the paper's 64k-iteration run: lr 0.01 until the training error
    # is below 80%, then 0.1.
    s["schedule"] = Schedule.paper(max(PAPER_ITERATIONS, 2 * s["steps"])).as_dict()
    return s


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in s["unit_kinds"]]


def context(s) -> dict:
    return train_context(s, probe={})


def describe(s) -> str:
    return (f"grad_flow ({s['preset']}): {len(cells(s))} nets on {s['dataset']}, depths "
            f"{s['depths']} ({settings.describe_widths(s['widths'])}), {', '.join(s['unit_kinds'])}, "
            f"seeds {s['seeds']}, {s['steps']} steps, probed every {s['probe_every']}, on "
            f"{s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables) -> pd.DataFrame:
    """Write the run's tables and its summary; returns the summary."""
    run.write_csv("train.csv", tables["train"])
    run.write_csv("probe.csv.gz", tables["probe"])
    table = summary(tables["probe"], tables["train"])
    run.write_csv("summary.csv", table)
    return table


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
    return grad_flow_figures(read_table(run_dir, "probe", "a grad_flow run folder"), run_dir / "figures")


def published_tables(run_dir) -> dict:
    """What the committed reference keeps besides ``FILES``: the probe rows the figures and
    the summary use."""
    return {"probe.csv.gz": figure_rows(read_table(run_dir, "probe", "a grad_flow run folder"))}
