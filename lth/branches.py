"""Branches: from a ticket's masks and reset weights to another member's masks and starting weights.

Registry ``BRANCHES``: ``ticket`` and the controls a config's ``controls`` names. Each level trains
the ticket and, beside it, one member per control and trial.

Contract of an entry (:class:`Branch`):

- ``fn(ctx: BranchContext) -> (masks, reset)``: the member's bool masks (over the ticket's names)
  and the full state it starts from (every parameter; pruned entries may hold anything, training
  zeroes them). Deterministic given ``ctx``: any randomness comes from seeds derived from
  ``ctx.seed`` and ``ctx.level`` through ``lth.init``'s hash (bit-exact on every machine). It never
  changes ``ctx``'s tensors.
- ``keeps_reset``: its starting weights are the ticket's reset weights, so they come back the way
  the ticket's do (from the seed, from the weight source's file, or stored).
- ``seed(ctx) -> int | None`` (for the others): the seed its starting weights regenerate from with
  ``init_from_seed(template, seed, ctx.init)``, or None when they do not (they are then stored as
  floats in a packed ticket). The lottery writes the outcome into the checkpoint's metadata, so
  ``lth pack`` needs nothing from this registry to pack any branch.

``BranchContext``: ``masks`` and ``reset`` are the ticket's (reset = θ0 or θk, from the run's weight
source), ``seed`` the trial seed, ``level``, ``template`` (the architecture) and ``init`` (its init
scheme).

Entries:

- ``ticket``: the ticket itself.
- ``reinit``: the ticket's masks, a fresh init from ``derive_seed(seed, "reinit", level)``.
- ``random``: a random mask with the ticket's per-layer counts, on the ticket's reset weights.
- ``random_global``: a random mask with the ticket's TOTAL count spread over all its masked tensors
  together (the top of one uniform score per weight), on the ticket's reset weights (BERT-Tickets'
  random pruning: ``global_unstructured`` with random scores).
- ``omp``: one-shot global magnitude pruning of the ticket's reset weights themselves (θ0, or θk when
  rewinding), no training in between: the ticket's total count of the largest ``|reset|`` over all its
  masked tensors, on those reset weights (Chen et al. 2020's OMP).
- ``constant``: the ticket's masks; each surviving weight is ``sign(θ) * α_l``, with
  ``α_l = sqrt(6 / (fan_in + fan_out))`` of its layer (Brix et al. 2020's constant tickets); masked
  1-D tensors (biases under ``prune_biases``) keep their values.
- ``random_sign``: the ticket's masks and magnitudes ``|θ|``, each sign drawn at random.
- ``constant_random_sign``: ``constant``'s magnitudes ``α_l`` with each sign drawn at random (Brix et
  al.'s "random sign" control of constant tickets).
- ``shuffle``: the ticket's masks; each masked tensor's surviving reset values permuted among its
  surviving positions (the multiset of each layer's values is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import masks as M
from .registry import Registry

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BranchContext:
    masks: M.Masks
    reset: State
    seed: int
    level: int
    template: nn.Module
    init: str


@dataclass(frozen=True)
class Branch:
    """A registered branch: ``fn`` and ``seed`` (see the module docstring)."""

    name: str
    fn: Callable[[BranchContext], tuple[M.Masks, State]]
    seed: Callable[[BranchContext], int | None]
    keeps_reset: bool = False

    def __call__(self, ctx: BranchContext) -> tuple[M.Masks, State]:
        return self.fn(ctx)


BRANCHES: Registry[Branch] = Registry("branch")


def _stored(ctx: BranchContext) -> None:
    return None


def branch(name: str, seed: Callable[[BranchContext], int | None] = _stored, keeps_reset: bool = False):
    """Decorator: register ``fn(ctx) -> (masks, reset)`` as branch ``name``."""

    def add(fn):
        BRANCHES.register(name)(Branch(name, fn, seed, keeps_reset))
        return fn

    return add


def derive_seed(*parts) -> int:
    """A 31-bit seed from any parts (e.g. trial seed, 'reinit', level): stable across machines."""
    import hashlib

    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def _uniform(seed: int, name: str, shape) -> torch.Tensor:
    from .scores import random_scores

    return random_scores(seed, name, shape)


def _copy(state: State) -> State:
    return {n: v.clone() for n, v in state.items()}


@branch("ticket", keeps_reset=True)
def ticket(ctx: BranchContext):
    return ctx.masks, ctx.reset


def _reinit_seed(ctx: BranchContext) -> int:
    return derive_seed(ctx.seed, "reinit", ctx.level)


@branch("reinit", seed=_reinit_seed)
def reinit(ctx: BranchContext):
    import copy

    from .init import init_from_seed

    model = init_from_seed(copy.deepcopy(ctx.template).cpu(), _reinit_seed(ctx), ctx.init)
    return ctx.masks, {n: p.detach().clone() for n, p in model.named_parameters()}


@branch("random", keeps_reset=True)
def random(ctx: BranchContext):
    from .pruning import random_like

    return random_like(ctx.masks, derive_seed(ctx.seed, "random", ctx.level)), ctx.reset


def _top_count(scores: State, masks: M.Masks) -> M.Masks:
    """Bool masks keeping as many of the highest ``scores`` as ``masks`` keep, all tensors together."""
    flat = torch.cat([v.detach().flatten().float().cpu() for v in scores.values()])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, sum(int(m.sum()) for m in masks.values()), sorted=False).indices] = True
    out, i = {}, 0
    for n, v in scores.items():
        out[n], i = keep[i:i + v.numel()].view(v.shape).to(masks[n].device), i + v.numel()
    return out


@branch("random_global", keeps_reset=True)
def random_global(ctx: BranchContext):
    seed = derive_seed(ctx.seed, "random_global", ctx.level)
    return _top_count({n: _uniform(seed, n, m.shape) for n, m in ctx.masks.items()}, ctx.masks), ctx.reset


@branch("omp", keeps_reset=True)
def omp(ctx: BranchContext):
    return _top_count({n: ctx.reset[n].abs() for n in ctx.masks}, ctx.masks), ctx.reset


@branch("constant")
def constant(ctx: BranchContext):
    from .init import fans

    out = _copy(ctx.reset)
    for n in ctx.masks:
        if out[n].dim() < 2:  # a masked bias has no fans: it keeps its values
            continue
        fan_in, fan_out = fans(out[n].shape)
        out[n] = torch.sign(out[n]) * math.sqrt(6.0 / (fan_in + fan_out))
    return ctx.masks, out


@branch("random_sign")
def random_sign(ctx: BranchContext):
    out, seed = _copy(ctx.reset), derive_seed(ctx.seed, "random_sign", ctx.level)
    for n in ctx.masks:
        positive = _uniform(seed, n, out[n].shape).to(out[n].device) >= 0  # U(-1, 1)
        out[n] = torch.where(positive, out[n].abs(), -out[n].abs())
    return ctx.masks, out


@branch("constant_random_sign")
def constant_random_sign(ctx: BranchContext):
    masks, out = constant(ctx)
    seed = derive_seed(ctx.seed, "constant_random_sign", ctx.level)
    for n in masks:
        if out[n].dim() < 2:
            continue
        positive = _uniform(seed, n, out[n].shape).to(out[n].device) >= 0  # U(-1, 1)
        out[n] = torch.where(positive, out[n].abs(), -out[n].abs())
    return masks, out


@branch("shuffle")
def shuffle(ctx: BranchContext):
    out, seed = _copy(ctx.reset), derive_seed(ctx.seed, "shuffle", ctx.level)
    for n, m in ctx.masks.items():
        flat, keep = out[n].view(-1), m.flatten().nonzero().squeeze(1).to(out[n].device)
        order = torch.argsort(_uniform(seed, n, (len(keep),)), stable=True).to(keep.device)
        flat[keep] = flat[keep][order]
    return ctx.masks, out


def check(names) -> None:
    """One-line ConfigError for a name that is no registered control (``ticket`` is not a control)."""
    from .errors import ConfigError

    bad = [c for c in names if c not in BRANCHES or c == "ticket"]
    if bad:
        raise ConfigError(f"unknown control(s) {bad}; choose from {[b for b in BRANCHES if b != 'ticket']}")
