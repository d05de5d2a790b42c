"""He et al. 2016, Table 2: the five residual unit kinds, our measurements next to theirs.

The experiment of ``experiments/unit_ablation.py``: its presets and cells, and what it makes
of the tidy tables the sweep wrote:

* ``summary.csv`` — one row per net (depth, unit kind, seed): signal statistics at
  initialisation from the probe (``ch_var_growth``: forward channel variance at the last
  unit's output over the first unit's input; ``grad_ratio``: gradient norm at the first
  unit's input over the last unit's; ``shortcut_cut`` / ``grad_cut``: the share of shortcut
  energy / gradient energy that the after-addition function zeroes, mean over units),
  the early training loss (train mode, mean over the first 20% of steps), the final train
  loss (mean over the last 10%), and the final train and test error of the end-of-training
  evaluation (eval mode, whole splits); ``fits``: train error at most 2%.
* ``table2.md`` / ``table2.csv`` — Table 2's layout: one row per unit kind (Fig. 4 a–e),
  He et al.'s CIFAR-10 test errors at ResNet-110 and ResNet-164 next to ours, labelled with
  dataset, preset, depth and width.
* ``claims.csv`` rows (claim ``T2``, listed in the report under "Other measurements"): per
  depth, each kind's final test error minus the original unit's (a fraction, like
  ``paper_effect``: He et al.'s difference in the column of the same unit block, ResNet-110
  for basic units, ResNet-164 for bottleneck units), paired by seed, in the direction He et
  al. report at both depths. The primary test (declared here, ``PRIMARY``): full
  pre-activation has a lower test error than the original unit (margin 0.3 points, one test
  image), at every depth where every original-unit net fits its training set -- comparing
  units with an original one that did not fit says nothing of Table 2; elsewhere "not
  testable here". Secondary: BN after addition and ReLU before addition worse, ReLU-only
  pre-activation on par (within the margin).
* the figures (``t2_*``), redrawn by ``draw_figures(run_dir)`` from the CSVs alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from resnet_lab import plotting

from resnet_lab.runs import settings
from resnet_lab.networks.families import resolve_cifar_block
from resnet_lab.io.folders import atomic_write, read_table
from resnet_lab.runs.sweep import Cell
from resnet_lab.networks.units import UNIT_KINDS

from . import claims as C
from . import controls as K
from .cells import train_cell, train_context
from .figures import figure_inputs
from .tables import (first_to_last, forward_growth, mean_over_units, select, spread,
                     stage_boundaries, write_raw)

NAME = EXPERIMENT = "unit_ablation"
PRESETS = {
    # 2 CPU cores, nothing downloaded: ResNet-110 (Table 2's basic column) at width 16 on
    # digits 8x8, the schedule of analysis/full_training.py's quick preset.
    "quick": dict(depths=[110], widths={"basic": 16, "bottleneck": 16}, seeds=[0, 1, 2, 3, 4],
                  steps=500, warmup_steps=50, lr=0.05, batch_size=128, dataset="digits"),
    # He et al. 2016 Table 2: ResNet-110 and ResNet-164 on CIFAR-10, width 16; a GPU.
    "paper": dict(depths=[110, 164], widths={"basic": 16, "bottleneck": 16}, seeds=[0, 1, 2, 3, 4],
                  steps=64000, warmup_steps=400, lr=0.1, batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[8, 11], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2], steps=6,
                  warmup_steps=2, lr=0.1, batch_size=32, dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "warmup_steps", "batch_size", "lr", "dataset",
           "unit_kinds")
CLAIM = "T2"
# One primary per Table 2 column: full pre-activation − original, He et al.'s difference.
PRIMARY = {depth: C.Primary(CLAIM, "test_error", "test error, full pre-activation − original "
                            "(He et al. Table 2: better)", "less", 0.0, "He et al.'s effect "
                            f"({abs(effect) * 100:.2f} points) leaves no room for a margin",
                            (depth,), effect, f"He et al. 2016 Table 2, ResNet-{depth}",
                            requires=("B", "D"), on_test_set=True)
           for depth, effect in ((110, -0.0024), (164, -0.0047))}
SECONDARY_MARGIN = 0.005     # "on par": within half a point
CONTROLS = {
    "B": K.Control("B", "the original unit fits its training set (eval-mode training error at "
                   "most 2%, every seed)", "He et al. 2015/2016: ResNet-110/164 train"),
    "D": K.Control("D", "full pre-activation fits its training set (every seed)",
                   "He et al. 2016: pre-activation ResNet-110/164 train"),
}
NET = ["depth", "unit_kind", "seed"]     # what identifies a net here (its unit kind, not a version)
EARLY_FRACTION = 0.2
FINAL_FRACTION = 0.1
FIG4 = {"original": "(a)", "bn_after_add": "(b)", "relu_before_add": "(c)",
        "relu_only_preact": "(d)", "full_preact": "(e)"}
# He et al. 2016, Table 2: CIFAR-10 test error (%) at ResNet-110 (basic) / ResNet-164 (bottleneck).
PAPER_TABLE2 = {"original": (6.61, 5.93), "bn_after_add": (8.17, 6.50),
                "relu_before_add": (7.84, 6.14), "relu_only_preact": (6.71, 5.91),
                "full_preact": (6.37, 5.46)}
# The direction He et al. report for (kind − original) at both depths.
PAPER_DIRECTION = {"bn_after_add": "greater", "relu_before_add": "greater",
                   "relu_only_preact": "equivalent", "full_preact": "less"}
PROBE_TAPS = ("input", "output", "sum")
PROBE_STATS = ("norm", "ch_var", "shortcut_cut", "grad_cut")
FILES = ("config.json", "claims.csv", "controls.csv", "summary.csv", "cells.csv", "final.csv",
         "probe.csv.gz", "table2.md", "table2.csv")
WORK = train_cell


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/unit_ablation.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3)
    s["unit_kinds"] = s["unit_kinds"] or list(UNIT_KINDS)
    settings.check_main_lr_phase(s)
    s["schedule"] = settings.paper_schedule(s)
    s["eval_every"] = max(1, s["steps"] // 10)
    s["probe_every"] = s["steps"]           # the signal at initialisation only
    return s


def cells(s) -> list:
    return [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
            for kind in s["unit_kinds"]]


def context(s) -> dict:
    return train_context(s, probe=dict(taps=PROBE_TAPS, stats=PROBE_STATS), final_eval=True)


def describe(s) -> str:
    return (f"unit_ablation ({s['preset']}): {len(cells(s))} nets on {s['dataset']}, depths "
            f"{s['depths']} ({settings.describe_widths(s['widths'])}), unit kinds "
            f"{', '.join(s['unit_kinds'])}, seeds {s['seeds']}, {s['steps']} steps of "
            f"{s['batch_size']} (lr 0.01 for {s['schedule']['warmup_max_steps']}, then {s['lr']}, /10 at "
            f"{list(s['schedule']['milestones'])}); signal probed at step 1; on "
            f"{s['device']} ({s['workers']} processes x {s['threads']} threads)")


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, summary, Table 2 and claims."""
    dataset, preset = s["dataset"], s["preset"]
    write_raw(run, data, cells_table, {"train.csv.gz": tables["train"], "final.csv": tables["final"],
                                       "probe.csv.gz": tables["probe"]})
    table = summary(tables["train"], tables["probe"], tables["final"])
    run.write_csv("summary.csv", table)
    t2 = table2(table, dataset=dataset, preset=preset)
    run.write_csv("table2.csv", t2)
    atomic_write(run.path / "table2.md", table2_markdown(t2, table))
    controls = control_rows(table)
    K.write_controls(run.path, controls)
    C.write_claims(run.path, claims_rows(table, controls, dataset=dataset,
                                         n_test=len(data.test_y)))


def results_text(run_dir) -> str:
    """What the script prints: Table 2 and the tests against the original unit."""
    return (Path(run_dir) / "table2.md").read_text() + "\n" + K.controls_text(run_dir) + "\n" + C.claims_text(
        Path(run_dir) / C.CLAIMS_FILE, roles=("primary", "secondary"))


def _order(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["_k"] = df["unit_kind"].map({k: i for i, k in enumerate(UNIT_KINDS)})
    return df.sort_values(["depth", "_k", "seed"], kind="stable").drop(columns="_k")


# --------------------------------------------------------------------------- tables
def summary(train: pd.DataFrame, probe: pd.DataFrame | None, final: pd.DataFrame) -> pd.DataFrame:
    """One row per net (see the module docstring)."""
    loss = train[(train["split"] == "train") & (train["metric"] == "loss")]
    last = loss.groupby(NET)["step"].transform("max")
    out = pd.DataFrame({
        "early_loss": loss[loss["step"] <= np.maximum(1, last * EARLY_FRACTION)]
        .groupby(NET)["value"].mean(),
        "train_loss_final": loss[loss["step"] > last * (1 - FINAL_FRACTION)]
        .groupby(NET)["value"].mean()})
    wide = spread(final, NET, ["split", "metric"])
    out["train_error"], out["test_error"] = wide[("train", "error")], wide[("test", "error")]
    out["fits"] = out["train_error"] <= K.FIT_ERROR
    out["diverged"] = ~np.isfinite(loss.groupby(NET)["value"].last())
    if probe is not None and not probe.empty:
        keys = [*NET, "step"]
        init = probe[probe["step"] == probe.groupby(NET)["step"].transform("min")]
        parts = [forward_growth(init, keys, name="ch_var_growth"),
                 first_to_last(init, keys, stat="norm", name="grad_ratio"),
                 mean_over_units(init, keys, stat="shortcut_cut", direction="forward",
                                 name="shortcut_cut"),
                 mean_over_units(init, keys, stat="grad_cut", direction="backward",
                                 name="grad_cut")]
        for part in parts:
            out = out.join(part.drop(columns="step").set_index(NET))
    width = train.groupby(NET)["width"].first()
    out = out.join(width).reset_index()
    return _order(out).reset_index(drop=True)


def control_rows(table: pd.DataFrame) -> list[dict]:
    """Controls B and D at every depth of the run: both units of the primary test fit."""
    fit = dict(column="train_error", limit=K.FIT_ERROR, what="eval-mode training error")
    table = table.assign(version=table["unit_kind"].map({"original": 1, "full_preact": 2}))
    return [K.all_below(CONTROLS[c], EXPERIMENT, table, depth=int(depth), version=v, **fit)
            for depth in sorted(table["depth"].unique()) for c, v in (("B", 1), ("D", 2))]


def claims_rows(table: pd.DataFrame, controls, *, dataset: str, n_test: int) -> list[dict]:
    """T2 rows: per depth and kind, test error (kind − original), paired by seed; the primary
    one (full pre-activation) at Table 2's depths, checked against controls and power."""
    failed = K.failed(controls)
    rows = []
    for depth in sorted(table["depth"].unique()):
        at = table[table["depth"] == depth]
        wide = spread(at, "seed", "unit_kind", "test_error")
        if "original" not in wide.columns:
            continue
        col = _paper_column(at)
        for kind, direction in PAPER_DIRECTION.items():
            if kind not in wide.columns:
                continue
            pair = wide[["original", kind]].dropna()
            primary = PRIMARY.get(int(depth)) if kind == "full_preact" else None
            margin = SECONDARY_MARGIN if direction == "equivalent" else 0.0
            floor = C.test_set_sd(pair[kind], pair["original"], n_test)
            result = C.paired_difference(pair[kind].to_numpy(), pair["original"].to_numpy(),
                                         direction=direction, margin=margin, sd_floor=floor)
            if primary is not None:
                why = C.required_controls_failed(primary, failed)
                result = C.not_testable(len(pair), why, direction=direction) if why \
                    else C.power_checked(result, primary)
            paper = (PAPER_TABLE2[kind][col] - PAPER_TABLE2["original"][col]) / 100
            rows.append(C.claim_row(
                CLAIM, "primary" if primary is not None else "secondary", EXPERIMENT,
                f"test error, {kind} − original (He et al. Table 2: {_paper_word(direction)})",
                int(depth), result, unit_kind=kind, paper_effect=round(paper, 4),
                paper_depth=(110, 164)[col], dataset=dataset, width=int(at["width"].iloc[0]),
                margin_reason=primary.margin_reason if primary is not None else ""))
    if not any(r["role"] == "primary" for r in rows):
        rows.append(C.claim_row(CLAIM, "primary", EXPERIMENT, "test error, full pre-activation "
                                "− original", None, C.not_testable(0, "no Table 2 depth (110, "
                                "164) with both units in this run", direction="less"),
                                dataset=dataset))
    return rows


def _paper_column(at: pd.DataFrame) -> int:
    """Which of He et al.'s columns a depth corresponds to: 0 = ResNet-110 (basic units),
    1 = ResNet-164 (bottleneck units); by the unit block of our depth (6n+2 -> basic)."""
    depth = int(at["depth"].iloc[0])
    return 0 if resolve_cifar_block(depth) == "basic" else 1


def _paper_word(direction):
    return {"greater": "worse", "less": "better", "equivalent": "on par"}[direction]


def table2(table: pd.DataFrame, *, dataset: str, preset: str) -> pd.DataFrame:
    """Table 2's layout, tidy: He et al.'s errors and ours (mean, sd, n per depth)."""
    rows = []
    for kind in UNIT_KINDS:
        for col, depth in enumerate((110, 164)):
            rows.append({"case": FIG4[kind], "unit_kind": kind, "source": "He et al. 2016",
                         "dataset": "cifar10", "preset": "paper", "depth": depth, "width": 16,
                         "n": 5, "test_error_pct": PAPER_TABLE2[kind][col],
                         "sd_pct": np.nan, "statistic": "median of 5"})
        for depth in sorted(table["depth"].unique()):
            part = table[(table["depth"] == depth) & (table["unit_kind"] == kind)]
            if part.empty:
                continue
            err = part["test_error"].to_numpy() * 100
            rows.append({"case": FIG4[kind], "unit_kind": kind, "source": "ours",
                         "dataset": dataset, "preset": preset, "depth": int(depth),
                         "width": int(part["width"].iloc[0]), "n": len(err),
                         "test_error_pct": float(np.mean(err)),
                         "sd_pct": float(np.std(err, ddof=1)) if len(err) > 1 else np.nan,
                         "statistic": "mean ± sd over seeds"})
    return pd.DataFrame(rows)


def table2_markdown(t2: pd.DataFrame, table: pd.DataFrame) -> str:
    """The paper's layout (rows: unit kinds; columns: He et al.'s ResNet-110 / 164, ours)."""
    ours = t2[t2["source"] == "ours"]
    ours_cols = (ours[["depth", "width", "dataset", "preset", "n"]].drop_duplicates("depth")
                 .sort_values("depth").to_dict("records"))
    header = ["case", "unit", "He et al. ResNet-110 (CIFAR-10)", "He et al. ResNet-164 (CIFAR-10)"]
    header += [f"ours ResNet-{c['depth']} width {c['width']} ({c['dataset']}, `{c['preset']}`, "
               f"n={c['n']})" for c in ours_cols]
    lines = ["# He et al. 2016 Table 2: test error (%) of the five unit kinds", "",
             "He et al.: CIFAR-10, median of 5 runs. Ours: mean ± sd over seeds, final test "
             "error; different dataset, width and schedule — compare the order of the rows, "
             "not the numbers.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in UNIT_KINDS:
        paper = PAPER_TABLE2[kind]
        cells = [FIG4[kind], plotting.UNIT_LABELS.get(kind, kind), f"{paper[0]:.2f}",
                 f"{paper[1]:.2f}"]
        for c in ours_cols:
            r = ours[(ours["unit_kind"] == kind) & (ours["depth"] == c["depth"])]
            if r.empty:
                cells.append("—")
            else:
                r = r.iloc[0]
                sd = "" if pd.isna(r["sd_pct"]) else f" ± {r['sd_pct']:.2f}"
                cells.append(f"{r['test_error_pct']:.2f}{sd}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Signal statistics at initialisation and early training loss (ours, mean over "
              "seeds):", "",
              "| depth | unit | ch_var growth (last output / first input) | gradient ratio "
              "(first / last unit) | shortcut cut | gradient cut | early train loss | "
              "final train loss |", "|---|---|---|---|---|---|---|---|"]
    cols = ["ch_var_growth", "grad_ratio", "shortcut_cut", "grad_cut", "early_loss",
            "train_loss_final"]
    have = [c for c in cols if c in table.columns]
    means = table.groupby(["depth", "unit_kind"])[have].mean()
    for depth in sorted(table["depth"].unique()):
        for kind in UNIT_KINDS:
            if (depth, kind) not in means.index:
                continue
            r = means.loc[(depth, kind)]
            cells = [f"{r[c]:.3g}" if c in have else "—" for c in cols]
            lines.append(f"| {int(depth)} | {plotting.UNIT_LABELS.get(kind, kind)} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures
def _labels(df):
    df = df.copy()
    df["unit kind"] = df["unit_kind"].map(plotting.UNIT_LABELS)
    return df


def _palette():
    return {plotting.UNIT_LABELS[k]: c for k, c in plotting.unit_palette().items()}


HUE_ORDER = [plotting.UNIT_LABELS[k] for k in UNIT_KINDS]


def figure_signal(probe: pd.DataFrame, folder, name="t2_signal_at_init"):
    """Forward channel variance at each unit's output and gradient norm at each unit's input,
    at initialisation, per depth; one line per unit kind (mean over seeds)."""
    init = probe[probe["step"] == probe.groupby(NET)["step"].transform("min")]
    panels = [("output", "forward", "ch_var", "channel variance,\nunit output"),
              ("input", "backward", "norm", plotting.GRAD_LABEL + ",\nunit input")]
    depths = sorted(init["depth"].unique())
    fig, axes = plotting.new_figure("two", 3.4, len(panels), len(depths))
    for i, (tap, direction, stat, label) in enumerate(panels):
        for j, depth in enumerate(depths):
            ax = axes[i][j]
            rows = _labels(select(init, depth=depth, tap=tap, direction=direction, stat=stat))
            sns.lineplot(data=rows, x="unit", y="value", hue="unit kind", hue_order=HUE_ORDER,
                         palette=_palette(), errorbar=None, ax=ax,
                         legend=(i == 0 and j == len(depths) - 1))
            plotting.mark_stage_boundaries(ax, stage_boundaries(rows))
            ax.set_yscale("log")
            ax.set_xlabel("unit index")
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{depth} layers")
    plotting.legend_above(fig, axes[0][-1], ncol=3)
    return plotting.save_figure(fig, folder, name)


def figure_training(train: pd.DataFrame, folder, name="t2_training"):
    """Training loss (train mode, 5-step running mean) and test error over training, per
    depth and unit kind (mean over seeds)."""
    train = _labels(train)
    loss = train[(train["split"] == "train") & (train["metric"] == "loss")].sort_values([*NET, "step"])
    loss = loss.assign(value=loss.groupby(NET)["value"]
                       .transform(lambda s: s.rolling(5, min_periods=1).mean()))
    err = train[(train["split"] == "test") & (train["metric"] == "error")]
    err = err.assign(value=err["value"] * 100)
    depths = sorted(loss["depth"].unique())
    fig, axes = plotting.new_figure("two", 3.4, 2, len(depths))
    for j, depth in enumerate(depths):
        for i, (rows, label, log) in enumerate([(loss, "training loss (train mode)", True),
                                                (err, "test error (%)", False)]):
            ax = axes[i][j]
            sns.lineplot(data=rows[rows["depth"] == depth], x="step", y="value",
                         hue="unit kind", hue_order=HUE_ORDER, palette=_palette(),
                         errorbar=None, ax=ax, legend=(i == 0 and j == len(depths) - 1),
                         marker="o" if i == 1 else None, markersize=3)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{depth} layers")
    plotting.legend_above(fig, axes[0][-1], ncol=3)
    return plotting.save_figure(fig, folder, name)


def figure_test_error(table: pd.DataFrame, folder, name="t2_test_error"):
    """Final test error per unit kind and depth: one dot per seed, bar = mean."""
    table = _labels(table)
    table = table.assign(test_error_pct=table["test_error"] * 100)
    depths = sorted(table["depth"].unique())
    fig, axes = plotting.new_figure("one" if len(depths) == 1 else "two", 2.6, 1, len(depths))
    for ax, depth in zip(axes[0], depths):
        part = table[table["depth"] == depth]
        sns.barplot(data=part, x="unit kind", y="test_error_pct", order=HUE_ORDER,
                    hue="unit kind", hue_order=HUE_ORDER, palette=_palette(), errorbar=None,
                    alpha=0.45, ax=ax, legend=False)
        for k, kind in enumerate(UNIT_KINDS):          # seeds side by side, no random jitter
            dots = part[part["unit_kind"] == kind].sort_values("seed")
            dx = np.linspace(-0.12, 0.12, len(dots)) if len(dots) > 1 else np.zeros(len(dots))
            ax.scatter(k + dx, dots["test_error_pct"], s=8, zorder=3,
                       color=plotting.UNIT_COLORS[kind])
        ax.set_title(f"{depth} layers (width {int(part['width'].iloc[0])})")
        ax.set_xlabel("")
        ax.set_ylabel("final test error (%)" if ax is axes[0][0] else "")
        ax.set_xticks(range(len(HUE_ORDER)), [f"{FIG4[k]} {plotting.UNIT_LABELS[k]}"
                                              for k in UNIT_KINDS], rotation=35, ha="right")
    return plotting.save_figure(fig, folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every Table 2 figure from ``run_dir``'s CSVs alone (no model code runs)."""
    train, table, probe, folder = figure_inputs(run_dir, NAME, "train", "summary", "probe")
    return (figure_training(train, folder) + figure_test_error(table, folder)
            + figure_signal(probe, folder))


def published_tables(run_dir) -> dict:
    """The training rows (but wall times), gzipped."""
    train = read_table(run_dir, "train", "a unit_ablation run folder")
    return {"train.csv.gz": train[train["metric"] != "seconds"]}
