"""CIFAR-10 from its standard python batches, read without trusting pickle.

The files of ``cifar-10-python.tar.gz`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) are
protocol-2 pickles written by Python 2: each a dict with ``b'data'`` (a uint8 numpy array [10000, 3072],
each row the 1024 red, then green, then blue pixels of a 32x32 image, row-major), ``b'labels'`` (a list
of 10,000 ints in 0..9), ``b'batch_label'`` and ``b'filenames'``. Unpickling runs whatever callables a
file names, so a data file must never be loaded with ``pickle.load``: :class:`BatchUnpickler` admits
only the three globals a numpy array needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``; numpy 2 spells the first ``numpy._core.multiarray``) and refuses any other, naming it,
before anything in the file has run. Even those three are admitted as narrow stand-ins: ``ndarray`` is
a marker that only ``_reconstruct`` accepts, and ``_reconstruct`` makes only the empty array numpy's own
pickles start from, so a file cannot allocate more than its own bytes.

Every problem a file can have (missing, truncated, not a pickle, a refused global, a wrong key, shape,
dtype or label) is a one-line :class:`lth.errors.DataError` that starts with the file's path.

Splits. The test split is ``test_batch`` (10,000 images). The validation split is the LAST ``val_size``
of the 50,000 training images (5,000 by default: 45,000 / 5,000 / 10,000), a fixed split as in
``lth.data.mnist``. Normalization is per channel, with the mean and std of the training split alone.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from lth.data.idx import one_line, read_bytes
from lth.data.mnist import ImageData, Split, check_val_size, pixel_stats
from lth.errors import ConfigError, DataError

NUM_CLASSES = 10
SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FILES = (*TRAIN_FILES, TEST_FILE)
SUBDIR = "cifar-10-batches-py"  # the directory the archive unpacks into


class _Refused(DataError):
    """A pickle asked for something a CIFAR-10 batch never holds (filled in with the path by the loader)."""


class _Marker:
    """What the pickle gets for ``numpy.ndarray``: usable only as ``_reconstruct``'s first argument."""

    def __call__(self, *args, **kwargs):
        raise _Refused("refused a direct numpy.ndarray call (numpy's pickles go through _reconstruct)")


_NDARRAY = _Marker()


def _reconstruct(cls, shape, typecode):
    """Stand-in for numpy's ``_reconstruct``: the empty array numpy's pickles start from, nothing else
    (the BUILD that follows sets its real shape, dtype and bytes, all read from the file)."""
    if cls is not _NDARRAY or tuple(shape) != (0,):
        raise _Refused(f"refused numpy array reconstruction with {one_line(repr((shape, typecode)))[:80]}")
    return np.empty((0,), dtype=np.int8)


def _dtype(spec, align=False, copy=False):
    """``numpy.dtype`` for plain numeric types (Python 2 wrote the spec as bytes, e.g. ``b'u1'``)."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise _Refused(f"refused numpy dtype {one_line(repr(spec))[:40]}")
    try:
        dt = np.dtype(spec, align=align, copy=copy)
    except TypeError as exc:
        raise _Refused(f"bad numpy dtype {spec!r}: {one_line(exc)}") from None
    if dt.kind not in "biuf":
        raise _Refused(f"refused numpy dtype {spec!r} (kind {dt.kind!r}: not a number)")
    return dt


# (module, name) -> what a CIFAR-10 pickle gets for it; every other global is refused.
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 (and the real files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch (``encoding='bytes'``: Python 2's strings stay bytes); refuses every
    global outside :data:`ALLOWED` in ``find_class``, which runs when the pickle NAMES a global, before
    it can be called."""

    def __init__(self, file):
        super().__init__(file, encoding="bytes")

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"refused pickle global {one_line(module)[:100]}.{one_line(name)[:100]} (a CIFAR-10 "
                           f"batch holds only numpy arrays, lists, numbers and strings)") from None

    def persistent_load(self, pid):
        raise _Refused("refused a persistent id (a CIFAR-10 batch has none)")


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 [N, 3, 32, 32], labels uint8 [N]), every field checked."""
    raw = read_bytes(path)  # one-line errors for a missing or unreadable file
    try:
        batch = BatchUnpickler(io.BytesIO(raw)).load()
    except _Refused as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # untrusted bytes: whatever the unpickler or numpy raise is a broken file
        detail = one_line(exc)[:200] or "no detail"
        raise DataError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {detail})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a pickled {type(batch).__name__}, not a dict)")

    def field(key: str):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise DataError(f"{path}: not a CIFAR-10 batch: no {key.encode()!r} key (keys: "
                        f"{one_line(sorted(map(repr, batch)))[:200]})")

    data, labels = field("data"), field("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        what = (f"{data.ndim}-D {data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{path}: b'data' is {what}, expected uint8 [N, {PIXELS}]")
    if len(data) == 0:
        raise DataError(f"{path}: b'data' holds no images")
    if isinstance(labels, (list, tuple)) and not all(type(v) is int for v in labels):
        bad = next(v for v in labels if type(v) is not int)
        raise DataError(f"{path}: b'labels' holds {type(bad).__name__} {one_line(repr(bad))[:40]}, expected ints")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: b'labels' is {labels.ndim}-D {labels.dtype}, expected a list of ints")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"{path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                        f"0..{NUM_CLASSES - 1} ({bad.size} such labels)")
    if not data.flags.writeable:  # numpy may keep the pickle's bytes as the buffer
        data = data.copy()
    return data.reshape(len(data), *SHAPE), labels.astype(np.uint8)


def locate(data_dir: str | os.PathLike) -> Path:
    """The directory holding the six batch files: ``data_dir`` itself or its ``cifar-10-batches-py``
    (where the archive unpacks); a missing directory or file is one line naming what is missing."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory does not exist")
    for d in (root, root / SUBDIR):
        if all((d / f).is_file() for f in FILES):
            return d
    base = root / SUBDIR if (root / SUBDIR).is_dir() else root
    missing = [str(base / f) for f in FILES if not (base / f).is_file()]
    raise DataError(f"missing CIFAR-10 file(s): {', '.join(missing)} (fetch them with "
                    f"`lth data download cifar10 --data-dir {root}`)")


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the 0..1 scale of uint8 images [N, C, H, W], exact
    (a histogram per channel, as :func:`lth.data.mnist.pixel_stats`)."""
    stats = [pixel_stats(np.ascontiguousarray(images[:, c])) for c in range(images.shape[1])]
    return tuple(m for m, _ in stats), tuple(s for _, s in stats)


def to_split(images: np.ndarray, labels: np.ndarray, mean, std) -> Split:
    """uint8 [N, C, H, W] -> float32 (x / 255 - mean[c]) / std[c]; labels to int64."""
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
    x.div_(torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))
    return Split(x, torch.from_numpy(labels).to(torch.int64))


def load_cifar10(data_dir: str | os.PathLike, *, val_size: int = 5000, normalize: bool = True) -> ImageData:
    """CIFAR-10 from ``data_dir`` (see :func:`locate`) as train/val/test splits of [N, 3, 32, 32].

    Validation is the last ``val_size`` training images; the per-channel mean and std come from the rest
    (the training split) alone. ``normalize=False`` keeps pixels in [0, 1].
    """
    if data_dir is None:
        raise ConfigError("CIFAR-10 is not embedded: give data_dir (see `lth data download cifar10 --data-dir DIR`)")
    d = locate(data_dir)
    batches = [read_batch(d / f) for f in TRAIN_FILES]
    train_images = np.concatenate([b[0] for b in batches])
    train_labels = np.concatenate([b[1] for b in batches])
    del batches
    test_images, test_labels = read_batch(d / TEST_FILE)
    check_val_size(val_size, len(train_images))
    cut = len(train_images) - int(val_size)
    mean, std = channel_stats(train_images[:cut]) if normalize else ((0.0,) * 3, (1.0,) * 3)
    return ImageData(
        name="cifar10",
        train=to_split(train_images[:cut], train_labels[:cut], mean, std),
        val=to_split(train_images[cut:], train_labels[cut:], mean, std),
        test=to_split(test_images, test_labels, mean, std),
        num_classes=NUM_CLASSES,
        shape=SHAPE,
        mean=mean,
        std=std,
    )
