"""The CNN track's data (issue 11): the embedded Fashion-MNIST, its 32x32 padded task, CIFAR-10's loader,
per-channel normalization, batched augmentation and the CIFAR-10 download. One property per test."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lth import lottery
from lth.data import load_mnist, read_idx
from lth.data.cifar import FILES as CIFAR_FILES
from lth.data.cifar import load_cifar10, read_batch
from lth.data.mnist import embedded_dir, pixel_stats
from lth.errors import ConfigError, DataError
from lth.presets import Config, validate
from lth.tasks import TASKS

FMNIST = embedded_dir("fashion-mnist")


@pytest.fixture(scope="module")
def fm32():
    """The fashion-mnist-32 task as the registry loads it (normalized), once for the module."""
    return lottery.load_task(Config(dataset="fashion-mnist-32"), "cpu")


@pytest.fixture(scope="module")
def raw_train():
    """The embedded Fashion-MNIST training images, uint8 [60000, 28, 28]."""
    return read_idx(FMNIST / "train-images-idx3-ubyte.gz")


# --- Fashion-MNIST, embedded ---------------------------------------------------------------------------


def test_fashion_mnist_is_embedded_and_needs_no_data_dir():
    for name in ("fashion-mnist", "fashion-mnist-32"):
        assert not TASKS.get(name).needs_data_dir
        validate(Config(dataset=name))  # no --data-dir needed


def test_fashion_mnist_32_has_the_cifar_shape_and_the_fixed_55000_5000_10000_split(fm32):
    d = fm32.data
    assert fm32.shape == (1, 32, 32) and fm32.num_classes == 10
    assert TASKS.get("fashion-mnist-32").shape(Config(dataset="fashion-mnist-32")) == ((1, 32, 32), 10)
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert tuple(d.train.x.shape) == (55000, 1, 32, 32) and d.test.x.shape[1:] == (1, 32, 32)
    labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    assert torch.equal(d.val.y, torch.from_numpy(labels[-5000:]).long())  # the last 5,000, as mnist.py


def test_fashion_mnist_32_pads_two_zero_pixels_each_side_before_normalizing(fm32, raw_train):
    d = fm32.data
    padded = np.zeros((60000, 32, 32), np.uint8)
    padded[:, 2:30, 2:30] = raw_train
    # exactly (x / 255 - mean) / std of the zero-padded uint8 images, border included
    want = torch.from_numpy(padded[:55000]).float().div_(255.0).sub_(d.mean).div_(d.std).unsqueeze(1)
    assert torch.equal(d.train.x, want)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(d.train.x[:, 0, border] == d.zero_value()[0])  # a border pixel is a black pixel


def test_fashion_mnist_32_is_normalized_by_the_padded_training_split_alone(fm32, raw_train):
    d = fm32.data
    padded = np.pad(raw_train[:55000], ((0, 0), (2, 2), (2, 2)))
    assert (d.mean, d.std) == pixel_stats(padded)
    assert abs(float(d.train.x.mean())) < 1e-4 and abs(float(d.train.x.std()) - 1) < 1e-4


def test_fashion_mnist_32_without_normalize_keeps_pixels_in_0_1_and_a_zero_border():
    d = load_mnist(name="fashion-mnist", pad=2, normalize=False, val_size=59990)  # a small train split
    assert d.train.x.min() == 0 and d.train.x.max() <= 1 and torch.all(d.train.x[..., :2, :] == 0)
    assert torch.all(d.train.x[..., :, 30:] == 0) and torch.all(d.zero_value() == 0)


# --- CIFAR-10: the python batches, read without trusting pickle -----------------------------------------


class Py2Pickler(pickle._Pickler):
    """Writes a batch the way the real files were written (Python 2's cPickle, protocol 2): every string
    as a byte-string opcode (so ``encoding='bytes'`` loads it as bytes) and numpy's ``_reconstruct`` under
    its numpy 1 name, ``numpy.core.multiarray`` (pickle.dump of Python 3 would add ``_codecs.encode``
    calls for bytes, which the real files do not have)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes], dispatch[str] = save_bytes, save_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(n: int, seed: int, label: str = "training batch") -> dict:
    """A batch dict as in the real files: bytes keys, uint8 data [n, 3072], a list of int labels."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": label.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


def write_cifar(root: Path, n: int = 8, n_test: int = 6) -> Path:
    """The six batch files of a small CIFAR-10 (n images per training batch) in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_FILES):
        batch = cifar_batch(n_test if name == "test_batch" else n, seed=i, label=name)
        (root / name).write_bytes(py2_pickle(batch))
    return root


def batch_of(path: Path) -> dict:
    return pickle.loads(path.read_bytes(), encoding="bytes")  # our own test files only


def test_the_test_batches_have_the_real_files_format(tmp_path):
    ops = {(op.name, arg) for op, arg, _ in pickletools.genops(py2_pickle(cifar_batch(2, 0)))}
    globals_ = {arg for name, arg in ops if name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert ("PROTO", 2) in ops and ("SHORT_BINSTRING", "data") in ops


def test_cifar_loader_reads_the_six_batches_into_images_and_a_fixed_split(tmp_path):
    d = write_cifar(tmp_path / "c")
    data = load_cifar10(d, val_size=10, normalize=False)
    assert data.shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 6)
    rows = np.concatenate([batch_of(d / f)[b"data"] for f in CIFAR_FILES[:5]])
    labels = np.concatenate([batch_of(d / f)[b"labels"] for f in CIFAR_FILES[:5]])
    x = torch.cat([data.train.x, data.val.x]).mul(255).round().to(torch.uint8)
    # a row is 1024 red, 1024 green, 1024 blue, each 32x32 row-major: pixel (c, h, w) at c*1024 + h*32 + w
    assert torch.equal(x.reshape(40, 3072), torch.from_numpy(rows))
    assert x[7, 2, 5, 9] == rows[7, 2 * 1024 + 5 * 32 + 9]
    assert torch.equal(data.val.y, torch.from_numpy(labels[-10:]).long())  # the last val_size, fixed
    assert torch.equal(data.test.y, torch.tensor(batch_of(d / "test_batch")[b"labels"]))


def test_cifar_loader_finds_the_directory_the_archive_unpacks_into(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    assert len(load_cifar10(tmp_path, val_size=10).test) == 6


def test_cifar_is_normalized_per_channel_by_the_training_split_alone(tmp_path):
    d = write_cifar(tmp_path / "c")
    last = batch_of(d / "data_batch_5")
    last[b"data"][-10:] = 255  # the validation images: would move every statistic if they leaked in
    (d / "data_batch_5").write_bytes(py2_pickle(last))
    data = load_cifar10(d, val_size=10)
    train = np.concatenate([batch_of(d / f)[b"data"] for f in CIFAR_FILES[:5]])[:-10].reshape(-1, 3, 1024) / 255
    np.testing.assert_allclose(data.mean, train.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(data.std, train.std(axis=(0, 2)), rtol=1e-12)
    per_channel = data.train.x.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-5)


def test_cifar10_task_needs_a_data_dir_holding_the_six_files(tmp_path):
    entry = TASKS.get("cifar10")
    assert entry.needs_data_dir and entry.shape(Config(dataset="cifar10")) == ((3, 32, 32), 10)
    with pytest.raises(ConfigError, match="needs --data-dir"):
        validate(Config(dataset="cifar10"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="test_batch") as e:
        validate(Config(dataset="cifar10", data_dir=str(tmp_path / "empty")))
    assert "\n" not in str(e.value)
    validate(Config(dataset="cifar10", data_dir=str(write_cifar(tmp_path / "c"))))


def test_a_missing_cifar_file_is_one_line_naming_it(tmp_path):
    d = write_cifar(tmp_path / "c")
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as e:
        load_cifar10(d, val_size=10)
    assert "\n" not in str(e.value) and "test_batch" not in str(e.value)


@pytest.mark.parametrize("keep", [0, 1, 40, 200, 1000, -1])
def test_a_truncated_cifar_batch_is_one_line_naming_it(tmp_path, keep):
    d = write_cifar(tmp_path / "c")
    raw = (d / "data_batch_2").read_bytes()
    (d / "data_batch_2").write_bytes(raw[:keep])
    with pytest.raises(DataError, match=f"^{d / 'data_batch_2'}: ") as e:
        load_cifar10(d, val_size=10)
    assert "\n" not in str(e.value)


def _wrong(batch: dict, what: str) -> object:
    if what == "no labels key":
        del batch[b"labels"]
    elif what == "3071 pixels":
        batch[b"data"] = batch[b"data"][:, :3071]
    elif what == "float pixels":
        batch[b"data"] = batch[b"data"].astype(np.float32)
    elif what == "label 10":
        batch[b"labels"][3] = 10
    elif what == "label -1":
        batch[b"labels"][0] = -1
    elif what == "a label short":
        batch[b"labels"].pop()
    elif what == "labels as strings":
        batch[b"labels"] = [b"cat"] * len(batch[b"labels"])
    elif what == "not a dict":
        return [batch[b"data"]]
    return batch


@pytest.mark.parametrize("what, says", [
    ("no labels key", "no b'labels' key"), ("3071 pixels", r"\(8, 3071\), expected uint8 \[N, 3072\]"),
    ("float pixels", "float32"), ("label 10", "label 10 at index 3 is out of range 0..9"),
    ("label -1", "label -1 at index 0"), ("a label short", "7 labels for 8 images"),
    ("labels as strings", "expected ints"), ("not a dict", "not a CIFAR-10 batch"),
])
def test_a_cifar_batch_with_a_wrong_shape_or_labels_is_one_line_naming_it(tmp_path, what, says):
    d = write_cifar(tmp_path / "c")
    (d / "data_batch_4").write_bytes(py2_pickle(_wrong(batch_of(d / "data_batch_4"), what)))
    with pytest.raises(DataError, match=f"^{d / 'data_batch_4'}: .*{says}") as e:
        load_cifar10(d, val_size=10)
    assert "\n" not in str(e.value)


class _Hostile:
    """Unpickling calls ``func(arg)``: what a malicious data file does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])  # protocol 2 names exec __builtin__.exec
def test_a_hostile_pickle_is_refused_naming_the_global_without_running_anything(tmp_path, how):
    marker = tmp_path / "ran"
    payload = (_Hostile(os.system, f"touch {marker}") if how == "os.system" else
               _Hostile(exec, f"open({str(marker)!r}, 'w').close()"))
    d = write_cifar(tmp_path / "c")
    batch = batch_of(d / "data_batch_1")
    batch[b"filenames"][0] = payload  # hidden inside an otherwise valid batch
    raw = py2_pickle(batch)
    (d / "data_batch_1").write_bytes(raw)
    with pytest.raises(DataError, match=r"data_batch_1: refused pickle global ((posix|os)\.system|__builtin__\.exec) "):
        load_cifar10(d, val_size=10)
    assert not marker.exists()  # nothing in the file ran
    pickle.loads(raw, encoding="bytes")  # the control: plain pickle runs the payload
    assert marker.exists()


def test_a_numpy_2_pickle_of_a_batch_loads_too(tmp_path):
    d = write_cifar(tmp_path / "c")
    batch = batch_of(d / "test_batch")
    raw = pickle.dumps(batch, protocol=4)  # numpy 2 names numpy._core.multiarray; bytes need no _codecs
    assert b"numpy._core.multiarray" in raw
    (d / "test_batch").write_bytes(raw)
    assert torch.equal(load_cifar10(d, val_size=10).test.y, torch.tensor(batch[b"labels"]))


def test_a_pickle_cannot_build_an_array_except_from_its_own_bytes(tmp_path):
    # numpy.ndarray called directly (a huge allocation from a few bytes) is refused; only the empty array
    # numpy's own pickles start from can be made
    raw = (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R.")  # ndarray((2**30,))
    (tmp_path / "x").write_bytes(raw)
    with pytest.raises(DataError, match="refused a direct numpy.ndarray call"):
        read_batch(tmp_path / "x")
    raw = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85U\x01b\x87R."
    (tmp_path / "y").write_bytes(raw)
    with pytest.raises(DataError, match="refused numpy array reconstruction"):
        read_batch(tmp_path / "y")
