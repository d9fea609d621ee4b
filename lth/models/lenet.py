"""LeNet-300-100 (LeCun et al. 1998), the fully-connected MNIST network of Frankle & Carbin (2019).

784 -> 300 -> 100 -> 10 with ReLU; 266,610 parameters, 266,200 of them in the three weight matrices
(the prunable ones).
"""

from torch import nn

from .layers import Linear


class LeNet(nn.Module):
    stackable = True  # forward works on stacked parameters too (see lth.ensemble)

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (300, 100), num_classes: int = 10):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        self.layers = len(sizes) - 1
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            self.add_module(f"fc{i}", Linear(a, b))
        self.output_layer = f"fc{self.layers}"

    def forward(self, x):  # x: [B, C, H, W] or stacked [M, B, C, H, W]
        h = x.flatten(-3)
        for i in range(1, self.layers + 1):
            h = getattr(self, f"fc{i}")(h)
            if i < self.layers:
                h = h.relu()
        return h
