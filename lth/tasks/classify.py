"""Image classification on in-memory tensors (MNIST, Fashion-MNIST, CIFAR-10): cross-entropy and accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import ImageData
from ..errors import DataError
from .augment import random_crop_flip


class ImageClassification:
    """``augment``: training batches get the CIFAR augmentation (:mod:`lth.tasks.augment`: 4-pixel zero
    pad-and-crop, horizontal flip), drawn from torch's generator; evaluation never does. ``train_images``:
    steps draw from the first N training images only (``Config.train_images``)."""

    metrics = ("loss", "acc")

    def __init__(self, data: ImageData, *, augment: bool = False, train_images: int | None = None):
        for split in ("train", "val", "test"):  # an empty split would train on nothing or report NaN
            if len(getattr(data, split)) == 0:
                raise DataError(f"{data.name}: the {split} split has 0 images; check the data files "
                                f"(and val_size)")
        self.data = data
        # train_images: train on the first N training images only (normalization statistics and the
        # validation split stay those of the whole training split)
        self.train_size = len(data.train) if train_images is None else min(int(train_images), len(data.train))
        self.shape = tuple(data.shape)
        self.num_classes = data.num_classes
        self.augment = bool(augment)
        self.fill = data.zero_value().to(data.train.x.device)  # a black pixel, normalized: the padding

    def to(self, device) -> "ImageClassification":
        self.data = self.data.to(device)
        self.fill = self.fill.to(device)
        return self

    def batch(self, idx: torch.Tensor):
        """idx: [M, B] indices into the training split -> x [M, B, C, H, W], y [M, B] (augmented if asked:
        each member's images with their own crops and flips)."""
        x, y = self.data.train.x, self.data.train.y
        flat = idx.to(x.device).reshape(-1)
        # index_select on dim 0 gathers rows about twice as fast as advanced indexing here
        xb = x.index_select(0, flat).view(*idx.shape, *x.shape[1:])
        if self.augment:
            xb = random_crop_flip(xb, fill=self.fill)
        return xb, y.index_select(0, flat).view(idx.shape)

    @staticmethod
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over members of each member's mean cross-entropy (so each gets its own gradient)."""
        m, b = y.shape
        return F.cross_entropy(out.reshape(m * b, -1), y.reshape(-1)) * m

    @torch.no_grad()
    def evaluate(self, forward, members: int, split: str, *, chunk: int = 5000, rank: int = 0, world: int = 1):
        """Summed loss and correct counts per member over this rank's share of the split.

        Returns a dict of [M] float64 tensors of *sums* plus 'n'; the caller all-reduces across ranks
        and divides, so data-parallel evaluation gives the same numbers as one process.
        """
        s = getattr(self.data, split)
        x, y = s.x[rank::world], s.y[rank::world]
        loss = torch.zeros(members, dtype=torch.float64, device=x.device)
        correct = torch.zeros_like(loss)
        for i in range(0, len(y), chunk):
            xb, yb = x[i : i + chunk], y[i : i + chunk]
            out = forward(xb.unsqueeze(0).expand(members, *xb.shape))  # [M, b, classes]
            loss += F.cross_entropy(out.transpose(1, 2), yb.expand(members, -1), reduction="none").sum(1).double()
            correct += (out.argmax(-1) == yb).sum(1).double()
        n = torch.full_like(loss, float(len(y)))
        return {"loss": loss, "acc": correct, "n": n}
