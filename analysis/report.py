"""REPORT.md: every claim of the article next to the evidence the experiments committed.

Reads ``<results>/*/claims.csv`` (one folder per experiment), the PNG figures in each
folder's ``figures/`` and each folder's ``config.json``, and writes one section per claim
C1–C7: the article's sentence (translated), what measures it, a table of the tests, the
verdicts, the figures and the caveats. C7 is derived by rule (:func:`analysis.claims.derive_c7`).
Nothing here decides a verdict: they come from the CSVs, which come from the verdict rule.

The output depends only on the input files: no timestamps, folders and rows in a stable
order, numbers formatted one way. Rerunning on the same files gives the same bytes.

Figures: a figure whose file name starts with claim ids (``c3_loss.png``, ``c3_c5_gap.png``,
case-insensitive) appears only in those claims' sections; any other figure of an experiment
appears in every claim section that experiment has rows for.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_lab.runs import atomic_write

from .claims import (C7_RULE, C7_SOURCES, CLAIMS_COLUMNS, CLAIMS_FILE, DETAIL_COLUMNS,
                     VERDICT_RULE, VERDICTS, derive_c7, read_claims)


@dataclass(frozen=True)
class Claim:
    """One claim: the article's sentence in English and Chinese, its restatement, its scripts."""
    id: str
    title: str
    article: str
    original: str
    restated: str
    measured_by: str
    scripts: tuple


# The article (a Chinese blog post summarising He et al. 2016) in the order it argues. The
# originals are verbatim (after Unicode NFKC normalisation, which maps the source's radical
# look-alikes such as ⽹ to 网); translations are literal; restatements follow DESIGN.md. 正则化 ("regularize") in the
# article's C6 sentence refers to BN, i.e. normalization, and is translated so.
CLAIMS = (
    Claim("C1", "V1's f is ReLU, V2's f is the identity",
          "From the formulas one sees that for V1, f is the ReLU function, while for V2 it is "
          "a direct identity mapping.",
          "结合计算公式,可以看出对于V1来说f为ReLU函数,而V2为直接的identity mapping(恒等映射)。",
          "V1 applies f = ReLU after the addition; V2's f is the identity, so "
          "x_{l+1} = x_l + F(x_l).",
          "the unit formulas hold numerically at the taps",
          ("signal_propagation",)),
    Claim("C2", "In V1 the ReLU after the addition cuts the shortcut off",
          "Because of the nature of ReLU, when the signal is negative the shortcut has no "
          "effect.",
          "因为ReLU的特性所致,信号为负时,shortcut不起作用",
          "In V1, where the summed signal is negative, the ReLU after the addition cuts the "
          "shortcut off.",
          "the share of shortcut energy / gradient that the after-addition ReLU zeroes, per "
          "unit, over depth and training",
          ("relu_blocking",)),
    Claim("C3", "Very deep V1 nets train very slowly at first",
          "This brings two benefits: 1. optimizing deep networks (the paper's experiments use "
          "a 1001-layer ResNet) is easier: because of the nature of ReLU, when the signal is "
          "negative the shortcut has no effect, so training at the beginning is very slow.",
          "这样做可以带来两个好处:1.对于深层的网络(论文实验中使用1001层的ResNet)优化来说更简单,"
          "因为ReLU的特性所致,信号为负时,shortcut不起作用,所以初期训练会十分慢。",
          "Hence very deep V1 nets (1001 layers) train very slowly at first; V2 does not.",
          "training loss over the first iterations, V1 vs V2 at 1001 layers (paper Fig. 1)",
          ("early_training",)),
    Claim("C4", "With identity mappings the signal travels freely, early and late in training",
          "Using an identity mapping lets the signal propagate smoothly through every layer, "
          "whether early or late in training, which also makes the network easier to train.",
          "而采用identity mapping使得无论训练初期还是末期,信号都能顺利在各层传输,也使得网络更容易训练。",
          "With identity mappings the signal travels between any two units, early and late "
          "in training.",
          "forward and backward statistics per unit, at initialization and at checkpoints",
          ("signal_propagation",)),
    Claim("C5", "Below about 164 layers the difference is small",
          "Of course, this phenomenon is not serious when the network has few layers (the "
          "experiments used fewer than 164 layers).",
          "当然这种现象在层数不高时并不严重(实验使用低于164层)",
          "Below about 164 layers the difference is small.",
          "the C3/C4 gaps as a function of depth (20 … 1001) and the depth from which V1's "
          "gap to V2 is significant",
          ("early_training",)),
    Claim("C6", "V2 overfits less, because every weight layer's input is normalized",
          "2. Less overfitting: in V1 the input is normalized by BN, but after the shortcut is "
          "added, the signal passed on to the next weight layer is not normalized; in V2 the "
          "signal entering every layer is normalized, which helps reduce overfitting.",
          "2.减少过拟合现象,在V1中虽然对输入进行了BN正则化,但是加上shortcut后,传到下个层的weight"
          "层的信号未正则化。而V2中对于传入每个层的信号都正则化可以帮助减少过拟合现象。",
          "V2 overfits less: in V1 the input to the next weight layer is not normalized after "
          "the addition; in V2 every weight layer's input is.",
          "statistics of every weight layer's input; train-loss vs test-error gap (paper "
          "Fig. 6)",
          ("overfitting",)),
    Claim("C7", "V1 for shallow nets, V2 for deep ones",
          "In summary, networks with few layers can keep using the V1 block; networks with "
          "many layers should use the V2 block.",
          "总结来说,对于层数较少的网络可以继续使用V1 block,对于层数较多使用V2 block。",
          "So: V1 for shallow nets, V2 for deep ones.",
          "the verdicts of C3–C6 across depth, combined by a fixed rule",
          ("early_training", "signal_propagation", "overfitting")),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)
_HIDDEN = set(CLAIMS_COLUMNS) | set(DETAIL_COLUMNS) | {"for_c7", "_folder", "_order"}
_FIGURE_CLAIMS = re.compile(r"^((?:c\d+[_-])+)", re.IGNORECASE)
CONFIG_KEYS = ("preset", "dataset", "width", "depths", "seeds", "device", "status")


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Experiment:
    """One results folder: its name, claims rows, figures and caveats."""
    name: str
    folder: Path
    figures: tuple
    caveats: str


def _find_key(config, key, depth=0):
    """First value of ``key`` in a JSON object, breadth-first (top level wins)."""
    if not isinstance(config, dict) or depth > 3:
        return None
    value = config.get(key)
    if isinstance(value, dict):  # e.g. the resolved preset's settings: use its name if it has one
        value = value.get("name")
    if value is not None:
        return value
    for value in config.values():
        found = _find_key(value, key, depth + 1)
        if found is not None:
            return found
    return None


def _caveats(folder: Path) -> str:
    path = folder / "config.json"
    if not path.is_file():
        return "no config.json: dataset, width and preset unknown"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"config.json unreadable ({type(exc).__name__})"
    parts = []
    for key in CONFIG_KEYS:
        value = _find_key(config, key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key} {value}")
    preset = _find_key(config, "preset")
    text = "; ".join(parts) if parts else "config.json names no preset, dataset or width"
    if preset is not None and str(preset) != "paper":
        text += (f" — the `{preset}` preset is not the paper's setting (CIFAR at the paper's "
                 "width); compare directions, not magnitudes")
    return text


def _figure_claims(stem: str):
    """Claim ids a figure's file name is restricted to, or None for "all of its experiment's"."""
    m = _FIGURE_CLAIMS.match(stem)
    if not m:
        return None
    return {part.upper() for part in re.split(r"[_-]", m.group(1)) if part}


def load_results(results) -> tuple[pd.DataFrame, dict]:
    """All claims rows (with ``_folder``) and the experiments, from ``results/*/claims.csv``."""
    results = Path(results)
    if not results.is_dir():
        raise ValueError(f"no results folder at {results}; run the experiments first "
                         "(each writes results/paper/<experiment>/claims.csv)")
    frames, experiments = [], {}
    folders = sorted({p.parent for p in results.glob(f"*/{CLAIMS_FILE}")} |
                     {p.parent.parent for p in results.glob("*/figures/*.png")})
    for folder in folders:
        figures = tuple(sorted(folder.glob("figures/*.png")))
        experiments[folder.name] = Experiment(folder.name, folder, figures, _caveats(folder))
        if (folder / CLAIMS_FILE).is_file():
            df = read_claims(folder / CLAIMS_FILE)
            df["_folder"] = folder.name
            df["_order"] = range(len(df))
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=CLAIMS_COLUMNS + ["_folder", "_order"]), experiments
    rows = pd.concat(frames, ignore_index=True, sort=False)
    rows["claim"] = [c.upper() if re.fullmatch(r"c\d+", c, re.IGNORECASE) else c
                     for c in rows["claim"].astype(str).str.strip()]
    rows["experiment"] = [e if isinstance(e, str) and e.strip() else f
                          for e, f in zip(rows["experiment"], rows["_folder"])]
    rows["depth"] = pd.to_numeric(rows["depth"], errors="coerce")
    rank = {c: i for i, c in enumerate(CLAIM_IDS)}
    rows["_rank"] = [rank.get(c, len(rank)) for c in rows["claim"]]
    rows = rows.sort_values(["_rank", "claim", "_folder", "measure", "depth", "_order"],
                            kind="mergesort", na_position="last").drop(columns="_rank")
    return rows.reset_index(drop=True), experiments


# --------------------------------------------------------------------------- formatting
def _num(x, digits=4) -> str:
    if x is None:
        return "—"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return _cell(x)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.{digits}g}"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _extra_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in _HIDDEN and df[c].notna().any()
            and (df[c].astype(str).str.strip() != "").any()]


def _rows_table(df: pd.DataFrame) -> list[str]:
    extras = _extra_columns(df)
    show_note = "note" in df.columns and (df["note"].astype(object).fillna("").astype(str) != "").any()
    header = (["experiment", "measure", "depth", *extras, "effect", "CI", "p", "n", "test",
               "verdict"] + (["note"] if show_note else []))
    body = []
    for _, r in df.iterrows():
        test = _cell(r.get("direction"))
        margin = r.get("margin")
        if test and margin is not None and not pd.isna(margin) and float(margin) > 0:
            test += f", margin {_num(margin, 3)}"
        line = [_cell(r["experiment"]), _cell(r["measure"]), _num(r["depth"]),
                *[_num(r[c]) if _is_number(r[c]) else _cell(r[c]) for c in extras],
                _num(r["effect"]), f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
                _num(r["p_value"], 2), _num(r["n"]), test, f"**{r['verdict']}**"]
        if show_note:
            line.append(_cell(r.get("note")))
        body.append(line)
    return _table(header, body)


def _verdict_summary(df: pd.DataFrame) -> str:
    """"depth 20: 2 not supported · depth 1001: 3 supported" (rows without a depth last)."""
    parts = []
    for depth, part in _by_depth(df):
        counts = part["verdict"].value_counts()
        words = ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts)
        where = "all depths" if depth is None else f"depth {_num(depth)}"
        parts.append(f"{where}: {words}")
    return " · ".join(parts)


def _by_depth(df):
    depths = sorted(d for d in df["depth"].dropna().unique())
    out = [(d, df[df["depth"] == d]) for d in depths]
    if df["depth"].isna().any():
        out.append((None, df[df["depth"].isna()]))
    return out


def _figure_lines(claim_id, names, experiments, out_dir) -> list[str]:
    lines = []
    for name in names:
        exp = experiments.get(name)
        if exp is None:
            continue
        for fig in exp.figures:
            only = _figure_claims(fig.stem)
            if only is not None and claim_id not in only:
                continue
            link = Path(os.path.relpath(fig, out_dir)).as_posix()
            lines.append(f"![{name}: {fig.stem}]({link})")
    return lines


def _caveat_lines(names, experiments) -> list[str]:
    return [f"- `{n}`: {experiments[n].caveats}" for n in names if n in experiments]


def _no_data(claim: Claim) -> str:
    runs = ", ".join(f"experiments/{s}.py" for s in claim.scripts)
    return f"*No data yet — run {runs}.*"


# --------------------------------------------------------------------------- sections
def _claim_header(claim: Claim) -> list[str]:
    return [f"## {claim.id} — {claim.title}", "",
            f"> **Article:** “{claim.article}”  ", f"> *Original:* {claim.original}", "",
            f"**Claim under test:** {claim.restated}  ", f"**Measured by:** {claim.measured_by}.",
            ""]


def _evidence(claim_id, rows, experiments, out_dir) -> list[str]:
    names = sorted(rows["_folder"].unique())
    lines = ["**Experiments:** " + ", ".join(f"`{n}`" for n in names), "",
             f"**Verdicts:** {_verdict_summary(rows)}", ""]
    lines += _rows_table(rows) + [""]
    figures = _figure_lines(claim_id, names, experiments, out_dir)
    if figures:
        lines += ["**Figures:**", ""] + [f + "\n" for f in figures]
    lines += ["**Caveats:**", ""] + _caveat_lines(names, experiments) + [""]
    return lines


def _c7_section(claim, rows, all_rows, experiments, out_dir) -> list[str]:
    lines = _claim_header(claim)
    result = derive_c7(all_rows)
    sources = all_rows[all_rows["claim"].isin(C7_SOURCES) & all_rows["depth"].notna()]
    lines += ["**Rule** (analysis.claims.derive_c7):", "", "```text", C7_RULE, "```", ""]
    if sources.empty:
        lines += [_no_data(claim) + " C7 is derived from the depth-wise rows of C3–C6.", ""]
    else:
        lines += [f"**Derived verdict: {result.verdict}** — {result.reason}.", ""]
        table = [[_num(r["depth"]), r["group"], *[_num(r[v]) for v in VERDICTS],
                  _num(r["rows"])] for _, r in result.by_depth.iterrows()]
        lines += _table(["depth", "group", *VERDICTS, "rows"], table) + [""]
        lines += ["**Caveats:**", ""]
        lines += _caveat_lines(sorted(sources["_folder"].unique()), experiments) + [""]
    if not rows.empty:
        lines += ["Rows that experiments wrote for C7 directly:", ""] + _rows_table(rows) + [""]
    return lines


def render_report(results, out_dir) -> str:
    """The report's markdown for ``results`` (figure links relative to ``out_dir``)."""
    all_rows, experiments = load_results(results)
    out_dir = Path(out_dir)
    lines = ["# Claims report: post-activation (V1) vs pre-activation (V2) ResNets", "",
             "Generated by `python experiments/report.py` from `*/claims.csv`, `*/config.json` "
             "and `*/figures/*.png` in the results folder — do not edit by hand, rerun it.", "",
             "The article under test is a Chinese blog post summarising He et al. 2016, "
             "*Identity Mappings in Deep Residual Networks* (arXiv 1603.05027). Each claim below "
             "quotes it in translation, then shows the tests that measured it: effect "
             "(V1 − V2 unless the measure says otherwise), confidence interval, p-value, number "
             "of samples n (seeds), and the verdict of the rule at the end of this report.", "",
             "## Summary", ""]
    summary = []
    for claim in CLAIMS:
        rows = all_rows[all_rows["claim"] == claim.id]
        if claim.id == "C7":
            rows = all_rows[all_rows["claim"].isin(C7_SOURCES) & all_rows["depth"].notna()]
            verdicts = (f"derived: **{derive_c7(all_rows).verdict}**" if not rows.empty
                        else "no data yet")
        else:
            verdicts = _verdict_summary(rows) if not rows.empty else "no data yet"
        exps = ", ".join(f"`{n}`" for n in sorted(rows["_folder"].unique())) or "—"
        summary.append([f"[{claim.id}](#{claim.id.lower()})", claim.title, verdicts, exps])
    lines += _table(["claim", "statement", "verdicts", "experiments"], summary) + [""]

    for claim in CLAIMS:
        rows = all_rows[all_rows["claim"] == claim.id]
        lines += [f'<a id="{claim.id.lower()}"></a>', ""]
        if claim.id == "C7":
            lines += _c7_section(claim, rows, all_rows, experiments, out_dir)
            continue
        lines += _claim_header(claim)
        lines += (_evidence(claim.id, rows, experiments, out_dir) if not rows.empty
                  else [_no_data(claim), ""])

    other = all_rows[~all_rows["claim"].isin(CLAIM_IDS)]
    if not other.empty:
        lines += ["## Other measurements", "",
                  "Rows whose claim id is not one of the article's C1–C7 (e.g. the unit "
                  "ablation of He et al. Table 2).", ""]
        for claim_id, rows in other.groupby("claim", sort=True):
            lines += [f"### {claim_id}", ""] + _evidence(claim_id, rows, experiments, out_dir)
    without = [n for n in sorted(experiments) if n not in set(all_rows["_folder"])]
    if without:
        lines += ["## Experiments without claims", ""]
        for name in without:
            lines += [f"### `{name}`", ""]
            lines += [f + "\n" for f in _figure_lines("", [name], experiments, out_dir)]
            lines += _caveat_lines([name], experiments) + [""]
    lines += ["## How verdicts are decided", "",
              "Every verdict comes from one rule (analysis.claims.verdict), applied to the "
              "numbers in the tables above:", "", "```text", VERDICT_RULE, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def build_report(results, out) -> Path:
    """Write the report for ``results`` to ``out`` atomically; returns ``out``."""
    out = Path(out)
    text = render_report(results, out.parent)
    if not out.parent.is_dir():
        raise ValueError(f"no folder {out.parent} to write {out.name} into")
    return atomic_write(out, text)
