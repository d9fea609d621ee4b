"""The CNN track's data (issue 11): the embedded Fashion-MNIST, its 32x32 padded task, CIFAR-10's loader,
per-channel normalization, batched augmentation and the CIFAR-10 download. One property per test."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import pickletools
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lth import lottery
from lth.data import download_cifar10, load_mnist, read_idx
from lth.data.cifar import FILES as CIFAR_FILES
from lth.data.cifar import channel_stats, load_cifar10, read_batch
from lth.data.cifar import to_split as cifar_to_split
from lth.data.mnist import ImageData, embedded_dir, pixel_stats
from lth.errors import ConfigError, DataError
from lth.presets import Config, validate
from lth.tasks import TASKS
from lth.tasks.augment import random_crop_flip
from lth.tasks.classify import ImageClassification

FMNIST = embedded_dir("fashion-mnist")
D = importlib.import_module("lth.data.download")  # the module (lth.data.download is also a function's name)


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


# --- augmentation: 4-pixel zero pad-and-crop and horizontal flip, batched --------------------------------


def toy_images(n: int = 64, c: int = 3, seed: int = 0) -> ImageData:
    """A small normalized image dataset [n, c, 32, 32] with per-channel statistics, val and test of 16."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n + 32, c, 32, 32), generator=g).numpy().astype(np.uint8)
    mean, std = channel_stats(raw[:n])
    y = torch.randint(0, 10, (n + 32,), generator=g).numpy().astype(np.uint8)
    split = lambda a, b: cifar_to_split(raw[a:b], y[a:b], mean, std)  # noqa: E731
    return ImageData("toy", split(0, n), split(n, n + 16), split(n + 16, n + 32), 10, (c, 32, 32), mean, std)


def shifted(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int = 4) -> np.ndarray:
    """The reference, one image at a time: zero-pad by ``pad``, crop at shift (dy, dx), then mirror."""
    c, h, w = img.shape
    big = np.zeros((c, h + 2 * pad, w + 2 * pad), img.dtype)
    big[:, pad : pad + h, pad : pad + w] = img
    out = big[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return out[:, :, ::-1] if flip else out


def test_crops_shift_by_at_most_4_pixels_each_way_and_pad_with_zeros():
    img = 1 + np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)  # every pixel its own nonzero value
    torch.manual_seed(0)
    out = random_crop_flip(torch.from_numpy(img).expand(400, 2, 32, 32)).numpy()
    candidates = {shifted(img, dy, dx, f).tobytes(): (dy, dx, f)
                  for dy in range(-4, 5) for dx in range(-4, 5) for f in (False, True)}
    found = [candidates.get(o.tobytes()) for o in out]
    assert None not in found  # each output is one zero-padded shift within ±4, maybe mirrored
    assert {d[0] for d in found} == {d[1] for d in found} == set(range(-4, 5))  # every offset occurs
    assert 0.35 < np.mean([d[2] for d in found]) < 0.65


def test_flips_mirror_left_right_about_half_the_images():
    x = torch.randn(2000, 1, 4, 6)
    torch.manual_seed(1)
    out = random_crop_flip(x, pad=0)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(flipped | (out == x).flatten(1).all(1))
    assert 1000 - 5 * 23 < int(flipped.sum()) < 1000 + 5 * 23  # binomial(2000, 1/2): sd 22.4


def test_augmenting_normalized_images_pads_with_a_normalized_black_pixel():
    d = toy_images()
    raw = d.train.x * torch.tensor(d.std).view(3, 1, 1) + torch.tensor(d.mean).view(3, 1, 1)  # back to [0, 1]
    torch.manual_seed(2)
    a = random_crop_flip(d.train.x, fill=d.zero_value())
    torch.manual_seed(2)
    b = (random_crop_flip(raw) - torch.tensor(d.mean).view(3, 1, 1)) / torch.tensor(d.std).view(3, 1, 1)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(d.zero_value(), -torch.tensor(d.mean, dtype=torch.float32) / torch.tensor(d.std))


def test_augmentation_keeps_shape_dtype_and_leaves_its_input_alone():
    x = torch.randn(2, 5, 3, 32, 32)
    before = x.clone()
    out = random_crop_flip(x, fill=torch.tensor([1.0, 2.0, 3.0]))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)


def test_augmentation_is_deterministic_under_a_fixed_generator_seed():
    x = torch.randn(32, 3, 32, 32)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(random_crop_flip(x))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_each_member_gets_its_own_crops_and_flips_of_the_same_images():
    idx = torch.arange(16).expand(2, 16)  # both members draw the same images
    torch.manual_seed(0)
    x, y = ImageClassification(toy_images(), augment=True).batch(idx)
    assert x.shape == (2, 16, 3, 32, 32) and torch.equal(y[0], y[1]) and not torch.equal(x[0], x[1])
    x, _ = ImageClassification(toy_images(), augment=False).batch(idx)
    assert torch.equal(x[0], x[1])


def test_validation_and_test_inputs_are_never_augmented():
    task = ImageClassification(toy_images(), augment=True)
    for split in ("val", "test"):
        seen = []
        state = torch.get_rng_state()
        task.evaluate(lambda xb: seen.append(xb[0].clone()) or torch.zeros(*xb.shape[:2], 10), 1, split)
        assert torch.equal(torch.cat(seen), getattr(task.data, split).x)
        assert torch.equal(torch.get_rng_state(), state)  # nothing drawn either


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "text"])
def test_augment_on_a_task_without_augmentation_is_a_one_line_error(dataset):
    model = "gpt_cpu" if dataset == "text" else "lenet_300_100"
    with pytest.raises(ConfigError, match=f"dataset {dataset} has no augmentation") as e:
        validate(Config(dataset=dataset, model=model, augment=True))
    assert "\n" not in str(e.value)
    validate(Config(dataset=dataset, model=model, augment=False))


def test_augment_is_a_config_field_and_a_flag():
    from lth.cli import config_from_args, parser

    args = parser().parse_args(["lottery", "mnist_quick", "--out", "x", "--dataset", "fashion-mnist-32",
                                "--augment", "true"])
    assert config_from_args(args).augment is True
    assert Config().augment is None  # off, and a config.json from before the field still resumes


def test_a_resumed_run_trains_on_the_augmented_batches_the_uninterrupted_one_did():
    """As test_train_features' augmentation test, through lth.train: batches at step s are equal after a
    resume at step 3, whatever drew from the generator in between."""
    from lth.ensemble import Ensemble
    from lth.models.lenet import LeNet
    from lth.train import Batches, TrainSpec, train

    task = ImageClassification(toy_images(n=200), augment=True)

    class Recording:
        def __init__(self, inner):
            self.inner, self.train_size, self.seen = inner, inner.train_size, []

        def batch(self, idx):
            x, y = self.inner.batch(idx)
            self.seen.append(x.clone())
            return x, y

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def run(start):
        template = LeNet(in_features=3 * 32 * 32)
        ens = Ensemble(template, [lottery.init_state(template, s, "glorot_normal") for s in (0, 1)])
        rec = Recording(task)
        train(ens, {}, rec, TrainSpec(iterations=6, batch_size=16, lr=1e-2, eval_every=10**6), [0, 1], start=start)
        return rec.seen

    whole = run(0)
    torch.randn(7)  # whatever else draws from the generator changes nothing
    resumed = run(3)
    assert len(whole) == 6 and len(resumed) == 3
    assert all(torch.equal(whole[s], resumed[s - 3]) for s in range(3, 6))
    plain = ImageClassification(task.data).batch(Batches([0, 1], 200, 16)(3))[0]
    assert not torch.equal(whole[3], plain)  # and they are augmented


def test_a_killed_augmented_fashion_mnist_32_run_resumes_like_an_uninterrupted_one(tmp_path, monkeypatch):
    """As test_lottery's killed-level test, on the real task with augmentation (the dense level alone, to stay
    quick): the continued run's batches are the uninterrupted run's, so its rows and weights are identical."""
    import csv

    from killing import kill_after_snapshot

    from lth.io import load_tensors

    cfg = Config(name="tiny", dataset="fashion-mnist-32", augment=True, iterations=20, eval_every=10, levels=0,
                 trials=2)
    real, loaded = lottery.load_task, []  # the task is loaded once, through the registry, and reused

    def load_once(cfg, device):
        if not loaded:
            loaded.append(real(cfg, device))
        return loaded[0]

    monkeypatch.setattr(lottery, "load_task", load_once)
    lottery.run(cfg, tmp_path / "whole", progress=False)
    assert loaded[0].augment
    kill_after_snapshot(monkeypatch, lambda: lottery.run(cfg, tmp_path / "killed", progress=False), 10)
    assert (tmp_path / "killed" / "level_00" / "partial.json").exists()
    lottery.run(cfg, tmp_path / "killed", progress=False)

    def timeless(out):
        with open(out / "results.csv") as f:
            # sorted within a row too: a level resumed from its snapshot writes the columns in another order
            return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "train_seconds")) for r in csv.DictReader(f))

    assert timeless(tmp_path / "killed") == timeless(tmp_path / "whole")
    for trial in (0, 1):
        a = load_tensors(tmp_path / "whole" / "level_00" / f"ticket_trial{trial}.safetensors")
        b = load_tensors(tmp_path / "killed" / "level_00" / f"ticket_trial{trial}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


# --- lth data download cifar10: verified, only the six batches extracted, no network --------------------


def _tarinfo(name: str, data: bytes | None = None, link: str | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    else:
        info.size = len(data)
    return info, data


def serve_archive(tmp_path: Path, monkeypatch, *, batches: dict[str, bytes] | None = None, extra=(),
                  cut: int | None = None) -> str:
    """Build a small cifar-10-python.tar.gz locally; make the module's checksums those of it (its bytes and
    the batches'); return a file:// base URL that serves it (urllib reads file:// like http)."""
    src = write_cifar(tmp_path / "src")
    batches = batches if batches is not None else {f: (src / f).read_bytes() for f in CIFAR_FILES}
    srv = tmp_path / "srv"
    srv.mkdir()
    archive = srv / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in [*extra, *(_tarinfo(f"cifar-10-batches-py/{f}", b) for f, b in batches.items())]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = archive.read_bytes()[:cut]
    archive.write_bytes(raw)
    monkeypatch.setattr(D, "CIFAR10_SHA256", hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(D, "CIFAR10_MD5", hashlib.md5(raw).hexdigest())
    monkeypatch.setattr(D, "CIFAR10_MEMBERS", {f: hashlib.md5((src / f).read_bytes()).hexdigest() for f in CIFAR_FILES})
    return srv.as_uri()


def test_download_puts_the_six_verified_batches_in_place_and_nothing_else(tmp_path, monkeypatch):
    hostile = [_tarinfo("../escape", b"x"), _tarinfo(str(tmp_path / "absolute"), b"x"),
               _tarinfo("cifar-10-batches-py/batches.meta", link="/etc/passwd"),
               _tarinfo("cifar-10-batches-py/readme.html", b"<html>")]
    url = serve_archive(tmp_path, monkeypatch, extra=hostile)
    dest = tmp_path / "data" / "cifar"
    download_cifar10(dest, base_url=url)
    assert sorted(p.name for p in dest.iterdir()) == sorted(CIFAR_FILES)  # no temp files, no extras
    assert not (tmp_path / "escape").exists() and not (tmp_path / "absolute").exists()
    assert not (tmp_path / "data" / "escape").exists()
    for f in CIFAR_FILES:
        assert (dest / f).read_bytes() == (tmp_path / "src" / f).read_bytes()
    assert len(load_cifar10(dest, val_size=10).train) == 30


def test_download_refuses_an_archive_whose_checksum_differs_and_leaves_nothing(tmp_path, monkeypatch):
    url = serve_archive(tmp_path, monkeypatch)
    monkeypatch.setattr(D, "CIFAR10_SHA256", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch: expected SHA-256 0000") as e:
        download_cifar10(tmp_path / "d", base_url=url)
    assert "\n" not in str(e.value) and list((tmp_path / "d").iterdir()) == []


def test_download_refuses_a_link_in_place_of_a_batch(tmp_path, monkeypatch):
    batches = {f: (write_cifar(tmp_path / "b") / f).read_bytes() for f in CIFAR_FILES[:5]}
    url = serve_archive(tmp_path, monkeypatch, batches=batches,
                        extra=[_tarinfo("cifar-10-batches-py/test_batch", link="../../secret")])
    with pytest.raises(DataError, match="member cifar-10-batches-py/test_batch is not a regular file"):
        download_cifar10(tmp_path / "d", base_url=url)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_truncated_archive_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    url = serve_archive(tmp_path, monkeypatch, cut=3000)  # its checksums made to match: only tar can tell
    with pytest.raises(DataError, match="corrupt or truncated archive") as e:
        download_cifar10(tmp_path / "d", base_url=url)
    assert "\n" not in str(e.value) and list((tmp_path / "d").iterdir()) == []


def test_lth_data_download_cifar10_fetches_once_then_finds_the_files_in_place(tmp_path, monkeypatch, capsys):
    from lth.cli import main

    url = serve_archive(tmp_path, monkeypatch)
    dest = tmp_path / "d"
    assert main(["data", "download", "cifar10", "--data-dir", str(dest), "--base-url", url]) == 0
    (tmp_path / "srv" / "cifar-10-python.tar.gz").unlink()  # a second fetch would fail now
    assert main(["data", "download", "cifar10", "--data-dir", str(dest), "--base-url", url]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(CIFAR_FILES)
