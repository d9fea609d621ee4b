"""The CIFAR training augmentation on batched tensors: 4-pixel zero pad-and-crop, then a horizontal flip.

What ``torchvision``'s ``RandomCrop(32, padding=4)`` then ``RandomHorizontalFlip()`` do to one image at a
time (the standard CIFAR-10 training augmentation), done here to a whole batch at once: pad every image once,
then ONE gather per axis with per-image row and column indices (a flip is the column indices reversed),
no Python loop over images.

Images arrive normalized, so "zero" padding means the value a black (0) pixel has after normalization
(``fill``, per channel: ``-mean / std``; see :meth:`lth.data.mnist.ImageData.zero_value`): the result is
exactly the augmentation of the raw pixels, normalized.

Randomness: offsets and flips are drawn from torch's default CPU generator, which the trainer seeds for
each step from (member seeds, step, micro-batch, rank) (``lth.train.step_rng``): every run, a resumed
one included, sees the same augmented batches, on any device (the draws are made on the CPU and moved).
"""

from __future__ import annotations

import torch

PAD = 4


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, *, pad: int = PAD,
              fill: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``x`` [N, C, H, W] padded by ``pad`` on every side with ``fill`` ([C], or zeros), then cropped
    back to H x W at top-left corner (``dy``, ``dx``) [N] in 0..2 pad of the padded image (``pad``, ``pad``:
    the image itself) and mirrored left-right where ``flip`` [N] (bool) is set."""
    n, c, h, w = x.shape
    padded = x.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
    if fill is not None:
        padded[:] = fill.to(x).view(1, c, 1, 1)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    rows = dy.view(n, 1) + torch.arange(h, device=x.device)  # [N, H]: source rows in the padded image
    cols = dx.view(n, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)  # a flipped crop reads its columns backwards
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def random_crop_flip(x: torch.Tensor, *, pad: int = PAD, fill: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` [..., C, H, W]: each image cropped at a uniform offset in -pad..pad on each axis from its
    ``fill``-padded self, and flipped left-right with probability 1/2; a new tensor of the same shape."""
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])
    n = flat.shape[0]
    corner = torch.randint(0, 2 * pad + 1, (n, 2))  # the CPU generator: the same draws on every device
    flip = torch.rand(n) < 0.5
    corner, flip = corner.to(x.device), flip.to(x.device)
    return crop_flip(flat, corner[:, 0], corner[:, 1], flip, pad=pad, fill=fill).view(shape)
