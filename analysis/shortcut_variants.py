"""He et al. 2016 Table 1: shortcut variants at initialisation and trained -- the known-groups
check of every signal measure the claims use.

``experiments/shortcut_variants.py`` builds the original unit (V1) with each shortcut of He et
al.'s Table 1 (their Fig. 2) -- identity, constant scaling (shortcut 0.5, branch 1; both 0.5),
exclusive gating (gate bias 0 and −6), shortcut-only gating (bias 0 and −6), a 1x1 convolution,
dropout 0.5 -- and, where a variant makes sense there, the same shortcuts on the full
pre-activation unit (V2). Two parts:

Part A, signal at initialisation (cells with ``part`` = ``init``): the basic series and the
bottleneck series up to 1001 layers, one width per series, several seeds; each net runs one
forward/backward in train mode (as training starts) on its seed's first batch of the data,
with a ``SignalProbe`` (input and output norms) and a ``probes.ShortcutPath``. Per net
(``init.csv``):

``path_log10``        log10 of the share of the stage-end gradient energy that travels back
                      along the shortcut path only (every unit's h and f, branches detached),
                      summed over stages (a stage whose share is 0 counts ``LOG_FLOOR``);
                      higher = more of the gradient crosses by the shortcuts alone;
``stage_rho``         C4's measure (``analysis.measures.stage_rho``): the largest |log10
                      rho_in / rho_out| across a stage through its units after the first; lower
                      = the signal crosses a stage with less loss or blow-up;
``abs_log_grad_ratio`` |log10 ||g_first|| / ||g_last|||, and ``log_grad_ratio`` signed
                      (> 0: the gradient grows towards the input); lower = better.

The known-groups check (``KNOWN_GROUPS`` x ``MEASURES``, the rule in
``analysis.known_groups``, declared here before any data): a measure passes when it ranks the
identity shortcut ahead of constant scaling 0.5 (both variants) and of dropout 0.5 at the
deepest depth of each series, each comparison a one-sided paired-by-seed test that must be
supported. ``known_groups.csv``; a claim resting on a measure that failed reads *not testable
here (measure not validated: ...)* in the report.

Part B, trained (cells with ``part`` = ``trained``): V1 at 110 layers with each shortcut, in
full_training's quick regime (digits, width 16, 500 updates: 50 at lr 0.01, then 0.05, /10 at
250 and 375, batch 128), evaluated at the end on the whole train and test split (eval mode).
``table1.csv``, one row per shortcut: whether it trains (training error over the run's last
quarter below 50%, per seed), fits (eval-mode final training error at most 2%), its test
error, and He et al.'s Table 1 column beside (ResNet-110, CIFAR-10 test error %, or "fail").
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from probes import ShortcutPath, SignalProbe
from resnet_lab import plotting
from resnet_lab.engine.data import Batches
from resnet_lab.io.folders import read_table
from resnet_lab.networks.families import resolve_cifar_block
from resnet_lab.networks.shortcuts import HE2016_TABLE1, VARIANTS
from resnet_lab.runs import settings
from resnet_lab.runs.sweep import Cell, CellResult, build

from . import controls as K
from .contract import Experiment
from . import known_groups as G
from .cells import dataset as load_cached
from .cells import train_cell, train_context
from .figures import figure_inputs
from .measures import per_net_curves, stage_rho, transmission, warmup_length
from .tables import spread, write_raw

NAME = "shortcut_variants"
PRESETS = {
    # 2 CPU cores, nothing downloaded. Part A on the basic series 20-110 at width 16 and the
    # bottleneck series 164, 1001 at width 4, 5 seeds; V1 with every shortcut, V2 with the
    # identity and the known-bad ones (scaling, dropout): 14 x 5 x 5 = 350 nets, each three
    # passes of one batch (~6 s at 1001 layers, from signal_propagation's 2.4 s for one pass):
    # ~6.5 min in 2 processes. Part B: V1-110 at width 16 trains in ~105 s in full_training's
    # quick regime (its cells.csv at the references' commit), so 10 shortcuts x 2 seeds = 20
    # nets ~17.5 min in 2 processes; a third seed would add ~9 min and pass the 25 allowed.
    "quick": dict(depths=[20, 56, 110, 164, 1001], widths={"basic": 16, "bottleneck": 4},
                  seeds=[0, 1, 2, 3, 4], batch_size=128, dataset="digits", steps=500,
                  warmup_steps=50, lr=0.05, train_depth=110, train_width=16, train_seeds=2,
                  v2_shortcuts=["identity", "scale_0.5_1", "scale_0.5_0.5", "dropout_0.5"]),
    # He et al. 2016 Table 1: ResNet-110 on CIFAR-10, 64k iterations; a GPU.
    "paper": dict(depths=[20, 56, 110, 164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], batch_size=128, dataset="cifar10", steps=64_000,
                  warmup_steps=400, lr=0.1, train_depth=110, train_width=16, train_seeds=5),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2],
                  batch_size=16, dataset="digits", steps=8, warmup_steps=2, lr=0.05,
                  train_depth=20, train_width=4, train_seeds=1,
                  v2_shortcuts=["identity", "scale_0.5_1"]),
}
OPTIONS = ("depths", "seeds", "steps", "warmup_steps", "batch_size", "lr", "dataset")

# --------------------------------------------------------------------------- the variants
IDENTITY = "identity"
FACTOR = "shortcut_variant"      # the cell factor (and column) naming a net's shortcut variant
# He et al. 2016 Table 1, as resnet_lab.shortcuts holds it beside the variants: (variant, case,
# on the shortcut, on F, ResNet-110 CIFAR-10 test error %, None = "fail").
SHORTCUTS = [row[0] for row in HE2016_TABLE1]
LABELS = {row[0]: f"{row[1]} (h: {row[2]}, F: {row[3]})" for row in HE2016_TABLE1}
HE_TABLE1 = {row[0]: row[4] for row in HE2016_TABLE1}
# on V2 (identity after the addition) every Table 1 shortcut is defined (the variant says where
# it makes sense); He et al. tried them on the original unit only: V2's nets are measured at
# init only.
V2_SHORTCUTS = [name for name in SHORTCUTS if "full_preact" in VARIANTS[name].unit_kinds]
VERSIONS = {1: "original", 2: "full_preact"}

# --------------------------------------------------------------------------- the check
LOG_FLOOR = -300.0           # log10 share of a stage whose shortcut path carries nothing
MEASURES = [
    G.Measure("shortcut_path", "path_log10", "higher",
              "log10 share of the stage-end gradient energy travelling back along the shortcut "
              "path only (h and f of every unit, branches detached), summed over stages"),
    G.Measure("stage_rho", "stage_rho", "lower",
              "largest |log10 rho_in / rho_out| across a stage (units after the first), "
              "rho = ||dL/dx|| ||x|| (C4's measure)"),
    G.Measure("grad_ratio", "abs_log_grad_ratio", "lower",
              "|log10 ||g_first|| / ||g_last|||, the net's two ends"),
]
KNOWN_GROUPS = [
    G.KnownGroup(IDENTITY, "scale_0.5_1", "He et al. 2016 Table 1: scaling the shortcut by 0.5 "
                 "fails to train at 110 layers; eq. 7: the scale compounds to 0.5^L"),
    G.KnownGroup(IDENTITY, "scale_0.5_0.5", "He et al. 2016 Table 1: 12.35% vs 6.61% at 110 "
                 "layers; eq. 7: the shortcut's scale compounds over the units"),
    G.KnownGroup(IDENTITY, "dropout_0.5", "He et al. 2016 Table 1: dropout 0.5 on the shortcut "
                 "fails to train; it imposes a scale of expectation 0.5 on every shortcut"),
]
TRAINS_ERROR = 0.5           # "trains": training error over the last quarter below 50%
PROBE = dict(taps=("input", "output"), stats=("norm",), param_grads=False)
KEYS = ["depth", "version", FACTOR, "seed"]      # a net of Part A
WORK_PARTS = ("init", "trained")
FILES = ("config.json", "cells.csv", "init.csv", "known_groups.csv", "trained.csv", "table1.csv")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/shortcut_variants.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3)
    settings.check_main_lr_phase(s)
    preset = PRESETS[s["preset"]]
    s["train_depth"], s["train_width"] = preset["train_depth"], preset["train_width"]
    s["train_seeds"] = s["seeds"][:preset["train_seeds"]]
    s["v2_shortcuts"] = preset.get("v2_shortcuts", V2_SHORTCUTS)
    s["schedule"] = settings.paper_schedule(s)
    s["eval_every"] = s["steps"]
    return s


def deepest(s) -> list[int]:
    """The deepest depth of each series (block): where the known-groups check is made."""
    by = {}
    for d in s["depths"]:
        by.setdefault(resolve_cifar_block(d), []).append(d)
    return sorted(max(ds) for ds in by.values())


def cells(s) -> list:
    init = [Cell(d, VERSIONS[v], seed, s["widths"][d], (("part", "init"), (FACTOR, name)))
            for d in s["depths"] for v in (1, 2)
            for name in (SHORTCUTS if v == 1 else s["v2_shortcuts"]) for seed in s["seeds"]]
    trained = [Cell(s["train_depth"], VERSIONS[1], seed, s["train_width"],
                    (("part", "trained"), (FACTOR, name)))
               for name in SHORTCUTS for seed in s["train_seeds"]]
    return init + trained


def context(s) -> dict:
    return {**train_context(s, final_eval=True), "init_batch": s["batch_size"]}


def describe(s) -> str:
    n_init = sum(dict(c.factors)["part"] == "init" for c in cells(s))
    return (f"shortcut_variants ({s['preset']}): Part A {n_init} nets at init (V1 and V2, "
            f"{len(SHORTCUTS)} shortcuts) on {s['dataset']}, depths {s['depths']} "
            f"({settings.describe_widths(s['widths'])}), seeds {s['seeds']}; Part B "
            f"{len(SHORTCUTS) * len(s['train_seeds'])} V1-{s['train_depth']} nets (width "
            f"{s['train_width']}, seeds {s['train_seeds']}), {s['steps']} iterations of batch "
            f"{s['batch_size']} (lr 0.01 for {warmup_length(s)}, then {s['lr']}, /10 at "
            f"{list(s['schedule']['milestones'])}); on {s['device']} ({s['workers']} processes x "
            f"{s['threads']} threads)")


# --------------------------------------------------------------------------- the work
def first_batch(data, seed: int, batch_size: int):
    """The seed's first training batch (no augmentation): what its nets see at init."""
    idx = Batches(len(data.train_x), batch_size, seed).indices(0)
    return data.train_x[idx], data.train_y[idx]


def measure_at_init(net, x, y) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One forward/backward in train mode: (probe rows, shortcut-path rows). Both passes see
    the same random state (a dropout shortcut: the same masks)."""
    net.train()
    state = torch.get_rng_state()
    path = pd.DataFrame(ShortcutPath(net).measure(lambda: F.cross_entropy(net(x), y)))
    torch.set_rng_state(state)
    probe = SignalProbe(net, **PROBE)
    with probe:
        F.cross_entropy(net(x), y).backward()
        probe.step()
    net.zero_grad(set_to_none=True)
    return probe.collect(), path


def variant_cell(cell, state, context, report) -> CellResult:
    """A sweep cell: Part A measures the net at init; Part B trains it (``train_cell``)."""
    if dict(cell.factors)["part"] == "trained":
        return train_cell(cell, state, context, report)
    data = load_cached(context["dataset"], context.get("data_dir"))
    x, y = first_batch(data, cell.seed, context["init_batch"])
    device = context["train"]["device"]
    probe, path = measure_at_init(build(cell, data).to(device), x.to(device), y.to(device))
    report(1)
    return CellResult({"probe": probe, "path": path}, steps_done=1)




# --------------------------------------------------------------------------- tables
def init_table(probe: pd.DataFrame, path: pd.DataFrame) -> pd.DataFrame:
    """One row per Part A net: the measures of the module docstring."""
    keys = KEYS + ["width"]
    logs = path["log10_share"].clip(lower=LOG_FLOOR).fillna(LOG_FLOOR)
    table = path.assign(log10=logs).groupby(keys)["log10"].sum().rename("path_log10").to_frame()
    table["path_stages_cut"] = path.assign(cut=path["share"] <= 0).groupby(keys)["cut"].sum()
    per_stage = path.set_index(keys + ["stage"])["log10_share"].unstack("stage")
    per_stage.columns = [f"path_log10_stage{int(c)}" for c in per_stage.columns]
    table = table.join(per_stage)
    rho = stage_rho(probe, keys).set_index(keys)["stage_rho"]
    ends = transmission(probe, keys).set_index(keys)[["log_grad_ratio", "abs_log_grad_ratio",
                                                      "log_rho_ratio"]]
    table = table.join(rho).join(ends)
    return table.reset_index().sort_values(KEYS, kind="stable").reset_index(drop=True)


def known_groups(init: pd.DataFrame, s) -> pd.DataFrame:
    """The known-groups check on V1's nets at each series' deepest depth."""
    v1 = init[init["version"] == 1]
    return G.check(v1, MEASURES, KNOWN_GROUPS, [d for d in deepest(s) if d in set(v1["depth"])],
                   shortcut=FACTOR)


def trained_table(train, final, s, *, num_classes, epoch) -> pd.DataFrame:
    """One row per Part B net: ``err_end`` (training error over the last quarter, train mode),
    final train and test error and loss (eval mode), ``trains``, ``fits``."""
    steps = s["steps"]
    windows = {"end": (steps - max(1, steps // 4), steps)}
    rows = []
    for shortcut, part in train.groupby(FACTOR, sort=False):
        per = per_net_curves(part, windows=windows, steps=steps, chance=1 - 1 / num_classes,
                             warmup=warmup_length(s), epoch=epoch)
        rows.append(per.assign(**{FACTOR: shortcut}))
    table = pd.concat(rows, ignore_index=True).set_index([FACTOR, "seed"])
    wide = spread(final, [FACTOR, "seed"], ["split", "metric"])
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    table = table.join(wide, how="left").reset_index()
    table["trains"] = table["err_end"] < TRAINS_ERROR
    table["fits"] = table["train_error"] <= K.FIT_ERROR
    order = {name: k for k, name in enumerate(SHORTCUTS)}
    return table.sort_values([FACTOR, "seed"], key=lambda c: c.map(order) if c.name == FACTOR
                             else c, kind="stable").reset_index(drop=True)


def he_et_al_text(error) -> str:
    return "fail" if error is None or (isinstance(error, float) and math.isnan(error)) \
        else f"{error:.2f}"


def table1(trained: pd.DataFrame) -> pd.DataFrame:
    """He et al.'s Table 1 beside ours: one row per shortcut."""
    rows = []
    for name in SHORTCUTS:
        part = trained[trained[FACTOR] == name]
        if part.empty:
            continue
        n = len(part)
        rows.append({"shortcut": name, "label": LABELS[name],
                     "he_et_al_test_error": he_et_al_text(HE_TABLE1[name]), "n": n,
                     "trains": int(part["trains"].sum()), "fits": int(part["fits"].sum()),
                     "err_end_mean": part["err_end"].mean(),
                     "train_error_mean": part["train_error"].mean(),
                     "test_error_mean": part["test_error"].mean(),
                     "test_error_min": part["test_error"].min(),
                     "test_error_max": part["test_error"].max(),
                     "verdict": ("trains and fits" if part["fits"].all() else
                                 "trains" if part["trains"].all() else
                                 "fails" if not part["trains"].any() else "mixed")})
    return pd.DataFrame(rows)


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables: init, the known-groups check, trained, Table 1."""
    probe, path = tables["probe"], tables["path"]
    write_raw(run, data, cells_table, {"probe.csv.gz": probe, "path.csv": path})
    init = init_table(probe, path)
    run.write_csv("init.csv", init)
    run.write_csv(G.KNOWN_GROUPS_FILE, known_groups(init, s))
    if "train" not in tables:            # a run of Part A alone (a pilot)
        return
    train = tables["train"]
    run.write_csv("train.csv.gz", train)
    run.write_csv("final.csv", tables["final"])
    trained = trained_table(train, tables["final"], s, num_classes=data.num_classes,
                            epoch=len(data.train_x) // s["batch_size"])
    run.write_csv("trained.csv", trained)
    run.write_csv("table1.csv", table1(trained))


def results_text(run_dir) -> str:
    """What the script prints: the known-groups check and Table 1."""
    known = read_table(run_dir, "known_groups", "a shortcut_variants run folder")
    t1 = read_table(run_dir, "table1", "a shortcut_variants run folder")
    cols = ["measure", "depth", "comparison", "effect", "ci_low", "ci_high", "p_value", "verdict",
            "passed"]
    with pd.option_context("display.width", 220, "display.max_columns", 20,
                           "display.float_format", "{:.3g}".format):
        return ("known-groups check:\n" + known[cols].to_string(index=False) + "\n\nTable 1:\n"
                + t1.drop(columns=["label"]).to_string(index=False))


# --------------------------------------------------------------------------- figures
def figure_init(init: pd.DataFrame, known: pd.DataFrame, folder, name="known_groups_init"):
    """Each measure at the series' deepest depths, V1, one dot per seed and shortcut (the
    identity black, the known-bad shortcuts vermillion; the shortcut path clipped at −60); a
    value that is not a finite number (the gradient overflowed fp32) is an x on the panel's
    top edge. The measure's known-groups result in its panel's title."""
    v1 = init[init["version"] == 1]
    depths = sorted(known["depth"].unique()) if len(known) else sorted(v1["depth"].unique())[-1:]
    present = [n for n in SHORTCUTS if n in set(v1[FACTOR])]
    bad = {g.bad for g in KNOWN_GROUPS}
    fig, axes = plotting.new_figure("two", 1.6 * len(depths), len(depths), len(MEASURES))
    for r, depth in enumerate(depths):
        for ax, m in zip(axes[r], MEASURES):
            part = v1[v1["depth"] == depth]
            finite = part[m.column].replace([np.inf, -np.inf], np.nan).dropna()
            top = float(finite.clip(lower=-60).max()) if len(finite) else 1.0
            for k, shortcut in enumerate(present):
                values = part.loc[part[FACTOR] == shortcut, m.column].to_numpy(float)
                color = "0.05" if shortcut == IDENTITY else (
                    plotting.VERSION_COLORS["V1"] if shortcut in bad else "0.6")
                xs = np.full(len(values), k) + np.linspace(-0.15, 0.15, len(values))
                ok = np.isfinite(values)
                ax.scatter(xs[ok], np.clip(values[ok], -60, None), s=8, color=color)
                if (~ok).any():
                    ax.scatter(xs[~ok], np.full((~ok).sum(), top), s=14, marker="x", color=color)
            ax.set_xticks(range(len(present)), present, rotation=60, ha="right")
            ok = G.passed(known, m.name)
            ax.set_title(f"{m.name}, {depth} layers\n({'passed' if ok else 'failed'}; "
                         f"{m.better} = better; x: not finite)")
    return plotting.save_figure(fig, folder, name)


def figure_table1(t1: pd.DataFrame, folder, *, classes: int, name="table1_test_error"):
    """Our test error per shortcut (range over seeds) beside He et al.'s. Their "fail" has no
    number: it is an x on the right edge (an error that stayed high), never a point at 0; the
    dotted line is chance on our data."""
    fig, axes = plotting.new_figure("one", 2.6)
    ax = axes[0][0]
    ys = np.arange(len(t1))
    ax.errorbar(t1["test_error_mean"] * 100, ys,
                xerr=[(t1["test_error_mean"] - t1["test_error_min"]) * 100,
                      (t1["test_error_max"] - t1["test_error_mean"]) * 100],
                fmt="o", color="0.1", ms=3, lw=0.8, label="ours (digits)")
    he = plotting.V2_COLOR
    for y, text in zip(ys, t1["he_et_al_test_error"]):
        if text == "fail":
            ax.scatter([100], [y], marker="x", color=he, s=16, clip_on=False)
        else:
            ax.scatter([float(text)], [y], marker="s", color=he, s=10)
    ax.scatter([], [], marker="s", color=he, s=10, label="He et al. (CIFAR-10)")
    ax.scatter([], [], marker="x", color=he, s=16, label="He et al.: fail")
    ax.axvline(100 * (1 - 1 / classes), color="0.45", ls=":", lw=0.8,
               label="chance")
    ax.set_xlim(-2, 100)
    ax.set_yticks(ys, t1["shortcut"])
    ax.invert_yaxis()
    ax.set_xlabel("test error (%), ResNet-110")
    plotting.legend_above(fig, ax, ncol=2)
    return plotting.save_figure(fig, folder, name)


def figure_training(train: pd.DataFrame, folder, name="table1_training_error"):
    """Part B, one panel per shortcut (small multiples: ten curves in one panel hide each
    other): each seed's training error (10-iteration running mean, train mode), the identity
    shortcut's mean in grey behind for reference; the panel's title gives He et al.'s result."""
    rows = train[(train["split"] == "train") & (train["metric"] == "error")]
    present = [n for n in SHORTCUTS if n in set(rows[FACTOR])]
    smooth = rows.sort_values("step").assign(value=lambda t: 100 * t.groupby(
        [FACTOR, "seed"])["value"].transform(lambda e: e.rolling(10, min_periods=1).mean()))
    reference = smooth[smooth[FACTOR] == IDENTITY].groupby("step")["value"].mean()
    bad = {g.bad for g in KNOWN_GROUPS}
    ncols = 5
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plotting.new_figure("two", 1.45 * nrows + 0.3, nrows, ncols, sharex=True,
                                    sharey=True)
    kinds = {IDENTITY: ("0.05", "each seed: identity"),
             "bad": (plotting.V1_COLOR, "each seed: a known-bad shortcut (the known-groups check)"),
             "other": (plotting.V2_COLOR, "each seed: another shortcut")}
    for ax, shortcut in zip(axes.flat, present):
        ax.plot(reference.index, reference.values, color="0.7", lw=1.6,
                label="identity, mean over seeds")
        color, label = kinds[shortcut if shortcut == IDENTITY else
                             "bad" if shortcut in bad else "other"]
        for _, part in smooth[smooth[FACTOR] == shortcut].groupby("seed"):
            ax.plot(part["step"], part["value"], color=color, lw=0.8, label=label)
        he = he_et_al_text(HE_TABLE1[shortcut])
        ax.set_title(f"{shortcut}\nHe et al.: {he}{'' if he == 'fail' else '%'}", fontsize=6.5)
        ax.set_ylim(-3, 100)
    for ax in axes.flat[len(present):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    for row in axes:
        row[0].set_ylabel("training error (%)")
    kept = {}                                    # every kind of curve once, from every panel
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            kept.setdefault(label, handle)
    fig.legend(kept.values(), kept.keys(), loc="outside upper center", ncol=2)
    return plotting.save_figure(fig, folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    init, known, t1, train, folder = figure_inputs(run_dir, NAME, "init", "known_groups",
                                                   "table1", "train")
    classes = json.loads((Path(run_dir) / "config.json").read_text())["data"]["classes"]
    return (figure_init(init, known, folder) + figure_table1(t1, folder, classes=classes)
            + figure_training(train, folder))


def published_tables(run_dir) -> dict:
    """The training loss and error rows (the figures and measures use them)."""
    train = read_table(run_dir, "train", "a shortcut_variants run folder")
    return {"train.csv.gz": train[(train["split"] == "train") & (train["metric"] != "seconds")]}


EXPERIMENT = Experiment(
    name=NAME, presets=PRESETS, quick_seconds=1440, files=FILES, work=variant_cell,
    parse_settings=parse_settings, cells=cells, context=context, describe=describe,
    analyse=analyse, results_text=results_text, draw_figures=draw_figures,
    published_tables=published_tables, claims=())
