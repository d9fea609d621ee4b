"""Datasets: MNIST-format and CIFAR-10 image data held in memory as tensors, plus IDX I/O and downloads.

``load_mnist()`` with no arguments reads the copy of MNIST embedded in the package.
"""

from lth.data.cifar import load_cifar10
from lth.data.download import MIRRORS, SHA256, download, download_cifar10, download_dataset, download_mnist
from lth.data.idx import read_idx, write_idx
from lth.data.mnist import ImageData, Split, load_mnist

__all__ = [
    "ImageData",
    "MIRRORS",
    "SHA256",
    "Split",
    "download",
    "download_cifar10",
    "download_dataset",
    "download_mnist",
    "load_cifar10",
    "load_mnist",
    "read_idx",
    "write_idx",
]
