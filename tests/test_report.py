"""REPORT.md from a fixture of claims.csv files: the one-screen table parsed back equals the
answers derived from the claims files, the size limit, byte-identical rebuilds, stale-commit
marks, bad paths; and the plot style it links to."""
import importlib.util
import json
import re
import unicodedata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import claims as C
from analysis import controls as K
from analysis import confirmatory as Q
from analysis import plan as P
from analysis.plan import PLAN, plan_hash, read_plan
from analysis.report import (CLAIMS, CONTROLS_SUMMARY_FILE, DETAIL_FILE, NOT_ANSWERED,
                             SUMMARY_FILE, _num, answers, build_report, parse_controls,
                             parse_summary, render, render_report)
from resnet_lab import plotting
from resnet_lab.runs.cli import main_guard

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed" / "000_64b20d10b326a134.txt"


def _load_script():
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "experiments/report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arms(effect, seed):
    rng = np.random.default_rng(seed)
    b = 0.4 + rng.normal(0, 0.02, 5)
    return b + effect + rng.normal(0, 0.005, 5), b


def _write_fixture(results: Path, c3_gap: float, commit="0" * 40, control_e=True, plan=PLAN):
    """early_training (C3 at 1001 primary, 164 secondary; controls W, A, E) and full_training
    (C5 primary at 56, 110; C6 not testable), from synthetic data: every verdict and every
    control is the library's."""
    early = [C.claim_row("C3", "primary", "early_training", "training error, V1 − V2", 1001,
                         C.paired_difference(*_arms(c3_gap, 1), margin=0.05), margin_reason="why"),
             C.claim_row("C3", "secondary", "early_training", "training error, V1 − V2", 164,
                         C.paired_difference(*_arms(c3_gap, 2), margin=0.05))]
    full = [C.claim_row("C5", "primary", "full_training", "training error, V1 − V2", d,
                        C.paired_difference(*_arms(0.0, d), direction="noninferior", margin=0.05))
            for d in (56, 110)]
    full.append(C.claim_row("C6", "primary", "full_training", "gap", 110,
                            C.not_testable(5, f"{C.PLAN_UNTESTABLE}: the test set's own noise "
                                              "(sd 0.0093) is too large to resolve 0.0024")))
    control = K.Control("E", "V2-1001 trains", "Fig. 1")
    controls = {"early_training": [K.control_row(control, "early_training", 1001, 2, control_e,
                                                 "V2-1001: 5 of 5 nets")],
                "full_training": [K.control_row(K.Control("B", "V1-110 fits", "He 2015"),
                                                "full_training", 110, 1, True, "V1-110: 5 of 5")]}
    for name, rows in (("early_training", early), ("full_training", full)):
        C.write_claims(results / name, rows)
        K.write_controls(results / name, controls[name])
        (results / name / "config.json").write_text(json.dumps(
            # made as the plan says: its confirmatory seeds and settings
            {"experiment": name, "preset": {"preset": "quick", "dataset": "digits", "widths": {"20": 16},
                                            "seeds": P.seeds(name, path=plan), "steps": 250,
                                            "batch_size": 128, "schedule": {
                                                "warmup_lr": 0.01, "warmup_max_steps": 50,
                                                "lr": 0.05}, **Q.settings(name, P.read_plan(plan))},
             "data": {"name": "digits", "image_size": [8, 8], "train": 1437, "test": 360},
             "code_commit": commit, "wall_seconds": 12.5, "machine": "Test CPU, 2 CPUs",
             "plan_file": "plans/plan.json", "plan_sha256": plan_hash(plan),
             "status": "completed"}))
    fig, ax = plotting.new_figure("one", 1.5)
    plotting.save_figure(fig, results / "early_training" / "figures", "c3_training_error")


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "paper"
    _write_fixture(folder, c3_gap=0.3)
    return folder


def test_first_screen_parsed_back_equals_the_summary_files(results):
    """The regime line, then the controls table, then the claims table -- each parsed back
    from the markdown equals claims_summary.csv / controls_summary.csv and what the claims
    and controls files say."""
    text = build_report(results, results / "REPORT.md").read_text()
    assert text.splitlines()[2].startswith("Regime: digits 8x8 (1,437 train / 360 test images), "
                                           "batch 128; lr 0.01 for 50 iterations, then 0.05")
    assert text.index("## Positive controls") < text.index("| claim |") < text.index("## Rules")
    table, checks = parse_summary(text), parse_controls(text)
    saved = pd.read_csv(results / SUMMARY_FILE).fillna("")
    assert table.to_dict("list") == saved.astype(str).to_dict("list")
    saved_checks = pd.read_csv(results / CONTROLS_SUMMARY_FILE).astype(str)
    assert checks.to_dict("list") == saved_checks.to_dict("list")
    assert list(checks["control"]) == ["E", "B"] and set(checks["result"]) == {"passed"}
    for row in checks.itertuples():               # and each row is what its controls.csv says
        source = K.read_controls(results / row.experiment / "controls.csv")
        mine = source[source["control"] == row.control]
        assert row.numbers == "; ".join(mine["numbers"]) and row.check == mine["check"].iloc[0]
        assert (row.result == "passed") == bool(mine["passed"].all())
    assert list(table["claim"]) == [c.id for c in CLAIMS]
    rows = pd.concat([C.read_claims(results / n / "claims.csv").assign(folder=n)
                      for n in ("early_training", "full_training")])
    derived = answers(rows)
    assert dict(zip(table["claim"], table["answer"])) == derived
    assert derived["C3"] == C.SUPPORTED and derived["C5"] == C.SUPPORTED
    assert derived["C6"] == C.NOT_TESTABLE and derived["C7"] == C.SUPPORTED
    assert derived["C1"] == "no data yet"
    by_claim = table.set_index("claim")
    # the why-sentence carries the primary test's numbers, scaled to points
    c3 = C.read_claims(results / "early_training" / "claims.csv").iloc[0]
    assert f"{c3['effect'] * 100:.3g}" in by_claim.loc["C3", "why"]
    assert f"{c3['ci_low'] * 100:.3g}" in by_claim.loc["C3", "why"]
    assert "c3_training_error.png" in by_claim.loc["C3", "figure"]
    assert by_claim.loc["C3", "he_et_al"].endswith("agrees")
    assert C.PLAN_UNTESTABLE in by_claim.loc["C6", "why"]
    assert by_claim.loc["C7", "he_et_al"] == "no such comparison"


def test_answers_turn_with_the_data_and_a_contradiction_is_flagged(tmp_path):
    _write_fixture(tmp_path / "paper", c3_gap=-0.2)
    text, table, _ = render_report(tmp_path / "paper", tmp_path / "paper")
    by_claim = table.set_index("claim")
    assert by_claim.loc["C3", "answer"] == C.NOT_SUPPORTED and by_claim.loc["C7", "answer"] == C.NOT_SUPPORTED
    assert "⚠ disagrees" in by_claim.loc["C3", "he_et_al"]


def test_a_failed_control_shows_in_the_first_screen(tmp_path):
    _write_fixture(tmp_path / "paper", c3_gap=0.3, control_e=False)
    text, _, checks = render_report(tmp_path / "paper", tmp_path / "paper")
    assert list(checks["result"]) == ["FAILED", "passed"]
    assert "| FAILED |" in text.split("## Claims")[0]


def test_a_claim_is_not_answered_from_runs_made_under_another_plan(tmp_path, results):
    """Copy the plan, change one margin: the report refuses every claim whose runs were made
    under the old plan (naming both hashes), C7 with them; under the plan they were made with,
    it answers."""
    plan = read_plan(PLAN)
    plan["primaries"][0]["margin"] = plan["primaries"][0]["margin"] + 0.01
    changed = tmp_path / "plan.json"
    changed.write_text(json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
    old, new = plan_hash(PLAN), plan_hash(changed)
    assert old != new
    text, table, _ = render_report(results, results, plan=changed)
    by_claim = table.set_index("claim")
    for claim in ("C3", "C5", "C6", "C7"):
        assert by_claim.loc[claim, "answer"] == NOT_ANSWERED
    assert f"run made under plan {old[:10]}, current plan {new[:10]}" in by_claim.loc["C3", "why"]
    assert "15." not in by_claim.loc["C3", "answer"] and "No confirmatory run yet" in text
    # the same runs, the plan they were made under: answered
    _, table, _ = render_report(results, results, plan=PLAN)
    by_claim = table.set_index("claim")
    assert by_claim.loc["C3", "answer"] == C.SUPPORTED and by_claim.loc["C7", "answer"] == C.SUPPORTED
    # a run that recorded no plan at all (the exploratory references) is not answered either
    _write_fixture(tmp_path / "none", c3_gap=0.3)
    config = tmp_path / "none" / "early_training" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items()
                                  if not k.startswith("plan")}))
    _, table, _ = render_report(tmp_path / "none", tmp_path / "none", plan=PLAN)
    by_claim = table.set_index("claim")
    assert by_claim.loc["C3", "answer"] == NOT_ANSWERED and by_claim.loc["C5", "answer"] == C.SUPPORTED
    assert "run made before any plan (exploratory)" in by_claim.loc["C3", "why"]


def test_zero_prints_as_zero():
    assert _num(3.47e-17) == "0" and _num(-2e-19) == "0" and _num(0.0123) == "0.0123"


def test_report_is_one_screen_per_claim_and_small(results):
    text = build_report(results, results / "REPORT.md").read_text()
    assert len(text.encode()) < 20_000
    detail = (results / DETAIL_FILE).read_text()     # the claims one by one, beside it
    assert f"]({DETAIL_FILE})" in text and "](REPORT.md)" in detail
    c6 = detail.split("## C6")[1].split("\n## ")[0]
    assert "not testable" in c6 and C.PLAN_UNTESTABLE in c6 and "full_training/claims.csv" in c6
    assert C.C7_RULE.splitlines()[0] in text


def test_second_build_is_byte_identical(results, tmp_path):
    a = build_report(results, results / "REPORT.md").read_bytes()
    b = build_report(results, results / "REPORT.md").read_bytes()
    assert a == b


def test_the_code_that_makes_an_experiments_results_leaves_out_only_others_and_readers():
    """A change to another experiment's own modules, or to code that only reads results, does
    not make a reference stale; the shared code always counts."""
    from analysis import EXPERIMENTS
    from analysis.report import READING_CODE, not_making
    skipped = not_making("early_training")
    assert "analysis/early_training.py" not in skipped and "experiments/early_training.py" not in skipped
    assert {f"analysis/{n}.py" for n in EXPERIMENTS if n != "early_training"} <= set(skipped)
    assert not any(p in skipped for p in ("analysis/claims.py", "analysis/measures.py",
                                          "analysis/plan.py", "analysis/cells.py"))
    assert not_making(None) == list(READING_CODE)
    for path in skipped:
        assert (ROOT / path).is_file(), path


def test_a_result_from_other_code_is_marked(tmp_path):
    import subprocess
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()[0]
    for commit, marked in ((head, False), (first, True)):
        _write_fixture(tmp_path / commit, c3_gap=0.3, commit=commit)
        text, _, _ = render_report(tmp_path / commit, tmp_path / commit)
        assert ("whose code differs" in text) == marked
        assert "| 12 | Test CPU, 2 CPUs |" in text          # a wall time (whole seconds) says where it was taken


def test_cli_bad_paths_exit_2(tmp_path, capsys, results):
    main = main_guard(_load_script().main)
    assert main(["--results", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results folder" in err
    (results / "broken").mkdir()
    (results / "broken" / "claims.csv").write_text("claim,effect\nC3,1.0\n")
    assert main(["--results", str(results)]) == 2
    assert "missing claims columns" in capsys.readouterr().err
    (results / "broken" / "claims.csv").unlink()
    assert main(["--results", str(results)]) == 0 and (results / "REPORT.md").is_file()


def test_article_quotes_are_verbatim():
    if not SEED.is_file():
        pytest.skip("article text not available")
    article = unicodedata.normalize("NFKC", SEED.read_text(encoding="utf-8"))
    for claim in CLAIMS:
        if claim.original:
            assert unicodedata.normalize("NFKC", claim.original) in article, claim.id


def test_paper_figure_style(tmp_path):
    """Figures a paper can take: TrueType (not Type 3) fonts in the PDF, one- and two-column
    sizes, text at least 7 pt, V1/V2 colours and line styles fixed."""
    plotting.set_style()
    for width, inches in (("one", plotting.ONE_COLUMN), ("two", plotting.TWO_COLUMN)):
        fig, axes = plotting.new_figure(width, 2.0)
        ax = axes[0][0]
        ax.plot([0, 1], [1, 2], **plotting.version_line("V1"))
        ax.plot([0, 1], [2, 1], **plotting.version_line("V2"))
        ax.set_ylabel(plotting.GRAD_LABEL)
        ax.legend()
        sizes = [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize"))]
        assert min(sizes) >= 7
        data = plotting.save_figure(fig, tmp_path, f"fig_{width}")[1].read_bytes()
        box = re.search(rb"/MediaBox \[ *0 0 ([\d.]+) ([\d.]+) *\]", data)
        assert float(box.group(1)) / 72 == pytest.approx(inches, abs=0.35)
        subtypes = re.findall(rb"/Subtype /(Type3|TrueType|Type1|Type0)", data)
        assert subtypes and b"Type3" not in subtypes and b"/FontFile2" in data   # TrueType, embedded
    assert plotting.VERSION_DASHES["V1"] != plotting.VERSION_DASHES["V2"]
    assert plt.get_backend().lower() == "agg"


def test_legend_above_covers_no_panel():
    """A legend shared by panels sits above them, each label once, and covers no curve: the
    curves here fill every panel, as training curves and per-unit profiles do."""
    plotting.set_style()
    fig, axes = plotting.new_figure("two", 2.0, 1, 3)
    x = np.linspace(0, 1, 50)
    for ax in axes[0]:
        for version, y in (("V1", x), ("V2", 1 - x)):
            ax.plot(x, y, **plotting.version_line(version))
    axes[0][0].legend()
    plotting.legend_above(fig, axes[0][0])
    fig.canvas.draw()
    assert axes[0][0].get_legend() is None and len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [plotting.version_line(v)["label"] for v in ("V1", "V2")]
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes[0])
    assert box.y0 >= max(ax.get_window_extent(renderer).y1 for ax in axes[0])
    plt.close(fig)


def test_the_committed_report_is_what_report_py_writes_at_this_checkout(tmp_path):
    """results/paper/REPORT.md and its summaries are what experiments/report.py writes from the
    committed references at this checkout -- stale marks included: after a code change, run
    `python experiments/report.py` and commit what it writes (or regenerate the references)."""
    paper = ROOT / "results" / "paper"
    out = tmp_path / "REPORT.md"
    text, detail, table, checks = render(paper, paper)
    out.write_text(text)
    assert text == (paper / "REPORT.md").read_text(), \
        "results/paper/REPORT.md is stale: run python experiments/report.py and commit it"
    assert detail == (paper / DETAIL_FILE).read_text(), f"results/paper/{DETAIL_FILE} is stale"
    assert table.astype(str).to_dict("list") == \
        pd.read_csv(paper / SUMMARY_FILE).fillna("").astype(str).to_dict("list")
    assert checks.astype(str).to_dict("list") == \
        pd.read_csv(paper / CONTROLS_SUMMARY_FILE).astype(str).to_dict("list")


def test_each_claims_window_labels_name_the_plans_primaries():
    """A claim with several primary measures labels them in the plan's order: as many labels
    as the plan has primary measures, or a row is shown under another measure's name (C4 once
    labelled its identity-path rows "stage_rho")."""
    plan = read_plan()
    for claim in CLAIMS:
        measures = list(dict.fromkeys(e["measure"] for e in plan["primaries"]
                                      if e["claim"] == claim.id and e["role"] == "primary"))
        if claim.windows:
            assert len(claim.windows) == len(measures), (claim.id, claim.windows, measures)
        else:
            assert len(measures) <= 1, (claim.id, measures)


def test_every_claim_but_the_derived_one_is_declared_by_one_experiment():
    """The claims' registry (report.CLAIMS, their words) and the experiments' declarations
    (Experiment.claims, where each is tested) name the same claims, each tested once."""
    import analysis
    declared = [c for e in analysis.experiments() for c in e.claims]
    assert sorted(declared) == sorted(set(declared))
    assert set(declared) == {c.id for c in CLAIMS} - {"C7"}


def _known_groups_fixture(results: Path, stage_rho_passes: bool):
    """C2 (on shortcut_path) and C4 (on stage_rho) supported in early_training's rows; the
    known-groups check passes shortcut_path and passes or fails stage_rho; Table 1 and the
    interventions beside."""
    from analysis import known_groups as G
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        for shortcut, level in (("identity", 0.0), ("scale_0.5_1", -3.0), ("dropout_0.5", -6.0)):
            rows.append({"depth": 1001, "seed": seed, "shortcut_variant": shortcut,
                         "path_log10": level + 0.1 * rng.standard_normal(),
                         "stage_rho": (-level if stage_rho_passes else level)
                         + 0.1 * rng.standard_normal()})
    measures = [G.Measure("shortcut_path", "path_log10", "higher", "path"),
                G.Measure("stage_rho", "stage_rho", "lower", "rho")]
    groups = [G.KnownGroup("identity", "scale_0.5_1", "Table 1"),
              G.KnownGroup("identity", "dropout_0.5", "Table 1")]
    folder = results / G.KNOWN_GROUPS_EXPERIMENT
    folder.mkdir(parents=True)
    G.check(pd.DataFrame(rows), measures, groups, [1001], shortcut="shortcut_variant") \
        .to_csv(folder / G.KNOWN_GROUPS_FILE, index=False)
    pd.DataFrame([{"shortcut": "identity", "label": "original", "he_et_al_test_error": "6.61",
                   "n": 2, "trains": 2, "fits": 2, "err_end_mean": 0.01, "train_error_mean": 0.0,
                   "test_error_mean": 0.03, "test_error_min": 0.02, "test_error_max": 0.04,
                   "verdict": "trains and fits"},
                  {"shortcut": "dropout_0.5", "label": "dropout", "he_et_al_test_error": "fail",
                   "n": 2, "trains": 0, "fits": 0, "err_end_mean": 0.9, "train_error_mean": 0.9,
                   "test_error_mean": 0.9, "test_error_min": 0.88, "test_error_max": 0.91,
                   "verdict": "fails"}]).to_csv(folder / "table1.csv", index=False)
    early = C.read_claims(results / "early_training" / "claims.csv").to_dict("records")
    early += [C.claim_row("C2", "primary", "early_training", "V1 path − log10(1/2)", 1001,
                          C.one_sample(-3 + rng.normal(0, 0.1, 5), direction="less"),
                          known_group="shortcut_path"),
              C.claim_row("C2", "secondary", "early_training", "more frequent at 1000 layers", 1001,
                          C.independent_difference(rng.normal(0.3, 0.01, 5), rng.normal(0.31, 0.01, 5)),
                          paper_row="more_frequent"),
              C.claim_row("C4", "primary", "early_training", "stage_rho, V1 − V2", 1001,
                          C.paired_difference(*_arms(0.5, 3)), known_group="stage_rho")]
    C.write_claims(results / "early_training", early)
    pd.DataFrame([{"arm": "no_after_relu", "text": "V1 without its ReLU", "depth": 1001,
                   "effect": 0.8, "ci_low": 0.6, "ci_high": 1.0, "p_value": 0.01, "n": 5,
                   "verdict": C.SUPPORTED, "method": "Fieller (paired by seed)", "note": "",
                   "err_c3_v1": 0.87, "err_c3_v2": 0.66, "err_c3_arm": 0.70, "err_end_arm": 0.3,
                   "loss_init_v1": 6.2, "loss_init_v2": 2.3, "loss_init_arm": 4.6}]) \
        .to_csv(results / "early_training" / "interventions.csv", index=False)


@pytest.mark.parametrize("stage_rho_passes", [True, False])
def test_the_known_groups_gate_table1_and_the_interventions(tmp_path, stage_rho_passes):
    results = tmp_path / "paper"
    _write_fixture(results, c3_gap=0.3)
    _known_groups_fixture(results, stage_rho_passes)
    text, detail, table, _ = render(results, results)
    by_claim = table.set_index("claim")
    assert by_claim.loc["C2", "answer"] == C.SUPPORTED
    if stage_rho_passes:
        assert by_claim.loc["C4", "answer"] == C.SUPPORTED
    else:     # the same supported row, gated: its measure failed the known-groups check
        assert by_claim.loc["C4", "answer"] == C.NOT_TESTABLE
        assert "measure not validated: stage_rho — failed: 2 of 2" in by_claim.loc["C4", "why"]
    c2, c3, c4 = (detail.split(f"## {c}")[1].split("\n## ")[0] for c in ("C2", "C3", "C4"))
    # the report itself names each claim's known-groups result and the interventions' shares
    evidence = text.split("## Known cases and the intervention")[1].split("\n## ")[0]
    for section in (c2, evidence):
        assert "shortcut_path passed (2 of 2 comparisons supported at 1001 layers)" in section
    for section in (c4, evidence):
        assert ("stage_rho passed" if stage_rho_passes else "stage_rho failed") in section
    for section in (c2, c3, evidence):
        assert "no_after_relu (V1 without its ReLU) closes 0.8 [0.6, 1], n 5, Fieller" in section
    assert "the data cannot say" in by_claim.loc["C2", "he_et_al"] or \
        "the data ⚠ disagree" in by_claim.loc["C2", "he_et_al"]
    # under another plan the row's numbers are shown, but neither agreement nor disagreement
    plan = read_plan(PLAN)
    plan["primaries"][0]["margin"] += 0.01
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    _, _, other, _ = render(results, results, tmp_path / "plan.json")
    he = other.set_index("claim").loc["C2", "he_et_al"]
    assert "not answered (its numbers: " in he and "agree" not in he
    t1 = text.split("## Table 1")[1].split("\n## ")[0]
    assert "| dropout_0.5 | fail | 0 of 2 | 0 of 2 | 90 (88–91) | fails |" in t1
    assert text.index("## Positive controls") < text.index("## Table 1")
