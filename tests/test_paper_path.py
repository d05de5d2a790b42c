"""The paper presets, ready for a GPU: their settings are the paper's (CIFAR-10, width 16, C3 over
the first 10k iterations, C6 and T2 to 64k), and every experiment runs end to end on CIFAR-10
data in the official format (a tiny extracted archive built here) with its smoke preset."""
import pickle

import numpy as np
import pytest

from analysis import EXPERIMENTS, experiment
from experiment_checks import load_script, one_thread  # noqa: F401
from resnet_lab.runs.cli import main_guard
from resnet_lab.runs.results import load_run


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """cifar-10-batches-py/ with 64 images per training batch and 40 test images."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 64) for i in range(1, 6)] + [("test_batch", 40)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_presets_are_the_papers(name):
    s = experiment(name).parse_settings(["--preset", "paper", "--device", "cpu"])
    assert s["dataset"] == "cifar10" and set(s["widths"].values()) == {16}
    assert s["batch_size"] == 128 and len(s["seeds"]) >= 3
    if name == "early_training":
        assert s["steps"] >= 10_000 and 1001 in s["depths"]
    if name in ("full_training", "unit_ablation"):
        assert s["steps"] == 64_000 and list(s["schedule"]["milestones"]) == [32_000, 48_000]
    if "schedule" in s:      # "about 400 iterations" at 0.01, one length for both nets of a pair
        assert s["schedule"]["warmup_max_steps"] == 400 and s["schedule"]["warmup_error"] is None
        assert s["schedule"]["warmup_lr"] == 0.01 and s["schedule"]["lr"] == 0.1


# One experiment in the default suite (they share the data path); all with -m slow.
@pytest.mark.parametrize("name", [n if n == "grad_flow" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in EXPERIMENTS])
def test_smoke_preset_on_cifar10_end_to_end(name, tiny_cifar, tmp_path):
    argv = ["--preset", "smoke", "--dataset", "cifar10", "--data-dir", str(tiny_cifar),
            "--workers", "1", "--out", str(tmp_path)]
    assert main_guard(load_script(name).main)(argv) == 0
    (folder,) = (tmp_path / name).iterdir()
    run = load_run(folder)
    assert run.status == "completed" and run.config["preset"]["dataset"] == "cifar10"
    assert set(run.cells["status"]) <= {"completed", "diverged"}
    assert len(list(folder.glob("figures/*.pdf"))) >= 3
