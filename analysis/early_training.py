"""Claims C2, C3 and C4: the first iterations of deep V1 and V2 nets (He et al. 2016, Fig. 1).

``experiments/early_training.py`` trains V1 (original unit) and V2 (full pre-activation) at
bottleneck depths up to 1001 -- one width for the whole series -- from the same seeds (a seed
fixes the initialisation stream, the batches and the augmentation), for the first iterations
of the paper's schedule: a fixed warm-up at lr 0.01 shared by both nets of a pair, then the
main lr, no division yet. It probes every unit's input and output (norms, forward and
backward) and sum (what the after-addition function cuts) at evenly spaced steps.

Per net (``summary.csv``):

``err_c3``         the mean training error (train mode, each iteration's batch) over the first
                   half of the main-lr phase, (W, W + (S − W) / 2] for a warm-up of W of S
                   iterations (the quick preset: 51-125 of 200): how fast a net starts at
                   the main lr, placed relative to the pair's one switch; iterations after a
                   divergence count as chance error;
``err_end``        the same over the last quarter of the run: whether the net trains;
``warmup_error``   the mean training error over the warm-up's last epoch (He et al.'s rule:
                   the warm-up lasts until the training error is below 80%);
``path_*``         log10 of the share of the stage-end gradient energy that passes every
                   after-addition function along the identity path *element by element*
                   (the probe's ``path_share``: the product of the masks), summed over stages
                   (V2: 0), at init and at the last probed step;
``path_indep_*``   the same from the product of per-unit averages (``path_share_indep``:
                   as if the units' masks were independent) -- what assuming independence costs
                   is ``path`` − ``path_indep``;
``survival_*``     log10 of the share of gradient energy that passes every unit's
                   after-addition function from the top to the first unit, sum over units of
                   log10(1 − grad_cut) (V2: 0), at init and at the last probed step;
``stage_rho_*``    the largest over stages of |log10 rho_in / rho_out| through the units with
                   identity shortcuts, rho = ||dL/dx|| ||x|| (0: the signal crosses every
                   stage unchanged, He et al. eqs. 4-5), at init and at the last probed step;
``rho_*``          the same between the net's two ends (every unit, projections included);
``grad_cut_*``, ``shortcut_cut_*``, ``frac_neg_*``: V1's after-addition ReLU, mean over units.

The primary tests (``PRIMARY``, read from ``plans/plan.json``, frozen before the confirmatory
data; Holm within a claim) and the positive controls they need (``CONTROLS``, checked at every
depth a primary uses):

C2  V1 at 1001 layers, at init: ``path_init`` < log10(1/2) -- the ReLUs cut off more than
    half of the identity path's gradient energy, element by element, compounded over the
    stages. Secondary: ``path_indep_init`` and ``survival_init`` (products of averages), and
    He et al.'s "the truncation is more frequent at 1000 layers" (V1's per-unit cut at init,
    1001 − 164 layers at equal width, Welch) as its own row (``paper_row`` = ``more_frequent``).
C3  at 1001 layers: ``err_c3`` V1 − V2 > 5 points (controls W, A, E).
C4  at 1001 layers, as the article states it: V2 (identity f) against V1 (ReLU f), V1 − V2 > 0
    paired by seed, at init and at the last probed step after the main-lr phase (controls A,
    E), on ``stage_rho``, on ``grad_ratio`` (|log10 ||g_first|| / ||g_last|||) and on the
    identity path (``path``, V1 − V2 < 0; V2's is 1 by construction, so this row measures V1's
    cut against the identity, early and late); each row rests on its measure's known-groups
    result (``KNOWN_GROUP``): the pilot of shortcut_variants (quick, Part A) validated the
    shortcut path and not stage_rho or grad_ratio, which at 1001 layers are not finite for the
    known-bad shortcuts (their gradient overflows fp32 at init). "Late" is the end of this
    run: full_training probes only the weight layers' inputs, so the end of a full training
    would need its probe to record the unit inputs' and outputs' norms (taps input, output,
    stat norm) and a 1001-layer net trained to the end. V2's own stability (``stage_rho`` < 0.3
    decades) and its signed growth stay as secondary rows.
Secondary rows: the same at the other depths, V1 − V2 of the transmission measures, the
per-unit cut, He et al.'s "the cut is more frequent at 1000 layers" and "fades with training".

Interventions (``ARMS``, at the run's deepest depth -- 1001 in the quick and paper presets --
from the same seeds, so the same initialisation stream and batches as V1 and V2 there): (a) V1
without its after-addition ReLU, nothing else changed; (b) V1 with a final BN-ReLU before
pooling (V2's logit scale: V1-1001 starts at a loss of ~6 against V2's 2.3); (c) ReLU before
the addition (He et al. Fig. 4c). Per arm (``interventions.csv``, and C3 secondary rows in
claims.csv): the share of V1's slow start it closes, (err_c3[V1] − err_c3[arm]) /
(err_c3[V1] − err_c3[V2]), paired by seed, with Fieller's 90% interval
(``analysis.claims.share_closed``; a paired bootstrap where Fieller's is unbounded, said in
``method``).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from resnet_lab import plotting

from resnet_lab.runs import settings
from resnet_lab.io.folders import read_table
from resnet_lab.engine.schedule import PAPER_ITERATIONS
from resnet_lab.networks.families import NETWORK_OPTIONS
from resnet_lab.runs.sweep import Cell

from . import claims as C
from . import controls as K
from . import probing
from . import plan as P
from .cells import train_cell, train_context
from .contract import Experiment
from .figures import error_gap_figure, figure_inputs, seeds_dots, training_error_figure
from .tables import write_raw
from .measures import (NET, at_first_and_last, compounded_cut, per_net_curves, stage_rho,
                       stage_transmission, training_curves, transmission, warmup_length)

NAME = "early_training"
PRESETS = {
    # 2 CPU cores, nothing downloaded: digits 8x8, the bottleneck series at width 4 (1001
    # layers at the paper's width 16 does not fit the time), 5 seeds, the first 200
    # iterations: a 50-iteration warm-up, then the main lr, calibrated on digits (see
    # analysis/full_training.py: V1-56 does not fit digits at 0.1).
    "quick": dict(depths=[29, 65, 164, 1001], widths={"basic": 16, "bottleneck": 4},
                  seeds=[0, 1, 2, 3, 4], steps=200, warmup_steps=50, probe_steps=5, lr=0.05,
                  batch_size=128, dataset="digits"),
    # He et al. Fig. 1: CIFAR-10 at the paper's width, the first 10,000 iterations; a GPU.
    "paper": dict(depths=[164, 1001], widths={"basic": 16, "bottleneck": 16},
                  seeds=[0, 1, 2, 3, 4], steps=10_000, warmup_steps=400, probe_steps=11, lr=0.1,
                  batch_size=128, dataset="cifar10"),
    # seconds: what the tests run.
    "smoke": dict(depths=[20, 29, 47], widths={"basic": 4, "bottleneck": 4}, seeds=[0, 1, 2],
                  steps=10, warmup_steps=3, probe_steps=3, lr=0.1, batch_size=16,
                  dataset="digits"),
}
OPTIONS = ("depths", "seeds", "width", "steps", "warmup_steps", "batch_size", probing.PROBE_STEPS, "lr",
           "dataset")
VERSIONS = ("original", "full_preact")
PRIMARY_DEPTH = 1001
TRAINS_ERROR = 0.5           # "trains": training error over the run's last quarter below 50%
WARMUP_ERROR = 0.8           # He et al.'s warm-up rule: until the training error is below 80%
CONTROLS = {
    "W": K.Control("W", "the warm-up gets the nets started: every net, V1 and V2, at the series' "
                   "shallowest depth and at 1001 layers ends it below 80% training error (mean "
                   "over its last epoch)",
                   "He et al. 2016 §4: lr 0.01 until the training error is below 80% (about 400 "
                   "iterations), then 0.1 -- for ResNet-1001 as for ResNet-110; their warm-up "
                   "lasts until the rule holds, ours is a fixed length shared by both nets"),
    "A": K.Control("A", "V1 and V2 at the series' shallowest depth train at the main lr (training "
                   "error over the last quarter below 50% for every seed)",
                   "He et al. 2015: ResNet-56 trains at lr 0.1 from the first update; here the "
                   "lr was calibrated on V1-56 alone (docs/EXPERIMENTS.md), a handicap for V2 "
                   "where it is one"),
    "E": K.Control("E", "V2 at 1001 layers trains (training error over the last quarter below "
                   "50% for every seed)",
                   "He et al. 2016, Fig. 1: ResNet-1001 with pre-activation units trains"),
}
HALF = math.log10(0.5)
# The primary tests: plans/plan.json, the one source (analysis/plan.py).
PRIMARY = P.primaries(NAME)
# V2's own stability (the growth BN nets show): the earlier C4 test, now a secondary row.
V2_STABILITY = [C.Primary("C4", column, f"V2 alone: largest |log10 rho_in / rho_out| across a "
                          f"stage, {when} (within 0.3 decades = a factor 2)", "noninferior", 0.3,
                          "a factor 2 across a stage", (PRIMARY_DEPTH,), 0.0,
                          "He et al. 2016, eqs. 4-5", version=2)
                for column, when in (("stage_rho_init", "at init"),
                                     ("stage_rho_last", "at the last probed step"))]
# The signal measure each column rests on: its known-groups result (shortcut_variants'
# known_groups.csv) gates the claim rows on it in the report (analysis.known_groups.gated_rows).
KNOWN_GROUP = {"path_init": "shortcut_path", "path_last": "shortcut_path",
               "path_indep_init": "shortcut_path",
               "survival_init": "shortcut_path", "stage_rho_init": "stage_rho",
               "stage_rho_last": "stage_rho", "grad_ratio_init": "grad_ratio",
               "grad_ratio_last": "grad_ratio"}
PROBE = dict(taps=("input", "output", "sum"), stats=("norm", "shortcut_cut", "grad_cut", "frac_neg",
                                                     "path_share", "path_share_indep"),
             param_grads=False)
CUTS = ("grad_cut", "shortcut_cut", "frac_neg")
# Interventions at the run's deepest depth (issue 36 item 5): name -> (unit kind, the network
# options the cell names as factors (resnet_lab.sweep.build), words).
ARMS = {
    "no_after_relu": ("original", (("shortcut_variant", "no_after_relu"),),
                      "V1 without its after-addition ReLU (f = identity), nothing else changed"),
    "final_bn_relu": ("original", (("shortcut_variant", "final_bn_relu"),),
                      "V1 with a final BN-ReLU before pooling (V2's logit scale)"),
    "relu_before_add": ("relu_before_add", (), "ReLU before the addition (He et al. Fig. 4c), "
                        "f = identity"),
}
FILES = ("config.json", "claims.csv", "controls.csv", "cells.csv", "summary.csv", "cuts.csv",
         "transmission.csv", "interventions.csv")


# --------------------------------------------------------------------------- settings, cells
def parse_settings(argv=None) -> dict:
    """The command line, resolved and checked (nothing is written)."""
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/early_training.py")
    s = settings.resolve(p.parse_args(argv), PRESETS, OPTIONS, min_seeds=3, min_probe_steps=2)
    s["probe_every"] = probing.probe_spacing(s["steps"], s["probe_steps"])
    s["eval_every"] = s["steps"]
    # The first iterations of the paper's 64k-iteration run: warm-up, then lr, no division yet.
    settings.check_main_lr_phase(s)
    s["schedule"] = settings.paper_schedule(s, max(PAPER_ITERATIONS, 2 * s["steps"]))
    return s


def windows(s) -> dict:
    """The iterations (first, last] of ``err_c3`` and ``err_end``."""
    w, steps = warmup_length(s), s["steps"]
    return {"c3": (w, w + max(1, (steps - w) // 2)), "end": (steps - max(1, steps // 4), steps)}


def arm_depth(s) -> int:
    """Where the interventions run: the run's deepest depth (the primary depth, 1001, in the
    quick and paper presets)."""
    return max(s["depths"])


def check_arms():
    """Every network option an arm names must be one the cells' builder passes on
    (``resnet_lab.networks.families.NETWORK_OPTIONS``): else the arm would silently be plain
    V1."""
    known = NETWORK_OPTIONS
    for name, (_, options, _) in ARMS.items():
        unknown = [k for k, _ in options if k not in known]
        if unknown:
            raise ValueError(f"intervention {name}: the network builder takes no option "
                             f"{unknown}; valid: {', '.join(known) or 'none'}")


def cells(s) -> list:
    check_arms()
    pairs = [Cell(d, kind, seed, s["widths"][d]) for d in s["depths"] for seed in s["seeds"]
             for kind in VERSIONS]
    d = arm_depth(s)
    arms = [Cell(d, kind, seed, s["widths"][d], (("arm", name),) + options)
            for name, (kind, options, _) in ARMS.items() for seed in s["seeds"]]
    return pairs + arms


def context(s) -> dict:
    return train_context(s, probe=PROBE)


def describe(s) -> str:
    return (f"early_training ({s['preset']}): {len(cells(s))} nets (V1, V2) on {s['dataset']}, "
            f"depths {s['depths']} ({settings.describe_widths(s['widths'])}), seeds {s['seeds']}, "
            f"the first {s['steps']} iterations of batch {s['batch_size']} (lr 0.01 for "
            f"{warmup_length(s)}, then {s['lr']}); C3 window {windows(s)['c3']}; probed every "
            f"{s['probe_every']}; on {s['device']} ({s['workers']} processes x {s['threads']} threads)")


def split_arms(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the V1/V2 pairs' rows, the interventions' rows) of a merged table."""
    if "arm" not in table.columns:
        return table, table.iloc[:0]
    is_arm = table["arm"].notna()
    return table[~is_arm].drop(columns="arm"), table[is_arm]


def analyse(run, tables, cells_table, s, data):
    """Write the run's tables, summary, controls and claims."""
    write_raw(run, data, cells_table, {"train.csv.gz": tables["train"],
                                       "probe.csv.gz": tables["probe"]})
    (train, arm_train), (probe, _) = split_arms(tables["train"]), split_arms(tables["probe"])
    cuts = cut_table(probe)
    run.write_csv("cuts.csv", cuts)
    run.write_csv("transmission.csv", transmission_table(probe))
    table = summary(train, probe, s, num_classes=data.num_classes,
                    epoch=len(data.train_x) // s["batch_size"])
    run.write_csv("summary.csv", table)
    controls = control_rows(table, s)
    K.write_controls(run.path, controls)
    arms = arm_summary(arm_train, s, num_classes=data.num_classes,
                       epoch=len(data.train_x) // s["batch_size"])
    shares = interventions(table, arms, arm_depth(s))
    run.write_csv("interventions.csv", shares)
    C.write_claims(run.path, claims_rows(table, controls, dataset=s["dataset"])
                   + intervention_rows(shares, dataset=s["dataset"]))


def results_text(run_dir) -> str:
    """What the script prints: the controls, the primary tests, the per-version means and the
    interventions' shares."""
    table = read_table(run_dir, "summary", "an early_training run folder")
    means = table.groupby(["depth", "version"])[["warmup_error", "err_c3", "err_end",
                                                  "survival_init", "stage_rho_last"]].mean()
    shares = read_table(run_dir, "interventions", "an early_training run folder")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        return (K.controls_text(Path(run_dir)) + "\n" + C.claims_text(Path(run_dir) / C.CLAIMS_FILE)
                + "\n" + means.to_string() + "\n" + shares.drop(columns=["text"]).to_string(index=False))


# --------------------------------------------------------------------------- tables
def cut_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: the after-addition function's cuts, mean over units, and the
    gradient's compounded survival (``log_survival``)."""
    rows = probe[(probe["tap"] == "sum") & probe["stat"].isin(CUTS)]
    table = rows.groupby(NET + ["width", "step", "stat"])["value"].mean().unstack("stat")
    table.columns.name = None
    survival = compounded_cut(probe, NET + ["width"])[NET + ["width", "step", "log_survival"]]
    out = table.reset_index().merge(survival, on=NET + ["width", "step"], how="left")
    return out.merge(path_table(probe), on=NET + ["width", "step"], how="left")


def path_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: ``log_path`` (log10 ``path_share`` summed over stages: the
    identity path element by element) and ``log_path_indep`` (the same of
    ``path_share_indep``, the product of per-unit averages)."""
    keys = NET + ["width", "step"]
    rows = probe[probe["stat"].isin(["path_share", "path_share_indep"])]
    if rows.empty:
        return pd.DataFrame(columns=keys + ["log_path", "log_path_indep"])
    logs = rows.assign(log=np.log10(rows["value"].clip(lower=1e-300)))
    wide = logs.groupby(keys + ["stat"])["log"].sum().unstack("stat")
    return wide.rename(columns={"path_share": "log_path", "path_share_indep": "log_path_indep"}) \
        .reset_index()


def transmission_table(probe: pd.DataFrame) -> pd.DataFrame:
    """Per net and probed step: ``stage_rho``, its signed value (``stage_rho_signed``: log10
    rho_in / rho_out of the stage with the largest deviation; > 0 = growth towards the input)
    and the ends-to-ends ratios."""
    ends = transmission(probe, NET)[NET + ["step", "abs_log_rho_ratio", "abs_log_grad_ratio"]]
    stages = stage_transmission(probe, NET)
    worst = stages.loc[stages.groupby(NET + ["step"])["abs_log_stage_rho"].idxmax()]
    signed = worst.set_index(NET + ["step"])["log_stage_rho"].rename("stage_rho_signed")
    return (stage_rho(probe, NET).merge(ends, on=NET + ["step"], how="left")
            .merge(signed.reset_index(), on=NET + ["step"], how="left"))


def summary(train, probe, s, *, num_classes, epoch) -> pd.DataFrame:
    """One row per net: the measures of the module docstring."""
    table = per_net_curves(train, windows=windows(s), steps=s["steps"],
                           chance=1 - 1 / num_classes, warmup=warmup_length(s),
                           epoch=epoch).set_index(NET)
    flows = transmission_table(probe)
    for column, name in (("stage_rho", "stage_rho"), ("abs_log_rho_ratio", "rho"),
                         ("abs_log_grad_ratio", "grad_ratio"),
                         ("stage_rho_signed", "stage_rho_signed")):
        table = table.join(at_first_and_last(flows, NET, column, name))
    cuts = cut_table(probe)
    table = table.join(at_first_and_last(cuts, NET, "log_survival", "survival"))
    table = table.join(at_first_and_last(cuts, NET, "log_path", "path"))
    table = table.join(at_first_and_last(cuts, NET, "log_path_indep", "path_indep"))
    for stat in CUTS:
        table = table.join(at_first_and_last(cuts, NET, stat, stat))
        table[f"{stat}_mean"] = cuts.groupby(NET)[stat].mean()
    table["probe_step_last"] = cuts.groupby(NET)["step"].max()
    return table.reset_index().sort_values(NET, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- interventions
def arm_summary(arm_train: pd.DataFrame, s, *, num_classes, epoch) -> pd.DataFrame:
    """One row per intervention net: the training measures of ``per_net_curves``."""
    if arm_train.empty:
        return pd.DataFrame(columns=["arm", "seed", "err_c3", "err_end", "loss_init"])
    rows = []
    for arm, part in arm_train.groupby("arm", sort=False):
        part = part.assign(version=part["version"].fillna(0))     # relu_before_add: no version
        per = per_net_curves(part, windows=windows(s), steps=s["steps"],
                             chance=1 - 1 / num_classes, warmup=warmup_length(s), epoch=epoch)
        rows.append(per.assign(arm=arm))
    return pd.concat(rows, ignore_index=True)


def interventions(table: pd.DataFrame, arms: pd.DataFrame, depth) -> pd.DataFrame:
    """Per arm: the share of V1's slow start (``err_c3`` V1 − V2) it closes, paired by seed,
    with its bounds (``claims.share_closed``); V1 − arm itself with its bounds (paired t); and
    the means they come from."""
    pairs = table[table["depth"] == depth].set_index(["seed", "version"])
    rows = []
    for name, (_, _, text) in ARMS.items():
        part = arms[arms["arm"] == name].set_index("seed") if len(arms) else arms
        seeds = sorted(set(part.index) & {k[0] for k in pairs.index if k[1] == 1}
                       & {k[0] for k in pairs.index if k[1] == 2})
        v1 = np.array([pairs.loc[(k, 1), "err_c3"] for k in seeds], dtype=float)
        v2 = np.array([pairs.loc[(k, 2), "err_c3"] for k in seeds], dtype=float)
        arm = part.loc[seeds, "err_c3"].to_numpy(float) if seeds else np.array([])
        result = C.share_closed(v1, arm, v2) if seeds else \
            C.not_testable(0, f"no {name} nets with a V1/V2 pair at {depth} layers")
        # the difference itself: a ratio of gaps is ill-conditioned where V1 − V2 is small
        gain = C.paired_difference(v1, arm) if len(seeds) > 1 else None
        loss = lambda version: float(pairs.xs(version, level="version")["loss_init"].mean()) \
            if len(pairs) else math.nan
        rows.append({"arm": name, "text": text, "depth": int(depth), "effect": result.effect,
                     "ci_low": result.ci_low, "ci_high": result.ci_high,
                     "p_value": result.p_value, "n": result.n, "verdict": result.verdict,
                     "method": result.method, "note": result.note,
                     "v1_minus_arm": gain.effect if gain else math.nan,
                     "v1_minus_arm_low": gain.ci_low if gain else math.nan,
                     "v1_minus_arm_high": gain.ci_high if gain else math.nan,
                     "err_c3_v1": v1.mean() if seeds else math.nan,
                     "err_c3_v2": v2.mean() if seeds else math.nan,
                     "err_c3_arm": arm.mean() if seeds else math.nan,
                     "err_end_arm": part.loc[seeds, "err_end"].mean() if seeds else math.nan,
                     "loss_init_v1": loss(1), "loss_init_v2": loss(2),
                     "loss_init_arm": part.loc[seeds, "loss_init"].mean() if seeds else math.nan})
    return pd.DataFrame(rows)


def intervention_rows(shares: pd.DataFrame, *, dataset: str) -> list[dict]:
    """C3 secondary rows: the share of V1's slow start each arm closes."""
    rows = []
    for r in shares.itertuples():
        result = C.TestResult(r.effect, r.ci_low, r.ci_high, r.p_value, int(r.n), r.verdict,
                              "greater", 0.0, r.method, r.note if isinstance(r.note, str) else "")
        rows.append(C.claim_row("C3", "secondary", NAME, f"share of V1's slow start (err_c3 V1 − "
                                f"V2) closed by {r.arm}: {r.text}", int(r.depth), result,
                                dataset=dataset, arm=r.arm))
    return rows


# --------------------------------------------------------------------------- controls, claims
def control_rows(table: pd.DataFrame, s) -> list[dict]:
    """Controls W, A and E on this run's nets, at every depth a primary uses."""
    shallow = min(s["depths"])
    trains = dict(column="err_end", limit=TRAINS_ERROR, what="training error over the last quarter")
    warm = dict(column="warmup_error", limit=WARMUP_ERROR,
                what="training error over the warm-up's last epoch")
    # W at 1001 too: He et al. warm ResNet-1001 up until the rule holds; a fixed warm-up that
    # leaves V1-1001 near chance sends it into the main lr unwarmed -- a slower start that
    # would be the setting's, not the unit's.
    return ([K.all_below(CONTROLS["W"], NAME, table, depth=d, version=v, **warm)
             for d in sorted({shallow, PRIMARY_DEPTH}) for v in (1, 2)]
            + [K.all_below(CONTROLS["A"], NAME, table, depth=shallow, version=v, **trains)
               for v in (1, 2)]
            + [K.all_below(CONTROLS["E"], NAME, table, depth=PRIMARY_DEPTH, version=2, **trains)])


def claims_rows(table: pd.DataFrame, controls, *, dataset: str) -> list[dict]:
    """The primary and secondary rows of the module docstring."""
    depths = sorted(table["depth"].unique())
    others = [d for d in depths if d != PRIMARY_DEPTH]
    failed = K.failed(controls)
    rows = []
    for primary in V2_STABILITY:
        rows += [{**r, "role": "secondary"} for r in C.primary_rows(
            table, dataclasses.replace(primary, depths=tuple(depths)), experiment=NAME,
            dataset=dataset, known_group=KNOWN_GROUP[primary.measure])]
    for depth in depths:                 # growth or decay, signed
        part = table[(table["depth"] == depth) & (table["version"] == 2)]
        for when in ("init", "last"):
            rows.append(C.claim_row("C4", "secondary", NAME, f"V2: signed log10 rho_in / rho_out "
                                    f"of the stage with the largest deviation, {when} (> 0: the "
                                    f"signal grows towards the input)", int(depth),
                                    C.one_sample(part[f"stage_rho_signed_{when}"],
                                                 direction="greater"), dataset=dataset))
    for primary in PRIMARY:
        known = KNOWN_GROUP.get(primary.measure, "")
        rows += C.primary_rows(table, primary, experiment=NAME, failed_controls=failed,
                               dataset=dataset, known_group=known)
        secondary = dataclasses.replace(primary, depths=tuple(others), untestable="")
        rows += [{**r, "role": "secondary"} for r in
                 C.primary_rows(table, secondary, experiment=NAME, dataset=dataset,
                                known_group=known)]
    for column, text in (("stage_rho_init", "largest |log10 rho_in / rho_out| across a stage, "
                          "at init, V1 − V2"),
                         ("stage_rho_last", "largest |log10 rho_in / rho_out| across a stage, "
                          "at the last probed step, V1 − V2"),
                         ("rho_init", "|log10 rho_first / rho_last| between the net's two ends, "
                          "at init, V1 − V2")):
        rows += C.paired_rows(table, column, claim="C4", role="secondary", experiment=NAME,
                              measure=text, depths=depths, dataset=dataset)
    v1 = table[table["version"] == 1]
    for column, text in (("path_indep_init", "V1: log10 share passing every ReLU from the product "
                          "of per-unit averages (path_share_indep, as if independent), summed "
                          "over stages, at init, − log10(1/2)"),
                         ("survival_init", "V1: sum over units of log10(1 − grad_cut) (the "
                          "earlier product of averages), at init, − log10(1/2)")):
        for depth in depths:
            rows.append(C.claim_row("C2", "secondary", NAME, text, int(depth), C.one_sample(
                v1.loc[v1["depth"] == depth, column], null=HALF, direction="less"),
                dataset=dataset, known_group=KNOWN_GROUP[column]))
    for depth in depths:
        part = v1[v1["depth"] == depth]
        rows.append(C.claim_row("C2", "secondary", NAME, "V1: what assuming independence costs, "
                                "path_init − path_indep_init (decades; < 0: the element-wise "
                                "path is cut more than the product of averages says)", int(depth),
                                C.one_sample(part["path_init"] - part["path_indep_init"],
                                             direction="less"), dataset=dataset))
    rows += C.paired_rows(table, "err_end", claim="C3", role="secondary", experiment=NAME,
                          measure="training error over the run's last quarter, V1 − V2",
                          depths=depths, dataset=dataset)
    return rows + cut_rows(table, depths, dataset)


def cut_rows(table, depths, dataset) -> list[dict]:
    """He et al. §4.1 on V1's after-addition ReLU: (a) more frequent at 1000 layers than at
    164 (equal width), (b) it fades with training."""
    v1 = table[table["version"] == 1]
    rows = []
    if len(depths) > 1:
        deepest = depths[-1]
        ref = 164 if 164 in depths and deepest != 164 else depths[-2]
        for stat in ("grad_cut", "shortcut_cut"):
            a, b = v1[v1["depth"] == deepest], v1[v1["depth"] == ref]
            rows.append(C.claim_row("C2", "secondary", NAME, f"He et al. §4.1, the truncation is "
                                    f"more frequent at 1000 layers: V1 {stat} at init (mean over "
                                    f"units), {deepest} − {ref} layers (equal width)", int(deepest),
                                    C.independent_difference(a[f"{stat}_init"], b[f"{stat}_init"]),
                                    dataset=dataset,
                                    paper_row="more_frequent" if stat == "grad_cut" else ""))
    for depth in depths:
        part = v1[v1["depth"] == depth]
        rows.append(C.claim_row("C2", "secondary", NAME, "V1 grad_cut (mean over units): at init "
                                "− at the last probed step (the cut fades)", int(depth),
                                C.paired_difference(part["grad_cut_init"], part["grad_cut_last"]),
                                dataset=dataset))
    return rows


# --------------------------------------------------------------------------- figures
def _margin(claim: str) -> float:
    """The plan's margin of ``claim``'s first primary (what the figures dot)."""
    return next(p.margin for p in PRIMARY if p.claim == claim)


def figure_gap(claims: pd.DataFrame, folder, name="c3_gap_vs_depth"):
    """``err_c3`` V1 − V2 with its interval against depth, the margin dotted."""
    return error_gap_figure(claims, "C3", _margin("C3"), folder, name)


def figure_transmission(table: pd.DataFrame, folder, name="c4_transmission"):
    """``stage_rho`` per net at init and at the last probed step; the margin dotted."""
    depths = sorted(table["depth"].unique())
    fig, axes = plotting.new_figure("two", 2.0, 1, 2, sharey=True)
    for ax, (column, title) in zip(axes[0], (("stage_rho_init", "initialisation"),
                                             ("stage_rho_last", "last probed step"))):
        seeds_dots(ax, table, column, depths)
        ax.axhline(V2_STABILITY[0].margin, color="0.5", lw=0.6, ls=":")
        ax.set_title(title)
    axes[0][0].set_ylabel("largest $|\\log_{10} \\rho_{in} / \\rho_{out}|$\nacross a stage")
    plotting.legend_above(fig, axes[0][1])
    return plotting.save_figure(fig, folder, name)


def figure_cuts(cuts: pd.DataFrame, folder, name="c2_cut_over_training"):
    """V1's after-addition ReLU over the first iterations, mean over seeds: the gradient
    energy passing every ReLU from the top to the first unit, and the per-unit cut."""
    v1 = cuts[cuts["version"] == 1]
    depths = sorted(v1["depth"].unique())
    colors = dict(zip(depths, matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(depths)))))
    fig, axes = plotting.new_figure("two", 2.0, 1, 2)
    panels = (("log_path", "log$_{10}$ share of gradient energy\npassing every ReLU (element-wise)"),
              ("grad_cut", "gradient energy cut per unit"))
    for ax, (column, label) in zip(axes[0], panels):
        for depth in depths:
            mean = v1[v1["depth"] == depth].groupby("step")[column].mean()
            ax.plot(mean.index, mean.values, color=colors[depth], marker="o", label=f"{depth} layers")
        ax.set_ylabel(label)
        ax.set_xlabel("iteration")
    axes[0][0].axhline(HALF, color="0.5", lw=0.6, ls=":")
    plotting.legend_above(fig, axes[0][-1])
    return plotting.save_figure(fig, folder, name)


def figure_interventions(train: pd.DataFrame, shares: pd.DataFrame, folder,
                         name="c3_interventions"):
    """Training error (10-iteration running mean) at the arms' depth: V1, V2 and each arm,
    mean over seeds (thick) and every seed (thin); the share each arm closes in the legend."""
    base, arms = split_arms(train)
    depth = int(shares["depth"].iloc[0]) if len(shares) else int(base["depth"].max())
    curves = []
    for label, part in [("V1", base[(base["depth"] == depth) & (base["version"] == 1)]),
                        ("V2", base[(base["depth"] == depth) & (base["version"] == 2)])] + \
            [(a, arms[arms["arm"] == a]) for a in ARMS if len(arms) and (arms["arm"] == a).any()]:
        wide = training_curves(part.assign(version=part["version"].fillna(0)))
        wide["smooth"] = wide.groupby("seed")["error"].transform(
            lambda e: e.rolling(10, min_periods=1).mean()) * 100
        curves.append((label, wide))
    fig, axes = plotting.new_figure("one", 3.4)
    ax = axes[0][0]
    colors = {"V1": plotting.VERSION_COLORS["V1"], "V2": plotting.VERSION_COLORS["V2"]}
    others = iter(["0.15", "#009E73", "#CC79A7", "0.55"])
    share = shares.set_index("arm") if len(shares) else None
    for label, wide in curves:
        color = colors.get(label) or next(others)
        for _, seed in wide.groupby("seed"):
            ax.plot(seed["step"], seed["smooth"], color=color, lw=0.4, alpha=0.5)
        mean = wide.groupby("step")["smooth"].mean()
        text = label
        if share is not None and label in share.index:
            r = share.loc[label]
            text = f"{label}: closes {r['effect']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        ax.plot(mean.index, mean.values, color=color, lw=1.4, label=text)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training error (%), {depth} layers")
    plotting.legend_above(fig, ax, ncol=1)      # inside the panel it covered the seeds' curves
    return plotting.save_figure(fig, folder, name)


def draw_figures(run_dir) -> list:
    """Redraw every figure from ``run_dir``'s CSVs alone (no model code runs)."""
    train, table, cuts, claims, shares, folder = figure_inputs(
        run_dir, NAME, "train", "summary", "cuts", "claims", "interventions")
    return (training_error_figure(split_arms(train)[0], table, folder, "c3_training_error")
            + figure_gap(claims, folder) + figure_transmission(table, folder)
            + figure_cuts(cuts, folder) + figure_interventions(train, shares, folder))


def published_tables(run_dir) -> dict:
    """The training loss, error and lr rows (every iteration; the figures and measures use them)."""
    train = read_table(run_dir, "train", "an early_training run folder")
    return {"train.csv.gz": train[(train["split"] == "train") & (train["metric"] != "seconds")]}


# ---- the declaration run_experiment reads (analysis/contract.py) ---------------------------

EXPERIMENT = Experiment(
    name=NAME, presets=PRESETS, quick_seconds=2500, files=FILES, work=train_cell,
    parse_settings=parse_settings, cells=cells, context=context, describe=describe,
    analyse=analyse, results_text=results_text, draw_figures=draw_figures,
    published_tables=published_tables, claims=("C2", "C3", "C4"))
