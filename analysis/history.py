"""The published answers' history, read from git: what each earlier report answered, and the
design changes between publications.

:func:`extract` reads, for every commit that published the report (changed ``results/paper/REPORT.md`` or
``claims_summary.csv``),
that commit's file (``git show <commit>:<path>``) -- each claim's answer and its why -- and the
commits between two publications that changed the code deciding answers (``DESIGN_PATHS``),
with their subjects: what changed and why. ``experiments/report.py --history`` writes both as
``results/paper/history.csv`` so the report builds without git (:func:`read`).
"""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pandas as pd

SUMMARY_PATH = "results/paper/claims_summary.csv"
REPORT_PATH = "results/paper/REPORT.md"
HISTORY_FILE = "history.csv"
# The code that decides an answer: the claim rule, the controls, each experiment's tests and
# presets, the plan.
DESIGN_PATHS = ("analysis/claims.py", "analysis/controls.py", "analysis/early_training.py",
                "analysis/full_training.py", "analysis/unit_ablation.py", "plans")
HISTORY_COLUMNS = ["kind", "published", "commit", "date", "claim", "answer", "text"]


def _git(root, *args) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    if out.returncode != 0:
        raise ValueError(f"git {' '.join(args[:2])}: {out.stderr.strip() or 'failed'}")
    return out.stdout


def _log(root, *args) -> list[tuple[str, str, str]]:
    """(commit, date, subject) oldest first."""
    text = _git(root, "log", "--reverse", "--full-history", "--no-merges", "--topo-order",
                "--format=%H%x09%ad%x09%s", "--date=short", *args)
    return [tuple(line.split("\t", 2)) for line in text.splitlines() if line]


def extract(root) -> pd.DataFrame:
    """Every published answer per claim (kind "answer": each commit that published the report
    with a claims_summary.csv) and the design commits between publications (kind "change",
    ``published``: the publication they preceded)."""
    rows, previous = [], None
    for commit, date, subject in _log(root, "--", SUMMARY_PATH, REPORT_PATH):
        try:            # a report published before the summary file existed has no answers
            table = pd.read_csv(io.StringIO(_git(root, "show", f"{commit}:{SUMMARY_PATH}")))
        except ValueError:
            continue
        for r in table.itertuples():
            rows.append({"kind": "answer", "published": commit[:10], "commit": commit[:10],
                         "date": date, "claim": r.claim, "answer": r.answer, "text": r.why})
        span = [f"{previous}..{commit}"] if previous else [commit, "-1"]
        for c, d, s in _log(root, *span, "--", *DESIGN_PATHS) if previous else []:
            rows.append({"kind": "change", "published": commit[:10], "commit": c[:10],
                         "date": d, "claim": "", "answer": "", "text": s})
        previous = commit
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def read(results) -> pd.DataFrame:
    """The committed history (an empty table where there is none)."""
    path = Path(results) / HISTORY_FILE
    if not path.is_file():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def answer_changes(history: pd.DataFrame) -> list[tuple[str, str, list]]:
    """[(claim, the answers in order with the publications that gave them, ...)]: per claim,
    consecutive equal answers merged: [(answer, first commit, first date, last commit)]."""
    out = []
    answers = history[history["kind"] == "answer"]
    for claim in dict.fromkeys(answers["claim"]):
        seq = []
        for r in answers[answers["claim"] == claim].itertuples():
            if seq and seq[-1][0] == r.answer:
                seq[-1] = (*seq[-1][:3], r.commit)
            else:
                seq.append((r.answer, r.commit, r.date, r.commit))
        out.append((claim, seq))
    return out
