"""VGG-19 for CIFAR-10, the variant of Liu et al. 2019 ("Rethinking the value of network pruning") that
Frankle & Carbin (2019) prune.

Specification, for images ``x`` [B, C, H, W] (CIFAR-10: C = 3, H = W = 32):

- 16 convolutions, 3x3, stride 1, padding 1 (size kept), no bias, each followed by BatchNorm and a ReLU;
  a 2x2 max-pool (stride 2) at each ``M`` of the layout (``VGG19``; Liu et al.'s ``cfg``)::

      64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512

  (32x32 -> 16 -> 8 -> 4 -> 2 after the four pools).
- a 2x2 average pool (stride 2: 2x2 -> 1x1), flatten, fully connected 512 -> ``num_classes`` (with bias).
  Images larger than 32x32 leave ``H // 32 x W // 32`` positions, all fed to the fc layer.

Parameter names::

    conv{1..16}.weight   [out, in, 3, 3]
    bn{1..16}.weight, bn{1..16}.bias   [out]       (+ buffers running_mean, running_var, num_batches_tracked)
    fc.weight   [num_classes, 512]    fc.bias   [num_classes]        (the output layer, ``output_layer``)

Prunable weights (conv kernels and the fc matrix; ``default_prunable``, never the BatchNorm gains and
shifts) with input (3, 32, 32) and 10 classes: 20,024,000 = 20,018,880 in the convolutions + 5,120 in
fc (the paper's "20.0M"). All parameters: 20,035,018 (the BatchNorms add 2 x 5,504, fc's bias 10).

The forward takes one model's parameters; :class:`lth.ensemble.Ensemble` runs stacked members through
its loop or ``torch.func.vmap`` (``lth.ensemble_modes``), each member with its own BatchNorm statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import weights_only

# output channels of each convolution, "M" a 2x2 max-pool
VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


class VGG(nn.Module):
    """VGG-19 (Liu et al.'s CIFAR variant) for images of shape ``(in_channels, height, width)``."""

    def __init__(self, in_channels: int = 3, height: int = 32, width: int = 32, num_classes: int = 10,
                 layout: tuple = VGG19):
        super().__init__()
        pools = layout.count("M") + 1  # the max-pools, then the average pool
        if min(height, width) < 2**pools:
            raise ConfigError(f"VGG pools {pools} times: images must be at least {2**pools} pixels high and "
                              f"wide, got {height}x{width}")
        self.layout = tuple(layout)
        c, i = in_channels, 0
        for v in self.layout:
            if v != "M":
                i += 1
                self.add_module(f"conv{i}", nn.Conv2d(c, v, 3, padding=1, bias=False))
                self.add_module(f"bn{i}", nn.BatchNorm2d(v))
                c = v
        self.fc = nn.Linear(c * (height >> pools) * (width >> pools), num_classes)
        self.output_layer = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> logits [B, classes]
        i = 0
        for v in self.layout:
            if v == "M":
                x = F.max_pool2d(x, 2)  # [B, ch, h / 2, w / 2]
            else:
                i += 1
                x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)).relu()  # [B, v, h, w]
        x = F.avg_pool2d(x, 2)  # [B, 512, h / 2, w / 2]: 1x1 for 32x32 images
        return self.fc(x.flatten(1))  # [B, classes]

    def default_prunable(self, cfg) -> list[str]:
        """Conv kernels and the fc matrix (fc's bias with ``cfg.prune_biases``), never BatchNorm."""
        return weights_only(self, cfg)
