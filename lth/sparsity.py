"""Sparsity schedules: *when* to prune and to what density, shaped like LR schedulers.

Registry ``SPARSITY_SCHEDULES``. Contract of an entry: a class whose instances are immutable and
answer, for ``t`` a pruning level (``per_step = False``) or a training step (``per_step = True``):

- ``density(t) -> float``: the fraction of prunable weights that survive after level ``t`` / at
  step ``t`` (1.0 = dense); non-increasing in ``t``.
- ``should_prune(t) -> bool``: whether the pruner acts at ``t``.

Level schedules also say what one level does to the masks it starts from: ``prune_from(L)`` (the
level whose masks it prunes) and ``rate_at(L)`` (the fraction of those survivors to remove, per tensor
when the rate is a per-tensor dict), which is what ``Pruner``/``pruning.magnitude`` take.

- ``levels``: level L removes ``rate`` of level L-1's survivors: density(L) = prod_1..L (1 - rate)
  = ``(1 - rate) ** L`` (the lottery's ``schedule="iterative"``).
- ``oneshot``: level L prunes the dense network (level 0) straight to level L's density, at rate
  ``1 - (1 - rate) ** L``, the lottery's formula.
- ``original``: level L removes ``rate`` of the ORIGINAL count: density(L) = ``1 - L * rate`` (Chen et
  al. 2020's 10%, 20%, ... 90% sparsity at rate 0.1; ``Config.prune_of = "original"``). It prunes level
  L-1's survivors at ``rate_at(L) = 1 - density(L) / density(L-1)``; the lottery asks the pruner for
  the density itself (``Pruner.step_to``: ``round-half-up(density * size)`` survivors per pool), so
  every level's count is exact whatever the rounding of the levels before.
- ``cubic``: gradual pruning (Zhu & Gupta 2017; ``torch.ao.pruning``'s ``CubicSL``), per step:
  ``d_t = d_end + (d_0 - d_end) * (1 - (t - t_0) / (t_end - t_0)) ** 3`` for ``t_0 <= t <= t_end``
  (``d_0`` before, ``d_end`` after), pruning every ``frequency`` steps from ``t_0`` and at ``t_end``.
  The paper's formula is in sparsity ``s = 1 - d``; it is the same affine formula in density, which
  this module uses so that ``d_end`` is reached exactly. ``t_end`` is typically ``int(0.8 * T)``.

:class:`Scheduler` steps a schedule against a pruner (anything with ``step_to(density, inputs)``,
e.g. ``lth.pruning.Pruner``) as an LR scheduler steps against an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from .errors import ConfigError
from .registry import Registry

Rate = Union[float, dict[str, float]]

SPARSITY_SCHEDULES: Registry[type] = Registry("sparsity schedule")


def _each(rate: Rate, f) -> Rate:
    return {n: f(r) for n, r in rate.items()} if isinstance(rate, dict) else f(rate)


def _check_rate(rate: Rate) -> None:
    for r in rate.values() if isinstance(rate, dict) else [rate]:
        if not 0.0 <= r < 1.0:
            raise ConfigError(f"prune rate must be in [0, 1), got {r}")


@SPARSITY_SCHEDULES.register("levels")
@dataclass(frozen=True)
class Levels:
    """Iterative pruning: each level removes ``rate`` of the previous level's survivors."""

    rate: Rate
    per_step: ClassVar[bool] = False

    def __post_init__(self):
        _check_rate(self.rate)

    def density(self, level: int) -> Rate:
        return _each(self.rate, lambda r: (1.0 - r) ** level)

    def should_prune(self, level: int) -> bool:
        return level >= 1

    def prune_from(self, level: int) -> int:
        return level - 1

    def rate_at(self, level: int) -> Rate:
        return self.rate


@SPARSITY_SCHEDULES.register("oneshot")
@dataclass(frozen=True)
class OneShot(Levels):
    """One-shot pruning: level L prunes the dense network straight to level L's density."""

    def prune_from(self, level: int) -> int:
        return 0

    def rate_at(self, level: int) -> Rate:
        return _each(self.rate, lambda r: 1.0 - (1.0 - r) ** level)


@SPARSITY_SCHEDULES.register("original")
@dataclass(frozen=True)
class Original(Levels):
    """Each level removes ``rate`` of the original prunable count: density(L) = 1 - L * rate."""

    def density(self, level: int) -> Rate:
        return _each(self.rate, lambda r: max(0.0, 1.0 - level * r))

    def rate_at(self, level: int) -> Rate:
        before, after = self.density(level - 1), self.density(level)
        cut = lambda b, a: 1.0 - a / b if b > 0 else 0.0  # noqa: E731
        return {n: cut(before[n], after[n]) for n in before} if isinstance(before, dict) else cut(before, after)


PRUNE_OF = {None: "levels", "remaining": "levels", "original": "original"}  # Config.prune_of -> schedule


def check_prune_of(cfg) -> None:
    """One-line ConfigError for a bad ``prune_of`` (or levels that would prune the original count away)."""
    if cfg.prune_of not in PRUNE_OF:
        raise ConfigError(f"prune_of must be original or remaining, got {cfg.prune_of!r}")
    if cfg.prune_of != "original":
        return
    if cfg.sparsities is not None:
        raise ConfigError("prune_of original and sparsities both set the levels' densities: give one")
    layer = cfg.layer_rates.values() if cfg.prune_scope == "layer" else ()
    rate = max([cfg.prune_rate, *layer, *(cfg.group_rates or {}).values(), cfg.output_rate or 0.0])
    if cfg.levels * rate >= 1.0:
        raise ConfigError(f"prune_of original: {cfg.levels} levels x rate {rate} prune all of the original "
                          f"weights; need levels * rate < 1")


@SPARSITY_SCHEDULES.register("cubic")
@dataclass(frozen=True)
class Cubic:
    """Zhu & Gupta's cubic schedule from ``initial_density`` at ``start`` to ``final_density`` at ``end``."""

    final_density: float
    end: int
    start: int = 0
    frequency: int = 100
    initial_density: float = 1.0
    per_step: ClassVar[bool] = True

    def __post_init__(self):
        if not 0.0 <= self.final_density <= self.initial_density <= 1.0:
            raise ConfigError(
                f"cubic schedule needs 0 <= final_density <= initial_density <= 1, "
                f"got {self.final_density} and {self.initial_density}"
            )
        if not 0 <= self.start < self.end or self.frequency < 1:
            raise ConfigError(
                f"cubic schedule needs 0 <= start < end and frequency >= 1, "
                f"got start={self.start} end={self.end} frequency={self.frequency}"
            )

    def density(self, step: int) -> float:
        if step <= self.start:
            return self.initial_density
        if step >= self.end:
            return self.final_density
        left = 1.0 - (step - self.start) / (self.end - self.start)
        return self.final_density + (self.initial_density - self.final_density) * left**3

    def should_prune(self, step: int) -> bool:
        return self.start <= step <= self.end and ((step - self.start) % self.frequency == 0 or step == self.end)


class Scheduler:
    """Drives a pruner along a schedule: call :meth:`step` once per level or training step.

    >>> sched = Scheduler(pruner, Cubic(0.1, end=int(0.8 * T), frequency=100))
    >>> for t in range(T): opt.step(); pruner.apply(); sched.step()
    """

    def __init__(self, pruner, schedule):
        self.pruner = pruner
        self.schedule = schedule
        self.t = 0

    def step(self, inputs=None) -> bool:
        """Advance ``t`` by one; prune to ``density(t)`` when ``should_prune(t)``. True if it pruned."""
        self.t += 1
        if not self.schedule.should_prune(self.t):
            return False
        self.pruner.step_to(self.schedule.density(self.t), inputs)
        return True

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
