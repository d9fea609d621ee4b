"""The trainer's stop on a NaN or infinite loss: one line naming the step and the member.

The loss is a sum of the members' means, so one member's NaN makes it NaN; which member it was is read
off the stacked gradients and parameters (leading dimension: the member), looked at only then.

Under torchrun a NaN may come up on one process only (its share of the batch). Each process then
checks the all-reduced gradients instead of its own loss (:func:`check_grads`): they are the same
on every process, so every process stops at the same step with the same line, and none is left
waiting in a collective for one that has stopped.
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


def check_grads(tensors, members: int, step: int) -> None:
    """Raise :class:`NonFiniteLoss` when an all-reduced gradient holds a NaN or infinity (every process
    of a data-parallel run decides alike, since the gradients are the same on all of them)."""
    grads = [t.grad for t in tensors if t.grad is not None]
    if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
        return
    m = bad_member(list(tensors), members)
    who = "" if m is None else f"member {m}, "
    raise NonFiniteLoss(f"{who}step {step}: the gradient is not finite (a NaN or infinite loss on at least one "
                        "process); training stopped (lower the learning rate, or clip gradients with grad_clip)",
                        step, m)
