"""Where researchers look: the Lightning callback, the TensorBoard writer and load_run.

The callback's rows must equal a SignalProbe run by hand over the same training; the event
file written for TensorBoard, read back with tensorboard's own reader, must hold the rows."""
import builtins
import copy
import importlib
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from probes import SignalProbe
from probes.adapters.tapping import tap_model
from reference_resnets import resnet18
from resnet_lab import cifar_resnet
from resnet_lab.runs.results import load_run
from resnet_lab.io.folders import RunDir, write_table

KEYS = ["step", "unit", "tap", "direction", "stat", "layer"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def data(n_batches=7, batch=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_batches * batch, 3, 8, 8, generator=g), torch.randint(0, 10, (n_batches * batch,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def sorted_rows(df):
    return df.sort_values(KEYS).reset_index(drop=True)


# ---- Lightning ----------------------------------------------------------------------------------

LIGHTNING_NOISE = "ignore:.*LeafSpec"      # inside Lightning, harmless


@pytest.mark.filterwarnings(LIGHTNING_NOISE)
def test_lightning_callback_equals_a_hand_run_probe():
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import Logger

    from probes.adapters.lightning import SignalProbeCallback

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = cifar_resnet(8, version=1, width=4)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    class Recorder(Logger):               # keeps what the callback logs
        name, version, metrics = "recorder", 0, []

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.metrics.append((step, dict(metrics)))

    torch.manual_seed(0)
    module = Tiny()
    by_hand = copy.deepcopy(module)
    taps, stats = ("input", "sum", "output"), ("norm", "rms", "grad_cut", "shortcut_cut", "grad_norm")
    callback = SignalProbeCallback(every=3, taps=taps, stats=stats, log_to="logger")
    recorder = Recorder()
    trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=recorder, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, data())
    got = callback.collect()
    assert sorted(got["step"].unique()) == [1, 4, 7]          # every 3rd update, counted from 1

    optimizer = by_hand.configure_optimizers()
    with SignalProbe(by_hand, taps=taps, stats=stats, every=3) as probe:
        for batch in data():
            optimizer.zero_grad()
            by_hand.training_step(batch, 0).backward()
            probe.step()
            optimizer.step()
    expected = probe.collect()
    assert len(got) == len(expected) > 0
    got, expected = sorted_rows(got), sorted_rows(expected)
    pd.testing.assert_frame_equal(got[KEYS], expected[KEYS])
    np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-6, atol=1e-9)

    assert [step for step, _ in recorder.metrics] == [1, 4, 7]
    step, logged = recorder.metrics[1]
    rows = got[got["step"] == step]
    assert len(logged) == len(rows)
    unit1 = rows.query("unit == 1 and tap == 'input' and direction == 'backward' and stat == 'norm'")
    assert logged["probe/backward/input/norm/unit_001"] == pytest.approx(unit1["value"].item())


@pytest.mark.filterwarnings(LIGHTNING_NOISE)
def test_lightning_callback_taps_an_untapped_module():
    L = pytest.importorskip("lightning.pytorch")
    from probes.adapters.lightning import SignalProbeCallback

    class Vision(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = resnet18(num_classes=10)          # torchvision's structure, untapped

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    callback = SignalProbeCallback(every=2, stats=("norm",), param_grads=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Vision(), data(n_batches=3, batch=2))
    df = callback.collect()
    assert sorted(df["step"].unique()) == [1, 3] and df["unit"].nunique() == 8
    assert len(callback.tap_handle.units) == 8
    with pytest.raises(ValueError, match="log_to"):
        SignalProbeCallback(log_to="wandb")


def test_optional_extras_say_how_to_install(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "probes.adapters.lightning"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    real_import = builtins.__import__

    def no_lightning(name, *args, **kwargs):
        if name.split(".")[0] in ("lightning", "pytorch_lightning", "tensorboard") \
                or name.startswith("torch.utils.tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightning)
    with pytest.raises(ImportError, match=r"pip install lightning \(or, in the resnet-lab checkout, "
                                          r"pip install -e '\.\[lightning\]'\)"):
        importlib.import_module("probes.adapters.lightning")
    from probes.adapters.tensorboard import write_scalars
    with pytest.raises(ImportError, match=r"pip install tensorboard \(or, in the resnet-lab checkout, "
                                          r"pip install -e '\.\[tensorboard\]'\)"):
        write_scalars("logs", pd.DataFrame())
    monkeypatch.undo()
    sys.modules.pop("probes.adapters.lightning", None)            # the next import is the real one


# ---- TensorBoard --------------------------------------------------------------------------------

def test_tensorboard_event_file_holds_the_probe_rows(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from probes.adapters.tensorboard import scalar_tags, write_scalars
    net = cifar_resnet(8, version=1, width=4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with SignalProbe(net, every=2, weight_inputs=True) as probe:
        for x, y in data(n_batches=3):
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            probe.step()
            optimizer.step()
    df = probe.collect()
    assert write_scalars(tmp_path, df) == len(df)
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = scalar_tags(df)
    assert set(events.Tags()["scalars"]) == set(tags)
    assert "probe/backward/input/norm/unit_001" in set(tags)
    assert "probe/forward/weight_input/in_var_mean/fc" in set(tags)
    for tag, rows in df.groupby(tags):
        written = [(e.step, e.value) for e in events.Scalars(tag)]
        expected = [(int(s), float(np.float32(v))) for s, v in zip(rows["step"], rows["value"])]
        assert sorted(written) == sorted(expected), tag        # float32 in the event file
    for (direction, tap, stat, step), rows in df.groupby(["direction", "tap", "stat", "step"]):
        values = rows["value"][np.isfinite(rows["value"])]
        if len(values) < 2:
            continue
        [hist] = [h for h in events.Histograms(f"probe_units/{direction}/{tap}/{stat}") if h.step == step]
        assert hist.histogram_value.num == len(values)
        assert hist.histogram_value.min == pytest.approx(values.min(), rel=1e-12)
        assert hist.histogram_value.max == pytest.approx(values.max(), rel=1e-12)


def test_tensorboard_writer_is_left_open(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from probes.adapters.tensorboard import write_scalars
    net = tap_model(resnet18(num_classes=10)).model
    with SignalProbe(net, taps="input", stats="norm", param_grads=False) as probe:
        F.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
        probe.step()
    with SummaryWriter(str(tmp_path)) as writer:
        assert write_scalars(writer, probe.collect(), histograms=False) == 16
        writer.add_scalar("after", 1.0)                # still usable


# ---- load_run -----------------------------------------------------------------------------------

def test_load_run_reads_config_and_every_table(tmp_path):
    run = RunDir.create("demo", {"seed": 3}, out=tmp_path, run_id="r1")
    probe = pd.DataFrame({"step": [1, 1], "unit": [0, 1], "value": [0.5, 2.0]})
    run.write_csv("probe.csv.gz", probe)
    run.write_csv("train.csv", pd.DataFrame({"step": [1], "loss": [2.3]}))
    loaded = load_run(run.path)
    assert loaded.config["args"] == {"seed": 3} and loaded.config["experiment"] == "demo"
    assert set(loaded.tables) == {"probe", "train"}
    pd.testing.assert_frame_equal(loaded.probe, probe)
    assert loaded["train"]["loss"].item() == 2.3 and loaded.tables["probe"] is loaded.probe
    assert "probe" in repr(loaded)
    with pytest.raises(AttributeError, match="tables: probe, train"):
        loaded.summary
    with pytest.raises(KeyError, match="no table 'summary'"):
        loaded["summary"]


def test_load_run_errors(tmp_path):
    with pytest.raises(ValueError, match="is .* a run folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"status": "completed"}))
    write_table(tmp_path / "bad.csv.gz", pd.DataFrame({"a": [1]}))
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip")
    run = load_run(tmp_path)
    assert list(run.tables) == ["bad"]
    with pytest.raises(ValueError, match="unreadable table"):
        run.bad
