"""Claim C6 — "V2 overfits less, because every weight layer's input is normalized".

The experiment of ``experiments/overfitting.py``: its presets and cells, and what turns the
tidy tables the sweep wrote into

* ``weight_inputs.csv.gz`` — every Conv2d / Linear input of every net at every probed step:
  the four channel statistics of ``probes.stats`` (``in_mean_mean``, ``in_mean_var``,
  ``in_var_mean``, ``in_var_var``), the layer's position and role, and how far the input
  is from "normalized", i.e. from channel mean 0 and channel variance 1:

  ``mean_rms``  = sqrt(mean_c m_c^2)       = sqrt(in_mean_mean^2 + in_mean_var)
  ``var_dev``   = sqrt(mean_c (v_c - 1)^2) = sqrt((in_var_mean - 1)^2 + in_var_var)
  ``distance``  = sqrt(mean_c [m_c^2 + (v_c - 1)^2]) = sqrt(mean_rms^2 + var_dev^2)

  (exact identities; m_c, v_c are the channel means and variances of the layer's input).
  A layer right after BN-ReLU sees ReLU of a standardised signal: at initialisation that is
  channel mean 1/sqrt(2 pi) = 0.40 and variance 1/2 - 1/(2 pi) = 0.34 (distance 0.77), which
  the figures mark; "normalized" in the article means that (a BN right before the layer),
  not exactly (0, 1).
* ``summary.csv`` — per net: final train loss (train mode, the mean over the last tenth of the
  steps, as He et al. 2016 Fig. 6 plots it), train and test loss and error in eval mode at
  the end, the generalization gaps (test - train, eval mode), and the mean input distance
  at initialisation and at the last probed step of the weight layers that follow an
  addition (each unit's first convolution and projection, and the classifier: the
  article's "next weight layer" after the shortcut is added).
* ``claims.csv`` rows for C6, per depth, every test paired by seed (V1 and V2 of a seed share
  the initialisation stream, batches and augmentation).
* the figures (``c6_*``), redrawn by ``draw_figures(run_dir)`` from the CSVs alone.

Which rows count for C7 (``analysis.claims``): the outcome rows that state a V2 advantage —
the generalization gap in error (V1 − V2 > 0) and the final test error (V1 − V2 > 0). The
weight-input rows test the article's *mechanism* (V1's inputs are further from normalized);
it holds by construction at every depth, so it says nothing about which net to use at which
depth and is written with ``for_c7=False``; so are the secondary loss gap and He et al.'s
Fig. 6 pattern ("V2 ends with a *higher* training loss", effect V2 − V1).

A generalization gap measures overfitting only between nets that fit their training data.
Where either version's mean eval-mode train error exceeds ``UNDERFIT_ERROR`` (10%) at a
depth, the gap rows of that depth keep their verdict but are written with ``for_c7=False``,
and every row of that depth (but the init one) says so in ``note``. The rule is fixed in
advance, on the train error, not on the gap's verdict.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from probes import WEIGHT_INPUT_STATS  # noqa: E402
from resnet_lab import plotting, settings  # noqa: E402
from resnet_lab.runs import atomic_write, read_table  # noqa: E402
from resnet_lab.schedule import Schedule  # noqa: E402
from resnet_lab.sweep import ID_COLUMNS, Cell  # noqa: E402

from . import claims as C  # noqa: E402
from .cells import train_context  # noqa: E402

NAME = EXPERIMENT = "overfitting"
PRESETS = {
    # 2 CPU cores, nothing downloaded: 10.5 minutes measured (1 thread, shared machine).
    "quick": dict(depths=[20, 164, 326], widths={"basic": 16, "bottleneck": 16}, seeds=[0, 1, 2],
                  steps=150, warmup_steps=30, lr=0.1, batch_size=128, checkpoints=5,
                  dataset="digits"),
    # He et al. 2016: CIFAR-10, width 16, 64k iterations, warm-up 400 at 0.01; a GPU.
    "paper": dict(depths=[110, 164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=64000, warmup_steps=400, lr=0.1,
                  batch_size=128, checkpoints=9, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 11], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2], steps=4,
                  warmup_steps=1, lr=0.1, batch_size=32, checkpoints=2, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "batch_size", "checkpoints", "warmup_steps", "lr",
           "dataset")
CELL = ["depth", "version", "seed"]
WEIGHT_STATS = ["in_mean_mean", "in_mean_var", "in_var_mean", "in_var_var"]
RELU_NORMAL_MEAN = 1 / math.sqrt(2 * math.pi)            # E[ReLU(z)], z ~ N(0, 1)
RELU_NORMAL_VAR = 0.5 - 1 / (2 * math.pi)                # Var[ReLU(z)]
FINAL_FRACTION = 0.1        # "final train loss": the mean over the last tenth of the steps
UNDERFIT_ERROR = 0.10       # train error (eval mode) above which a net did not fit the data
ROLE_ORDER = ["stem", "unit input", "inside branch", "classifier"]
# He et al. 2016, CIFAR-10 test error (%), median of 5 runs (DESIGN.md).
PAPER_TEST_ERROR = {110: (6.61, 6.37), 164: (5.93, 5.46), 1001: (7.61, 4.92)}

# The files a run folder holds (and the committed reference keeps).
FILES = ("config.json", "claims.csv", "summary.csv", "final.csv", "cells.csv",
         "weight_inputs.csv.gz", "table.md")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/overfitting.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3)
    recipe(s)
    s["probe_every"] = settings.checkpoint_spacing(s["steps"], s["checkpoints"])
    return s


def recipe(s):
    """He et al.'s schedule on ``steps`` updates: lr 0.01 for ``warmup_steps`` updates, then
    ``lr``, divided by 10 at the paper's fractions of the run; a tenth of the run between
    evaluations."""
    milestones = Schedule.paper(s["steps"]).milestones
    s["schedule"] = Schedule(s["steps"], lr=s["lr"], warmup_max_steps=s["warmup_steps"],
                             warmup_error=None, milestones=milestones).as_dict()
    s["eval_every"] = max(1, s["steps"] // 10)


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in ("original", "full_preact")]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=(), stats=WEIGHT_INPUT_STATS, weight_inputs=True),
                         final_eval=True)


def describe(s) -> str:
    return (f"overfitting ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"{s['steps']} steps of {s['batch_size']}, lr {s['lr']} after {s['warmup_steps']} "
            f"warm-up steps at 0.01, /10 at {list(s['schedule']['milestones'])}; weight inputs "
            f"probed every {s['probe_every']} steps; on {s['device']} ({s['workers']} processes "
            f"x {s['threads']} threads)")


def analyse(run, tables, cells_table, *, dataset, preset):
    """Write the run's tables, summary, results table and claims; returns the claims."""
    run.write_csv("cells.csv", cells_table)
    run.write_csv("train.csv", tables["train"])
    run.write_csv("final.csv", tables["final"])
    run.write_csv("probe.csv.gz", tables["probe"])
    weight_inputs = weight_input_table(tables["probe"])
    run.write_csv("weight_inputs.csv.gz", weight_inputs)
    table = summary(tables["train"], tables["final"], weight_inputs)
    run.write_csv("summary.csv", table)
    atomic_write(run.path / "table.md", results_table(table, dataset=dataset, preset=preset))
    rows = claims_rows(table, dataset=dataset, preset=preset)
    C.append_claims(run.path, rows)
    return pd.DataFrame(rows)


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


def summary(train: pd.DataFrame, final: pd.DataFrame, weight_inputs: pd.DataFrame | None):
    """One row per net: see the module docstring."""
    loss = train[(train["split"] == "train") & (train["metric"] == "loss")]
    last_step = loss.groupby(CELL)["step"].transform("max")
    window = loss[loss["step"] > last_step * (1 - FINAL_FRACTION)]
    out = window.groupby(CELL)["value"].mean().rename("train_loss_final").to_frame()
    wide = final.pivot_table(index=CELL, columns=["split", "metric"], values="value")
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    out = out.join(wide, how="outer")
    out["gap_error"] = out["test_error"] - out["train_error"]
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    if weight_inputs is not None and not weight_inputs.empty:
        dist = input_distance(weight_inputs)
        first = dist.loc[dist.groupby(CELL)["step"].idxmin()].set_index(CELL)
        last = dist.loc[dist.groupby(CELL)["step"].idxmax()].set_index(CELL)
        out["distance_init"] = first["distance"]
        out["distance_final"] = last["distance"]
        out["probe_step_final"] = last["step"]
    out = out.reset_index()
    widths = train.groupby(CELL)["width"].first() if "width" in train.columns else None
    if widths is not None:
        out = out.merge(widths.reset_index(), on=CELL, how="left")
    return out.sort_values(CELL, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- claims
# (column of the summary, measure text, claimed direction, effect order, for_c7)
MEASURES = [
    ("distance_init", "input distance from (0, 1) of the weight layers after each addition, "
     "at init, V1 − V2", "greater", "v1-v2", False),
    ("distance_final", "input distance from (0, 1) of the weight layers after each addition, "
     "at the last probed step, V1 − V2", "greater", "v1-v2", False),
    ("gap_error", "generalization gap in error (test − train, eval mode), V1 − V2", "greater",
     "v1-v2", True),
    ("test_error", "final test error, V1 − V2", "greater", "v1-v2", True),
    ("gap_loss", "generalization gap in loss (test − train, eval mode), V1 − V2", "greater",
     "v1-v2", False),
    ("train_loss_final", "final train loss (train mode, last 10% of steps), V2 − V1 "
     "(He et al. Fig. 6: V2 higher)", "greater", "v2-v1", False),
]


def paired(table: pd.DataFrame, column: str, depth) -> tuple[np.ndarray, np.ndarray, list]:
    """V1 and V2 values of ``column`` at ``depth``, aligned by seed (seeds present in both)."""
    part = table[table["depth"] == depth].pivot_table(index="seed", columns="version",
                                                      values=column, aggfunc="first")
    if not {1, 2} <= set(part.columns):
        return np.array([]), np.array([]), []
    part = part[[1, 2]].dropna()
    return part[1].to_numpy(), part[2].to_numpy(), part.index.tolist()


def claims_rows(table: pd.DataFrame, *, dataset: str, preset: str) -> list[dict]:
    """C6 rows: every measure of ``MEASURES`` at every depth, paired by seed."""
    rows = []
    for depth in sorted(table["depth"].unique()):
        at = table[table["depth"] == depth]
        width = int(at["width"].iloc[0]) if "width" in at.columns else None
        fit = _fit_note(at)
        for column, measure, direction, order, for_c7 in MEASURES:
            if column not in table.columns:
                continue
            v1, v2, seeds = paired(table, column, depth)
            a, b = (v1, v2) if order == "v1-v2" else (v2, v1)
            result = C.paired_difference(a, b, alternative=direction)
            if fit and column.startswith("gap_"):
                for_c7 = False       # a gap between underfit nets is not overfitting
            row = C.claim_row("C6", EXPERIMENT, measure, int(depth), result, dataset=dataset,
                              preset=preset, width=width, for_c7=for_c7)
            if fit and column != "distance_init":
                row["note"] = "; ".join(x for x in (row["note"], fit) if x)
            rows.append(row)
    return rows


def _fit_note(at: pd.DataFrame) -> str:
    """Which version did not fit its training data (eval-mode train error above 10%)."""
    if "train_error" not in at.columns:
        return ""
    means = at.groupby("version")["train_error"].mean()
    bad = [f"V{v} train error {means[v]:.0%}" for v in (1, 2)
           if v in means.index and means[v] > UNDERFIT_ERROR]
    return ("did not fit the training set: " + ", ".join(bad)) if bad else ""


def results_table(table: pd.DataFrame, *, dataset: str, preset: str) -> str:
    """Markdown: ours (mean ± sd over seeds) next to He et al.'s CIFAR-10 test errors."""
    lines = [f"# C6: V1 vs V2 at the end of training — ours ({dataset}, `{preset}` preset) "
             "next to He et al. 2016 (CIFAR-10)", "",
             "Ours: mean ± sd over the n seeds; errors in %, eval mode on "
             "the whole train / test split; train loss in train mode over the last 10% of "
             "steps (as He et al. Fig. 6). He et al.: CIFAR-10 test error, median of 5 runs.", "",
             "| depth | width | version | n | train loss (final) | train error | test error | "
             "gap (test − train error) | input distance init → last | He et al. test error |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(x, scale=1.0, digits=2):
        x = np.asarray(x, dtype=float) * scale
        if x.size == 0 or not np.isfinite(x).any():
            return "—"
        sd = np.std(x, ddof=1) if x.size > 1 else float("nan")
        return f"{np.mean(x):.{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{np.mean(x):.{digits}f}"

    for (depth, version), part in table.groupby(["depth", "version"], sort=True):
        paper = PAPER_TEST_ERROR.get(int(depth))
        ref = f"{paper[int(version) - 1]:.2f}" if paper else "—"
        dist = "—"
        if "distance_init" in part.columns:
            dist = f"{ms(part['distance_init'])} → {ms(part['distance_final'])}"
        width = int(part["width"].iloc[0]) if "width" in part.columns else "—"
        lines.append(f"| {int(depth)} | {width} | V{int(version)} | {len(part)} | "
                     f"{ms(part['train_loss_final'], digits=3)} | {ms(part['train_error'], 100)} | "
                     f"{ms(part['test_error'], 100)} | {ms(part['gap_error'], 100)} | {dist} | {ref} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures
def _version_label(df):
    df = df.copy()
    df["version"] = "V" + df["version"].astype(int).astype(str)
    return df


def figure_weight_inputs(wi: pd.DataFrame, folder, name="c6_weight_input_stats"):
    """Channel mean and channel variance of every weight layer's input, per layer, at the
    first and last probed step; columns: depth; marker: the layer's role."""
    wi = _version_label(wi)
    steps = {"first": wi.groupby(CELL)["step"].transform("min"),
             "last": wi.groupby(CELL)["step"].transform("max")}
    wi = wi.assign(when=np.where(wi["step"] == steps["first"], "initialisation",
                                 np.where(wi["step"] == steps["last"], "last probed step", "")))
    wi = wi[wi["when"] != ""]
    avg = (wi.groupby(["depth", "version", "when", "layer_pos", "position", "role"])
           [["in_mean_mean", "in_var_mean"]].mean().reset_index())
    depths = sorted(avg["depth"].unique())
    whens = ["initialisation", "last probed step"]
    fig, axes = plt.subplots(4, len(depths), figsize=(3.4 * len(depths), 10.5), squeeze=False,
                             sharex="col")
    markers = {"stem": "s", "unit input": "o", "inside branch": ".", "classifier": "D"}
    for j, depth in enumerate(depths):
        for i, (when, stat) in enumerate([(w, s) for s in ("in_var_mean", "in_mean_mean")
                                          for w in whens]):
            ax = axes[i][j]
            part = avg[(avg["depth"] == depth) & (avg["when"] == when)]
            for (version, role), rows in part.groupby(["version", "role"]):
                ax.scatter(rows["position"], rows[stat], s=14 if role != "inside branch" else 5,
                           marker=markers.get(role, "o"), color=plotting.VERSION_COLORS[version],
                           alpha=0.8, label=f"{version}, {role}")
            target = 1.0 if stat == "in_var_mean" else 0.0
            relu = RELU_NORMAL_VAR if stat == "in_var_mean" else RELU_NORMAL_MEAN
            ax.axhline(target, color="0.2", lw=0.8, ls="-", label="normalized (0, 1)")
            ax.axhline(relu, color="0.5", lw=0.8, ls=":", label="ReLU(N(0, 1))")
            if stat == "in_var_mean":
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(f"{depth} layers")
            if j == 0:
                what = "mean channel variance" if stat == "in_var_mean" else "mean channel mean"
                ax.set_ylabel(f"{what}\n({when})")
            if i == 3:
                ax.set_xlabel("weight layer position (0 stem, 1 fc)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle("C6: statistics of every weight layer's input (mean over seeds)")
    fig.tight_layout()
    return plotting.save_figure(fig, folder, name)


def figure_distance(wi: pd.DataFrame, folder, name="c6_input_distance"):
    """Mean distance of weight-layer inputs from (0, 1) over training, per depth, per seed."""
    dist = _version_label(input_distance(wi))
    depths = sorted(dist["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(3.4 * len(depths), 3.3), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        part = dist[dist["depth"] == depth]
        sns.lineplot(data=part, x="step", y="distance", hue="version", units="seed",
                     estimator=None, palette=plotting.version_palette(), marker="o", lw=1,
                     ax=ax, legend=ax is axes[0][-1])
        ax.axhline(math.sqrt(RELU_NORMAL_MEAN ** 2 + (RELU_NORMAL_VAR - 1) ** 2), color="0.5",
                   lw=0.8, ls=":", label="ReLU(N(0, 1))")
        ax.set_yscale("log")
        ax.set_title(f"{depth} layers")
        ax.set_xlabel("iteration")
        ax.set_ylabel("input distance from (0, 1),\nlayers after an addition" if ax is axes[0][0] else "")
    fig.suptitle("C6: how far weight-layer inputs are from normalized (one line per seed)")
    fig.tight_layout()
    return plotting.save_figure(fig, folder, name)


def figure_training(train: pd.DataFrame, folder, name="c6_training_curves"):
    """He et al. Fig. 6 on our data: training loss (thin, train mode) and test error (bold),
    mean over seeds, per depth."""
    train = _version_label(train)
    loss = train[(train["split"] == "train") & (train["metric"] == "loss")].copy()
    loss = loss.sort_values([*CELL, "step"])
    loss["smooth"] = (loss.groupby(CELL)["value"]
                      .transform(lambda s: s.rolling(5, min_periods=1).mean()))
    err = train[(train["split"] == "test") & (train["metric"] == "error")]
    depths = sorted(loss["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(3.6 * len(depths), 3.4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        right = ax.twinx()
        for version, color in plotting.VERSION_COLORS.items():
            l_part = loss[(loss["depth"] == depth) & (loss["version"] == version)]
            e_part = err[(err["depth"] == depth) & (err["version"] == version)]
            if l_part.empty:
                continue
            mean_loss = l_part.groupby("step")["smooth"].mean()
            right.plot(mean_loss.index, mean_loss.values, color=color, lw=0.8, ls="--",
                       label=f"{version} train loss")
            mean_err = e_part.groupby("step")["value"].mean() * 100
            ax.plot(mean_err.index, mean_err.values, color=color, lw=2.0, marker="o", ms=3,
                    label=f"{version} test error")
        ax.set_title(f"{depth} layers")
        ax.set_xlabel("iteration")
        ax.set_ylabel("test error (%)" if ax is axes[0][0] else "")
        right.set_ylabel("training loss" if ax is axes[0][-1] else "")
        right.set_yscale("log")
        right.grid(False)
    handles = [*axes[0][-1].get_legend_handles_labels()]
    h2 = fig.axes[-1].get_legend_handles_labels()
    fig.legend(handles[0] + h2[0], handles[1] + h2[1], loc="upper left",
               bbox_to_anchor=(1.0, 0.9))
    fig.suptitle("C6 / He et al. Fig. 6: test error (bold) and training loss (dashed), "
                 "mean over seeds")
    fig.tight_layout()
    return plotting.save_figure(fig, folder, name)


def figure_final(table: pd.DataFrame, folder, name="c6_final_metrics"):
    """Final train loss, train error, test error and gap per depth: one dot per seed, V1 and
    V2 of a seed joined by a grey line (the pairing the tests use)."""
    table = _version_label(table)
    panels = [("train_loss_final", "final train loss (train mode)", 1),
              ("train_error", "train error, eval mode (%)", 100),
              ("test_error", "test error (%)", 100),
              ("gap_error", "gap: test − train error (pp)", 100)]
    depths = sorted(table["depth"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    for ax, (column, label, scale) in zip(axes[0], panels):
        for k, depth in enumerate(depths):
            part = table[table["depth"] == depth]
            wide = part.pivot_table(index="seed", columns="version", values=column) * scale
            for _, r in wide.iterrows():
                if {"V1", "V2"} <= set(r.index):
                    ax.plot([k - 0.15, k + 0.15], [r["V1"], r["V2"]], color="0.7", lw=0.8, zorder=1)
            for version, dx in (("V1", -0.15), ("V2", 0.15)):
                if version in wide.columns:
                    ax.scatter(np.full(len(wide), k + dx), wide[version],
                               color=plotting.VERSION_COLORS[version], s=22, zorder=2,
                               label=plotting.VERSION_LABELS[version] if k == 0 else None)
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("depth (layers)")
        ax.set_title(label)
        if column == "gap_error":
            ax.axhline(0, color="0.5", lw=0.8)
    axes[0][0].legend(loc="best")
    fig.suptitle("C6: end of training, one dot per seed (grey: same seed)")
    fig.tight_layout()
    return plotting.save_figure(fig, folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every C6 figure from ``run_dir``'s CSVs alone (no model code runs)."""
    run_dir = Path(run_dir)
    what = "an overfitting run folder"
    train = read_table(run_dir, "train", what)
    table = read_table(run_dir, "summary", what)
    plotting.set_style()
    folder = run_dir / "figures"
    written = figure_training(train, folder) + figure_final(table, folder)
    wi = read_table(run_dir, "weight_inputs", what)
    return written + figure_weight_inputs(wi, folder) + figure_distance(wi, folder)


def published_tables(run_dir) -> dict:
    """The training rows; the raw probe table is left behind: ``weight_inputs`` holds every
    value the figures and claims use."""
    return {"train.csv.gz": read_table(run_dir, "train", "an overfitting run folder")}
