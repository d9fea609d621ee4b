"""The CNN track's data (issue 11): the embedded Fashion-MNIST, its 32x32 padded task, CIFAR-10's loader,
per-channel normalization, batched augmentation and the CIFAR-10 download. One property per test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lth import lottery
from lth.data import load_mnist, read_idx
from lth.data.mnist import embedded_dir, pixel_stats
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
