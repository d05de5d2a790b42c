"""Data: digits split and normalisation, Gaussian inputs, CIFAR archives in the real format
(tiny fakes), the missing-archive message through the CLI, augmentation and batching."""
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_lab.engine.data import (CIFAR_URL, Batches, apply_augmentation, augment, draw_augmentation,
                             load_dataset)

ROOT = Path(__file__).resolve().parents[1]


# ---- digits and gaussian --------------------------------------------------------------------

def test_digits_fixed_stratified_split_normalised_per_channel():
    d = load_dataset("digits")
    assert d.train_x.shape == (1437, 1, 8, 8) and d.test_x.shape == (360, 1, 8, 8)
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 1, (8, 8))
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    counts = torch.bincount(d.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37            # stratified: ~36 per class
    assert abs(d.train_x.mean().item()) < 1e-5 and abs(d.train_x.std().item() - 1) < 1e-4
    again = load_dataset("digits", seed=123)                   # the split does not depend on the seed
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.train_y, d.train_y)
    assert (d.pad, d.flip) == (1, False)                       # mirrored digits are other symbols


def test_gaussian_any_shape_seeded():
    g = load_dataset("gaussian", seed=3, num_train=64, num_test=16, image_size=(5, 7), channels=2,
                     num_classes=4)
    assert g.train_x.shape == (64, 2, 5, 7) and g.test_x.shape == (16, 2, 5, 7)
    assert g.train_y.max() < 4 and (g.pad, g.flip) == (0, False)
    assert torch.equal(g.train_x, load_dataset("gaussian", seed=3, num_train=64, num_test=16,
                                               image_size=(5, 7), channels=2, num_classes=4).train_x)
    assert not torch.equal(g.train_x, load_dataset("gaussian", seed=4, num_train=64, num_test=16,
                                                   image_size=(5, 7), channels=2).train_x)


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(ValueError, match="digits, gaussian, cifar10, cifar100"):
        load_dataset("mnist")


# ---- CIFAR ------------------------------------------------------------------------------------

def _fake_batches(name, rng):
    """Batches in the real pickle format: uint8 (n, 3072) R,G,B planes; labels a list."""
    members = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10"
               else ["train", "test"])
    key = b"labels" if name == "cifar10" else b"fine_labels"
    classes = 10 if name == "cifar10" else 100
    batches = {}
    for m in members:
        n = 3 if m != "train" else 7
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: rng.integers(0, classes, n).tolist(), b"batch_label": m.encode()}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0] * n
        batches[m] = batch
    return batches


def _write_archive(path, folder, batches):
    with tarfile.open(path, "w:gz") as tar:
        for member, batch in batches.items():
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _raw(dataset, split):
    """Undo the per-channel normalisation: back to the archive's pixel values / 255."""
    x = getattr(dataset, f"{split}_x")
    return x * torch.tensor(dataset.std).view(1, -1, 1, 1) + torch.tensor(dataset.mean).view(1, -1, 1, 1)


@pytest.mark.parametrize("name,archive,folder", [
    ("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python.tar.gz", "cifar-100-python")])
def test_fake_cifar_archive_round_trips(tmp_path, name, archive, folder):
    batches = _fake_batches(name, np.random.default_rng(0))
    _write_archive(tmp_path / archive, folder, batches)
    d = load_dataset(name, tmp_path, verify=False)       # a fake cannot match the official md5
    key = b"labels" if name == "cifar10" else b"fine_labels"
    train = [b for m, b in batches.items() if m not in ("test_batch", "test")]
    expect_x = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32) / 255.0
    expect_y = sum((b[key] for b in train), [])
    assert d.train_x.shape == expect_x.shape and d.num_classes == (10 if name == "cifar10" else 100)
    assert torch.allclose(_raw(d, "train"), torch.tensor(expect_x, dtype=torch.float32), atol=1e-5)
    assert d.train_y.tolist() == expect_y
    test = batches["test_batch" if name == "cifar10" else "test"]
    assert d.test_y.tolist() == test[key]
    assert torch.allclose(_raw(d, "test"), torch.tensor(test[b"data"].reshape(-1, 3, 32, 32) / 255.0,
                                                        dtype=torch.float32), atol=1e-5)
    assert (d.pad, d.flip) == (4, True)

    # The extracted folder reads the same.
    (tmp_path / archive).unlink()
    (tmp_path / folder).mkdir()
    for member, batch in batches.items():
        (tmp_path / folder / member).write_bytes(pickle.dumps(batch, protocol=2))
    assert torch.equal(load_dataset(name, tmp_path).train_x, d.train_x)


def test_archive_checksum_is_verified_by_default(tmp_path):
    _write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                   _fake_batches("cifar10", np.random.default_rng(1)))
    with pytest.raises(ValueError, match="c58f30108f718f92721af3b95e74349a") as err:
        load_dataset("cifar10", tmp_path)
    assert CIFAR_URL in str(err.value) and "\n" not in str(err.value)


def test_missing_archive_names_file_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", tmp_path)
    message = str(err.value)
    assert "cifar-100-python.tar.gz" in message and CIFAR_URL in message and "\n" not in message


def test_missing_archive_through_the_cli_one_line_exit_2_nothing_written(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train.py"), "--model", "cifar_resnet20_v2",
         "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert "cifar-10-python.tar.gz" in lines[0] and CIFAR_URL in lines[0]
    assert not out.exists()


# ---- augmentation -----------------------------------------------------------------------------

def test_translation_and_flip_move_pixels_as_specified():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    offsets = torch.tensor([[0, 2], [1, 1]])                  # (row, col) in the padded image
    out = apply_augmentation(x, offsets, torch.tensor([True, False]), pad=1)
    shifted = torch.zeros(4, 4)
    shifted[1:, :3] = x[0, 0, :3, 1:]                         # down 1, left 1 ...
    assert torch.equal(out[0, 0], shifted.flip(1))           # ... then mirrored
    assert torch.equal(out[1], x[1])                         # offset (pad, pad) is the identity
    assert torch.equal(apply_augmentation(x, offsets, None, pad=0), x)


def test_augmentation_is_seeded_and_draws_in_range():
    x = torch.randn(64, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(6)))
    offsets, flips = draw_augmentation(10_000, torch.Generator().manual_seed(0), pad=4, flip=True)
    assert offsets.min() == 0 and offsets.max() == 8 and 0.45 < flips.float().mean() < 0.55


# ---- batching ---------------------------------------------------------------------------------

def test_batches_are_epoch_permutations_and_resumable_from_any_step():
    b = Batches(100, 30, seed=7)
    assert b.steps_per_epoch == 3
    epoch1 = torch.cat([b.indices(s) for s in range(3, 6)])
    assert len(set(epoch1.tolist())) == 90 and b.epoch(5) == 1
    assert not torch.equal(b.indices(0), b.indices(3))        # a new permutation each epoch
    assert torch.equal(Batches(100, 30, seed=7).indices(4), b.indices(4))
    assert not torch.equal(Batches(100, 30, seed=8).indices(4), b.indices(4))
    with pytest.raises(ValueError, match="batch size"):
        Batches(10, 11)
