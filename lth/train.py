"""The trainer: one loop for every experiment, mask-aware, batched over ensemble members.

Each member has its own data order (from its seed), its own slice of the stacked parameters and of the
optimizer state, and its own masks. Pruned weights are kept at exactly zero: their gradients are
zeroed before the optimizer step (so Adam's moments for them stay zero) and the masks are re-applied
after it. Under torchrun the ensemble is wrapped in DistributedDataParallel and each rank takes an
equal share of every member's batch, so the global batch and the result match one process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import dist as D
from .ensemble import Ensemble
from .errors import ConfigError


@dataclass
class TrainSpec:
    iterations: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_every: int = 100


ELEMENTWISE = ("adam", "adamw", "sgd")


def make_optimizer(params, spec: TrainSpec) -> torch.optim.Optimizer:
    # fused kernels (CPU since torch 2.4, and CUDA) do Adam's elementwise math in one pass per tensor.
    fused = {"fused": True}
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **fused)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **fused)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    raise ConfigError(f"unknown optimizer {spec.optimizer!r}; choose adam, adamw or sgd")


def data_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the training set a member with this seed sees in this epoch.

    numpy's PCG64 stream is stable across versions and machines, so a resumed or rewound run sees
    exactly the same batches.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batches:
    """Index batches [M, B] for step t: member m's epoch permutation, drop-last."""

    def __init__(self, seeds: list[int], n: int, batch_size: int):
        if batch_size > n:
            raise ConfigError(f"batch_size {batch_size} exceeds the {n} training examples")
        self.seeds, self.n, self.b = seeds, n, batch_size
        self.per_epoch = n // batch_size
        self._epoch, self._perm = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.from_numpy(np.stack([data_order(s, epoch, self.n) for s in self.seeds]))
            self._epoch = epoch
        return self._perm[:, i * self.b : (i + 1) * self.b]


def autocast(device: torch.device):
    """bf16 autocast on CUDA (switches on by itself), nothing on CPU where fp32 is fastest."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(ens: Ensemble, task, ctx: D.Context, splits=("val", "test")) -> dict[str, torch.Tensor]:
    """Mean metrics per member for each split, e.g. {'val_loss': [M], 'val_acc': [M], ...}."""
    ens.eval()
    out = {}
    dev = ens.stacked[0].device
    with autocast(dev):
        for split in splits:
            sums = task.evaluate(ens, ens.members, split, rank=ctx.rank, world=ctx.world)
            for t in sums.values():
                D.all_reduce_sum(t, ctx)
            for k, v in sums.items():
                if k != "n":
                    out[f"{split}_{k}"] = (v / sums["n"]).cpu()
    ens.train()
    return out


def train(
    ens: Ensemble,
    masks: dict[str, torch.Tensor],
    task,
    spec: TrainSpec,
    seeds: list[int],
    *,
    start: int = 0,
    capture: tuple[int, ...] = (),
    on_eval: Callable[[int, dict], None] | None = None,
    ctx: D.Context | None = None,
    progress=None,
) -> dict[int, list[dict[str, torch.Tensor]]]:
    """Train ``ens`` from step ``start`` to ``spec.iterations`` under stacked ``masks``.

    Calls ``on_eval(step, metrics)`` every ``eval_every`` steps and at the end; returns the member
    states captured at the steps in ``capture`` (used for rewinding to step k).
    """
    ctx = ctx or D.Context()
    params = ens.params()
    # Float copies of the masks: multiplying by a bool tensor would convert it on every step.
    fmasks = {n: m.to(params[n].dtype) for n, m in masks.items()}
    for n, m in fmasks.items():
        params[n].data.mul_(m)
    opt = make_optimizer(list(ens.parameters()), spec)
    # With a zero gradient, Adam's and SGD's updates of a zero weight are exactly zero (their state
    # for it stays zero too), so masking gradients suffices; other optimizers re-apply the masks.
    elementwise = spec.optimizer in ELEMENTWISE
    model = ens
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(ens, device_ids=None if params[ens.names[0]].device.type == "cpu" else [ctx.local_rank])
    batches = Batches(seeds, task.train_size, spec.batch_size)
    dev = ens.stacked[0].device
    captured = {}

    def report(step):
        if on_eval is not None:
            on_eval(step, evaluate(ens, task, ctx))

    for step in range(start, spec.iterations):
        if step in capture:
            captured[step] = [ens.member_state(i) for i in range(ens.members)]
        if step % spec.eval_every == 0:
            report(step)
        idx = batches(step)[:, ctx.rank :: ctx.world]
        x, y = task.batch(idx)
        with autocast(dev):
            loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            grads = ens.grads()
            for n, m in fmasks.items():
                grads[n].mul_(m)
        opt.step()
        if not elementwise:
            with torch.no_grad():
                for n, m in fmasks.items():
                    params[n].mul_(m)
        if progress is not None:
            progress.update(1)
    if spec.iterations in capture:
        captured[spec.iterations] = [ens.member_state(i) for i in range(ens.members)]
    report(spec.iterations)
    return captured
