"""Optimizers and learning-rate schedules: two registries that every training run draws from.

Optimizers (``OPTIMIZERS``). Contract: an entry is ``make(group: Group) -> torch.optim.Optimizer`` over
``group.params``, stacked tensors ``[M, ...]`` (one slice per ensemble member) at the group's base rate.
Entries: ``adam``, ``adamw``, ``sgd`` (momentum, weight decay), ``muon`` (Newton-Schulz orthogonalized
momentum for matrices, AdamW for the rest: :mod:`lth.optim`). Adam, AdamW and SGD are elementwise, so one
optimizer over stacked tensors is exactly M optimizers, and a zero gradient on a zero weight leaves it
zero (``Group.elementwise``); Muon is not, so a trainer that prunes re-applies masks after its step.
``Group.fused`` chooses torch's fused kernels (one pass per tensor; the lottery's weights) or its
default ``foreach`` ones (the supermask's scores and scales, as they always trained): the two round
differently, so the choice is part of a run's arithmetic.

A module that trains declares its groups (``optim_groups(spec)``: e.g. the supermask's scores with the
config's optimizer and its scales with Adam at ``scale_lr``), and :class:`Optimizers` drives them as one:
``set_factor`` scales every group's base rate by the schedule's factor, ``state_dict`` merges theirs (so a
mid-run snapshot holds all of them).

LR schedules (``LR_SCHEDULES``). Contract: an entry is ``factor(spec, p: Progress) -> float``, the multiple
of the base rates at this step. ``Progress`` carries the step and the elapsed training seconds; under a
time budget (``spec.max_minutes``) progress is the larger of the step fraction and the time fraction, so a
run cut by its budget still finishes its decay. Every schedule starts with ``spec.warmup`` steps of linear
warmup (``(step + 1) / warmup``). Entries:

=============  ========================================================================================
``constant``   1 after warmup, then a linear warmdown to 0 over the last ``spec.warmdown`` fraction (0:
               none). ``None`` (a config that names no schedule) means this one.
``warmdown``   the same (the name the language-model supermask presets record).
``cosine``     ``0.5 (1 + cos(pi t / T))`` with ``t`` the step (under a budget: ``max(step, round(T *
               elapsed / budget))``).
``linear``     linear decay from 1 to 0 over training (BERT fine-tuning, translation).
``step``       ``gamma ** (number of milestones <= step)``: ``spec.milestones`` (steps), ``spec.gamma``.
=============  ========================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
LR_SCHEDULES: Registry = Registry("lr_schedule")
ELEMENTWISE = ("adam", "adamw", "sgd")


@dataclass
class Group:
    """Stacked tensors that share an optimizer and a base rate."""

    params: list  # stacked tensors [M, ...]
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    fused: bool = True
    names: list = field(default_factory=list)  # muon: which tensors are embeddings (AdamW) or matrices
    transposed: list = field(default_factory=list)  # muon: names stored [..., in, out]
    matrix_lr: float | None = None  # muon: the matrices' rate (lr: the rest)
    betas: list | None = None  # adam, adamw: (beta1, beta2); None: torch's default (0.9, 0.999)

    @property
    def elementwise(self) -> bool:
        return self.optimizer in ELEMENTWISE


def _betas(g: Group) -> dict:
    """Adam's betas when the config gives them (``Config.betas``; Transformers: (0.9, 0.98))."""
    return {} if g.betas is None else {"betas": (float(g.betas[0]), float(g.betas[1]))}


@OPTIMIZERS.register("adam")
def _adam(g: Group) -> torch.optim.Optimizer:
    return torch.optim.Adam(g.params, lr=g.lr, weight_decay=g.weight_decay, **_betas(g),
                            **({"fused": True} if g.fused else {}))


@OPTIMIZERS.register("adamw")
def _adamw(g: Group) -> torch.optim.Optimizer:
    return torch.optim.AdamW(g.params, lr=g.lr, weight_decay=g.weight_decay, **_betas(g),
                             **({"fused": True} if g.fused else {}))


@OPTIMIZERS.register("sgd")
def _sgd(g: Group) -> torch.optim.Optimizer:
    return torch.optim.SGD(g.params, lr=g.lr, momentum=g.momentum, weight_decay=g.weight_decay)


@OPTIMIZERS.register("muon")
def _muon(g: Group) -> torch.optim.Optimizer:
    from .optim import make_muon_adamw

    return make_muon_adamw(list(zip(g.names, g.params)), lr_matrix=g.matrix_lr or 0.02, lr_other=g.lr,
                           weight_decay=g.weight_decay, stacked=True, transposed=set(g.transposed))


class Optimizers:
    """Several optimizers (one per :class:`Group`) stepped as one, each at ``factor x`` its base rates."""

    def __init__(self, groups: list[Group]):
        self.groups = [g for g in groups if g.params]
        self.opts = [OPTIMIZERS.get(g.optimizer)(g) for g in self.groups]
        self.base = [[pg["lr"] for pg in o.param_groups] for o in self.opts]
        self.elementwise = all(g.elementwise for g in self.groups)

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.groups for p in g.params]

    def set_factor(self, f: float) -> None:
        for o, base in zip(self.opts, self.base):
            for pg, lr in zip(o.param_groups, base):
                pg["lr"] = lr * f

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o, g in zip(self.opts, self.groups):
            if g.lr > 0:  # a rate of 0 freezes the group (its state stays empty)
                o.step()

    def state_dict(self) -> dict:
        """One ``state_dict``: parameter ids numbered across the optimizers, groups concatenated."""
        state, groups, offset = {}, [], 0
        for o in self.opts:
            sd = o.state_dict()
            state.update({offset + pid: st for pid, st in sd["state"].items()})
            for pg in sd["param_groups"]:
                groups.append({**pg, "params": [offset + i for i in pg["params"]]})
            offset += sum(len(pg["params"]) for pg in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        groups, offset = list(sd["param_groups"]), 0
        for o in self.opts:
            n = len(o.param_groups)
            mine, groups = groups[:n], groups[n:]
            count = sum(len(pg["params"]) for pg in mine)
            o.load_state_dict({
                "state": {int(pid) - offset: st for pid, st in sd["state"].items() if offset <= int(pid) < offset + count},
                "param_groups": [{**pg, "params": [i - offset for i in pg["params"]]} for pg in mine],
            })
            offset += count


# ---------------------------------------------------------------------------------------------------
# learning-rate schedules


@dataclass(frozen=True)
class Progress:
    step: int
    elapsed: float = 0.0  # training seconds so far (only read under a time budget)


def _budget(spec) -> float | None:
    return 60.0 * spec.max_minutes if spec.max_minutes else None


def _warmup(spec, step: int) -> float:
    return min(1.0, (step + 1) / spec.warmup) if spec.warmup else 1.0


def _fraction(spec, p: Progress) -> float:
    """Training done so far: the step fraction, or under a budget the larger of it and the time fraction."""
    frac = p.step / spec.iterations
    budget = _budget(spec)
    return max(frac, p.elapsed / budget) if budget else frac


def schedule_step(spec, p: Progress) -> int:
    """The step a step-indexed schedule (cosine, temperature annealing) is at: under a time budget the
    larger of the step and the step the spent time fraction corresponds to."""
    budget = _budget(spec)
    return p.step if budget is None else max(p.step, round(spec.iterations * p.elapsed / budget))


@LR_SCHEDULES.register("constant")
def constant(spec, p: Progress) -> float:
    f = _warmup(spec, p.step)
    if spec.warmdown > 0:
        f *= min(1.0, max(0.0, (1.0 - _fraction(spec, p)) / spec.warmdown))
    return f


LR_SCHEDULES.register("warmdown")(constant)


@LR_SCHEDULES.register("cosine")
def cosine(spec, p: Progress) -> float:
    return _warmup(spec, p.step) * 0.5 * (1.0 + math.cos(math.pi * schedule_step(spec, p) / spec.iterations))


@LR_SCHEDULES.register("linear")
def linear(spec, p: Progress) -> float:
    return _warmup(spec, p.step) * max(0.0, 1.0 - _fraction(spec, p))


@LR_SCHEDULES.register("step")
def step_decay(spec, p: Progress) -> float:
    passed = sum(1 for m in (spec.milestones or ()) if p.step >= m)
    return _warmup(spec, p.step) * (0.1 if spec.gamma is None else spec.gamma) ** passed


def lr_factor(spec, step: int, elapsed: float = 0.0) -> float:
    """The factor of the base rates at ``step``: ``spec.lr_schedule``'s entry (None: ``constant``)."""
    return LR_SCHEDULES.get(spec.lr_schedule or "constant")(spec, Progress(step, elapsed))
