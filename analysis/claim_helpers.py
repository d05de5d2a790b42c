"""What the experiments on claims C1–C5 share: paired tests by depth, the depth threshold
and two figure pieces.

Used by ``analysis.signal_propagation`` (C1, C4, C5), ``analysis.relu_blocking`` (C2) and
``analysis.early_training`` (C3, C4, C5). Nothing here decides a verdict: every test goes
through ``analysis.claims``.

Conventions (``analysis.claims``' module docstring): a depth-wise row of C3–C5 states a
V2 advantage, so its effect is "V1 − V2" of a quantity where lower is better and its
direction is "greater"; a row that states anything else carries ``for_c7=False``.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resnet_lab import plotting  # noqa: E402

from . import claims as C  # noqa: E402

CELL = ["depth", "version", "seed"]
CLAIMED_THRESHOLD = 164          # the article: "below about 164 layers the difference is small"
THRESHOLD_FACTOR = 2.0           # "about 164" = [82, 328] (analysis.claims.threshold_verdict)
VERDICT_MARKERS = {C.SUPPORTED: "o", C.NOT_SUPPORTED: "X", C.INCONCLUSIVE: "s"}


# --------------------------------------------------------------------------- tables
def version_label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["version"] = "V" + df["version"].astype(int).astype(str)
    return df


def paired(table: pd.DataFrame, column: str, depth, **where):
    """V1 and V2 values of ``column`` at ``depth`` (and ``where``), aligned by seed."""
    part = table[table["depth"] == depth]
    for key, value in where.items():
        part = part[part[key] == value]
    wide = part.pivot_table(index="seed", columns="version", values=column, aggfunc="first",
                            dropna=False)
    if not {1, 2} <= set(wide.columns):
        return np.array([]), np.array([]), []
    wide = wide[[1, 2]]
    return wide[1].to_numpy(float), wide[2].to_numpy(float), wide.index.tolist()


def paired_rows(table, column, *, claim, experiment, measure, direction="greater",
                margin=None, for_c7=True, where=None, depths=None, **extra):
    """One claims row per depth: ``column`` V1 − V2 paired by seed (``direction`` as claimed).

    Returns (rows, {depth: per-seed differences V1 − V2}) — the differences feed the
    depth threshold."""
    where = where or {}
    rows, diffs = [], {}
    for depth in sorted(depths if depths is not None else table["depth"].unique()):
        v1, v2, _ = paired(table, column, depth, **where)
        if not len(v1):
            continue
        result = C.paired_difference(v1, v2, alternative=direction, margin=margin)
        width = _width_at(table, depth)
        rows.append(C.claim_row(claim, experiment, measure, int(depth), result, width=width,
                                for_c7=for_c7, **where, **extra))
        diffs[int(depth)] = v1 - v2
    return rows, diffs


def _width_at(table, depth):
    if "width" not in table.columns:
        return None
    widths = table.loc[table["depth"] == depth, "width"].dropna().unique()
    return int(widths[0]) if len(widths) == 1 else None


def threshold_from(rows: list[dict], diffs: dict, *, claim="C5", experiment, measure,
                   margin_from_rows=True, n_boot=2000, **extra) -> tuple[dict, C.DepthThreshold]:
    """C5's verdict row: the depth from which the gap of ``rows`` (one per depth, all with
    direction "greater") is significant at it and every deeper depth, with a seed bootstrap;
    "about 164" (×/÷ 2) is what the article claims."""
    by_depth = {int(r["depth"]): r for r in rows}
    depths = sorted(by_depth)
    verdicts = [by_depth[d]["verdict"] for d in depths]
    margin = 0.0
    if margin_from_rows:      # the bootstrap re-tests each depth with the rows' own margin
        margins = [float(by_depth[d]["margin"]) for d in depths]
        margin = min(margins) if margins else 0.0
    finite = {d: diffs[d] for d in depths if np.all(np.isfinite(diffs[d]))}
    threshold = C.depth_threshold(depths, verdicts,
                                  differences=finite if len(finite) == len(depths) else None,
                                  direction="greater", margin=margin, n_boot=n_boot)
    extra.setdefault("for_c7", False)      # not depth-wise: C7 leaves it out in any case
    row = C.threshold_row(claim, experiment, measure, threshold, claimed_depth=CLAIMED_THRESHOLD,
                          factor=THRESHOLD_FACTOR, **extra)
    return row, threshold


def equivalence_rows(table, column, *, experiment, measure, below=CLAIMED_THRESHOLD,
                     where=None, **extra):
    """C5, "below about 164 layers the difference is small": at each depth < ``below``,
    V1 − V2 equivalent to 0 within the default margin (5% of V2's level). These rows claim
    no V2 advantage, so they carry ``for_c7=False``."""
    where = where or {}
    depths = [d for d in sorted(table["depth"].unique()) if d < below]
    rows, _ = paired_rows(table, column, claim="C5", experiment=experiment, measure=measure,
                          direction="equivalent", for_c7=False, where=where, depths=depths,
                          **extra)
    return rows


# --------------------------------------------------------------------------- figures
def gap_axis(ax, claims: pd.DataFrame, *, label, color="0.2", offset=1.0, threshold=None):
    """Effect (V1 − V2) with its 95% CI against depth (log x), marker = verdict."""
    rows = claims.sort_values("depth")
    depths = rows["depth"].to_numpy(float) * offset
    effect = rows["effect"].to_numpy(float)
    lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    ax.errorbar(depths, effect, yerr=[effect - lo, hi - effect], color=color, lw=1, capsize=3,
                fmt="none")
    ax.plot(depths, effect, color=color, lw=0.8, alpha=0.6, label=label)
    for verdict, marker in VERDICT_MARKERS.items():
        sel = rows["verdict"].to_numpy() == verdict
        if sel.any():
            ax.scatter(depths[sel], effect[sel], marker=marker, color=color, s=36, zorder=3)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ticks = sorted(set(getattr(ax, "_depth_ticks", [])) | set(claims["depth"].unique()))
    ax._depth_ticks = ticks
    ax.set_xticks(ticks, [str(int(t)) for t in ticks], fontsize=7, rotation=90)
    ax.minorticks_off()
    if threshold is not None and math.isfinite(threshold.get("ci_high", math.nan)):
        lo_t, hi_t = threshold["ci_low"], threshold["ci_high"]     # no bracket when none found
        ax.axvspan(max(lo_t, ax.get_xlim()[0]), hi_t, color=color, alpha=0.08,
                   label=f"{label}: threshold in ({lo_t:g}, {hi_t:g}]")
    ax.axvspan(CLAIMED_THRESHOLD / THRESHOLD_FACTOR, CLAIMED_THRESHOLD * THRESHOLD_FACTOR,
               color="#E69F00", alpha=0.06)
    ax.axvline(CLAIMED_THRESHOLD, color="#E69F00", lw=1, ls=":")


def verdict_legend():
    handles = [plt.Line2D([], [], marker=m, color="0.3", ls="", label=v)
               for v, m in VERDICT_MARKERS.items()]
    handles.append(plt.Line2D([], [], color="#E69F00", ls=":", label="article: about 164 (×/÷2)"))
    return handles


def draw_per_depth(df, depths, draw, *, ncols=None, size=(3.2, 3.0), sharey=False):
    """A row of panels, one per depth; ``draw(ax, depth, part)``. Returns (fig, axes)."""
    ncols = ncols or len(depths)
    nrows = -(-len(depths) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False, sharey=sharey)
    flat = axes.ravel()
    for ax, depth in zip(flat, depths):
        draw(ax, depth, df[df["depth"] == depth])
    for ax in flat[len(depths):]:
        ax.set_visible(False)
    return fig, axes


def print_claims(path):
    """The claims table of a run, one line per row, for the script's summary."""
    claims = C.read_claims(path)
    cols = [c for c in ("claim", "depth", "dataset", "measure", "effect", "ci_low", "ci_high",
                        "p_value", "n", "verdict") if c in claims.columns]
    with pd.option_context("display.width", 250, "display.max_columns", 20,
                           "display.max_colwidth", 60, "display.float_format", "{:.3g}".format):
        print(claims[cols].to_string(index=False))


def finish_plot(fig, folder, name, title=None):
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return plotting.save_figure(fig, folder, name)
