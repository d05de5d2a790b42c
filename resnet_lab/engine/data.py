"""Data: the bundled digits, CIFAR-10/100 from the official archive, Gaussian inputs; the paper's
augmentation on tensors; deterministic, resumable batching.

Every dataset comes back as a ``Dataset`` of float32 image tensors normalised per channel with
the training set's statistics, so the engine can move it to the GPU once and do everything else
(indexing, augmentation) there.

- ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (no download), one channel, a
  fixed stratified 80/20 split (the same for every run seed, so runs share their test set).
- ``cifar10`` / ``cifar100``: the python-pickle archives of https://www.cs.toronto.edu/~kriz/cifar.html,
  read straight from the ``.tar.gz`` (or its extracted folder) without torchvision. The archive's
  md5 is checked against the official one unless ``verify=False`` (what tests with their tiny
  fake archives pass).
- ``gaussian``: N(0, 1) images with random labels, any shape; for signal-propagation measurements
  where the input distribution, not the task, matters.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# name: (archive, its official md5, folder inside it, train members, test member, label key, classes)
CIFAR = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
                 ["train"], "test", b"fine_labels", 100),
}
DATASETS = ("digits", "gaussian", "cifar10", "cifar100")


@dataclasses.dataclass
class Dataset:
    """Normalised images (N, C, H, W) float32 and int64 labels, plus the augmentation that suits
    them: ``pad`` pixels of random translation and ``flip`` (random horizontal mirroring)."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    pad: int = 0
    flip: bool = False

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[2:])

    def describe(self) -> dict:
        """What a run's config.json records of its data."""
        return {"name": self.name, "image_size": list(self.image_size),
                "channels": self.in_channels, "classes": self.num_classes,
                "train": len(self.train_y), "test": len(self.test_y), "pad": self.pad,
                "flip": self.flip}

    def to(self, device) -> "Dataset":
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in
                                            ("train_x", "train_y", "test_x", "test_y")})


def load_dataset(name: str, data_dir=None, seed: int = 0, **kw) -> Dataset:
    """Load ``name`` (digits, gaussian, cifar10, cifar100).

    ``data_dir``: where the CIFAR archives are (default ``data``). ``seed`` draws the Gaussian
    images and labels (the digits split is fixed). Keyword arguments go to the dataset:
    ``gaussian(num_train, num_test, image_size, channels, num_classes)``, ``cifar(verify)``.
    """
    if name == "digits":
        return _finish("digits", *_digits(**kw), num_classes=10, pad=1, flip=False)
    if name == "gaussian":
        return _gaussian(seed=seed, **kw)
    if name in CIFAR:
        train_x, train_y, test_x, test_y = _cifar(name, Path(data_dir or "data"), **kw)
        return _finish(name, train_x, train_y, test_x, test_y, num_classes=CIFAR[name][6],
                       pad=4, flip=True)
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def _finish(name, train_x, train_y, test_x, test_y, num_classes, pad, flip) -> Dataset:
    """Per-channel normalisation with the training set's mean and standard deviation."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Dataset(name, ((train_x - mean) / std).contiguous(), train_y,
                   ((test_x - mean) / std).contiguous(), test_y, num_classes,
                   tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()), pad, flip)


def _digits(test_fraction=0.2):
    """The 8x8 digits (values 0..16), split 80/20 stratified by class with a fixed seed.

    Augmentation: 1-pixel translation (the paper's 4 pixels on 32, scaled to 8) and no flip,
    since a mirrored digit is another symbol (or none)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                   stratify=digits.target, random_state=0)
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    return x[train], y[train], x[test], y[test]


def _gaussian(seed=0, num_train=1024, num_test=256, image_size=32, channels=3, num_classes=10):
    """N(0, 1) images with uniformly random labels; no augmentation (there is nothing to keep
    invariant)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(num_train, num_test, channels, num_classes, *size) < 1:
        raise ValueError("gaussian: num_train, num_test, channels, num_classes and image_size "
                         "must be positive")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_train + num_test, channels, *size, generator=g)
    y = torch.randint(0, num_classes, (num_train + num_test,), generator=g)
    return _finish("gaussian", x[:num_train], y[:num_train], x[num_train:], y[num_train:],
                   num_classes=num_classes, pad=0, flip=False)


# ---- CIFAR ----------------------------------------------------------------------------------

def md5sum(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cifar(name, data_dir: Path, verify=True):
    """Read the official archive (checked against its md5 unless ``verify=False``) or, when only
    that exists, the folder it extracts to."""
    archive_name, md5, folder, train_members, test_member, label_key, _ = CIFAR[name]
    archive, extracted = data_dir / archive_name, data_dir / folder
    if archive.is_file():
        if verify and md5sum(archive) != md5:
            raise ValueError(f"{name}: {archive} is corrupt or not the official archive "
                             f"(md5 differs from {md5}); download it again from {CIFAR_URL}")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                read = lambda member: _unpickle(tar.extractfile(f"{folder}/{member}"))
                train = [read(m) for m in train_members]
                test = read(test_member)
        except (tarfile.TarError, KeyError, OSError, EOFError, pickle.UnpicklingError) as err:
            raise ValueError(f"{name}: cannot read {archive} ({err}); the official archive is "
                             f"published at {CIFAR_URL}") from None
    elif extracted.is_dir():
        paths = [extracted / m for m in train_members + [test_member]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{name}: {missing[0]} is missing; the official archive "
                                    f"{archive_name} is published at {CIFAR_URL}")
        *train, test = [_read_extracted(p, name, archive_name) for p in paths]
    else:
        raise FileNotFoundError(f"{name}: {archive} not found (nor its extracted folder {extracted}); "
                                f"download the official {archive_name} from {CIFAR_URL} into {data_dir}")
    try:
        train_x, train_y = zip(*(_images(b, label_key) for b in train))
        test_x, test_y = _images(test, label_key)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{name}: the batches in {data_dir} are not CIFAR batches ({err}); get the "
                         f"official {archive_name} from {CIFAR_URL}") from None
    return torch.cat(train_x), torch.cat(train_y), test_x, test_y


def _unpickle(f) -> dict:
    with f:
        return pickle.load(f, encoding="bytes")


def _read_extracted(path: Path, name: str, archive_name: str) -> dict:
    """One batch file of an extracted archive; a corrupt one is a ValueError naming it."""
    try:
        batch = _unpickle(open(path, "rb"))
        if not isinstance(batch, dict) or b"data" not in batch:
            raise ValueError("not a CIFAR batch")
        return batch
    except PermissionError:
        raise                                # not corrupt: unreadable (one line, resnet_lab.io.errors)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            UnicodeDecodeError, IndexError, OSError) as err:
        raise ValueError(f"{name}: {path} is corrupt ({type(err).__name__}); extract the official "
                         f"{archive_name} from {CIFAR_URL} again") from None


def _images(batch: dict, label_key: bytes):
    """A CIFAR batch: ``data`` uint8 (N, 3072) as R, G, B planes of 32x32; labels a list."""
    x = torch.from_numpy(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return x.float() / 255.0, torch.tensor(batch[label_key], dtype=torch.int64)


# ---- augmentation ---------------------------------------------------------------------------

def draw_augmentation(n: int, generator: torch.Generator, pad: int, flip: bool):
    """Random translations in [-pad, pad]^2 and flip decisions for ``n`` images, drawn on the
    generator's device. Drawing for the whole global batch and slicing gives every
    distributed rank the same transforms a single process would apply."""
    device = generator.device
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=device)
    flips = (torch.rand(n, generator=generator, device=device) < 0.5) if flip else None
    return offsets, flips


def apply_augmentation(x: torch.Tensor, offsets: torch.Tensor, flips, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, crop back to the original size at ``offsets`` (the paper's
    translation), mirror where ``flips``; all on ``x``'s device, one gather."""
    n, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, :1] + torch.arange(h, device=x.device)        # (n, h)
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)        # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True):
    """The paper's augmentation (4-pixel-pad translation and horizontal flip) of a batch."""
    return apply_augmentation(x, *draw_augmentation(len(x), generator, pad, flip), pad)


# ---- batching -------------------------------------------------------------------------------

class Batches:
    """Step ``s`` -> the indices of its batch: a seeded permutation per epoch, cut into
    ``n // batch_size`` batches (the remainder is dropped). A pure function of (seed, step), so
    a resumed run picks up at any step without saved sampler state."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch size must be between 1 and the training set size {n}, "
                             f"got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = None, None

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch = self.epoch(step)
        if epoch != self._epoch:
            # torch's CPU generator keeps 32 bits of a seed: mix (seed, epoch) into them.
            mixed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            g = torch.Generator().manual_seed(mixed)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        start = (step % self.steps_per_epoch) * self.batch_size
        return self._perm[start:start + self.batch_size]
