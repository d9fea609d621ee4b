"""MNIST-format image classification data, held whole in memory as tensors.

MNIST is small (70,000 28x28 images, about 220 MB as float32), so the whole dataset lives in
memory and batches are plain tensor slices: no DataLoader, no workers, and it can be moved to
the GPU once. The same loader reads any dataset in the MNIST file layout (Fashion-MNIST,
KMNIST, ...), which is why shapes and normalization statistics are read from the data rather
than hard-coded.

Splits. The test split is the standard 10,000-image test set. The validation split is the
LAST ``val_size`` images of the 60,000 training images (5,000 by default, as held out by
Frankle & Carbin 2019, giving 55,000/5,000/10,000); it is a fixed split, not a random one, so
every run and every machine sees the same validation images.

Padding. ``pad=2`` zero-pads every image by 2 pixels on each side (28x28 -> 32x32, the CIFAR shape
the paper's CNNs take) BEFORE normalizing: a border pixel is a black pixel, exactly like the black
background of the image, and the normalization statistics are those of the padded training images.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.errors import ConfigError, DataError
from lth.data.idx import read_idx

NUM_CLASSES = 10

# Standard file names of the MNIST layout; each may also be present gzipped, with ".gz" added.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Datasets vendored inside the package (see files/<name>/README.md), usable with data_dir=None.
EMBEDDED = ("mnist", "fashion-mnist")


def embedded_dir(name: str) -> Path:
    """Directory of the copy of ``name`` shipped inside the package."""
    return Path(__file__).resolve().parent / "files" / name


@dataclass
class Split:
    """One split of a dataset: normalized images ``x`` [N, C, H, W] float32 and labels ``y`` [N] int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split has {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        """A copy of this split on ``device`` (no copy if it is already there)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class ImageData:
    """A dataset split three ways, with what a model needs to know about its inputs and outputs.

    ``mean`` and ``std`` are the training-split pixel statistics (on the 0..1 scale) that were
    used to normalize every split; keep them to normalize new images the same way.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    shape: tuple  # (C, H, W) of one image, e.g. (1, 28, 28)
    mean: float | tuple = 0.0  # one value, or one per channel (CIFAR-10)
    std: float | tuple = 1.0

    def zero_value(self) -> torch.Tensor:
        """[C]: what a black (0) pixel is after normalization, per channel: ``-mean / std``. Padding
        with it after normalizing equals zero-padding the raw pixels (the augmentation does)."""
        c = self.shape[0]
        mean = torch.as_tensor(self.mean, dtype=torch.float32).expand(c)
        std = torch.as_tensor(self.std, dtype=torch.float32).expand(c)
        return (0.0 - mean) / std

    def to(self, device: torch.device | str) -> "ImageData":
        """A copy with every split on ``device``; move once, then slice batches there."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def find_file(data_dir: Path, stem: str) -> Path | None:
    """The plain file if present (fastest to read), else the ``.gz`` one, else None."""
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_files(data_dir: Path) -> dict[str, Path]:
    """Map each role in FILES to its path in ``data_dir``; name every missing file in one error."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory does not exist")
    found = {role: find_file(data_dir, stem) for role, stem in FILES.items()}
    missing = [f"{data_dir / FILES[role]}[.gz]" for role, path in found.items() if path is None]
    if missing:
        raise DataError(f"missing data file(s): {', '.join(missing)}")
    return found  # type: ignore[return-value]


def read_images(path: Path) -> np.ndarray:
    """Read an image file and check it is [N, H, W] uint8, as the MNIST layout specifies."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{path}: expected 3-D uint8 images [N, H, W], found {images.ndim}-D {images.dtype} "
            f"with shape {tuple(images.shape)}"
        )
    return images


def read_labels(path: Path, count: int, images_path: Path) -> np.ndarray:
    """Read a label file and check it is [N] uint8, one label per image, each < NUM_CLASSES."""
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{path}: expected 1-D uint8 labels [N], found {labels.ndim}-D {labels.dtype} "
            f"with shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != count:
        raise DataError(f"{path}: {labels.shape[0]} labels, but {images_path} has {count} images")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{NUM_CLASSES - 1} ({bad.size} such labels)"
        )
    return labels


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of the pixels on the 0..1 scale, computed exactly.

    A 256-bin histogram makes this exact and fast without materializing a float copy. A
    constant image set would have std 0; it gets std 1 so normalization stays finite.
    """
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    if total == 0:
        return 0.0, 1.0
    mean = float((counts * values).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / total)
    std = var**0.5
    return mean, (std if std > 0 else 1.0)


def to_split(images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> Split:
    """Normalize uint8 images to float32 [N, 1, H, W] as (x/255 - mean)/std; labels to int64."""
    x = torch.from_numpy(images).to(torch.float32)
    x.div_(255.0).sub_(mean).div_(std)
    y = torch.from_numpy(labels).to(torch.int64)
    return Split(x.unsqueeze(1), y)


def pad_images(images: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad uint8 images [N, H, W] by ``pad`` pixels on each side -> [N, H + 2 pad, W + 2 pad]."""
    if pad == 0:
        return images
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="constant", constant_values=0)


def check_val_size(val_size: int, num_train: int) -> None:
    """The validation split must leave at least one training image."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise ConfigError(f"val_size must be an integer, got {val_size!r}")
    if val_size < 0:
        raise ConfigError(f"val_size must be >= 0, got {val_size}")
    if val_size >= num_train:
        raise ConfigError(
            f"val_size {val_size} leaves no training images (the training files have {num_train})"
        )


def resolve_dir(data_dir: str | os.PathLike | None, name: str) -> Path:
    """The directory to read ``name`` from: the user's, or the embedded copy."""
    if data_dir is not None:
        return Path(data_dir)
    if name not in EMBEDDED:
        raise ConfigError(
            f"no embedded copy of dataset {name!r} (embedded: {', '.join(EMBEDDED)}); "
            f"pass data_dir, e.g. after lth.data.download_mnist(dir, name={name!r})"
        )
    return embedded_dir(name)


def load_mnist(
    data_dir: str | os.PathLike | None = None, *, name: str = "mnist", val_size: int = 5000,
    normalize: bool = True, pad: int = 0,
) -> ImageData:
    """Load an MNIST-format dataset into memory as train/val/test splits.

    ``data_dir=None`` reads the copy of MNIST embedded in the package, so the toolkit works
    offline. Otherwise ``data_dir`` must hold the four standard files, plain or ``.gz``.
    ``name`` labels the dataset (e.g. "fashion-mnist"). Validation is the last ``val_size``
    training images; normalization uses the mean and std of the remaining training images only,
    so nothing about validation or test data leaks into the inputs. ``normalize=False`` keeps
    pixels in [0, 1] (x / 255), as Frankle & Carbin (2019) fed them. ``pad`` zero-pads every image
    by that many pixels on each side before normalizing (``pad=2``: 28x28 -> 32x32).
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"pad must be an integer >= 0, got {pad!r}")
    paths = locate_files(resolve_dir(data_dir, name))
    train_images = read_images(paths["train_images"])
    train_labels = read_labels(paths["train_labels"], len(train_images), paths["train_images"])
    test_images = read_images(paths["test_images"])
    test_labels = read_labels(paths["test_labels"], len(test_images), paths["test_images"])
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataError(
            f"{paths['test_images']}: images are {test_images.shape[1]}x{test_images.shape[2]}, "
            f"but {paths['train_images']} has {train_images.shape[1]}x{train_images.shape[2]}"
        )
    check_val_size(val_size, len(train_images))
    train_images, test_images = pad_images(train_images, pad), pad_images(test_images, pad)
    cut = len(train_images) - int(val_size)
    mean, std = pixel_stats(train_images[:cut]) if normalize else (0.0, 1.0)
    return ImageData(
        name=name,
        train=to_split(train_images[:cut], train_labels[:cut], mean, std),
        val=to_split(train_images[cut:], train_labels[cut:], mean, std),
        test=to_split(test_images, test_labels, mean, std),
        num_classes=NUM_CLASSES,
        shape=(1, *train_images.shape[1:]),
        mean=mean,
        std=std,
    )
