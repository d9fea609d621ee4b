"""Dropout whose mask is cheap to draw on the CPU.

``dropout(x, p, training)`` keeps ``F.dropout``'s contract: in training each element is zeroed with
probability p and the survivors scaled so that the expectation is x; the identity otherwise. It draws
from torch's global generator, so ``lth.train.step_rng`` makes it a function of (member seeds, step)
exactly as it does ``F.dropout``, and each ensemble member (the loop path) draws its own mask.

Why: on the CPU torch's dropout draws one Bernoulli per element from mt19937 in a serial loop, then
divides and multiplies: at the translation track's shapes that is 5x the time of the matmul that
feeds it, and a fifth of a training step. Here one 64-bit draw gives four 16-bit uniforms u (the
int64's little-endian halves of halves), and an element is dropped when u < t, t = round(65536 p):
the drop probability is t / 65536 (0.1 -> 0.100006), survivors are scaled by 65536 / (65536 - t), so
the expectation is x exactly. Integer draws and a comparison: the same mask on every CPU. The backward
is the saved mask times the gradient, as ``F.dropout``'s.

On CUDA, and under ``vmap`` (functorch batched tensors: the stacked ensemble path), it is ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LO, _HI = torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max


def threshold(p: float) -> int:
    """t in [0, 65536]: a 16-bit uniform below it drops its element."""
    return round(p * 65536)


def _batched(x: torch.Tensor) -> bool:
    try:
        return torch._C._functorch.is_batchedtensor(x)
    except AttributeError:  # pragma: no cover - older torch
        return False


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask drawn as in the module docstring on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or _batched(x) or not x.is_floating_point():
        return F.dropout(x, p, training)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    t, n = threshold(p), x.numel()
    u = torch.randint(_LO, _HI, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n].view(x.shape)
    keep = u >= t - 32768  # int16 u + 32768 is the 16-bit uniform
    return x * keep.to(x.dtype).mul_(65536 / (65536 - t))
