"""experiments/shortcut_variants.py end to end on the smoke preset: every file, Part A's
measures recomputed from the raw rows, the known-groups check recomputed from init.csv, Part
B's Table 1 from the training rows, the figures redrawn from the CSVs alone."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import claims as C
from analysis import known_groups as G
from analysis import shortcut_variants as SV
from analysis.measures import stage_rho
from experiment_checks import one_thread, redraw_without_model_code, run_smoke  # noqa: F401

NAME = "shortcut_variants"
FIGURES = ["known_groups_init", "table1_test_error", "table1_training_error"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    publish = tmp_path_factory.mktemp("paper") / NAME
    run = run_smoke(NAME, tmp_path_factory.mktemp("runs"), "--publish", str(publish))
    return run, publish


def test_smoke_writes_every_file(smoke):
    run, _ = smoke
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed"
    init = pd.read_csv(run / "init.csv")
    v1 = init[init["version"] == 1]
    assert set(v1[SV.FACTOR]) == set(SV.SHORTCUTS) and set(init["depth"]) == {20, 29}
    assert len(init) == 2 * 3 * (len(SV.SHORTCUTS) + 2)           # V2: identity, scale_0.5_1
    assert init[["path_log10", "stage_rho", "abs_log_grad_ratio"]].notna().all().all()
    known = G.read_known_groups(run / G.KNOWN_GROUPS_FILE)
    # one row per measure x series (basic 20, bottleneck 29) x known comparison
    assert len(known) == len(SV.MEASURES) * 2 * len(SV.KNOWN_GROUPS)
    t1 = pd.read_csv(run / "table1.csv")
    assert list(t1["shortcut"]) == SV.SHORTCUTS and (t1["n"] == 1).all()
    assert t1.set_index("shortcut").loc["dropout_0.5", "he_et_al_test_error"] == "fail"
    assert t1.set_index("shortcut").loc["identity", "he_et_al_test_error"] == "6.61"
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_path_share_and_stage_rho_recomputed_from_the_raw_rows(smoke):
    """V2 with the identity shortcut: every stage's shortcut path carries all (log 0); a 0.5
    scaled shortcut without f: at most 0.25 per unit; path_log10 = the sum over stages; and
    stage_rho is measures.stage_rho of the probe rows."""
    run, _ = smoke
    path = pd.read_csv(run / "path.csv")
    init = pd.read_csv(run / "init.csv").set_index(SV.KEYS)
    v2 = path[(path["version"] == 2) & (path[SV.FACTOR] == "identity")]
    assert (v2["log10_share"].abs() < 1e-6).all()
    scaled = path[(path["version"] == 2) & (path[SV.FACTOR] == "scale_0.5_1")]
    assert np.allclose(scaled["log10_share"], scaled["n_units"] * np.log10(0.25), atol=1e-5)
    for key, part in path.groupby(SV.KEYS):
        expected = part["log10_share"].clip(lower=SV.LOG_FLOOR).sum()
        assert init.loc[key, "path_log10"] == pytest.approx(expected)
    probe = pd.read_csv(run / "probe.csv.gz")
    rho = stage_rho(probe, SV.KEYS).set_index(SV.KEYS)["stage_rho"]
    assert np.allclose(init.loc[rho.index, "stage_rho"], rho)


def test_known_groups_recomputed_from_init(smoke):
    run, _ = smoke
    init = pd.read_csv(run / "init.csv")
    known = G.read_known_groups(run / G.KNOWN_GROUPS_FILE)
    for row in known.itertuples():
        measure = next(m for m in SV.MEASURES if m.name == row.measure)
        good, bad = row.comparison.split(" − ")
        wide = init[(init["depth"] == row.depth) & (init["version"] == 1)] \
            .set_index(["seed", SV.FACTOR])[measure.column].unstack(SV.FACTOR)
        result = C.paired_difference(wide[good], wide[bad], direction="greater"
                                     if measure.better == "higher" else "less")
        assert row.effect == pytest.approx(result.effect, nan_ok=True)
        assert row.verdict == result.verdict and row.passed == (result.verdict == C.SUPPORTED)


def test_table1_recomputed_from_the_training_rows(smoke):
    run, _ = smoke
    train = pd.read_csv(run / "train.csv.gz")
    final = pd.read_csv(run / "final.csv")
    t1 = pd.read_csv(run / "table1.csv").set_index("shortcut")
    steps = 8
    for name in SV.SHORTCUTS:
        err = train[(train[SV.FACTOR] == name) & (train["split"] == "train")
                    & (train["metric"] == "error") & (train["step"] > steps - steps // 4)]
        end = err.groupby("seed")["value"].mean()
        assert t1.loc[name, "err_end_mean"] == pytest.approx(end.mean())
        assert t1.loc[name, "trains"] == int((end < SV.TRAINS_ERROR).sum())
        test = final[(final[SV.FACTOR] == name) & (final["split"] == "test")
                     & (final["metric"] == "error")]["value"]
        assert t1.loc[name, "test_error_mean"] == pytest.approx(test.mean())


@pytest.mark.slow
def test_published_copy_redraws_without_model_code(smoke):
    _, publish = smoke
    assert {"config.json", "init.csv", "known_groups.csv", "table1.csv", "train.csv.gz"} <= \
        {p.name for p in publish.iterdir()}
    assert redraw_without_model_code(NAME, publish) == sorted(FIGURES)
