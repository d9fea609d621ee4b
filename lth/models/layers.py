"""Ops that accept either one model's parameters or a stack of them.

``Ensemble`` trains M copies of a model as one batched model by calling the model with stacked
parameters (leading member dimension M) and stacked inputs ``[M, B, ...]``. Models whose forward uses
these ops declare ``stackable = True`` and skip ``torch.func.vmap``'s overhead; other models still work
through vmap.
"""

import torch
import torch.nn.functional as F
from torch import nn


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.T + b``; with stacked ``w`` [M, out, in], ``x`` is [M, B, in] and this is one bmm."""
    if w.dim() == 2:
        return F.linear(x, w, b)
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class Linear(nn.Linear):
    """``nn.Linear`` whose forward also takes stacked parameters (see :func:`linear`).

    Calling the module (rather than reading ``.weight`` from the parent) keeps forward pre-hooks
    working, e.g. ``torch.nn.utils.prune``'s, which recompute ``weight`` from ``weight_orig`` and
    ``weight_mask`` just before the call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
