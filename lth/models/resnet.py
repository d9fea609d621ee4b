"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2), the network Frankle & Carbin (2019) call
"Resnet-18"; widths as in open_lth's ``cifar_resnet_20_W``.

Specification, for images ``x`` [B, C, H, W] (CIFAR-10: C = 3, H = W = 32), ``w = width`` (default 16,
the paper's ResNet-20; ``width=8`` halves every stage, ``width=32`` doubles it):

- stem: 3x3 convolution (stride 1, padding 1) to w channels, BatchNorm, ReLU.
- 3 stages of 3 basic blocks with w, 2w, 4w channels; the first block of stages 2 and 3 halves the
  size (stride 2). A basic block::

      out = relu(bn1(conv1(x)))             conv1: 3x3, stride s, padding 1
      out = bn2(conv2(out))                 conv2: 3x3, stride 1, padding 1
      out = relu(out + shortcut(x))         shortcut: identity, or where the shape changes (the first
                                            block of stages 2 and 3) a 1x1 convolution with stride s
                                            and a BatchNorm (a projection, He et al.'s option B)

- global average pool over the remaining H/4 x W/4 positions, fully connected 4w -> ``num_classes``.
- Convolutions have no bias (a BatchNorm follows each); fc has one.

Parameter names (``shortcut`` in a name is what ``lth.pruning.kind_groups`` calls ``shortcut``)::

    conv.weight [w, C, 3, 3]                 bn.weight, bn.bias [w]
    blocks.{0..8}.conv1.weight, .conv2.weight     blocks.{0..8}.bn1.*, .bn2.*
    blocks.{3,6}.shortcut.conv.weight [2w or 4w, w or 2w, 1, 1]    blocks.{3,6}.shortcut.bn.*
    fc.weight [num_classes, 4w]   fc.bias   (the output layer, ``output_layer``)

Blocks 0-2 are stage 1, 3-5 stage 2, 6-8 stage 3. Every BatchNorm has buffers ``running_mean``,
``running_var`` and ``num_batches_tracked``.

Prunable weights (conv kernels, shortcut kernels and the fc matrix; ``default_prunable``, never the
BatchNorm gains and shifts), 3 input channels, 10 classes:

    width 16 (ResNet-20): 270,896 = 432 stem + 269,824 in the blocks (2,560 of them shortcuts) + 640 fc;
                          272,474 parameters in all (BatchNorms 1,568, fc bias 10): "~272K" counts those
    width 8:               67,992 = 216 stem + 67,456 in the blocks (640 shortcuts) + 320 fc

The forward takes one model's parameters; :class:`lth.ensemble.Ensemble` runs stacked members through
its loop or ``torch.func.vmap`` (``lth.ensemble_modes``), each member with its own BatchNorm statistics.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError
from .layers import weights_only


class Block(nn.Module):
    """A basic block: two 3x3 conv + BatchNorm, and the shortcut around them (module docstring)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:  # projection where the shape changes
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(c_out)))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, h, w] -> [B, c_out, h / s, w / s]
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR with ``blocks_per_stage = n`` (3: ResNet-20) and first-stage ``width``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, blocks_per_stage: int = 3):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"ResNet width must be a positive int, got {width!r}")
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, c = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Block(c, c_out, stride))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)
        self.output_layer = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> logits [B, classes]
        x = self.bn(self.conv(x)).relu()  # [B, w, H, W]
        x = self.blocks(x)  # [B, 4w, H / 4, W / 4]
        x = x.mean((2, 3))  # [B, 4w]: global average pool
        return self.fc(x)  # [B, classes]

    def default_prunable(self, cfg) -> list[str]:
        """Conv and shortcut kernels and the fc matrix (fc's bias with ``cfg.prune_biases``), never BatchNorm."""
        return weights_only(self, cfg)
