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
import numpy as np
import pandas as pd

from resnet_lab import plotting

from resnet_lab.runs import settings
from resnet_lab.io.folders import read_table
from resnet_lab.engine.schedule import PAPER_ITERATIONS
from resnet_lab.runs.sweep import Cell

from . import probing
from .cells import train_cell, train_context
from .tables import first_to_last, forward_growth, mean_over_units, select, stage_boundaries

NAME = "grad_flow"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits (8x8), width 16 (basic) and 4 (bottleneck units).
    "quick": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2], steps=13, warmup_steps=50,
                  probe_steps=3, batch_size=64, widths={"basic": 16, "bottleneck": 4}, dataset="digits"),
    # the paper's widths, CIFAR-10 32x32 from --data-dir, batch 128; meant for a GPU.
    "paper": dict(depths=[20, 56, 110, 164, 1001], seeds=[0, 1, 2, 3, 4], steps=401,
                  warmup_steps=400, probe_steps=5, batch_size=128, widths={"basic": 16, "bottleneck": 16}, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 56], seeds=[0, 1], steps=3, warmup_steps=50, probe_steps=2,
                  batch_size=16, widths={"basic": 4, "bottleneck": 4}, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "warmup_steps", "batch_size", probing.PROBE_STEPS,
           "dataset", "versions",
           "unit_kinds")
NET = ["depth", "version", "seed"]      # what identifies a net
FILES = ("config.json", "train.csv", "cells.csv", "summary.csv")
WORK = train_cell


# ---- settings and cells -------------------------------------------------------------------

def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/grad_flow.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS)
    if s.get("versions") and s.get("unit_kinds"):
        raise ValueError("give --versions or --unit-kinds, not both")
    s["unit_kinds"] = settings.unit_kinds(s)
    s["probe_every"] = probing.probe_spacing(s["steps"], s["probe_steps"])
    # No test evaluation: the question is the first iterations in training mode, and in eval
    # mode a 1001-layer V1 net's running BN statistics still lag (its test loss overflows).
    s["evaluate"] = False
    # The first iterations of the paper's 64k-iteration run: the warm-up at lr 0.01 (the quick
    # preset's 13 iterations lie inside it), then 0.1.
    s["schedule"] = settings.paper_schedule(s, max(PAPER_ITERATIONS, 2 * s["steps"]))
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


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables and its summary."""
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv", tables["train"])
    run.write_csv("probe.csv.gz", tables["probe"])
    run.write_csv("summary.csv", summary(tables["probe"], tables["train"]))


def results_text(run_dir) -> str:
    """What the script prints: the summary table."""
    table = read_table(run_dir, "summary", "a grad_flow run folder")
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.3g}".format):
        return table.to_string(index=False)


def _version_label(df):
    df = df.copy()
    df["version"] = "V" + df["version"].astype(str)
    return df


def gradient_per_unit(probe: pd.DataFrame, folder, name="fig1_gradient_per_unit"):
    """Fig. 1: the gradient norm at each unit's input vs unit index, one panel per depth; mean
    over seeds, at initialisation (thin) and at the last probed step (thick)."""
    rows = _version_label(select(probe, tap="input", direction="backward", stat="norm"))
    depths = sorted(rows["depth"].unique())
    first, last = rows["step"].min(), rows["step"].max()
    fig, axes = plotting.new_figure("two", 2.1, 1, len(depths))
    for ax, depth in zip(axes[0], depths):
        panel = rows[rows["depth"] == depth]
        for version in ("V1", "V2"):
            for step, width in ((first, 0.7), (last, 1.6)) if last != first else ((first, 1.1),):
                mean = panel[(panel["version"] == version) & (panel["step"] == step)] \
                    .groupby("unit")["value"].mean()
                line = plotting.version_line(version)
                line["label"] = f"{version}, step {step}"
                ax.plot(mean.index, mean.values, lw=width, **line)
        plotting.mark_stage_boundaries(ax, stage_boundaries(panel))
        ax.set_yscale("log")
        ax.set_title(f"{depth} layers")
        ax.set_xlabel("unit index $l$")
    axes[0][0].set_ylabel(plotting.GRAD_LABEL)
    plotting.legend_above(fig, axes[0][0])
    return plotting.save_figure(fig, folder, name)


def first_to_last_vs_depth(probe: pd.DataFrame, folder, name="fig2_first_to_last_vs_depth"):
    """Fig. 2: the gradient at the first unit over the last, against depth (log-log), at
    initialisation; line: median over seeds, dots: seeds."""
    ratio = first_to_last(probe, NET + ["step"], name="ratio")
    ratio = _version_label(ratio[ratio["step"] == ratio["step"].min()])
    fig, axes = plotting.new_figure("one", 2.3)
    ax = axes[0][0]
    for version in ("V1", "V2"):
        part = ratio[ratio["version"] == version]
        median = part.groupby("depth")["ratio"].median()
        ax.plot(median.index, median.values, marker=plotting.VERSION_MARKERS[version],
                **plotting.version_line(version))
        ax.scatter(part["depth"], part["ratio"], s=6, alpha=0.5, color=plotting.VERSION_COLORS[version])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1, color="0.5", lw=0.6, ls=":")
    ax.set_xticks(sorted(ratio["depth"].unique()), [str(d) for d in sorted(ratio["depth"].unique())])
    ax.minorticks_off()
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel(r"$\Vert g_{first}\Vert / \Vert g_{last}\Vert$ at init")
    ax.legend(loc="upper left")
    return plotting.save_figure(fig, folder, name)


def forward_signal_figure(probe: pd.DataFrame, folder, depth=None, name="fig3_signal_propagation"):
    """Fig. 3: the signal-propagation plot (Brock et al. 2021) of the deepest net at init:
    channel variance and squared channel mean at every unit's output (mean over seeds)."""
    depth = depth or probe["depth"].max()
    rows = select(probe, depth=depth, tap="output", direction="forward", stat=["ch_var", "ch_sq_mean"])
    rows = _version_label(rows[rows["step"] == rows["step"].min()])
    fig, axes = plotting.new_figure("two", 2.0, 1, 2)
    for ax, stat, label in zip(axes[0], ("ch_var", "ch_sq_mean"),
                               ("mean channel variance", "mean squared channel mean")):
        for version in ("V1", "V2"):
            mean = rows[(rows["stat"] == stat) & (rows["version"] == version)].groupby("unit")["value"].mean()
            ax.plot(mean.index, mean.values, **plotting.version_line(version))
        plotting.mark_stage_boundaries(ax, stage_boundaries(rows))
        ax.set_yscale("log")
        ax.set_xlabel(f"unit index $l$ ({depth} layers)")
        ax.set_ylabel(label)
    plotting.legend_above(fig, axes[0][0])
    return plotting.save_figure(fig, folder, name)


def relu_cuts(probe: pd.DataFrame, folder, name="fig4_relu_cuts"):
    """Fig. 4: the share of shortcut and gradient energy V1's after-addition ReLU cuts, per unit
    (relative position), every depth, at initialisation (mean over seeds)."""
    rows = select(probe, version=1, tap="sum", stat=["shortcut_cut", "grad_cut"]).copy()
    rows = rows[rows["step"] == rows["step"].min()]
    rows["position"] = rows["unit"] / rows.groupby("depth")["unit"].transform("max").clip(lower=1)
    depths = sorted(rows["depth"].unique())
    colors = dict(zip(depths, matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(depths)))))
    fig, axes = plotting.new_figure("two", 2.0, 1, 2)
    for ax, stat, label in zip(axes[0], ("shortcut_cut", "grad_cut"),
                               ("shortcut energy cut", "gradient energy cut")):
        for depth in depths:
            mean = rows[(rows["stat"] == stat) & (rows["depth"] == depth)].groupby("position")["value"].mean()
            ax.plot(mean.index, mean.values, color=colors[depth], lw=0.9, label=f"{depth} layers")
        ax.set_xlabel("relative unit position (0: first, 1: last)")
        ax.set_ylabel(f"V1: {label}")
    plotting.legend_above(fig, axes[0][1])
    return plotting.save_figure(fig, folder, name)


def grad_flow_figures(probe: pd.DataFrame, folder) -> list:
    """Every figure of experiments/grad_flow.py; returns the files written."""
    plotting.set_style()
    written = []
    for draw in (gradient_per_unit, first_to_last_vs_depth, forward_signal_figure, relu_cuts):
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
