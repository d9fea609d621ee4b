"""Ops that accept either one model's parameters or a stack of them.

``Ensemble`` trains M copies of a model as one batched model by calling the model with stacked
parameters (leading member dimension M) and stacked inputs ``[M, B, ...]``. Models whose forward uses
these ops declare ``stackable = True`` and skip ``torch.func.vmap``'s overhead; other models still work
through vmap.

Also here: :func:`weights_only`, the ``default_prunable`` of the CNNs (conv kernels and linear weights,
never a BatchNorm's parameters).
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


def weights_only(model: nn.Module, cfg) -> list[str]:
    """``default_prunable`` of a network with normalisation layers: the weights of its convolutions and
    linear layers (and, with ``cfg.prune_biases``, their biases) in ``named_parameters`` order; a norm's
    gain and shift (BatchNorm ``weight``/``bias``) are never pruned, whatever ``cfg`` says."""
    owners = (nn.modules.conv._ConvNd, nn.Linear)
    wanted = {f"{m}.weight" if m else "weight" for m, mod in model.named_modules() if isinstance(mod, owners)}
    if getattr(cfg, "prune_biases", False):
        wanted |= {f"{m}.bias" if m else "bias" for m, mod in model.named_modules()
                   if isinstance(mod, owners) and mod.bias is not None}
    return [n for n, _ in model.named_parameters() if n in wanted]
