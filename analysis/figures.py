"""Figure pieces the experiments share (the style itself: resnet_lab.plotting)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resnet_lab import plotting
from resnet_lab.io.folders import read_table

from . import claims as C
from .measures import NET, SMOOTH, training_curves
from .tables import spread, version_label

def figure_inputs(run_dir, experiment: str, *names):
    """What an experiment's ``draw_figures(run_dir)`` reads -- its tables by name (``claims``:
    claims.csv, validated) -- and the folder it draws into, with the figure style set."""
    run_dir = Path(run_dir)
    what = f"a{'n' if experiment[0] in 'aeiou' else ''} {experiment} run folder"
    tables = [C.read_claims(run_dir / C.CLAIMS_FILE) if name == "claims" else
              read_table(run_dir, name, what) for name in names]
    plotting.set_style()
    return (*tables, run_dir / "figures")


VERDICT_MARKERS = {C.SUPPORTED: "o", C.NOT_SUPPORTED: "X", C.INCONCLUSIVE: "s", C.NOT_TESTABLE: "."}


def gap_axis(ax, rows: pd.DataFrame, *, label, color="0.2", offset=1.0):
    """Effect (V1 − V2) with its interval against depth (log x); marker = verdict, filled for a
    primary test. Rows without a depth (a claim not testable at any depth of the run) have
    no point to draw."""
    rows = rows.dropna(subset=["depth"]).sort_values("depth")
    depths = rows["depth"].to_numpy(float) * offset
    effect = rows["effect"].to_numpy(float)
    lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    ax.errorbar(depths, effect, yerr=[effect - lo, hi - effect], color=color, lw=0.8, capsize=2,
                fmt="none")
    ax.plot(depths, effect, color=color, lw=0.7, alpha=0.6, label=label)
    for verdict, marker in VERDICT_MARKERS.items():
        for primary in (True, False):
            sel = (rows["verdict"].to_numpy() == verdict) & ((rows["role"] == "primary").to_numpy() == primary)
            if sel.any():
                ax.scatter(depths[sel], effect[sel], marker=marker, s=22, zorder=3,
                           facecolor=color if primary else "white", edgecolor=color, linewidth=0.8)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xscale("log")
    ticks = sorted(rows["depth"].unique())
    ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("depth (layers)")


def error_gap_figure(claims: pd.DataFrame, claim: str, margin: float, folder, name):
    """Training error over each window, V1 − V2 in points, with its interval against depth,
    one series per window, the claim's margin dotted (C3 and C5 test the same kind of measure
    at other depths and windows)."""
    rows = claims[(claims["claim"] == claim) & claims["measure"].str.startswith("training error")]
    fig, axes = plotting.new_figure("one", 2.2)
    ax = axes[0][0]
    measures = list(dict.fromkeys(rows["measure"]))
    for k, measure in enumerate(measures):
        part = rows[rows["measure"] == measure]
        label = measure.split(" (")[0].replace("training error over ", "")
        gap_axis(ax, part.assign(effect=part["effect"] * 100, ci_low=part["ci_low"] * 100,
                                 ci_high=part["ci_high"] * 100), label=label,
                 color=("0.2", "0.55")[k % 2], offset=1 + 0.04 * (k - (len(measures) - 1) / 2))
    ax.axhline(margin * 100, color="0.5", lw=0.6, ls=":")
    ax.set_ylabel("V1 − V2, training error\nover the window (points)")
    verdict_legend(ax)
    return plotting.save_figure(fig, folder, name)


def verdict_legend(ax, loc="upper left"):
    """Marker = verdict; filled = primary test."""
    import matplotlib.pyplot as plt
    series, _ = ax.get_legend_handles_labels()     # the lines drawn so far, by their labels
    handles = series + [plt.Line2D([], [], marker=m, color="0.3", ls="", markersize=4, label=v)
                        for v, m in VERDICT_MARKERS.items()]
    handles.append(plt.Line2D([], [], marker="o", color="0.3", markerfacecolor="white", ls="",
                              markersize=4, label="open: secondary"))
    ax.legend(handles=handles, loc=loc)


def band(ax, x, mean, low, high, version):
    """A version's mean line with its range over seeds as a band."""
    line = plotting.version_line(version)
    ax.plot(x, mean, **line)
    ax.fill_between(x, low, high, color=line["color"], alpha=0.18, lw=0)


def seeds_dots(ax, table: pd.DataFrame, column: str, depths, scale=1.0):
    """One dot per seed, V1 left and V2 right of each depth, a grey line joining a seed's
    pair (the pairing the tests use)."""
    for k, depth in enumerate(depths):
        wide = spread(table[table["depth"] == depth], "seed", "version", column) * scale
        for _, r in wide.iterrows():
            if {1, 2} <= set(r.index):
                ax.plot([k - 0.15, k + 0.15], [r[1], r[2]], color="0.75", lw=0.6, zorder=1)
        for version, dx in ((1, -0.15), (2, 0.15)):
            if version in wide.columns:
                name = f"V{version}"
                ax.scatter(np.full(len(wide), k + dx), wide[version], s=10, zorder=2,
                           marker=plotting.VERSION_MARKERS[name], color=plotting.VERSION_COLORS[name],
                           label=plotting.VERSION_LABELS[name] if k == 0 else None)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth (layers)")


def training_error_figure(train: pd.DataFrame, table: pd.DataFrame, folder, name):
    """He et al.'s Fig. 1 on our data: training error (10-iteration running mean) per depth,
    V1 vs V2 (line: mean over seeds, band: range); the warm-up's end dotted and the windows
    the tests read (``<window>_from``/``_to`` columns of the summary ``table``) shaded."""
    curves = version_label(training_curves(train))
    curves["smooth"] = curves.groupby(NET)["error"].transform(
        lambda e: e.rolling(SMOOTH, min_periods=1).mean()) * 100
    depths = sorted(curves["depth"].unique())
    spans = [c[:-len("_from")] for c in table.columns if c.endswith("_from")]
    fig, axes = plotting.new_figure("two", 1.9, 1, len(depths), sharey=True)
    for ax, depth in zip(axes[0], depths):
        for version in ("V1", "V2"):
            prof = curves[(curves["depth"] == depth) & (curves["version"] == version)] \
                .groupby("step")["smooth"].agg(["mean", "min", "max"])
            band(ax, prof.index, prof["mean"], prof["min"], prof["max"], version)
        at = table[table["depth"] == depth].iloc[0]
        for span in spans:
            ax.axvspan(at[f"{span}_from"], at[f"{span}_to"], color="0.9", zorder=0, lw=0)
        if at.get("warmup", 0):
            ax.axvline(at["warmup"], color="0.5", lw=0.6, ls=":")
        ax.set_title(f"{depth} layers, width {int(at['width'])}")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("training error (%)")
    plotting.legend_above(fig, axes[0][0])
    return plotting.save_figure(fig, folder, name)
