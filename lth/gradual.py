"""Pruning methods of Brix et al. 2020 on the lottery's levels: target sparsities, gradual (MP) levels,
θk from the previous level's run.

Specification (the ``Config`` fields this module checks and interprets):

- ``sparsities = [s_1, ..., s_n]``: level L prunes to sparsity ``s_L`` (remaining ``1 - s_L``) instead of
  ``prune_rate`` per level: strictly increasing in (0, 1); ``levels`` becomes n; every prunable tensor is
  pruned alike (``prune_scope`` layer or global; layer, group and output rates do not apply), by
  magnitude. An ordinary (IMP) level prunes level L-1's trained weights among its survivors to exactly
  ``int(d_L * size + 0.5)`` survivors per pool (``Pruner.step_to``: each tensor under scope ``layer``,
  all of them together under ``global``).
- ``gradual_levels``: levels that do not prune at their start but while they train (magnitude pruning,
  MP, Zhu & Gupta 2017). A gradual level L starts from the masks of its *source* level G (the last
  level before L that is not gradual; 0 for the dense network) and prunes along ``sparsity.Cubic``
  from G's density d_0 to d_L: ``d_t = d_L + (d_0 - d_L)(1 - (t - t_0)/(t_end - t_0))^3``, t_0 the
  level's first step, ``t_end = t_0 + round(gradual_end * (T - t_0))`` (``gradual_end`` 0.8), every
  ``max(1, (T - t_0) // 50)`` steps and at t_end. At each pruning step each member keeps, per tensor
  (scope ``layer``: ``int(d_t * numel + 0.5)`` weights, the exact target at t_end) or over all tensors
  (scope ``global``), its largest-magnitude survivors; the loop zeroes the rest (``lth.train`` Hooks).
  Gradual levels train the ticket only (no controls): their masks come out of training.
- ``rewind_from``: where θk (``rewind_step`` k > 0) comes from. ``dense``: the level-0 run's step k
  (Frankle et al. 2020). ``previous``: the step-k state of the source level's own run (Brix et al.'s
  stabilized tickets: each level's run is captured at k); entries that run had pruned are filled from
  the dense run's θk, so that controls with other masks (``random``) start from trained-at-k values.
  A gradual level whose source is level 0 starts from θ0 (MP trains from scratch).
- ``restart_schedule``: every level > 0 runs the whole schedule from step 0 (warmup included) from its
  reset weights, as Brix et al. restart their warmup; otherwise a rewound level resumes at step k.
- ``method``: a label written into every ticket row of ``results.csv``; a control's rows carry its
  branch name. A label registered in ``METHODS`` also sets the fields that make the method (applied
  by ``lth.lottery.resolve``, after ``iterations`` is known; they win over the same fields given):

  ====== ==================================================================================
  lt     reset to θ0 at every level (``rewind_step`` 0), schedule restarted
  slt    θk from the previous level's run, k = ``round(0.05 T)`` unless ``rewind_step`` is set
  mp     every level gradual from the dense start (θ0), ``rewind_step`` 0
  slt_mp SLT to 50% and 60% (sparsities below them kept), then MP from 60%'s θk ⊙ m to each target
  mp_slt MP to 60% in one run, then SLT from that run's θk to each target above 60%
  ====== ==================================================================================

  CLT is not a method of its own: it is the ``constant`` control of an SLT run (its masks, each
  survivor ``sign(θk) α_l``), beside ``constant_random_sign``, ``reinit`` and ``random``.
"""

from __future__ import annotations

import torch

from . import masks as M
from . import pruning
from .errors import ConfigError
from .registry import Registry
from .sparsity import Cubic
from .train import Hooks

METHODS: Registry = Registry("method")
GRADUAL_STEPS = 50  # pruning events over the pruned part of training (Brix et al.: every T/50 steps)


def check(cfg) -> None:
    """One-line ConfigError for a bad combination of this module's fields."""

    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)

    s = cfg.sparsities
    if s is not None:
        need(len(s) >= 1 and all(isinstance(x, (int, float)) and 0.0 < x < 1.0 for x in s),
             f"sparsities must be fractions in (0, 1), got {s}")
        need(all(a < b for a, b in zip(s, s[1:])), f"sparsities must increase level by level, got {s}")
        need(cfg.schedule == "iterative", "sparsities need schedule iterative")
        need(cfg.criterion in (None, "magnitude"), "sparsities prune by magnitude")
    g = cfg.gradual_levels or []
    levels = cfg.levels if s is None else len(s)
    need(all(isinstance(v, int) and 1 <= v <= levels for v in g),
         f"gradual_levels must be levels in 1..{levels}, got {g}")
    need(not g or s is not None, "gradual_levels need sparsities (each level's target)")
    need(cfg.rewind_from in ("dense", "previous"), f"rewind_from must be dense or previous, got {cfg.rewind_from!r}")
    need(cfg.gradual_end is None or 0.0 < cfg.gradual_end <= 1.0,
         f"gradual_end must be in (0, 1], got {cfg.gradual_end}")


def density(cfg, level: int) -> float | None:
    """Level ``level``'s target density under ``sparsities`` (None without them; 1.0 at level 0)."""
    if cfg.sparsities is None:
        return None
    return 1.0 if level == 0 else 1.0 - float(cfg.sparsities[level - 1])


def is_gradual(cfg, level: int) -> bool:
    return level in (cfg.gradual_levels or [])


def source(cfg, level: int) -> int:
    """The level whose masks (and, with ``rewind_from="previous"``, whose θk) level ``level`` starts from."""
    if not is_gradual(cfg, level):
        return level - 1
    g = level - 1
    while g > 0 and is_gradual(cfg, g):
        g -= 1
    return g


def schedule(cfg, level: int, start: int, iterations: int) -> Cubic:
    """Level ``level``'s cubic schedule over steps ``start..iterations`` (see the module docstring)."""
    d0, d1 = density(cfg, source(cfg, level)), density(cfg, level)
    span = iterations - start
    end = start + max(1, round((cfg.gradual_end or 0.8) * span))
    return Cubic(d1, end=end, start=start, frequency=max(1, span // GRADUAL_STEPS), initial_density=d0)


def keep(d: float, size: int) -> int:
    """Survivors of a pool of ``size`` at density ``d``: round half up, as ``Pruner.step_to``."""
    return int(d * size + 0.5)


def keep_top(weights: dict[str, torch.Tensor], masks: M.Masks, d: float, scope: str) -> M.Masks:
    """One member's masks keeping, among survivors, the largest |w|: per tensor ``keep(d, numel)``
    (``layer``) or ``keep(d, total)`` over all tensors (``global``); never more than survive."""
    if scope == "layer":
        pools = [((n,), 1.0 - min(1.0, keep(d, masks[n].numel()) / max(1, int(masks[n].sum())))) for n in masks]
    else:
        alive = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        pools = [(tuple(masks), 1.0 - min(1.0, keep(d, total) / max(1, alive)))]
    scores = {n: weights[n].detach().abs() for n in masks}
    return pruning.allocate(scores, masks, [(names, max(0.0, r)) for names, r in pools])


class GradualPruning(Hooks):
    """The loop's hook of a gradual level: prunes every member along ``sched`` after the optimizer step.

    ``masks`` are the stacked start masks (members first); :attr:`masks` holds the current ones, which
    ``state_dict``/``load_state_dict`` carry through a mid-level snapshot.
    """

    def __init__(self, ens, masks: M.Masks, sched: Cubic, scope: str):
        self.ens, self.sched, self.scope = ens, sched, scope
        self.masks = {n: m.bool().clone() for n, m in masks.items()}

    def end_step(self, step: int):
        t = step + 1  # the weights after this step's update are those of step t
        if not self.sched.should_prune(t):
            return None
        params = self.ens.params()
        d = self.sched.density(t)
        for i in range(self.ens.members):
            one = keep_top({n: params[n][i] for n in self.masks}, {n: m[i] for n, m in self.masks.items()},
                           d, self.scope)
            for n, m in one.items():
                self.masks[n][i] = m
        return self.masks

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.to(torch.uint8) for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> M.Masks:
        for n in self.masks:
            self.masks[n] = state[n].bool().to(self.masks[n].device)
        return self.masks

    def member_masks(self, i: int) -> M.Masks:
        return {n: m[i].cpu().clone() for n, m in self.masks.items()}


def _k(cfg) -> int:
    return cfg.rewind_step or max(1, round(0.05 * cfg.iterations))


def _slt(cfg) -> dict:
    return dict(rewind_step=_k(cfg), rewind_from="previous", restart_schedule=True)


def _with(targets: list, *pins: float) -> list:
    """``pins`` (the hybrids' fixed stops) and every target above them, increasing."""
    return sorted(set(pins) | {s for s in targets if s > max(pins)})


@METHODS.register("lt")
def _lt(cfg) -> dict:
    return dict(rewind_step=0, restart_schedule=True, gradual_levels=None)


@METHODS.register("slt")
def _slt_method(cfg) -> dict:
    return dict(_slt(cfg), gradual_levels=None)


@METHODS.register("mp")
def _mp(cfg) -> dict:
    return dict(rewind_step=0, restart_schedule=True, gradual_levels=list(range(1, len(cfg.sparsities) + 1)),
                controls=[])


@METHODS.register("slt_mp")
def _slt_mp(cfg) -> dict:
    s = _with(cfg.sparsities, 0.5, 0.6)
    return dict(_slt(cfg), sparsities=s, gradual_levels=list(range(3, len(s) + 1)), controls=[])


@METHODS.register("mp_slt")
def _mp_slt(cfg) -> dict:
    s = _with(cfg.sparsities, 0.6)
    return dict(_slt(cfg), sparsities=s, gradual_levels=[1], controls=[])


def apply(cfg):
    """``cfg`` with its registered ``method``'s fields set (unchanged for another label or none)."""
    import dataclasses

    if cfg.method is None or cfg.method not in METHODS:
        return cfg
    if cfg.sparsities is None:
        raise ConfigError(f"method {cfg.method} needs sparsities (the levels' targets)")
    return dataclasses.replace(cfg, **METHODS.get(cfg.method)(cfg))
