"""The trainer's stop on a NaN or infinite loss: one line naming the step and the member.

The loss is a sum of the members' means, so one member's NaN makes it NaN; which member it was is read
off the stacked gradients and parameters (leading dimension: the member), looked at only then.
"""

from __future__ import annotations

import torch

from .errors import NonFiniteLoss


def bad_member(tensors, members: int) -> int | None:
    """The first member whose slice of a stacked tensor (or of its gradient) is not finite."""
    for t in tensors:
        for v in (t.grad, t.detach()):
            if v is not None and v.dim() and v.shape[0] == members:
                ok = torch.isfinite(v.flatten(1).float()).all(1)
                if not bool(ok.all()):
                    return int((~ok).nonzero()[0, 0])
    return None


def check_loss(loss: torch.Tensor, tensors, members: int, step: int) -> None:
    """Raise :class:`NonFiniteLoss` when ``loss`` is NaN or infinite (one scalar check a step)."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    m = bad_member(list(tensors), members)
    who = "" if m is None else f"member {m}, "
    raise NonFiniteLoss(f"{who}step {step}: the loss is {float(loss.detach().float().sum())}; "
                        "training stopped (lower the learning rate, or clip gradients with grad_clip)", step, m)
