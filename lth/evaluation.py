"""Evaluation: every member alone, on fresh tensors, so its metrics are exact (see :func:`member_forwards`).

:func:`evaluate` gives the task's metrics per member for each split, all-reduced over torchrun ranks
(the task returns sums, :func:`lth.tasks.finalize` turns them into metrics), so data-parallel evaluation
equals one process. The trainer, ``lth pack``/``lth eval``, the supermask and ``lth instability`` all
evaluate through it.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from . import dist as D
from .tasks import finalize


def autocast(device: torch.device):
    """bf16 autocast on CUDA (switches on by itself), nothing on CPU where fp32 is fastest."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def member_forwards(model) -> list[Callable]:
    """One forward per member that runs that member alone, as a stack of one.

    Exactness rests on this: a batched matmul may round differently for M stacked members than for one
    (on AVX2 kernels it does), and a slice of the stack starts at another alignment. So each member's
    effective parameters (and buffers) are copied into freshly allocated ``[1, ...]`` tensors and the
    model is called on inputs ``[1, ...]``: the same kernels, shapes and strides as an ensemble holding
    only that member, which is what a packed ticket is evaluated as. A member's metrics therefore do not
    depend on how many members train beside it (tested)."""
    state = model.eval_state()  # name -> [M, ...]: effective parameters and buffers
    out = []
    for m in range(model.members):
        mine = {n: t[m : m + 1].detach().clone(memory_format=torch.contiguous_format) for n, t in state.items()}
        out.append(lambda *x, _s=mine, **kw: model.call(_s, *x, **kw))
    return out


def evaluate(ens, task, ctx: D.Context | None = None, splits=None) -> dict[str, torch.Tensor]:
    """Mean metrics per member for each split, e.g. {'val_loss': [M], 'val_acc': [M], ...}.

    Members are evaluated one at a time (:func:`member_forwards`), so the numbers are the same whether
    a member was trained alone, stacked with others, or rebuilt from its ticket. A task with one
    held-out split (``task.splits == ("val",)``, language modeling) reports it under ``test_*`` too, so
    every results row has the same columns."""
    ctx = ctx or D.Context()
    was = ens.training
    ens.eval()
    out = {}
    dev = next(iter(ens.eval_state().values())).device
    alias = splits is None  # the default splits report a missing test split as a copy of val
    splits = splits or getattr(task, "splits", ("val", "test"))
    with autocast(dev), torch.no_grad():
        forwards = member_forwards(ens)
        for split in splits:
            per = [task.evaluate(f, 1, split, rank=ctx.rank, world=ctx.world) for f in forwards]
            sums = {k: torch.cat([p[k] for p in per]) for k in per[0]}
            for t in sums.values():
                D.all_reduce_sum(t, ctx)
            for k, v in finalize(task, sums).items():  # the task's metrics from its sums (default: / n)
                out[f"{split}_{k}"] = v.cpu()
    if alias and "test" not in splits:
        out.update({"test" + k[3:]: v for k, v in list(out.items()) if k.startswith("val_")})
    ens.train(was)
    return out
