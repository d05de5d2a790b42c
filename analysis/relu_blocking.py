"""Claim C2: where the summed signal is negative, V1's after-addition ReLU cuts the shortcut.

The experiment of ``experiments/relu_blocking.py``, which trains V1 (the original unit) at
several depths with He et al.'s first iterations and probes every unit's ``sum`` tap at
initialisation and at evenly spaced steps. Per unit and probed step (``probes.stats``):

``shortcut_cut``  the share of the shortcut's energy the ReLU zeroes, sum h^2 [y <= 0] / sum h^2;
``grad_cut``      the share of the gradient energy it stops, 1 − ||dL/dy||^2 / ||dL/d out||^2;
``frac_neg``      the share of the summed signal y = h + F that is negative (the article's
                  "when the signal is negative").

Per net and probed step (``summary.csv``): the mean of each over units, and the share of
units where more than half of the shortcut energy (``heavy_share``) / gradient energy
(``heavy_grad_share``) is cut. V2's f is the identity, so its cuts are 0 by construction
(tested in tests/test_relu_blocking.py); it is not trained here.

Claims rows (C2; C2 is not an input of C7). He et al. 2016 §4.1 make two statements:

(a) "the truncation is more frequent when there are 1000 layers": per measure (mean
    ``shortcut_cut``, ``heavy_share``, mean ``grad_cut``, and mean ``frac_neg`` — the
    frequency of truncation in He et al.'s own sense), the deepest depth minus the
    reference depth (164 when run, else the next shallower one), Welch's t over seeds
    (different nets: no pairing), at initialisation and at the last probed step —
    direction "greater";
(b) "after some training ... y is more frequently above zero and f does not truncate it"
    (their 164-layer net): per depth, the mean ``shortcut_cut``, ``grad_cut`` and
    ``frac_neg`` at initialisation minus at the last probed step, paired by seed (the same
    net) — direction "greater" (the cut fades).

Note the two senses of "how often the ReLU cuts": ``frac_neg`` counts elements, the cuts
weigh them by the energy of the shortcut (or gradient) they carry. Where y < 0 the
non-negative shortcut x is small (y < 0 needs F < −x), so a sizeable share of negative sums
can cut little shortcut energy.

``draw_figures(run_dir)`` redraws the ``c2_*`` figures from the CSVs alone: the heat map of
``shortcut_cut`` (unit x step) for the deepest V1, the cut profiles over depth at init and
at the end, and the summaries over training.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
import pandas as pd  # noqa: E402

from resnet_lab import plotting, settings  # noqa: E402
from resnet_lab.runs import read_table  # noqa: E402
from resnet_lab.sweep import Cell  # noqa: E402

from . import claim_helpers as H  # noqa: E402
from . import claims as C  # noqa: E402
from .cells import train_context  # noqa: E402
from .early_training import first_iterations  # noqa: E402
from .tables import stage_boundaries  # noqa: E402

NAME = EXPERIMENT = "relu_blocking"
PRESETS = {
    # 2 CPU cores, nothing downloaded: 6.3 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 56, 110, 164, 1001], widths={"basic": 16, "bottleneck": 4},
                  seeds=[0, 1, 2], steps=81, checkpoints=9, lr=0.1, batch_size=128, dataset="digits"),
    # CIFAR-10 at the paper's width, the first 2,000 iterations (400 warm-up); a GPU.
    "paper": dict(depths=[20, 56, 110, 164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=2001, checkpoints=41, lr=0.1, batch_size=128,
                  dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2], steps=5,
                  checkpoints=3, lr=0.1, batch_size=16, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "lr", "dataset")
CLAIM = "C2"
HEAVY = 0.5                   # "more than half the shortcut energy is cut"
PROBE_TAPS = ("sum",)
PROBE_STATS = ("shortcut_cut", "grad_cut", "frac_neg")
NET = ["depth", "seed", "step"]
FILES = ("config.json", "claims.csv", "cells.csv", "summary.csv")
REFERENCE_DEPTH = 164
MEASURES = [("mean_cut", "mean shortcut_cut over units"),
            ("heavy_share", f"share of units with shortcut_cut > {HEAVY:g}"),
            ("mean_grad_cut", "mean grad_cut over units"),
            ("mean_frac_neg", "share of the summed signal y that is negative (mean over units)")]
FADE_MEASURES = ("mean_cut", "mean_grad_cut", "mean_frac_neg")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/relu_blocking.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3, min_checkpoints=2)
    first_iterations(s)
    return s


def cells(s) -> list:
    return [Cell(d, "original", seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=PROBE_TAPS, stats=PROBE_STATS, param_grads=False))


def describe(s) -> str:
    return (f"relu_blocking ({s['preset']}): {len(cells(s))} V1 nets on {s['dataset']}, depths "
            f"{s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"{s['steps']} steps of {s['batch_size']} (lr 0.01 for "
            f"{s['schedule']['warmup_max_steps']}, then {s['lr']}), probed every "
            f"{s['probe_every']}, on {s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, *, dataset, preset):
    """Write the run's tables, summary and claims; returns the summary."""
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv", tables["train"])
    run.write_csv("probe.csv.gz", tables["probe"])
    cuts = cut_table(tables["probe"])
    run.write_csv("cuts.csv.gz", cuts)
    table = summary(cuts)
    run.write_csv("summary.csv", table)
    C.append_claims(run.path, claims_rows(table, dataset=dataset, preset=preset))
    return table


# --------------------------------------------------------------------------- tables
def cut_table(probe: pd.DataFrame) -> pd.DataFrame:
    """One row per (depth, seed, step, unit): the three statistics side by side."""
    rows = probe[(probe["tap"] == "sum") & probe["stat"].isin(PROBE_STATS)]
    keys = [c for c in ("depth", "width", "seed", "step", "unit", "stage", "index")
            if c in rows.columns]
    wide = rows.pivot_table(index=keys, columns="stat", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.reset_index()


def summary(cuts: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: means over units and the heavy-cut shares."""
    g = cuts.groupby([c for c in ("depth", "width", "seed", "step") if c in cuts.columns])
    out = pd.DataFrame({"mean_cut": g["shortcut_cut"].mean(),
                        "heavy_share": g["shortcut_cut"].apply(lambda s: float((s > HEAVY).mean())),
                        "mean_grad_cut": g["grad_cut"].mean(),
                        "heavy_grad_share": g["grad_cut"].apply(lambda s: float((s > HEAVY).mean())),
                        "mean_frac_neg": g["frac_neg"].mean() if "frac_neg" in cuts else np.nan,
                        "units": g.size()})
    return out.reset_index()


def _at(table, depth, when):
    part = table[table["depth"] == depth]
    step = part["step"].min() if when == "init" else part["step"].max()
    return part[part["step"] == step].sort_values("seed"), int(step)


# --------------------------------------------------------------------------- claims
def claims_rows(table: pd.DataFrame, *, dataset: str, preset: str) -> list[dict]:
    rows = []
    depths = sorted(table["depth"].unique())
    deep = depths[-1]
    shallower = [d for d in depths if d < deep]
    if shallower:
        ref = REFERENCE_DEPTH if REFERENCE_DEPTH in shallower else shallower[-1]
        for when in ("init", "end"):
            a, step_a = _at(table, deep, when)
            b, step_b = _at(table, ref, when)
            for column, text in MEASURES:
                result = C.independent_difference(a[column], b[column], alternative="greater")
                rows.append(C.claim_row(
                    CLAIM, EXPERIMENT, f"V1 {text}: {deep} layers − {ref} layers, at "
                    f"{'initialisation' if when == 'init' else 'the last probed step'}",
                    int(deep), result, reference_depth=int(ref), step=step_a,
                    dataset=dataset, preset=preset, statement="(a) more frequent at 1000 layers"))
    for depth in depths:
        first, s0 = _at(table, depth, "init")
        last, s1 = _at(table, depth, "end")
        if s0 == s1:
            continue
        merged = first.merge(last, on="seed", suffixes=("_init", "_end"))
        for column, text in (m for m in MEASURES if m[0] in FADE_MEASURES):
            result = C.paired_difference(merged[f"{column}_init"], merged[f"{column}_end"],
                                         alternative="greater")
            rows.append(C.claim_row(
                CLAIM, EXPERIMENT, f"V1 {text}: at initialisation − at step {s1} (the cut fades)",
                int(depth), result, step=s1, dataset=dataset, preset=preset,
                statement="(b) fades after some training"))
    return rows


# --------------------------------------------------------------------------- figures
def figure_heatmap(cuts: pd.DataFrame, folder, name="c2_cut_heatmap"):
    """shortcut_cut and grad_cut of the deepest V1, unit x training step, mean over seeds."""
    depth = cuts["depth"].max()
    part = cuts[cuts["depth"] == depth]
    steps = sorted(part["step"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1, 0.05]})
    vmax = max(part["shortcut_cut"].max(), part["grad_cut"].max(), 1e-9)
    norm = PowerNorm(gamma=0.4, vmin=0, vmax=vmax)      # small cuts stay visible
    for ax, stat, title in ((axes[0], "shortcut_cut", "shortcut energy cut"),
                            (axes[1], "grad_cut", "gradient energy cut")):
        grid = part.pivot_table(index="unit", columns="step", values=stat, aggfunc="mean")
        image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="magma",
                          norm=norm, interpolation="nearest",
                          extent=(-0.5, len(steps) - 0.5, grid.index.min() - 0.5,
                                  grid.index.max() + 0.5))
        ticks = np.linspace(0, len(steps) - 1, min(len(steps), 6)).round().astype(int)
        ax.set_xticks(ticks, [str(steps[t]) for t in ticks])
        for b in stage_boundaries(part):
            ax.axhline(b - 0.5, color="w", lw=0.6, ls="--")
        ax.set_xlabel("iteration (probed steps)")
        ax.set_title(f"{title}, V1 {depth} layers")
        ax.grid(False)
    axes[0].set_ylabel("unit index (dashed: stage boundary)")
    fig.colorbar(image, cax=axes[2], label="share cut by the ReLU after the addition "
                                           "(power scale)")
    return H.finish_plot(fig, folder, name, "C2: where the after-addition ReLU cuts the "
                         f"shortcut (mean over {part['seed'].nunique()} seeds)")


def figure_profiles(cuts: pd.DataFrame, folder, name="c2_cut_profiles"):
    """shortcut_cut per unit (relative position) at init and at the last probed step, per depth."""
    depths = sorted(cuts["depth"].unique())

    def draw(ax, depth, part):
        first, last = part["step"].min(), part["step"].max()
        for step, style in ((first, "-"), (last, "--")):
            rows = part[part["step"] == step]
            prof = rows.groupby("unit")["shortcut_cut"].agg(["mean", "min", "max"])
            label = "initialisation" if step == first else f"step {step}"
            ax.plot(prof.index, prof["mean"], ls=style, color=plotting.V1_COLOR, lw=1,
                    label=label)
            ax.fill_between(prof.index, prof["min"], prof["max"], color=plotting.V1_COLOR,
                            alpha=0.15 if step == first else 0.08, lw=0)
        ax.axhline(HEAVY, color="0.4", lw=0.8, ls=":", label="half the energy")
        plotting.mark_stage_boundaries(ax, stage_boundaries(part))
        ax.set_title(f"V1 {depth} layers")
        ax.set_xlabel("unit index")
        ax.set_ylim(-0.02, 1.0)

    fig, axes = H.draw_per_depth(cuts, depths, draw, sharey=True)
    axes[0][0].set_ylabel("shortcut_cut (share of shortcut energy)")
    axes[0][-1].legend(loc="upper right", fontsize=7)
    return H.finish_plot(fig, folder, name, "C2: shortcut energy cut per unit (line: mean, "
                         "band: range over seeds)")


def figure_training(table: pd.DataFrame, folder, name="c2_cut_over_training"):
    """Mean shortcut_cut, heavy-cut share and mean grad_cut over training, one line per depth."""
    panels = [("mean_cut", "mean shortcut_cut"), ("heavy_share", f"share of units cut > {HEAVY:g}"),
              ("mean_grad_cut", "mean grad_cut"), ("mean_frac_neg", "share of y < 0")]
    depths = sorted(table["depth"].unique())
    colors = dict(zip(depths, plt.get_cmap("viridis")(np.linspace(0, 0.9, len(depths)))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3))
    for ax, (column, title) in zip(axes, panels):
        for depth in depths:
            part = table[table["depth"] == depth]
            mean = part.groupby("step")[column].mean()
            ax.plot(mean.index, mean.values, color=colors[depth], marker="o", ms=2.5, lw=1.2,
                    label=f"{depth} layers")
            for _, seed in part.groupby("seed"):
                ax.plot(seed["step"], seed[column], color=colors[depth], lw=0.5, alpha=0.35)
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return H.finish_plot(fig, folder, name, "C2: V1's after-addition ReLU over the first "
                         "iterations (bold: mean over seeds, thin: one seed)")


def draw_figures(run_dir) -> list:
    """Redraw every C2 figure from ``run_dir``'s CSVs alone (no model code runs)."""
    run_dir = Path(run_dir)
    cuts = read_table(run_dir, "cuts", "a relu_blocking run folder")
    table = read_table(run_dir, "summary", "a relu_blocking run folder")
    plotting.set_style()
    folder = run_dir / "figures"
    return (figure_heatmap(cuts, folder) + figure_profiles(cuts, folder)
            + figure_training(table, folder))


def published_tables(run_dir) -> dict:
    """The per-unit cut table and the training rows."""
    return {"cuts.csv.gz": read_table(run_dir, "cuts", "a relu_blocking run folder"),
            "train.csv.gz": read_table(run_dir, "train", "a relu_blocking run folder")}
