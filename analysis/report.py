"""REPORT.md: the article's claims answered in one screen, each tied to its evidence.

Reads ``<results>/<experiment>/claims.csv``, ``controls.csv``, ``config.json`` and ``figures/``
and writes:

* the regime in one line (data, image size, schedule, updates, widths, seeds, machine);
* the plan (``plans/plan.json``, its sha256), the confirmatory seeds and which run is
  confirmatory -- a claim is *not answered* from a run made under another plan, or none
  (``analysis.plan.plan_mismatch``, ``analysis.confirmatory.run_differs``): its numbers are shown, not taken as an answer;
* the positive controls (He et al.'s baselines in that regime), each with its numbers and
  pass/fail -- also written as ``controls_summary.csv``;
* one table -- claim, the article's words (short), the answer, one sentence of why with the key
  number and its interval, whether He et al. made the same comparison and whether this answer
  agrees (a contradiction is flagged), the figure that shows it -- also written as
  ``claims_summary.csv``;
* the known-groups result of each signal measure a claim rests on, and the share of V1's slow
  start each intervention closes; He et al.'s Table 1 beside our shortcut variants;
* in a companion, ``CLAIMS.md``, one short section per claim: its primary test(s), a sentence
  on its secondary measures, the plan's primaries, the caveats that apply to it (the report
  stays under 20 KB);
* in another, ``PLAN_AND_HISTORY.md``, the plan's a-priori power table and the history of the
  answers published before (``history.csv``, extracted from git by ``analysis.history``);
* the rules (how a test's verdict, a claim's answer and C7 follow), and where every result
  came from (preset, data, widths, the commit -- a result made by a commit whose code differs
  from this checkout's is marked -- and the wall time with the machine it was taken on).

A claim's answer comes from its primary rows alone (``analysis.claims.claim_verdict``); C1 has
mechanism checks only, and C7 is derived from C3 and C5 by ``analysis.claims.C7_RULE``.
The output depends only on the input files (and the checkout's commit): rerunning on the same
files gives the same bytes.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resnet_lab.io.folders import CODE_PATHS, atomic_write, write_table

from . import known_groups as G
from .claims import (C7_RULE, CLAIM_RULE, CLAIMS_FILE, NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED,
                     claim_verdict, derive_c7, read_claims, verdict)
from .controls import CONTROLS_FILE, read_controls
from .history import answer_changes, read as read_history
from .confirmatory import run_differs, settings as plan_settings
from .plan import PLAN, ROOT, plan_hash, plan_mismatch, read_plan, short

SUMMARY_FILE = "claims_summary.csv"
CONTROLS_SUMMARY_FILE = "controls_summary.csv"
SUMMARY_COLUMNS = ["claim", "article", "answer", "why", "he_et_al", "figure"]
NOT_ANSWERED = "not answered"
CONTROL_COLUMNS = ["control", "experiment", "check", "he_et_al", "numbers", "result"]


@dataclass(frozen=True)
class Claim:
    """One claim: the article's words, in English and Chinese, and where its evidence is."""
    id: str
    article: str            # short, for the table
    sentence: str           # the article's sentence, translated
    original: str           # verbatim
    figure: str             # the stem of the figure that shows the answer, in the folder of
    #                         the experiment that declares the claim (tested_in)
    caveat: str             # what limits the answer in this suite's setting
    measure: str = ""       # the primary measure, short, for the table
    scale: float = 1.0      # shown as effect x scale (100: errors in points)
    paper: str = ""         # what He et al. compared ("" = no such comparison in the paper)
    paper_measured: bool = True   # False: He et al. derive it, they do not measure it
    windows: tuple = ()     # a label per primary measure of the plan, in its order, where
    #                         there are several (tests/test_report.py holds them to the plan)
    known_group: str = ""   # the signal measures its primaries rest on (known-groups check), ", "
    interventions: bool = False   # the section shows early_training's interventions
    paper_row: str = ""     # claims rows (``paper_row``) that test He et al.'s own statement


CLAIMS = (
    Claim("C1", "V1's f is ReLU, V2's f is the identity",
          "From the formulas one sees that for V1, f is the ReLU function, while for V2 it is "
          "a direct identity mapping.",
          "结合计算公式,可以看出对于V1来说f为ReLU函数,而V2为直接的identity mapping(恒等映射)。",
          "c1_formula_check",
          "True by construction of the units: it checks the instrument, not an outcome.",
          paper="eqs. 1-2 (by construction)"),
    Claim("C2", "in V1 the ReLU after the addition cuts the shortcut off",
          "Because of the nature of ReLU, when the signal is negative the shortcut has no effect.",
          "因为ReLU的特性所致,信号为负时,shortcut不起作用",
          "c2_cut_over_training",
          "Measured at initialisation, compounded over the units (the identity path from the top "
          "to the first unit); how it changes with training is a secondary row.",
          "V1, log10 share of the stage-end gradient passing every ReLU element by element, "
          "summed over stages, − log10(1/2)",
          paper="§4.1: the truncation is more frequent at 1000 layers (no number)",
          known_group="shortcut_path", interventions=True, paper_row="more_frequent"),
    Claim("C3", "very deep V1 nets (1001 layers) train very slowly at first",
          "Optimizing deep networks (the paper's experiments use a 1001-layer ResNet) is easier: "
          "because of the nature of ReLU, when the signal is negative the shortcut has no effect, "
          "so training at the beginning is very slow.",
          "对于深层的网络(论文实验中使用1001层的ResNet)优化来说更简单,因为ReLU的特性所致,信号为负时,"
          "shortcut不起作用,所以初期训练会十分慢。",
          "c3_training_error",
          "The window lies wholly at the main lr, after the one fixed warm-up both nets of a pair "
          "share; the run covers the first iterations only. He et al. warm ResNet-1001 up as "
          "ResNet-110 (lr 0.01 until the training error is below 80%, then 0.1), so control W "
          "checks that rule at 1001 layers too: a warm-up that leaves V1-1001 near chance sends it "
          "into the main lr unwarmed, a slow start of the setting's making.",
          "training error at the main lr, V1 − V2 (points)", 100,
          paper="Fig. 1: V1-1001 trains slowly at first, V2-1001 does not", interventions=True),
    Claim("C4", "with identity mappings the signal travels freely, early and late",
          "Using an identity mapping lets the signal propagate smoothly through every layer, "
          "whether early or late in training.",
          "而采用identity mapping使得无论训练初期还是末期,信号都能顺利在各层传输",
          "c4_transmission",
          "'Late' is the end of the early-training run, after its main-lr phase, not the end of a "
          "full training (full_training's probe records no unit norms, and it stops at 164 "
          "layers). Each measure answers only if it passed the known-groups check.",
          "log10 share of the gradient passing every after-addition function along the "
          "identity path element by element, V1 − V2 (paired by seed; stage_rho and the "
          "gradient's end-to-end ratio are secondary rows)",
          paper="eqs. 4-5: derived, not measured", paper_measured=False,
          windows=("at init", "late"),
          known_group="stage_rho, shortcut_path, grad_ratio"),
    Claim("C5", "V1's slow start is not serious below about 164 layers",
          "Of course, this phenomenon is not serious when the network has few layers (the "
          "experiments used fewer than 164 layers).",
          "当然这种现象在层数不高时并不严重(实验使用低于164层)",
          "c5_gap_vs_depth",
          "Non-inferiority at 56 and 110 layers (basic units): V1 not slower than V2 by more than "
          "C3's 5 points; 20 layers (both versions at the floor) and the 164-layer bottleneck net "
          "are secondary rows. V2 starts handicapped: the main lr was calibrated on V1-56 alone, "
          "and V2 trails V1 through the shared warm-up (control W's numbers give both versions' "
          "warm-up errors), so V1 ahead early is partly the setting's, not the unit's.",
          "training error at the main lr, V1 − V2 (points; V1 not worse by > 5)", 100,
          paper="Table 3: V1 and V2 both train at 110 with one recipe (6.61 vs 6.37%)",
          windows=("early", "late")),
    Claim("C6", "V2 overfits less: every weight layer's input is normalized",
          "In V1 the input is normalized by BN, but after the shortcut is added, the signal "
          "passed on to the next weight layer is not normalized; in V2 the signal entering every "
          "layer is normalized, which helps reduce overfitting.",
          "在V1中虽然对输入进行了BN正则化,但是加上shortcut后,传到下个层的weight层的信号未正则化。"
          "而V2中对于传入每个层的信号都正则化可以帮助减少过拟合现象。",
          "c6_final_metrics",
          "He et al.'s Fig. 6 pattern, tested where both versions fit their training set (controls "
          "B, D, F): V2 has the lower test error and the higher training loss -- a smaller gap "
          "alone would measure optimisation as much as overfitting (the gaps are secondary rows). "
          "Where the test set is too small to resolve He et al.'s 0.24-0.47 points, the plan "
          "declares those rows untestable in advance.",
          "He et al. Fig. 6: test error V1 − V2 > 0, training loss V1 − V2 < 0 (fractions, nats)",
          1.0,
          paper="Fig. 6 (164 layers): V2 has the higher training loss and the lower test error",
          windows=("test error", "training loss")),
    Claim("C7", "so: V1 for shallow nets, V2 for deep ones",
          "In summary, networks with few layers can keep using the V1 block; networks with many "
          "layers should use the V2 block.",
          "总结来说,对于层数较少的网络可以继续使用V1 block,对于层数较多使用V2 block。",
          "", "Derived from C3 and C5 by the rule below; inherits their caveats."),
    Claim("T2", "(He et al. Table 2) full pre-activation beats the original unit",
          "He et al. 2016, Table 2: of five unit arrangements, full pre-activation has the lowest "
          "test error.", "", "t2_test_error",
          "Tested where both units fit their training set, on nets of its own (the plan gives "
          "unit_ablation seeds apart from full_training's: the exploratory references shared "
          "full_training's nets at 110 layers, so T2 was not an independent test there). Every "
          "unit's row is listed, a unit whose nets do not fit marked untrained.",
          "test error, full pre-activation − original (points)", 100,
          paper="Table 2: 6.37 vs 6.61% at 110 layers"),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)


def tested_in() -> dict:
    """{claim id: the experiment that writes its primary test}, from the experiments'
    declarations (``Experiment.claims``); C7 is derived, in none."""
    from . import experiments
    return {claim: experiment.name for experiment in experiments() for claim in experiment.claims}


# --------------------------------------------------------------------------- reading
def load_results(results) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Every claims row (with ``folder``), each experiment folder's config, by name, and
    every controls row."""
    results = Path(results)
    if not results.is_dir():
        raise ValueError(f"no results folder at {results}; run the experiments first "
                         "(each writes results/paper/<experiment>/claims.csv)")
    frames, configs = [], {}
    for path in sorted(results.glob(f"*/{CLAIMS_FILE}")):
        df = read_claims(path)
        df["folder"] = path.parent.name
        frames.append(df)
    for path in sorted(results.glob("*/config.json")):
        try:
            configs[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable config ({exc})") from None
    rows = pd.concat(frames, ignore_index=True, sort=False) if frames else \
        pd.DataFrame(columns=["claim", "role", "verdict", "folder"])
    controls = [read_controls(path) for path in sorted(results.glob(f"*/{CONTROLS_FILE}"))]
    controls = pd.concat(controls, ignore_index=True) if controls else pd.DataFrame()
    # A claim row resting on a signal measure (its ``known_group``) that did not pass the
    # known-groups check is not testable here: the gate, applied where every claim is read.
    return G.gated_rows(rows, known_groups(results)), configs, controls


def known_groups(results) -> pd.DataFrame | None:
    """The known-groups check of these results (``shortcut_variants/known_groups.csv``), or
    None where it has not run."""
    path = Path(results) / G.KNOWN_GROUPS_EXPERIMENT / G.KNOWN_GROUPS_FILE
    return G.read_known_groups(path) if path.is_file() else None


def _optional(results, experiment, name) -> pd.DataFrame | None:
    path = Path(results) / experiment / name
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable table ({exc})") from None


# --------------------------------------------------------------------------- formatting
def _num(x, digits=3) -> str:
    if x is None:
        return "—"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "—"
    if abs(x) < 1e-12:          # a difference that is zero up to rounding prints as 0
        return "0"
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    return f"{x:.{digits}g}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])


def _test(row, scale=1.0) -> str:
    """'4.2 [3.1, 5.3], p 0.002, n 5' or why the test could not be made (with its numbers
    where it made them: a test the plan declared untestable still shows what it measured)."""
    value = lambda x: _num(float(x) * scale)
    numbers = (f"{value(row['effect'])} [{value(row['ci_low'])}, {value(row['ci_high'])}]"
               if row["effect"] == row["effect"] else "")
    if row["verdict"] == NOT_TESTABLE:
        reason = str(row.get("note", ""))
        return f"{numbers + ', ' if numbers else ''}not testable ({reason})"
    p = row.get("p_holm")
    p = row["p_value"] if p is None or (isinstance(p, float) and math.isnan(p)) else p
    return f"{numbers}, p {_num(p, 2)}, n {_num(row['n'])}"


def _threshold(row) -> float:
    return -float(row["margin"]) if row["direction"] == "less" else float(row["margin"])


def _where(row) -> str:
    depth = row.get("depth")
    return f"{_num(depth)} layers" if depth == depth and depth is not None else "all depths"


# --------------------------------------------------------------------------- answers
def unplanned(claim: str, rows: pd.DataFrame, configs: dict, current: str | None,
              plan: dict | None = None) -> str:
    """Why ``claim`` is not answered from these runs ("" if every run behind its primary rows
    was made under the current plan, of sha256 ``current``; C1's mechanism checks are outside
    the plan)."""
    if current is None or claim == "C1":
        return ""
    folders = sorted(rows.loc[rows["claim"] == claim, "folder"].unique()) \
        if "folder" in rows else []
    reasons = [plan_mismatch(configs.get(f, {}), current)
               or (run_differs(configs.get(f, {}), plan, f) if plan is not None else "")
               for f in folders]
    return next((r for r in reasons if r), "")


def answers(rows: pd.DataFrame, configs: dict | None = None, current: str | None = None,
            plan: dict | None = None) -> dict:
    """{claim: answer}: primary rows by the claim rule (C1: its mechanism rows), C7 by rule;
    a claim whose runs were not made under the current plan (sha256 ``current``) is not
    answered, and C7 with it."""
    out = {}
    for claim in CLAIM_IDS:
        if claim == "C7":
            continue
        part = rows[(rows["claim"] == claim) & (rows["role"] == ("mechanism" if claim == "C1"
                                                                 else "primary"))]
        if not len(part):
            out[claim] = "no data yet"
        elif unplanned(claim, rows, configs or {}, current, plan):
            out[claim] = NOT_ANSWERED
        else:
            out[claim] = claim_verdict(part)
    out["C7"] = NOT_ANSWERED if NOT_ANSWERED in (out["C3"], out["C5"]) else derive_c7(out)
    return out


def why(claim: Claim, rows: pd.DataFrame, answer_of: dict, refused: str = "",
        own_words: bool = False) -> str:
    """One sentence: the key primary test(s) with number and interval; ``refused``: why the
    claim is not answered from them (they are shown as what they are, not as an answer, each in
    the words of the run that made it -- ``own_words``: its measure may not be the plan's)."""
    if refused:
        return f"{refused}; its numbers, not an answer: {why(claim, rows, answer_of, own_words=True)}"
    if claim.id == "C7":
        return f"by rule: C3 {answer_of.get('C3')}, C5 {answer_of.get('C5')}"
    role = "mechanism" if claim.id == "C1" else "primary"
    part = rows[(rows["claim"] == claim.id) & (rows["role"] == role)]
    if part.empty:
        return f"no data yet: run experiments/{tested_in()[claim.id]}.py (or make reproduce)"
    if claim.id == "C1":
        worst = part.loc[part["ci_high"].astype(float).idxmax()]
        return (f"largest per-net formula error {_num(worst['ci_high'])} (95% upper bound), "
                f"tolerance {_num(worst['margin'])}, over {len(part)} depth × version checks")
    if own_words:
        return "; ".join(f"{_clip(r['measure'], 60)}, {_where(r)}: {_test(r, claim.scale)}"
                         + ("" if r["verdict"] == NOT_TESTABLE else f" ({r['verdict']})")
                         for _, r in part.iterrows())
    label = dict(zip(part["measure"].unique(), claim.windows))     # {measure: "early", ...}
    parts = [f"{label[r['measure']] + ', ' if r['measure'] in label else ''}{_where(r)}: "
             f"{_test(r, claim.scale)}"
             + ("" if r["verdict"] == NOT_TESTABLE else f" ({r['verdict']})")
             for _, r in part.iterrows()]
    return f"{claim.measure or part.iloc[0]['measure']}: " + "; ".join(parts)


def he_et_al(claim: Claim, answer: str, rows: pd.DataFrame | None = None) -> str:
    """Whether He et al. made the same comparison, and whether this answer agrees -- or, where
    a row tests He et al.'s own statement (``Claim.paper_row``), what the data say for it."""
    if not claim.paper:
        return "no such comparison"
    if not claim.paper_measured:
        return f"{claim.paper}; —"
    if claim.paper_row:
        has = rows is not None and "paper_row" in rows.columns
        own = rows[rows["paper_row"] == claim.paper_row] if has else pd.DataFrame()
        if own.empty:
            return f"{claim.paper}; the data: no row tests it"
        r = own.iloc[0]
        if answer == NOT_ANSWERED:        # a run the plan does not answer from: no agreement
            return f"{claim.paper}; not answered (its numbers: {r['measure']}, {_test(r)})"
        word = {SUPPORTED: "agree", NOT_SUPPORTED: "⚠ disagree"}.get(r["verdict"], "cannot say")
        return (f"{claim.paper}; the data {word}: {r['measure']}, {_test(r)} ({r['verdict']})")
    word = {SUPPORTED: "agrees", NOT_SUPPORTED: "⚠ disagrees (see why)"}.get(answer, "cannot say")
    return f"{claim.paper}; {word}"


def summary_table(rows, configs, out_dir, current=None, plan=None) -> pd.DataFrame:
    answer_of, experiment_of = answers(rows, configs, current, plan), tested_in()
    table = []
    for claim in CLAIMS:
        refused = unplanned(claim.id, rows, configs, current, plan)
        if claim.id == "C7" and answer_of["C7"] == NOT_ANSWERED:
            refused = "not answered: C3 or C5 is not answered"
        experiment, stem = experiment_of.get(claim.id, ""), claim.figure
        png = Path(out_dir) / experiment / "figures" / f"{stem}.png" if stem else None
        figure = f"[{stem}]({experiment}/figures/{stem}.png)" if png is not None and png.is_file() else "—"
        table.append({"claim": claim.id, "article": claim.article, "answer": answer_of[claim.id],
                      "why": refused or why(claim, rows, answer_of),
                      "he_et_al": he_et_al(claim, answer_of[claim.id], rows), "figure": figure})
    return pd.DataFrame(table, columns=SUMMARY_COLUMNS)


def controls_table(controls: pd.DataFrame) -> pd.DataFrame:
    """One row per control and experiment: its numbers and whether it passed."""
    if controls.empty:
        return pd.DataFrame(columns=CONTROL_COLUMNS)
    out = []
    for (control, experiment), part in controls.groupby(["control", "experiment"], sort=False):
        first = part.iloc[0]
        out.append({"control": control, "experiment": experiment, "check": first["check"],
                    "he_et_al": first["he_et_al"], "numbers": "; ".join(part["numbers"]),
                    "result": "passed" if part["passed"].astype(bool).all() else "FAILED"})
    return pd.DataFrame(out, columns=CONTROL_COLUMNS)


def regime(configs) -> str:
    """The setting of the results in one line (from the experiments' config.json)."""
    trained = {n: c.get("preset") or {} for n, c in configs.items()
               if (c.get("preset") or {}).get("schedule")}
    if not trained:
        return "Regime: no training runs yet."
    data = next((c.get("data") for c in configs.values() if c.get("data")), {}) or {}
    first = next(iter(trained.values()))
    sched = first["schedule"]
    size = "x".join(map(str, data.get("image_size", []))) or "?"
    images = f" ({data['train']:,} train / {data['test']:,} test images)" if "train" in data else ""
    updates = ", ".join(f"{n} {s.get('steps')}" for n, s in sorted(trained.items()))
    widths = ", ".join(f"{n} {sorted(set((s.get('widths') or {}).values()))}"
                       for n, s in sorted(trained.items()))
    seeds = sorted({len(s.get("seeds", [])) for s in trained.values()})
    machines = sorted({c.get("machine", "?") for c in configs.values()})
    return (f"Regime: {first.get('dataset', '?')} {size}{images}, batch {first.get('batch_size')}; "
            f"lr {sched['warmup_lr']:g} for {sched['warmup_max_steps']} iterations, then "
            f"{sched['lr']:g}, /10 at 1/2 and 3/4 of a run; updates: {updates}; widths: {widths}; "
            f"{'/'.join(map(str, seeds))} seeds; {', '.join(machines)}.")


# --------------------------------------------------------------------------- sections
def _secondary_sentence(part: pd.DataFrame) -> str:
    """The secondary rows of a claim in a sentence: counts, and the first measures' values."""
    if part.empty:
        return ""
    counts = part["verdict"].value_counts()
    text = (f"{len(part)} secondary rows ({', '.join(f'{n} {v}' for v, n in counts.items())}); ")
    shown = []
    for measure, rows in list(part.groupby("measure", sort=False))[:1]:
        values = ", ".join(f"{_num(r['depth'])}: {_num(r['effect'])} ({r['verdict']})"
                           for _, r in rows.iterrows() if r["depth"] == r["depth"])
        shown.append(f"{measure} — {values or _num(rows.iloc[0]['effect'])}")
    return text + "; ".join(shown) + "."


def interventions_sentence(shares: pd.DataFrame, out_dir=None) -> str:
    """The share of V1's slow start each intervention closes, with its bounds."""
    parts = []
    for _, r in shares.iterrows():
        bounds = f"[{_num(r['ci_low'], 2)}, {_num(r['ci_high'], 2)}]"
        gap = (f"; V1 − arm {_num(100 * r['v1_minus_arm'], 3)} points [{_num(100 * r['v1_minus_arm_low'], 3)}, "
               f"{_num(100 * r['v1_minus_arm_high'], 3)}], its err_c3 {_num(100 * r['err_c3_arm'], 3)}%"
               if "v1_minus_arm" in r else "")
        parts.append(f"{r['arm']} ({r['text']}) closes {_num(r['effect'], 2)} {bounds}, n "
                     f"{_num(r['n'])}, {r['method']}{gap}; its loss at init {_num(r['loss_init_arm'], 3)}")
    depth = _num(shares["depth"].iloc[0]) if len(shares) else "?"
    figure = Path(out_dir or ".") / "early_training" / "figures" / "c3_interventions.png"
    link = (" ([curves](early_training/figures/c3_interventions.png))" if figure.is_file() else "")
    v1, v2 = (_num(shares[c].iloc[0], 3) if len(shares) else "—" for c in ("loss_init_v1", "loss_init_v2"))
    e1, e2 = (_num(100 * shares[c].iloc[0], 3) if len(shares) else "—" for c in ("err_c3_v1", "err_c3_v2"))
    return (f"Interventions at {depth} layers, paired by seed with V1 and V2 (share of V1's slow "
            f"start, err_c3 V1 − V2, that each closes; 1 = as V2, 0 = as V1; err_c3 V1 {e1}%, V2 "
            f"{e2}%; loss at init V1 {v1}, V2 {v2}){link}: " + "; ".join(parts) + ".")


def claim_section(claim: Claim, rows: pd.DataFrame, summary_row, configs, **extra) -> list[str]:
    lines = [f"## {claim.id} — {claim.article}", "", f"> “{claim.sentence}”"
             + (f"  \n> *{claim.original}*" if claim.original else ""), "",
             f"**Answer: {summary_row['answer']}.** {summary_row['why']}.", ""]
    part = rows[rows["claim"] == claim.id]
    if summary_row["answer"] == NOT_ANSWERED and claim.id != "C7" and not part.empty:
        lines[-2] = lines[-2][:-1] + (f"; its numbers, not an answer: "
                                      f"{why(claim, rows, {}, own_words=True)}.")
    primary = part[part["role"] == ("mechanism" if claim.id == "C1" else "primary")]
    if not primary.empty:
        first = primary.iloc[0]
        reason = first.get("margin_reason")
        kind = "Mechanism check" if claim.id == "C1" else "Primary test"
        lines.append(f"{kind} ({first['experiment']}, {len(primary)} row"
                     f"{'s' if len(primary) > 1 else ''}): {first['measure']}; {first['direction']}, "
                     f"margin {_num(first['margin'])}"
                     + (f" — {reason}." if isinstance(reason, str) and reason else "."))
    mechanism = part[(part["role"] == "mechanism") & (claim.id != "C1")]
    if not mechanism.empty:
        lines.append(f"Mechanism check (true by construction): {mechanism.iloc[0]['measure']} — "
                     + ", ".join(f"{_num(r['depth'])}: {_num(r['effect'])} ({r['verdict']})"
                                 for _, r in mechanism.iterrows()) + ".")
    secondary = _secondary_sentence(part[part["role"] == "secondary"])
    if secondary:
        lines.append(f"Secondary: {secondary}")
    known = known_line(claim, extra.get("known"))
    if known:
        lines.append(f"On the [known-groups check](REPORT.md#table-1): {known}")
    if claim.interventions and extra.get("interventions") is not None:
        lines.append(interventions_sentence(extra["interventions"], extra.get("out_dir")))
    folders = sorted(part["folder"].unique())
    links = ", ".join(f"[{f}/claims.csv]({f}/claims.csv)" for f in folders)
    lines += ["", f"Caveats: {claim.caveat} Rows: {links or '—'}.", ""]
    return lines


# --------------------------------------------------------------------------- provenance
# Code that makes none of the results: it reads them (the report, the history, the plan's power
# analysis) or launches the experiments with options their config.json records (reproduce, the
# confirmatory run's settings). A commit that differs from this checkout only there made the
# same results (and the committed REPORT.md is what this checkout writes: tests/test_report.py).
READING_CODE = ("analysis/report.py", "experiments/report.py", "analysis/history.py",
                "analysis/power.py", "experiments/plan_power.py", "analysis/confirmatory.py",
                "experiments/reproduce.py")


def not_making(experiment: str | None) -> list[str]:
    """The code that does not make ``experiment``'s results: ``READING_CODE`` and every other
    experiment's own two modules (``analysis/<name>.py``, ``experiments/<name>.py``; no
    experiment imports another's)."""
    from . import EXPERIMENTS
    others = [f"{room}/{name}.py" for name in EXPERIMENTS if experiment and name != experiment
              for room in ("analysis", "experiments")]
    return [*READING_CODE, *others]


def _code_differs(commit, experiment: str | None = None) -> str | None:
    """None if the code that makes ``experiment``'s results (``CODE_PATHS`` but
    ``not_making(experiment)``) is the same at ``commit`` as in this checkout; else a short
    reason."""
    if not commit:
        return "made outside git"
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "diff", "--quiet", commit, "HEAD", "--", *CODE_PATHS,
                              *(f":(exclude){path}" for path in not_making(experiment))],
                             cwd=root, capture_output=True, timeout=20,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode == 0:
        return None
    return f"made by {commit[:10]}, whose code differs from this checkout's" if out.returncode == 1 \
        else f"made by {commit[:10]}, which this checkout does not know"


def provenance(configs) -> list[str]:
    rows = []
    for name, config in sorted(configs.items()):
        s = config.get("preset") or {}
        commit = config.get("code_commit") or config.get("git_commit")
        stale = _code_differs(commit, name)
        dirty = " (uncommitted changes)" if config.get("code_dirty") else ""
        rows.append([name, str(s.get("preset", "?")), str(s.get("dataset", "?")),
                     ", ".join(f"{d}: w{w}" for d, w in (s.get("widths") or {}).items()),
                     str(len(s.get("seeds", []))), str(s.get("steps", "—")),
                     f"{(commit or '?')[:10]}{dirty}" + (f" ⚠ {stale}" if stale else ""),
                     short(config.get("plan_sha256")) if config.get("plan_sha256") else "none",
                     _num(round(config["wall_seconds"])) if config.get("wall_seconds") else "—",
                     config.get("machine", "?")])
    return _table(["experiment", "preset", "data", "depth: width", "seeds", "iterations",
                   "commit", "plan", "wall s", "machine"], rows)


# --------------------------------------------------------------------------- plan, power, history
def plan_screen(plan: dict, sha: str, plan_name: str, configs: dict) -> list[str]:
    """The first screen's words on the plan: its file and hash, the seeds, which run is
    confirmatory (a run made under this plan) -- or that none is yet."""
    made = sorted(n for n, c in configs.items() if c.get("plan_sha256") == sha)
    seeds = plan["seeds"]
    fresh = "; ".join(f"{n} {_span(v)}" for n, v in (seeds.get("confirmatory") or {}).items())
    run = (f"**Confirmatory runs**: {', '.join(made)} (made under this plan)." if made else
           "**No confirmatory run yet.** The references in this folder are exploratory: made "
           "before the plan, with the seeds that chose the design "
           f"({_span(seeds.get('exploratory', []))}); their numbers are shown, not taken as "
           "answers (a claim reads *not answered* until a run under this plan is published), "
           "and the controls below are the ones those runs checked.")
    changed = "; ".join(f"{n} {_settings_text(n, plan)}" for n in (plan.get("settings") or {})
                        if plan_settings(n, plan))
    changed = f" Settings beyond the quick presets: {changed} (the plan says why)." if changed else ""
    calibration = ", ".join(plan.get("exploratory_only") or {})
    if calibration:
        changed += f" On the exploratory seeds only (calibration, no claim): {calibration}."
    return [f"**Plan**: `{plan_name}` (sha256 `{short(sha)}`), frozen before the confirmatory "
            f"run: every primary test, its margin, controls and power. Confirmatory seeds, fresh: "
            f"{fresh or '—'}.{changed} {run}", ""]


def _settings_text(experiment: str, plan: dict) -> str:
    """The plan's confirmatory settings of ``experiment`` in words: 'steps 300, warmup_steps 150'."""
    return ", ".join(f"{k} {v}" for k, v in plan_settings(experiment, plan).items())


def _span(seeds) -> str:
    seeds = list(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds)) or "—"


APPENDIX_FILE = "PLAN_AND_HISTORY.md"
DETAIL_FILE = "CLAIMS.md"        # the claims one by one, beside REPORT.md


def power_section(plan: dict) -> list[str]:
    """The plan's a-priori power table: one row per primary."""
    rows = []
    for e in plan["primaries"]:
        pw = e.get("power") or {}
        rows.append([e["claim"], f"{e['measure']} ({e.get('window', '')})", _num(e["depths"][0]),
                     f"{e['direction']} {_num(e['margin'])}", _num(pw.get("sd_paired")),
                     _num(pw.get("test_set_floor_sd")),
                     f"{_num(pw.get('expected_effect'))} ({str(pw.get('expected_from', '—')).split(' (')[0]})",
                     _num(pw.get("seeds_needed")) if pw.get("seeds_needed") else "never",
                     _num(pw.get("seeds_allowed")), _num(pw.get("power_at_allowed"), 2),
                     f"untestable: {e['untestable']}" if e.get("untestable")
                     else e.get("role", "primary")])
    budget = plan.get("budget") or {}
    return (["## The plan's power analysis", "",
             "From the exploratory seeds' spread (`experiments/plan_power.py`), before the "
             "confirmatory run: sd of the paired differences, the test set's own sd (a floor "
             "that does not average out over seeds), the expected effect (He et al.'s where they "
             "give one in the measure's units, else the exploratory one), the seeds needed for "
             "80% power one-sided at 5% to resolve its distance from the threshold, and the seeds "
             f"the budget allows ({_num(budget.get('seconds', 0) / 3600)} h on "
             f"{budget.get('cores', '?')} cores; planned {_num(budget.get('planned_seconds'))} s). "
             "A primary the budget cannot power is declared untestable here, in advance.", ""]
            + _table(["claim", "measure", "depth", "test", "sd", "test-set sd", "expected",
                      "seeds needed", "seeds", "power", "role"], rows) + [""]
            + [f"Settings of the confirmatory run beyond the quick preset, {name}: "
               f"{_settings_text(name, plan)}. Why: {chosen.get('reason', '—')}"
               for name, chosen in (plan.get("settings") or {}).items()] + [""])


def reread(rows: pd.DataFrame) -> dict:
    """{claim: answer} of these rows by today's claim rule, a row that an after-the-fact power
    gate made not testable ("underpowered") voting with its own numbers."""
    rows = rows.copy()
    gated = rows["note"].astype(str).str.startswith("underpowered") if "note" in rows else \
        pd.Series(False, index=rows.index)
    for i in rows.index[gated]:
        r = rows.loc[i]
        rows.loc[i, "verdict"] = verdict(r["effect"], r["ci_low"], r["ci_high"], r["p_value"],
                                         direction=r["direction"], margin=float(r["margin"]))
        rows.loc[i, "note"] = ""
    return answers(rows) if gated.any() else {}


def history_section(history: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """Each earlier published answer per claim, the design commits between publications, and
    the latest exploratory rows re-read by today's rule."""
    if history.empty:
        return []
    lines = ["## History: the answers published before", "",
             "Every answer the committed report gave (from git: `results/paper/history.csv`, "
             "written by `python experiments/report.py --history`). The answers before the plan "
             "came from the exploratory seeds, and between them the design changed after the "
             "data had been seen; since the plan, a claim is answered only from a run made under "
             "it, on fresh seeds (else it reads *not answered*):", ""]
    answers = history[history["kind"] == "answer"].set_index(["claim", "commit"])["text"]
    for claim, seq in answer_changes(history):
        lines.append(f"- {claim}: " + " → ".join(
            f"{a} ({first}{'…' + last if last != first else ''}, {date})"
            for a, first, date, last in seq))
        if len(seq) > 1:                 # an answer that turned: what each one rested on
            lines += [f"  - {a} at {first}: {_clip(answers.get((claim, first), ''), 300)}"
                      for a, first, _, _ in seq]
    changes = history[(history["kind"] == "change")
                      & history["published"].isin(_turning_points(history))]
    if not changes.empty:
        lines += ["", "What changed before a publication whose answers changed (the commits "
                  "that changed the claim rule, the controls, an experiment's tests or presets, "
                  "or the plan; their messages):", ""]
        for r in changes.itertuples():
            text = _clip(r.text, 480)
            lines.append(f"- before {r.published}: {r.commit} ({r.date}) {text}")
    again = reread(rows)
    if again:
        lines += ["", "The exploratory rows in this folder re-read by today's claim rule, where a "
                  "row the old power gate dropped after the data votes with its own numbers "
                  "(unadjusted p): " + ", ".join(f"{c} {a}" for c, a in again.items()) + "."]
    return lines + [""]


def _clip(text, n) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _turning_points(history: pd.DataFrame) -> set:
    """The publications at which some claim's answer changed."""
    answers = history[history["kind"] == "answer"]
    out, before = set(), {}
    for published, part in answers.groupby("published", sort=False):
        now = dict(zip(part["claim"], part["answer"]))
        if before and now != before:
            out.add(published)
        before = now
    return out


def plan_lines(plan: dict, claim: str) -> list[str]:
    """The plan's primaries of ``claim``, one line: what a confirmatory run will test."""
    entries = [e for e in plan["primaries"] if e["claim"] == claim]
    if not entries:
        return []
    parts = [f"{e['measure']} at {e['depths'][0]} ({e['direction']}, margin {_num(e['margin'])}"
             f"{'; controls ' + ', '.join(e['requires']) if e.get('requires') else ''})"
             + (" — untestable (power table)" if e.get("untestable") else "")
             + (f" — {e['role']}" if e.get("role", "primary") != "primary" else "")
             for e in entries]
    return [f"The plan's primaries: {'; '.join(parts)}.", ""]


def unit_rows(rows: pd.DataFrame, results) -> list[str]:
    """T2: every unit kind's row, a kind whose nets do not all fit marked untrained."""
    part = rows[(rows["claim"] == "T2") & rows.get("unit_kind", pd.Series(dtype=str)).notna()]
    if part.empty or "unit_kind" not in part:
        return []
    fits = _unit_fits(results)
    out = []
    for _, r in part.iterrows():
        trained = r.get("trained") if isinstance(r.get("trained"), str) else \
            fits.get((int(r["depth"]), r["unit_kind"]), "fit not recorded")
        mark = "" if trained.split(" of ")[0] == trained.split(" of ")[-1].split(" ")[0] \
            else " — **untrained**"
        opposite = " — ⚠ the opposite of Table 2" if r["verdict"] == NOT_SUPPORTED else ""
        out.append(f"- {r['unit_kind']} − original, {_num(r['depth'])} layers ({r['role']}): "
                   f"{_test(r, 100)} ({r['verdict']}); He et al. {_num(r['paper_effect'] * 100)}; "
                   f"{trained}{mark}{opposite}")
    return ["Every unit (test error, kind − original, points):", ""] + out + [""]


def _unit_fits(results) -> dict:
    """{(depth, unit kind): 'k of n nets fit'} from unit_ablation's per-net table, for rows
    written before claims.csv recorded it."""
    path = Path(results) / "unit_ablation" / "summary.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return {(int(d), k): f"{int(g['fits'].astype(bool).sum())} of {len(g)} nets fit"
            for (d, k), g in table.groupby(["depth", "unit_kind"])}


# --------------------------------------------------------------------------- the report
RULES = ("A test's verdict: *supported* when the one-sided 95% bound on the claimed side lies "
         "beyond the threshold (0, or the margin) and the Holm-adjusted p < 0.05; *not supported* "
         "when the other bound lies beyond it on the other side; *inconclusive* otherwise; *not "
         "testable here* when the plan declared it untestable in advance (its power analysis), "
         "when a positive control the test needs failed, or when the data are missing. Power is "
         "decided in the plan before the data, never after. A claim is *not answered* from runs "
         "made under another plan than the current one, or under none. Intervals are [lower, "
         "upper] one-sided 95% bounds (a 90% interval). Full rule: `analysis/claims.py`.")


def table1_section(results) -> list[str]:
    """He et al.'s Table 1 beside ours, and the known-groups check of every signal measure."""
    t1 = _optional(results, G.KNOWN_GROUPS_EXPERIMENT, "table1.csv")
    known = known_groups(results)
    if t1 is None and known is None:
        return []
    lines = ['<a id="table-1"></a>', "## Table 1 — shortcut variants (He et al. 2016) and the "
             "known-groups check", ""]
    if t1 is not None and len(t1):
        lines += ["Each shortcut on the original unit at 110 layers, trained in the quick "
                  "regime; *trains*: training error over the last quarter below 50%; *fits*: "
                  "eval-mode final training error at most 2% (seeds of n). He et al.: CIFAR-10 "
                  "test error (%), *fail* where their training did not converge.", ""]
        lines += _table(["shortcut", "He et al.", "trains", "fits", "test error (%)", "ours"],
                        [[r["shortcut"], r["he_et_al_test_error"], f"{int(r['trains'])} of {int(r['n'])}",
                          f"{int(r['fits'])} of {int(r['n'])}",
                          f"{_num(100 * r['test_error_mean'], 3)} ({_num(100 * r['test_error_min'], 3)}–"
                          f"{_num(100 * r['test_error_max'], 3)})", r["verdict"]]
                         for _, r in t1.iterrows()]) + [""]
    if known is not None and len(known):
        lines += ["The known-groups check (declared in `analysis/shortcut_variants.py` before the "
                  "data; rule in `analysis/known_groups.py`): at initialisation, at each series' "
                  "deepest depth, a measure must rank the identity shortcut ahead of constant "
                  "scaling 0.5 (both) and dropout 0.5, each a one-sided paired test that is "
                  "supported. A claim resting on a measure that fails reads *not testable here "
                  "(measure not validated)*.", ""]
        lines += _table(["measure", "better", "result"],
                        [[m, part["better"].iloc[0], G.summary(known, m)]
                         for m, part in known.groupby("measure", sort=False)]) + [""]
    folder = Path(results) / G.KNOWN_GROUPS_EXPERIMENT / "figures"
    shown = [f"[{stem}]({G.KNOWN_GROUPS_EXPERIMENT}/figures/{stem}.png)" for stem in
             ("known_groups_init", "table1_test_error", "table1_training_error")
             if (folder / f"{stem}.png").is_file()]
    if shown:
        lines += ["Figures: " + ", ".join(shown) + ".", ""]
    return lines


def render_report(results, out_dir, plan=PLAN) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The report's markdown, its claims table and its controls table, for ``results``, answered
    only from runs made under ``plan``."""
    report, _, table, checks = render(results, out_dir, plan)
    return report, table, checks


def render(results, out_dir, plan=PLAN) -> tuple[str, str, pd.DataFrame, pd.DataFrame]:
    """REPORT.md's markdown, its companion ``DETAIL_FILE`` (one section per claim), the claims
    table and the controls table."""
    rows, configs, controls = load_results(results)
    the_plan, sha = read_plan(plan), plan_hash(plan)
    extra = {"known": known_groups(results), "out_dir": out_dir,
             "interventions": _optional(results, "early_training", "interventions.csv")}
    table = summary_table(rows, configs, out_dir, sha, the_plan)
    checks = controls_table(controls)
    name = Path(plan).resolve()
    name = name.relative_to(ROOT) if name.is_relative_to(ROOT) else name
    lines = ["# The article's claims, tested", "", regime(configs), "",
             *plan_screen(the_plan, sha, str(name), configs),
             "Generated by `python experiments/report.py` from `*/controls.csv` and "
             "`*/claims.csv` — do not edit. The article (a Chinese blog post on He et al. 2016, "
             "*Identity Mappings in Deep Residual Networks*) makes claims C1–C7; T2 is He et "
             "al.'s Table 2. First the positive controls: He et al.'s own baselines, which the "
             "setting must reproduce before a claim that needs them is answered.", "",
             "## Positive controls", ""]
    lines += _table(["control", "experiment", "check", "He et al.", "numbers", "result"],
                    checks[CONTROL_COLUMNS].to_numpy().tolist()) + [""]
    lines += ["## Claims", "",
              "Every answer comes from the primary tests of the plan (`plans/plan.json`), frozen "
              "before the confirmatory data; effects are V1 − V2 (paired by seed) unless the measure says "
              "otherwise. How to read them: [rules](#rules); each claim's tests, secondary rows, "
              f"plan and caveats: [{DETAIL_FILE}]({DETAIL_FILE}).", ""]
    lines += _table(["claim", "the article says", "answer", "why", "He et al.", "figure"],
                    table[SUMMARY_COLUMNS].to_numpy().tolist()) + [""]
    lines += evidence_section(rows, **extra)
    lines += table1_section(results)
    lines += appendix_pointer(the_plan, read_history(results))
    lines += ['<a id="rules"></a>', "## Rules", "", RULES, "", "A claim's answer:", "",
              "```text", CLAIM_RULE, "```", "", "```text", C7_RULE, "```", "",
              "## Where the results came from", ""]
    lines += provenance(configs) + [""]
    detail = ["# The claims one by one", "",
              f"Companion of [REPORT.md](REPORT.md), written with it by `python "
              f"experiments/report.py`: each claim's primary tests, its secondary rows, the "
              f"plan's primaries for it and its caveats.", ""]
    for claim, (_, summary_row) in zip(CLAIMS, table.iterrows()):
        detail += claim_section(claim, rows, summary_row, configs, **extra) + plan_lines(the_plan, claim.id)
        if claim.id == "T2":
            detail += unit_rows(rows, results)
    return _text(lines), _text(detail), table, checks


def _text(lines) -> str:
    return "\n".join(lines).rstrip("\n") + "\n"


def known_line(claim: Claim, known) -> str:
    """The known-groups result of each signal measure ``claim`` rests on ("" if none)."""
    measures = [m.strip() for m in claim.known_group.split(",") if m.strip()]
    if not measures:
        return ""
    return "; ".join(f"{m} {G.summary(known, m)}" for m in measures) + "."


def evidence_section(rows: pd.DataFrame, known=None, interventions=None, out_dir=None) -> list[str]:
    """In the report itself: which signal measures each claim rests on passed the known-groups
    check, and what the interventions close -- the two checks of the claims' mechanism."""
    lines = [f"- {claim.id}'s measures on the [known-groups check](#table-1): {known_line(claim, known)}"
             for claim in CLAIMS
             if known_line(claim, known) and not rows[rows["claim"] == claim.id].empty]
    if interventions is not None:
        lines.append(f"- {interventions_sentence(interventions, out_dir)}")
    if not lines:
        return []
    return ["## Known cases and the intervention", ""] + lines + [""]


def appendix_pointer(plan: dict, history: pd.DataFrame) -> list[str]:
    """The report's last section: where the plan's power table and the history are, in brief
    (they are long; the report stays one screen per claim and under 20 KB)."""
    entries = plan["primaries"]
    untestable = sum(bool(e.get("untestable")) for e in entries)
    turned = [claim for claim, seq in answer_changes(history) if len(seq) > 1] if not history.empty else []
    return ["## The plan's power and the history", "",
            f"[{APPENDIX_FILE}]({APPENDIX_FILE}) holds the plan's a-priori power table ("
            f"{len(entries)} entries, {untestable} declared untestable in advance, planned "
            f"{_num((plan.get('budget') or {}).get('planned_seconds'))} s of 2-core CPU) and every "
            "answer published before with the design commits between them"
            + (f"; answers that turned: {', '.join(turned)}" if turned else "") + ".", ""]


def render_appendix(results, plan=PLAN) -> str:
    """The report's companion: the plan's power table and the history of published answers."""
    rows, _, _ = load_results(results)
    lines = ["# The plan's power and the history of the answers", "",
             f"Companion of [REPORT.md](REPORT.md), written with it by `python experiments/report.py`.", ""]
    lines += power_section(read_plan(plan)) + history_section(read_history(results), rows)
    return "\n".join(lines).rstrip("\n") + "\n"


def build_report(results, out, plan=PLAN) -> Path:
    """Write the report (and ``claims_summary.csv``, ``controls_summary.csv`` and its companions
    ``DETAIL_FILE`` and ``APPENDIX_FILE`` beside it) atomically; returns ``out``."""
    out = Path(out)
    text, detail, table, checks = render(results, out.parent, plan)      # checks the results folder first
    if not out.parent.is_dir():
        raise ValueError(f"no folder {out.parent} to write {out.name} into")
    write_table(out.parent / SUMMARY_FILE, table)
    write_table(out.parent / CONTROLS_SUMMARY_FILE, checks)
    atomic_write(out.parent / DETAIL_FILE, detail)
    atomic_write(out.parent / APPENDIX_FILE, render_appendix(results, plan))
    return atomic_write(out, text)


def parse_table(markdown: str, first_header: str) -> pd.DataFrame:
    """The report's table whose header starts with ``first_header`` back as a DataFrame."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    cells = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    header, body = cells[0], cells[2:]
    return pd.DataFrame(body, columns=header)


def parse_summary(markdown: str) -> pd.DataFrame:
    """The report's claims table back as a DataFrame (what tests compare with the claims)."""
    return parse_table(markdown, "claim").rename(columns={"the article says": "article",
                                                          "He et al.": "he_et_al"})


def parse_controls(markdown: str) -> pd.DataFrame:
    """The report's controls table back as a DataFrame."""
    return parse_table(markdown, "control").rename(columns={"He et al.": "he_et_al"})
