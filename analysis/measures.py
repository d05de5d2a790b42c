"""Per-net measures the experiments share: training curves and their windows, how far a
signal travels between two taps, and the after-addition ReLU's cut compounded over units.

Every function takes the tidy tables of a run (training rows, probe rows) and returns one
value per net (``NET`` columns) or per net and step, so every test, figure and summary uses
one definition of, e.g., "the training error over a window at the main lr".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

NET = ["depth", "version", "seed"]           # what identifies a net within one experiment
SMOOTH = 10                                  # iterations of a running mean (loss_rel)


# --------------------------------------------------------------------------- schedules
def warmup_length(s) -> int:
    """Updates at the warm-up lr in a run of settings ``s`` (fixed: both nets of a pair
    switch to the main lr after the same update)."""
    return int(s["schedule"]["warmup_max_steps"])


def first_division(s) -> int:
    """The update after which the lr is first divided (the run's end if never)."""
    milestones = s["schedule"]["milestones"]
    return int(milestones[0]) if milestones else int(s["steps"])


# --------------------------------------------------------------------------- training curves
def training_curves(train: pd.DataFrame) -> pd.DataFrame:
    """One row per net and iteration: loss, error and lr side by side."""
    rows = train[train["split"] == "train"]
    # unstack, not pivot_table: a diverged net's NaN losses must stay (pivot_table drops them)
    wide = rows.set_index(NET + ["width", "step", "metric"])["value"].unstack("metric").reset_index()
    wide.columns.name = None
    return wide.sort_values(NET + ["step"], kind="stable").reset_index(drop=True)


def full_error(curve: pd.DataFrame, steps: int, chance: float) -> pd.Series:
    """A net's training error at every iteration 1..steps; iterations from a divergence on
    count as chance error (a diverged net did not train)."""
    error = pd.Series(curve["error"].to_numpy(), index=curve["step"].to_numpy())
    loss = curve["loss"].to_numpy()
    full = error.reindex(range(1, steps + 1))
    if not np.isfinite(loss).all():
        full[full.index >= int(curve["step"].iloc[np.argmin(np.isfinite(loss))])] = chance
    return full.fillna(chance)


def window_mean(series: pd.Series, window) -> float:
    """Mean of ``series`` over the iterations (first, last] of ``window``."""
    return float(series.loc[window[0] + 1: window[1]].mean())


def curve_measures(curve: pd.DataFrame, *, windows: dict, steps: int, chance: float,
                   warmup: int, epoch: int) -> dict:
    """One net's training measures: ``err_<name>`` per window of ``windows`` ({name: (first,
    last]}; ``<name>_from``, ``<name>_to`` record where it lies), ``warmup_error`` (the mean training error over the warm-up's last epoch: what
    the paper's rule "until the training error is below 80%" looks at), ``max_loss_after``
    (the largest loss in the epoch after the switch: a blow-up at the main lr), ``loss_rel``
    (mean loss over the first window / mean loss of the SMOOTH iterations before the
    switch) and ``diverged_at``."""
    curve = curve.sort_values("step")
    error = full_error(curve, steps, chance)
    loss = pd.Series(curve["loss"].to_numpy(), index=curve["step"].to_numpy())
    finite = np.isfinite(loss.to_numpy())
    out = {f"err_{name}": window_mean(error, w) for name, w in windows.items()}
    for name, (first, last) in windows.items():       # where each window lies (for figures)
        out[f"{name}_from"], out[f"{name}_to"] = first, last
    out.update(warmup=warmup,
               warmup_error=window_mean(error, (max(0, warmup - epoch), warmup)) if warmup else np.nan,
               max_loss_after=float(loss.loc[warmup + 1: warmup + epoch].max()) if warmup else np.nan,
               diverged_at=np.nan if finite.all() else int(curve["step"].iloc[np.argmin(finite)]),
               loss_init=float(loss.iloc[0]) if len(loss) else np.nan)
    first = next(iter(windows.values()))
    before = loss.loc[max(1, warmup - SMOOTH + 1): warmup].mean() if warmup else np.nan
    out["loss_rel"] = float(loss.loc[first[0] + 1: first[1]].mean() / before) if warmup else np.nan
    return out


def per_net_curves(train: pd.DataFrame, **kw) -> pd.DataFrame:
    """``curve_measures`` for every net of a run's training rows (one row per net)."""
    rows = [{**dict(zip(NET + ["width"], key)), **curve_measures(part, **kw)}
            for key, part in training_curves(train).groupby(NET + ["width"])]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- transmission
def transmission(probe: pd.DataFrame, keys) -> pd.DataFrame:
    """Per net (``keys``) and step: log10 of the raw gradient ratio ||g_first|| / ||g_last||
    and of the relative-sensitivity ratio rho_first / rho_last, rho = ||dL/dx|| * ||x||
    (first = the first unit's input, last = the last unit's output), and their absolute
    values (lower = the signal travels with less loss or blow-up)."""
    keys = list(keys) + ["step"]
    norm = probe[probe["stat"] == "norm"]
    first_unit = norm.groupby(keys)["unit"].transform("min")
    last_unit = norm.groupby(keys)["unit"].transform("max")

    def end(rows, tap, direction):
        part = rows[(rows["tap"] == tap) & (rows["direction"] == direction)]
        return part.set_index(keys)["value"]

    first = norm[(norm["unit"] == first_unit)]
    last = norm[(norm["unit"] == last_unit)]
    g0, x0 = end(first, "input", "backward"), end(first, "input", "forward")
    g1, x1 = end(last, "output", "backward"), end(last, "output", "forward")
    out = pd.DataFrame({"log_grad_ratio": np.log10(g0 / g1),
                        "log_rho_ratio": np.log10((g0 * x0) / (g1 * x1))})
    out["abs_log_grad_ratio"] = out["log_grad_ratio"].abs()
    out["abs_log_rho_ratio"] = out["log_rho_ratio"].abs()
    return out.reset_index()


def stage_transmission(probe: pd.DataFrame, keys) -> pd.DataFrame:
    """Per net (``keys``), step and stage, through the units with identity shortcuts only
    (a stage's units after its first, which changes the shape): log10 rho_in / rho_out,
    rho_in = ||dL/dx|| ||x|| at the input of the stage's second unit, rho_out the same at its
    last unit's output; and per net and step ``stage_rho`` = the largest |log10 ratio| over
    the stages (0: the signal crosses every stage unchanged, He et al. eqs. 4-5)."""
    keys = list(keys) + ["step"]
    rows = probe[(probe["stat"] == "norm") & (probe["index"] >= 1)]
    at = keys + ["stage"]
    first = rows.groupby(at)["index"].transform("min") == rows["index"]
    last = rows.groupby(at)["index"].transform("max") == rows["index"]

    def rho(part, tap):
        sel = part[part["tap"] == tap]
        g = sel[sel["direction"] == "backward"].set_index(at)["value"]
        x = sel[sel["direction"] == "forward"].set_index(at)["value"]
        return g * x

    ratio = np.log10(rho(rows[first], "input") / rho(rows[last], "output"))
    out = ratio.rename("log_stage_rho").reset_index()
    out["abs_log_stage_rho"] = out["log_stage_rho"].abs()
    return out


def stage_rho(probe: pd.DataFrame, keys) -> pd.DataFrame:
    """Per net and step: ``stage_rho``, the largest |log10 rho_in / rho_out| over stages."""
    stages = stage_transmission(probe, keys)
    return (stages.groupby(list(keys) + ["step"])["abs_log_stage_rho"].max()
            .rename("stage_rho").reset_index())


# --------------------------------------------------------------------------- the ReLU's cut
def compounded_cut(probe: pd.DataFrame, keys, stat="grad_cut") -> pd.DataFrame:
    """Per net and step: ``log_survival`` = log10 of the share of the identity path's energy
    that passes every unit's after-addition function from the top to the first unit,
    sum over units of log10(1 − ``stat``) (``grad_cut``: gradient energy; ``shortcut_cut``:
    the shortcut's forward energy) -- what the article's "the shortcut has no effect"
    compounds to over a net; and ``mean_cut``, the per-unit mean."""
    rows = probe[(probe["tap"] == "sum") & (probe["stat"] == stat)]
    by = rows.groupby(list(keys) + ["step"])["value"]
    out = pd.DataFrame({"log_survival": by.apply(lambda v: float(np.log10(np.clip(1 - v, 1e-300, 1)).sum())),
                        "mean_cut": by.mean()})
    return out.reset_index()


def at_first_and_last(per_step: pd.DataFrame, keys, column: str, name: str) -> pd.DataFrame:
    """``column`` at each net's first and last step: columns ``<name>_init``, ``<name>_last``."""
    keys = list(keys)
    first = per_step.loc[per_step.groupby(keys)["step"].idxmin()].set_index(keys)[column]
    last = per_step.loc[per_step.groupby(keys)["step"].idxmax()].set_index(keys)[column]
    return pd.DataFrame({f"{name}_init": first, f"{name}_last": last})
