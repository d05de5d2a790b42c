"""REPORT.md from a small fixture of claims.csv files; the plot style it links to."""
import importlib.util
import json
import unicodedata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis import claims as C
from resnet_lab import plotting
from analysis.report import CLAIMS, build_report, render_report
from resnet_lab.units import UNIT_KINDS

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed" / "000_64b20d10b326a134.txt"
DEPTHS = (20, 164, 1001)


def _load_script():
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "experiments/report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_fixture(results: Path, deep_gap: float):
    """early_training (C3 per depth, C5 threshold) and signal_propagation (C1), from data.

    V1's loss exceeds V2's by ``deep_gap`` at 164 and 1001 layers and by nothing at 20;
    every verdict is computed by the library from these synthetic numbers.
    """
    rng = np.random.default_rng(0)
    rows, verdicts = [], []
    for depth in DEPTHS:
        v2 = 2.0 + rng.normal(0, 0.05, 4)
        v1 = v2 + (deep_gap if depth >= 164 else 0.0) + rng.normal(0, 0.01, 4)
        res = C.paired_difference(v1, v2, alternative="greater")
        rows.append(C.claim_row("C3", "early_training", "loss@100", depth, res,
                                dataset="digits", preset="quick"))
        verdicts.append(res.verdict)
    threshold = C.depth_threshold(DEPTHS, verdicts)
    rows.append(C.threshold_row("C5", "early_training", "loss gap threshold", threshold,
                                claimed_depth=164))
    folder = results / "early_training"
    C.append_claims(folder, rows)
    (folder / "config.json").write_text(json.dumps(  # the layout resnet_lab.runs writes
        {"experiment": "early_training", "args": {"preset": "quick", "dataset": None,
                                                  "seeds": [0, 1, 2, 3]},
         "preset": {"dataset": "digits", "width": 16, "seeds": [0, 1]}, "status": "completed"}))
    for name in ("c3_loss_curves", "gap_vs_depth"):
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [0, 1])
        plotting.save_figure(fig, folder / "figures", name)
    res = C.one_sample(rng.normal(0, 1e-7, 3), alternative="equivalent", margin=1e-5)
    C.append_claims(results / "signal_propagation",
                    [C.claim_row("C1", "signal_propagation", "max |output − f(sum)|", 1001, res)])


@pytest.fixture
def results(tmp_path):
    _write_fixture(tmp_path / "paper", deep_gap=0.5)
    return tmp_path / "paper"


def _section(text, claim_id):
    start = text.index(f"## {claim_id} ")
    return text[start:text.index("\n## ", start + 1)]


def test_report_sections_figures_and_caveats(results):
    out = build_report(results, results / "REPORT.md")
    text = out.read_text()
    for claim in CLAIMS:
        assert f"## {claim.id} — {claim.title}" in text
    assert "no data yet — run experiments/relu_blocking.py" in _section(text, "C2").lower()
    c3 = _section(text, "C3")
    assert "| early_training | loss@100 | 1001 | digits | quick |" in c3
    assert "depth 20: 1 not supported · depth 164: 1 supported · depth 1001: 1 supported" in c3
    assert "](early_training/figures/c3_loss_curves.png)" in c3
    assert "](early_training/figures/gap_vs_depth.png)" in c3
    c5 = _section(text, "C5")
    assert "c3_loss_curves" not in c5 and "gap_vs_depth" in c5  # prefix restricts a figure
    assert "preset quick; dataset digits; width 16; seeds 0, 1, 2, 3; status completed" in c5
    assert "not the paper's setting" in c5
    assert "**Derived verdict: supported**" in _section(text, "C7")
    assert "| [C7](#c7) | V1 for shallow nets, V2 for deep ones | derived: **supported** | " \
           "`early_training` |" in text
    assert "no config.json" in _section(text, "C1")
    for link in [line.split("](")[1][:-1] for line in text.splitlines() if line.startswith("![")]:
        assert (results / link).is_file()


def test_verdicts_follow_the_data(tmp_path, results):
    before = render_report(results, results)
    _write_fixture(tmp_path / "flipped", deep_gap=-0.5)  # V1 now *better* at depth
    after = render_report(tmp_path / "flipped", tmp_path / "flipped")
    assert _section(before, "C3") != _section(after, "C3")
    assert "depth 1001: 1 not supported" in _section(after, "C3")
    assert "**Derived verdict: not supported**" in _section(after, "C7")
    assert "| [C5](#c5) | Below about 164 layers the difference is small | all depths: 1 " \
           "not supported |" in after


def test_second_build_is_byte_identical(results, tmp_path):
    first = build_report(results, tmp_path / "a.md").read_bytes()
    second = build_report(results, tmp_path / "a.md").read_bytes()
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "paper"]


def test_cli_bad_paths_exit_2(tmp_path, capsys, results):
    from resnet_lab.cli import main_guard
    script = _load_script()
    script.main = main_guard(script.main)
    assert script.main(["--results", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results folder" in err
    (results / "broken").mkdir()
    (results / "broken" / "claims.csv").write_text("claim,effect\nC3,1.0\n")
    assert script.main(["--results", str(results)]) == 2
    assert "missing claims columns" in capsys.readouterr().err
    (results / "broken" / "claims.csv").unlink()
    assert script.main(["--results", str(results)]) == 0
    assert (results / "REPORT.md").is_file()


def test_article_quotes_are_verbatim():
    if not SEED.is_file():
        pytest.skip("article text not available")
    article = unicodedata.normalize("NFKC", SEED.read_text())
    for claim in CLAIMS:
        assert claim.original in article, claim.id


def test_plot_style_and_atomic_save(tmp_path):
    assert set(plotting.unit_palette()) == set(UNIT_KINDS) == set(plotting.UNIT_LABELS)
    assert plotting.unit_palette()["original"] == plotting.version_palette()["V1"]
    assert plotting.unit_palette()["full_preact"] == plotting.version_palette()["V2"]
    plotting.set_style()
    fig, ax = plt.subplots()
    ax.plot(range(10))
    plotting.mark_stage_boundaries(ax, [6, 3])
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [2.5, 5.5]
    paths = plotting.save_figure(fig, tmp_path / "figures", "demo")
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["demo.pdf", "demo.png"]
    assert not plt.fignum_exists(fig.number)
