"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR-10 networks of Frankle & Carbin (2019), Figure 2.

Specification, for images ``x`` [B, C, H, W] (CIFAR-10: C = 3, H = W = 32):

- ``pairs`` (1, 2 or 3) blocks; block i is two 3x3 convolutions (stride 1, padding 1, so the size is
  kept) with ``(64, 128, 256)[i]`` output channels, each followed by a ReLU, then a 2x2 max-pool
  (stride 2, floor):

      Conv-2: conv 64, conv 64, pool
      Conv-4: conv 64, conv 64, pool, conv 128, conv 128, pool
      Conv-6: conv 64, conv 64, pool, conv 128, conv 128, pool, conv 256, conv 256, pool

- flatten (channels x H / 2^pairs x W / 2^pairs), then fully connected 256, 256, ``num_classes``, a
  ReLU after the first two.
- Every layer has a bias; no batch normalisation, no dropout. Parameter names::

      conv{1..2 pairs}.weight   [out, in, 3, 3]    conv{i}.bias   [out]
      fc1.weight  [256, flat]   fc2.weight  [256, 256]   fc3.weight  [num_classes, 256]   (+ biases)

  ``fc3`` is the output layer (``output_layer``).

Prunable weights (conv kernels and fc matrices; what ``default_prunable`` returns), 10 classes:

    input       Conv-2      Conv-4      Conv-6
    (3, 32, 32) 4,300,992   2,425,024   2,261,184
    (1, 32, 32) 4,299,840   2,423,872   2,260,032

(only the first kernel depends on C: 64 x C x 9). The paper's Table 1 gives 4.3M, 2.4M and 1.7M;
its own layer sizes give 2.26M for Conv-6, not 1.7M (the fc input is 4 x 4 x 256 = 4096 wide).

The forward takes one model's parameters; :class:`lth.ensemble.Ensemble` runs stacked members through
its loop or ``torch.func.vmap`` (``lth.ensemble_modes``: convolutions loop on CPU), so
``stackable`` is not set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import weights_only

CHANNELS = (64, 128, 256)  # block i's convolutions
HIDDEN = (256, 256)  # the fully connected layers before the output


class Conv(nn.Module):
    """Conv-``2 * pairs`` for images of shape ``(in_channels, height, width)``."""

    def __init__(self, pairs: int = 1, in_channels: int = 3, height: int = 32, width: int = 32,
                 num_classes: int = 10):
        super().__init__()
        if pairs not in (1, 2, 3):
            raise ConfigError(f"Conv-N has 1, 2 or 3 pairs of convolutions, got {pairs}")
        if min(height, width) < 2**pairs:
            raise ConfigError(f"Conv-{2 * pairs} pools {pairs} times: images must be at least {2**pairs} "
                              f"pixels high and wide, got {height}x{width}")
        self.pairs = pairs
        c = in_channels
        for i in range(2 * pairs):
            out = CHANNELS[i // 2]
            self.add_module(f"conv{i + 1}", nn.Conv2d(c, out, 3, padding=1))
            c = out
        flat = c * (height >> pairs) * (width >> pairs)  # each pool floors: H // 2 // 2 ... = H >> pairs
        self.fc1 = nn.Linear(flat, HIDDEN[0])
        self.fc2 = nn.Linear(HIDDEN[0], HIDDEN[1])
        self.fc3 = nn.Linear(HIDDEN[1], num_classes)
        self.output_layer = "fc3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> logits [B, classes]
        for i in range(1, 2 * self.pairs + 1):
            x = getattr(self, f"conv{i}")(x).relu()  # [B, ch, h, w]
            if i % 2 == 0:
                x = F.max_pool2d(x, 2)  # [B, ch, h / 2, w / 2]
        x = x.flatten(1)  # [B, flat]
        x = self.fc1(x).relu()  # [B, 256]
        x = self.fc2(x).relu()  # [B, 256]
        return self.fc3(x)  # [B, classes]

    def default_prunable(self, cfg) -> list[str]:
        """Conv kernels and fc matrices (their biases with ``cfg.prune_biases``)."""
        return weights_only(self, cfg)
