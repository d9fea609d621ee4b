"""A training step's forward and backward one member at a time, on the loop path.

On the loop path (``lth.ensemble``: the CPU rule for models that do not stack) the members run one
after another anyway, their graphs are independent, and every task's loss is a sum over members of
each member's loss. So member m's forward, loss and backward can run before member m + 1's forward:
the gradients are the same, and only one member's activations are alive at a time instead of all M.
Each member runs through fresh leaves that share its slice of the stacked parameters
(``Ensemble.member_pass``), so its backward writes [1, ...] gradients, added into its slot; slicing the
stacked leaves instead would zero-fill an [M, ...] gradient per parameter per member (at 12 BERT
members, over a gigabyte a member).
(The translation track's SLT level, 5 members x 224 sentences x 117 target tokens x a 4,000-word
vocabulary, held 22 GB at once on its longest batch and was killed by the OOM killer.) Dropout draws
do not move: a backward draws nothing, so member m's forward finds torch's generator where the
all-members forward would have left it for m.

:func:`applies` says when ``lth.train`` does this: the ensemble's path is ``loop`` with more than one
member, one process (DDP all-reduces inside one backward), no ``torch.compile`` wrapper, and the hooks'
``forward`` and ``extra_loss`` are ``lth.train.Hooks``' own (a method that forms its outputs or adds
a loss over all members keeps the all-members pass). ``TrainSpec.member_passes = False`` turns it off.
"""

from __future__ import annotations

import torch

from . import ensemble_modes as modes


def applies(model, ens, hooks, ctx) -> bool:
    from .train import Hooks

    return (model is ens and not ctx.active and hasattr(ens, "path") and hasattr(ens, "member_pass")
            and getattr(ens, "members", 1) > 1 and ens.path() == "loop"
            and type(hooks).forward is Hooks.forward and type(hooks).extra_loss is Hooks.extra_loss)


def _member(tree, m: int):
    return modes.map_tensors(lambda t: t[m : m + 1], tree)


def _call(ens, m: int, x):
    xm = _member(x, m)
    if isinstance(xm, dict):
        return ens.member_pass(m, **xm)
    if isinstance(xm, tuple):
        return ens.member_pass(m, *xm)
    return ens.member_pass(m, xm)


def forward_backward(ens, task, x, y, scale: float, autocast) -> torch.Tensor:
    """Each member's ``task.loss / scale`` and its backward, in member order; returns the sum of the
    (detached) member losses, what the all-members pass's loss would be."""
    total = None
    for m in range(ens.members):
        with autocast():
            out, leaves = _call(ens, m, x)
            loss = task.loss(out, _member(y, m)) / scale
        loss.backward()
        ens.add_member_grads(m, leaves)  # member m's [1, ...] gradients into its slot of the stacked ones
        total = loss.detach() if total is None else total + loss.detach()
    return total
