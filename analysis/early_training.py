"""Claims C3 and C5 (and C4 late in the run): do very deep V1 nets train slowly at first?

The experiment of ``experiments/early_training.py``, which trains V1 and V2 at depths 20 …
1001 from the same seeds — a seed fixes the initialisation stream, the batches and the
augmentation, so V1 and V2 of a seed see the same data in the same order — for the first
iterations of He et al.'s recipe (paper Fig. 1), probing each unit's input and the last
unit's output (norms, forward and backward) at evenly spaced steps.

Per net (``summary.csv``), from the training loss of every iteration (train mode, the loss
of that iteration's batch; the unit of replication is the seed):

``auc``               area under the loss curve / iterations = the mean training loss over
                      the run (the primary measure: it integrates "slow at first");
``loss_q25`` …        the loss at 25%, 50% and 100% of the run: the mean over the window of
``loss_q100``         ``WINDOW_FRACTION`` of the run that ends at that iteration;
``steps_to``          the first iteration at which that windowed loss is at most
                      ``THRESHOLD_FRACTION`` x ln(classes) (half the chance-level loss);
                      a net that never gets there is censored at iterations + 1 (noted);
``abs_log_rho_ratio`` C4 at the last probed step: |log10 rho_first / rho_last|, rho =
                      ||dL/dx|| ||x|| (``analysis.signal_propagation.transmission``), and the
                      raw gradient ratio ``abs_log_grad_ratio``.

Claims rows, every test paired by seed, effect V1 − V2 (lower is better for every measure,
so "greater" states a V2 advantage, ``analysis.claims``' convention):

C3  per depth: each loss measure. The AUC row counts for C7 (``for_c7``); the other loss
    rows describe the same curves and carry ``for_c7=False`` so that a depth is not counted
    several times.
C4  per depth, at the last probed step ("late" = the end of this run): the rho gap
    (``for_c7``) and the raw gradient gap (``for_c7=False``).
C5  the depth from which the AUC gap is significant at it and every deeper depth (with a
    seed bootstrap), against the article's "about 164" — within each unit block, since the
    paper's nets switch from basic units (20–110) to bottleneck units (164, 1001) exactly
    there (the quick preset adds bottleneck nets of 29 and 65 layers); and, below 164
    layers, whether the AUC gap is practically zero (equivalence within 5% of V2's AUC;
    ``for_c7=False``).

``draw_figures(run_dir)`` redraws ``c3_loss_curves``, ``c3_c5_gap_vs_depth`` and
``c4_late_transmission`` from the CSVs alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resnet_lab import plotting, settings  # noqa: E402
from resnet_lab.networks import resolve_cifar_block  # noqa: E402
from resnet_lab.runs import read_table  # noqa: E402
from resnet_lab.schedule import Schedule  # noqa: E402
from resnet_lab.sweep import Cell  # noqa: E402

from . import claim_helpers as H  # noqa: E402
from . import claims as C  # noqa: E402
from .cells import train_context  # noqa: E402
from .signal_propagation import transmission  # noqa: E402

NAME = EXPERIMENT = "early_training"
PRESETS = {
    # 2 CPU cores, nothing downloaded: 20.5 minutes with one thread (measured, reference run).
    "quick": dict(depths=[20, 29, 56, 65, 110, 164, 1001], widths={"basic": 16, "bottleneck": 4},
                  seeds=[0, 1, 2, 3, 4], steps=81, checkpoints=5, lr=0.1, batch_size=128,
                  dataset="digits"),
    # He et al. Fig. 1: CIFAR-10 at the paper's width, the first 4,000 iterations; a GPU.
    "paper": dict(depths=[20, 29, 56, 65, 110, 164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=4000, checkpoints=5, lr=0.1, batch_size=128,
                  dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29, 32, 47], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2],
                  steps=6, checkpoints=2, lr=0.1, batch_size=16, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "lr", "dataset")
VERSIONS = ("original", "full_preact")
PROBE_TAPS = ("input", "output")
PROBE_STATS = ("norm",)
FRACTIONS = (0.25, 0.5, 1.0)
WINDOW_FRACTION = 0.1
THRESHOLD_FRACTION = 0.5
CELL = ["depth", "version", "seed"]
FILES = ("config.json", "claims.csv", "cells.csv", "summary.csv")
LOSS_MEASURES = [("auc", "area under the training-loss curve / iterations (mean loss), V1 − V2", True)]
LOSS_MEASURES += [(f"loss_q{round(f * 100)}", f"training loss at {round(f * 100)}% of the run "
                   f"(windowed mean), V1 − V2", False) for f in FRACTIONS]
LOSS_MEASURES += [("steps_to", "iterations until the windowed loss reaches half the chance "
                   "loss (censored: iterations + 1), V1 − V2", False)]


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/early_training.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3)
    first_iterations(s)
    return s


def first_iterations(s):
    """probe_every, eval_every and the schedule of He et al.'s first iterations: lr 0.01 for
    the first 400 (their warm-up), then ``lr``."""
    s["probe_every"] = settings.checkpoint_spacing(s["steps"], s["checkpoints"])
    s["eval_every"] = -(-s["steps"] // s["probe_every"]) * s["probe_every"]
    s["schedule"] = Schedule(s["steps"], lr=s["lr"], warmup_max_steps=min(400, s["steps"]),
                             warmup_error=None).as_dict()


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in VERSIONS]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=PROBE_TAPS, stats=PROBE_STATS, param_grads=False))


def describe(s) -> str:
    return (f"early_training ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"{s['steps']} steps of {s['batch_size']} (lr 0.01 for "
            f"{s['schedule']['warmup_max_steps']}, then {s['lr']}), unit norms probed every "
            f"{s['probe_every']}, on {s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, *, dataset, num_classes, preset):
    """Write the run's tables, summary and claims; returns the summary."""
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv", tables["train"])
    run.write_csv("probe.csv.gz", tables["probe"])
    table = summary(tables["train"], tables["probe"], num_classes=num_classes)
    run.write_csv("summary.csv", table)
    C.append_claims(run.path, claims_rows(table, dataset=dataset, preset=preset))
    return table


# --------------------------------------------------------------------------- tables
def train_loss(train: pd.DataFrame) -> pd.DataFrame:
    rows = train[(train["split"] == "train") & (train["metric"] == "loss")]
    return rows.sort_values(CELL + ["step"], kind="stable")


def loss_measures(train: pd.DataFrame, *, num_classes: int) -> pd.DataFrame:
    """One row per net: the loss measures of the module docstring."""
    loss = train_loss(train)
    threshold = THRESHOLD_FRACTION * math.log(num_classes)
    out = []
    for key, part in loss.groupby(CELL):
        values = part["value"].to_numpy(float)
        steps = part["step"].to_numpy(int)
        total = int(steps.max())
        window = max(1, round(WINDOW_FRACTION * total))
        smooth = pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()
        row = dict(zip(CELL, key))
        row["width"] = int(part["width"].iloc[0]) if "width" in part else None
        row["iterations"] = total
        row["auc"] = float(np.mean(values))
        for f in FRACTIONS:
            at = max(1, round(f * total))
            row[f"loss_q{round(f * 100)}"] = float(smooth[np.searchsorted(steps, at)])
        reached = np.nonzero(smooth <= threshold)[0]
        row["steps_to"] = int(steps[reached[0]]) if len(reached) else total + 1
        row["censored"] = not len(reached)
        row["threshold"] = threshold
        row["window"] = window
        row["diverged"] = not np.all(np.isfinite(values))
        out.append(row)
    return pd.DataFrame(out)


def summary(train: pd.DataFrame, probe: pd.DataFrame | None, *, num_classes: int) -> pd.DataFrame:
    """Loss measures and, where probed, the C4 transmission at the first and last probed step."""
    table = loss_measures(train, num_classes=num_classes)
    if probe is not None and len(probe):
        gaps = transmission(probe, CELL)
        first = gaps[gaps["step"] == gaps.groupby(CELL)["step"].transform("min")]
        last = gaps[gaps["step"] == gaps.groupby(CELL)["step"].transform("max")]
        cols = ["abs_log_rho_ratio", "abs_log_grad_ratio", "log_rho_ratio", "log_grad_ratio"]
        table = table.merge(first[CELL + cols].add_suffix("_init").rename(
            columns={f"{c}_init": c for c in CELL}), on=CELL, how="left")
        table = table.merge(last[CELL + cols + ["step"]].rename(columns={"step": "probe_step"}),
                            on=CELL, how="left")
    return table.sort_values(CELL, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- claims
def claims_rows(table: pd.DataFrame, *, dataset: str, preset: str) -> list[dict]:
    """The rows of the module docstring. Depths are grouped by unit block (basic units with
    zero-padding shortcuts, bottleneck units with projections): the paper's nets change block
    between 110 and 164 layers, so C5's threshold is found within each block."""
    rows = []
    table = table.copy()
    table["block"] = [resolve_cifar_block(int(d)) for d in table["depth"]]
    for block, part_table in table.groupby("block"):
        extra = dict(dataset=dataset, block=block, preset=preset)
        auc_rows, auc_diffs = [], {}
        for column, measure, for_c7 in LOSS_MEASURES:
            part, diffs = H.paired_rows(part_table, column, claim="C3", experiment=EXPERIMENT,
                                        measure=measure, for_c7=for_c7, **extra)
            if column == "steps_to":
                for row in part:
                    censored = table[(table["depth"] == row["depth"]) & table["censored"]]
                    if len(censored):
                        versions = sorted(f"V{v}" for v in censored["version"].unique())
                        row["note"] = "; ".join(x for x in (
                            row["note"], f"{len(censored)} nets never reached the threshold "
                            f"({', '.join(versions)})") if x)
            rows += part
            if column == "auc":
                auc_rows, auc_diffs = part, diffs
        if "abs_log_rho_ratio" in table.columns:
            step = int(table["probe_step"].max())
            for column, text, for_c7 in (
                    ("abs_log_rho_ratio", "|log10 rho_first / rho_last| (rho = ||dL/dx|| ||x||)",
                     True),
                    ("abs_log_grad_ratio", "|log10 ||g_first|| / ||g_last||| (raw gradient)",
                     False)):
                part, _ = H.paired_rows(part_table, column, claim="C4", experiment=EXPERIMENT,
                                        measure=f"{text} at step {step} (late in this run), "
                                                "V1 − V2", for_c7=for_c7, step=step, **extra)
                rows += part
        if len(auc_rows) >= 2:
            row, _ = H.threshold_from(auc_rows, auc_diffs, experiment=EXPERIMENT,
                                      measure=f"depth from which V1's AUC gap (C3) is "
                                              f"significant, {block} units", **extra)
            rows.append(row)
        rows += H.equivalence_rows(part_table, "auc", experiment=EXPERIMENT,
                                   measure="AUC of the training loss, V1 − V2 equivalent to 0 "
                                           "(within 5% of V2's)", **extra)
    return rows


# --------------------------------------------------------------------------- figures
def figure_loss(train: pd.DataFrame, folder, name="c3_loss_curves"):
    """He et al. Fig. 1 on our data: training loss vs iteration, V1 vs V2, per depth (line:
    mean over seeds of the windowed loss, band: range; thin: each seed's raw loss)."""
    loss = H.version_label(train_loss(train))
    depths = sorted(loss["depth"].unique())
    total = int(loss["step"].max())
    window = max(1, round(WINDOW_FRACTION * total))
    loss["smooth"] = loss.groupby(CELL)["value"].transform(
        lambda s: s.rolling(window, min_periods=1).mean())

    def draw(ax, depth, part):
        for version, color in plotting.VERSION_COLORS.items():
            rows = part[part["version"] == version]
            if rows.empty:
                continue
            for _, seed in rows.groupby("seed"):
                ax.plot(seed["step"], seed["value"], color=color, lw=0.4, alpha=0.25)
            prof = rows.groupby("step")["smooth"].agg(["mean", "min", "max"])
            ax.plot(prof.index, prof["mean"], color=color, lw=1.6,
                    label=plotting.VERSION_LABELS[version])
            ax.fill_between(prof.index, prof["min"], prof["max"], color=color, alpha=0.2, lw=0)
        width = int(part["width"].iloc[0]) if "width" in part else None
        ax.set_title(f"{depth} layers" + (f" (width {width})" if width else ""))
        ax.set_xlabel("iteration")
        ax.set_yscale("log")

    fig, axes = H.draw_per_depth(loss, depths, draw, sharey=True)
    axes[0][0].set_ylabel("training loss")
    axes[0][-1].legend(loc="upper right", fontsize=7)
    return H.finish_plot(fig, folder, name, f"C3: the first {total} iterations (He et al. "
                         f"Fig. 1); bold: mean over seeds of the {window}-iteration mean")


def figure_gap(claims: pd.DataFrame, folder, name="c3_c5_gap_vs_depth"):
    """The AUC gap and the end-of-run loss gap (V1 − V2) with 95% CIs against depth, and
    C5's threshold bracket."""
    c3 = claims[claims["claim"] == "C3"]
    c5 = claims[(claims["claim"] == "C5") & claims["depth"].isna()]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    colors = {"basic": "#999999", "bottleneck": "#000000"}
    for k, (block, rows) in enumerate(c3.groupby("block")):
        auc = rows[rows["measure"].str.startswith("area under")]
        th = c5[c5["block"] == block]
        H.gap_axis(axes[0], auc, label=f"{block} units", color=colors.get(block, "C0"),
                   offset=1.0 + 0.03 * k, threshold=th.iloc[0].to_dict() if len(th) else None)
        end = rows[rows["measure"].str.startswith("training loss at 100%")]
        H.gap_axis(axes[1], end, label=f"{block} units", color=colors.get(block, "C0"),
                   offset=1.0 + 0.03 * k)
    axes[0].set_ylabel("V1 − V2 (> 0: V2 trains faster)")
    axes[0].set_title("area under the training-loss curve")
    axes[1].set_title("training loss at the end of the run (windowed mean)")
    for ax in axes:
        ax.set_xlabel("depth (layers)")
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + H.verdict_legend(), fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    return H.finish_plot(fig, folder, name, "C3/C5: V1's gap to V2 in the first iterations, "
                         "95% CI (paired by seed)")


def figure_transmission(table: pd.DataFrame, folder, name="c4_late_transmission"):
    """|log10 rho_first / rho_last| per net at init and at the last probed step, V1 vs V2."""
    if "abs_log_rho_ratio" not in table.columns:
        return []
    t = H.version_label(table)
    depths = sorted(t["depth"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    for ax, (column, title) in zip(axes, (("abs_log_rho_ratio_init", "initialisation"),
                                          ("abs_log_rho_ratio",
                                           f"step {int(t['probe_step'].max())}"))):
        for k, depth in enumerate(depths):
            part = t[t["depth"] == depth].pivot_table(index="seed", columns="version",
                                                      values=column)
            for _, r in part.iterrows():
                if {"V1", "V2"} <= set(r.index):
                    ax.plot([k - 0.15, k + 0.15], [r["V1"], r["V2"]], color="0.75", lw=0.8)
            for version, dx in (("V1", -0.15), ("V2", 0.15)):
                if version in part.columns:
                    ax.scatter(np.full(len(part), k + dx), part[version], s=20,
                               color=plotting.VERSION_COLORS[version],
                               label=plotting.VERSION_LABELS[version] if k == 0 else None)
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("depth (layers)")
        ax.set_title(title)
    axes[0].set_ylabel("|log10 rho_first / rho_last|\n(0: the signal reaches every unit alike)")
    axes[1].legend(loc="upper left", fontsize=7)
    return H.finish_plot(fig, folder, name, "C4: signal transmission through the whole net, "
                         "one dot per seed (grey: same seed)")


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    run_dir = Path(run_dir)
    train = read_table(run_dir, "train", "an early_training run folder")
    table = read_table(run_dir, "summary", "an early_training run folder")
    claims = C.read_claims(run_dir / C.CLAIMS_FILE)
    plotting.set_style()
    folder = run_dir / "figures"
    return (figure_loss(train, folder) + figure_gap(claims, folder)
            + figure_transmission(table, folder))


def published_tables(run_dir) -> dict:
    """The training rows, the train loss only."""
    train = read_table(run_dir, "train", "an early_training run folder")
    return {"train.csv.gz": train[(train["split"] == "train") & (train["metric"] == "loss")]}
