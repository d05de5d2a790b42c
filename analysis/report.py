"""REPORT.md: the article's claims answered in one screen, each tied to its evidence.

Reads ``<results>/<experiment>/claims.csv``, ``controls.csv``, ``config.json`` and ``figures/``
and writes:

* the regime in one line (data, image size, schedule, updates, widths, seeds, machine);
* the positive controls (He et al.'s baselines in that regime), each with its numbers and
  pass/fail -- also written as ``controls_summary.csv``;
* one table -- claim, the article's words (short), the answer, one sentence of why with the key
  number and its interval, whether He et al. made the same comparison and whether this answer
  agrees (a contradiction is flagged), the figure that shows it -- also written as
  ``claims_summary.csv``;
* one short section per claim: its primary test(s), a sentence on its secondary measures, the
  caveats that apply to it;
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
                     claim_verdict, derive_c7, read_claims)
from .controls import CONTROLS_FILE, read_controls

SUMMARY_FILE = "claims_summary.csv"
CONTROLS_SUMMARY_FILE = "controls_summary.csv"
SUMMARY_COLUMNS = ["claim", "article", "answer", "why", "he_et_al", "figure"]
CONTROL_COLUMNS = ["control", "experiment", "check", "he_et_al", "numbers", "result"]


@dataclass(frozen=True)
class Claim:
    """One claim: the article's words, in English and Chinese, and where its evidence is."""
    id: str
    article: str            # short, for the table
    sentence: str           # the article's sentence, translated
    original: str           # verbatim
    figure: tuple           # (experiment, figure stem) that shows the answer
    caveat: str             # what limits the answer in this suite's setting
    measure: str = ""       # the primary measure, short, for the table
    scale: float = 1.0      # shown as effect x scale (100: errors in points)
    paper: str = ""         # what He et al. compared ("" = no such comparison in the paper)
    paper_measured: bool = True   # False: He et al. derive it, they do not measure it
    windows: tuple = ()     # a label per primary measure, in order, where there are several
    known_group: str = ""   # the signal measures its primaries rest on (known-groups check), ", "
    interventions: bool = False   # the section shows early_training's interventions
    paper_row: str = ""     # claims rows (``paper_row``) that test He et al.'s own statement


CLAIMS = (
    Claim("C1", "V1's f is ReLU, V2's f is the identity",
          "From the formulas one sees that for V1, f is the ReLU function, while for V2 it is "
          "a direct identity mapping.",
          "结合计算公式,可以看出对于V1来说f为ReLU函数,而V2为直接的identity mapping(恒等映射)。",
          ("signal_propagation", "c1_formula_check"),
          "True by construction of the units: it checks the instrument, not an outcome.",
          paper="eqs. 1-2 (by construction)"),
    Claim("C2", "in V1 the ReLU after the addition cuts the shortcut off",
          "Because of the nature of ReLU, when the signal is negative the shortcut has no effect.",
          "因为ReLU的特性所致,信号为负时,shortcut不起作用",
          ("early_training", "c2_cut_over_training"),
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
          ("early_training", "c3_training_error"),
          "The window lies wholly at the main lr, after the one warm-up both nets of a pair share; "
          "the run covers the first iterations only.",
          "training error at the main lr, V1 − V2 (points)", 100,
          paper="Fig. 1: V1-1001 trains slowly at first, V2-1001 does not", interventions=True),
    Claim("C4", "with identity mappings the signal travels freely, early and late",
          "Using an identity mapping lets the signal propagate smoothly through every layer, "
          "whether early or late in training.",
          "而采用identity mapping使得无论训练初期还是末期,信号都能顺利在各层传输",
          ("early_training", "c4_transmission"),
          "'Late' is the end of the early-training run, after its main-lr phase, not the end of a "
          "full training (full_training's probe records no unit norms, and it stops at 164 "
          "layers). Each measure answers only if it passed the known-groups check.",
          "V1 − V2 (paired by seed) on stage_rho, the identity path and the gradient's "
          "end-to-end ratio",
          paper="eqs. 4-5: derived, not measured", paper_measured=False,
          windows=("stage_rho at init", "stage_rho late", "path at init", "path late",
                   "gradient ratio at init", "gradient ratio late"),
          known_group="stage_rho, shortcut_path, grad_ratio"),
    Claim("C5", "below about 164 layers the difference is small",
          "Of course, this phenomenon is not serious when the network has few layers (the "
          "experiments used fewer than 164 layers).",
          "当然这种现象在层数不高时并不严重(实验使用低于164层)",
          ("full_training", "c5_gap_vs_depth"),
          "Basic-unit nets at 56 and 110 layers; 20 layers (both versions at the floor) and the "
          "164-layer bottleneck net are secondary rows.",
          "training error at the main lr, V1 − V2 (points; V1 not worse by > 5)", 100,
          paper="Table 3: V1 and V2 both train at 110 with one recipe (6.61 vs 6.37%)",
          windows=("early", "late")),
    Claim("C6", "V2 overfits less: every weight layer's input is normalized",
          "In V1 the input is normalized by BN, but after the shortcut is added, the signal "
          "passed on to the next weight layer is not normalized; in V2 the signal entering every "
          "layer is normalized, which helps reduce overfitting.",
          "在V1中虽然对输入进行了BN正则化,但是加上shortcut后,传到下个层的weight层的信号未正则化。"
          "而V2中对于传入每个层的信号都正则化可以帮助减少过拟合现象。",
          ("full_training", "c6_final_metrics"),
          "A gap is tested only where both versions fit their training set and the seeds and the "
          "test set can detect He et al.'s effect.",
          "test − train error gap, V1 − V2 (points)", 100,
          paper="Fig. 6 (164 layers): V2 has the higher training loss and the lower test error"),
    Claim("C7", "so: V1 for shallow nets, V2 for deep ones",
          "In summary, networks with few layers can keep using the V1 block; networks with many "
          "layers should use the V2 block.",
          "总结来说,对于层数较少的网络可以继续使用V1 block,对于层数较多使用V2 block。",
          ("", ""), "Derived from C3 and C5 by the rule below; inherits their caveats."),
    Claim("T2", "(He et al. Table 2) full pre-activation beats the original unit",
          "He et al. 2016, Table 2: of five unit arrangements, full pre-activation has the lowest "
          "test error.", "", ("unit_ablation", "t2_test_error"),
          "Tested only where both units fit their training set and the seeds and the test set can "
          "detect He et al.'s 0.24 points.",
          "test error, full pre-activation − original (points)", 100,
          paper="Table 2: 6.37 vs 6.61% at 110 layers"),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)


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
    where it made them: an underpowered test still shows what it measured)."""
    value = lambda x: _num(float(x) * scale)
    numbers = (f"{value(row['effect'])} [{value(row['ci_low'])}, {value(row['ci_high'])}]"
               if row["effect"] == row["effect"] else "")
    if row["verdict"] == NOT_TESTABLE:
        reason = str(row.get("note", ""))
        if "underpowered" in reason and row.get("detectable") == row.get("detectable"):
            reason = (f"underpowered: detectable {value(row['detectable'])} > "
                      f"{value(abs(row['paper_effect'] - _threshold(row)))} needed, from He et "
                      f"al.'s {value(row['paper_effect'])} to the threshold {value(_threshold(row))}")
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
def answers(rows: pd.DataFrame) -> dict:
    """{claim: answer}: primary rows by the claim rule (C1: its mechanism rows), C7 by rule."""
    out = {}
    for claim in CLAIM_IDS:
        if claim == "C7":
            continue
        part = rows[(rows["claim"] == claim) & (rows["role"] == ("mechanism" if claim == "C1"
                                                                 else "primary"))]
        out[claim] = claim_verdict(part) if len(part) else "no data yet"
    out["C7"] = derive_c7(out)
    return out


def why(claim: Claim, rows: pd.DataFrame, answer_of: dict) -> str:
    """One sentence: the key primary test(s) with number and interval."""
    if claim.id == "C7":
        return f"by rule: C3 {answer_of.get('C3')}, C5 {answer_of.get('C5')}"
    role = "mechanism" if claim.id == "C1" else "primary"
    part = rows[(rows["claim"] == claim.id) & (rows["role"] == role)]
    if part.empty:
        return "no data yet: run the experiments (make reproduce)"
    if claim.id == "C1":
        worst = part.loc[part["ci_high"].astype(float).idxmax()]
        return (f"largest per-net formula error {_num(worst['ci_high'])} (95% upper bound), "
                f"tolerance {_num(worst['margin'])}, over {len(part)} depth × version checks")
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
        word = {SUPPORTED: "agree", NOT_SUPPORTED: "⚠ disagree"}.get(r["verdict"], "cannot say")
        return (f"{claim.paper}; the data {word}: {r['measure']}, {_test(r)} ({r['verdict']})")
    word = {SUPPORTED: "agrees", NOT_SUPPORTED: "⚠ disagrees (see why)"}.get(answer, "cannot say")
    return f"{claim.paper}; {word}"


def summary_table(rows, configs, out_dir) -> pd.DataFrame:
    answer_of = answers(rows)
    table = []
    for claim in CLAIMS:
        experiment, stem = claim.figure
        png = Path(out_dir) / experiment / "figures" / f"{stem}.png" if stem else None
        figure = f"[{stem}]({experiment}/figures/{stem}.png)" if png is not None and png.is_file() else "—"
        table.append({"claim": claim.id, "article": claim.article, "answer": answer_of[claim.id],
                      "why": why(claim, rows, answer_of),
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
        parts.append(f"{r['arm']} ({r['text']}) closes {_num(r['effect'], 2)} {bounds}, n "
                     f"{_num(r['n'])}, {r['method']}; its loss at init {_num(r['loss_init_arm'], 3)}")
    depth = _num(shares["depth"].iloc[0]) if len(shares) else "?"
    figure = Path(out_dir or ".") / "early_training" / "figures" / "c3_interventions.png"
    link = (" ([curves](early_training/figures/c3_interventions.png))" if figure.is_file() else "")
    v1, v2 = (_num(shares[c].iloc[0], 3) if len(shares) else "—" for c in ("loss_init_v1", "loss_init_v2"))
    return (f"Interventions at {depth} layers, paired by seed with V1 and V2 (share of V1's slow "
            f"start, err_c3 V1 − V2, that each closes; 1 = as V2, 0 = as V1; loss at init V1 "
            f"{v1}, V2 {v2}){link}: " + "; ".join(parts) + ".")


def claim_section(claim: Claim, rows: pd.DataFrame, summary_row, configs, **extra) -> list[str]:
    lines = [f"## {claim.id} — {claim.article}", "", f"> “{claim.sentence}”"
             + (f"  \n> *{claim.original}*" if claim.original else ""), "",
             f"**Answer: {summary_row['answer']}.** {summary_row['why']}.", ""]
    part = rows[rows["claim"] == claim.id]
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
    for measure in filter(None, (m.strip() for m in claim.known_group.split(","))):
        lines.append(f"Its measure on the known-groups check ([Table 1](#table-1)): "
                     f"{measure} {G.summary(extra.get('known'), measure)}.")
    if claim.interventions and extra.get("interventions") is not None:
        lines.append(interventions_sentence(extra["interventions"], extra.get("out_dir")))
    folders = sorted(part["folder"].unique())
    links = ", ".join(f"[{f}/claims.csv]({f}/claims.csv)" for f in folders)
    lines += ["", f"Caveats: {claim.caveat} Rows: {links or '—'}.", ""]
    return lines


# --------------------------------------------------------------------------- provenance
# The report reads the results and makes none of them: a commit that differs from this
# checkout only in the report's own code made the same results (and the committed REPORT.md is
# what this checkout writes: tests/test_report.py).
REPORT_CODE = ("analysis/report.py", "experiments/report.py")


def _code_differs(commit) -> str | None:
    """None if the code that makes results (``CODE_PATHS`` but the report's own) is the same at
    ``commit`` as in this checkout; else a short reason."""
    if not commit:
        return "made outside git"
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "diff", "--quiet", commit, "HEAD", "--", *CODE_PATHS,
                              *(f":(exclude){path}" for path in REPORT_CODE)], cwd=root,
                             capture_output=True, timeout=20,
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
        stale = _code_differs(commit)
        dirty = " (uncommitted changes)" if config.get("code_dirty") else ""
        rows.append([name, str(s.get("preset", "?")), str(s.get("dataset", "?")),
                     ", ".join(f"{d}: w{w}" for d, w in (s.get("widths") or {}).items()),
                     str(len(s.get("seeds", []))), str(s.get("steps", "—")),
                     f"{(commit or '?')[:10]}{dirty}" + (f" ⚠ {stale}" if stale else ""),
                     _num(round(config["wall_seconds"])) if config.get("wall_seconds") else "—",
                     config.get("machine", "?")])
    return _table(["experiment", "preset", "data", "depth: width", "seeds", "iterations",
                   "commit", "wall s", "machine"], rows)


# --------------------------------------------------------------------------- the report
RULES = ("A test's verdict: *supported* when the one-sided 95% bound on the claimed side lies "
         "beyond the threshold (0, or the margin) and the Holm-adjusted p < 0.05; *not supported* "
         "when the other bound lies beyond it on the other side; *inconclusive* otherwise; *not "
         "testable here* when a positive control the test needs failed, when these seeds and "
         "this test set cannot detect He et al.'s effect (power check), or when the data are "
         "missing. Intervals are [lower, upper] one-sided 95% bounds (a 90% interval). Full "
         "rule: `analysis/claims.py`.")


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


def render_report(results, out_dir) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The report's markdown, its claims table and its controls table, for ``results``."""
    rows, configs, controls = load_results(results)
    extra = {"known": known_groups(results), "out_dir": out_dir,
             "interventions": _optional(results, "early_training", "interventions.csv")}
    table = summary_table(rows, configs, out_dir)
    checks = controls_table(controls)
    lines = ["# The article's claims, tested", "", regime(configs), "",
             "Generated by `python experiments/report.py` from `*/controls.csv` and "
             "`*/claims.csv` — do not edit. The article (a Chinese blog post on He et al. 2016, "
             "*Identity Mappings in Deep Residual Networks*) makes claims C1–C7; T2 is He et "
             "al.'s Table 2. First the positive controls: He et al.'s own baselines, which the "
             "setting must reproduce before a claim that needs them is answered.", "",
             "## Positive controls", ""]
    lines += _table(["control", "experiment", "check", "He et al.", "numbers", "result"],
                    checks[CONTROL_COLUMNS].to_numpy().tolist()) + [""]
    lines += ["## Claims", "",
              "Every answer comes from the primary tests declared in `analysis/<experiment>.py` "
              "before the data; effects are V1 − V2 (paired by seed) unless the measure says "
              "otherwise. How to read them: [rules](#rules).", ""]
    lines += _table(["claim", "the article says", "answer", "why", "He et al.", "figure"],
                    table[SUMMARY_COLUMNS].to_numpy().tolist()) + [""]
    for claim, (_, summary_row) in zip(CLAIMS, table.iterrows()):
        lines += claim_section(claim, rows, summary_row, configs, **extra)
    lines += table1_section(results)
    lines += ['<a id="rules"></a>', "## Rules", "", RULES, "", "A claim's answer:", "",
              "```text", CLAIM_RULE, "```", "", "```text", C7_RULE, "```", "",
              "## Where the results came from", ""]
    lines += provenance(configs) + [""]
    return "\n".join(lines).rstrip("\n") + "\n", table, checks


def build_report(results, out) -> Path:
    """Write the report (and ``claims_summary.csv``, ``controls_summary.csv`` beside it)
    atomically; returns ``out``."""
    out = Path(out)
    text, table, checks = render_report(results, out.parent)      # checks the results folder first
    if not out.parent.is_dir():
        raise ValueError(f"no folder {out.parent} to write {out.name} into")
    write_table(out.parent / SUMMARY_FILE, table)
    write_table(out.parent / CONTROLS_SUMMARY_FILE, checks)
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
