"""Allocation (how many to remove, where) and the Pruner, an optimizer-like object that owns masks.

Pruning is *score x allocation x schedule*: a score (``lth.scores.SCORES``) says which weights matter,
an allocation (``ALLOCATIONS`` here) turns scores into masks, a sparsity schedule (``lth.sparsity``)
says when and to what density. :class:`Pruner` combines the first two for one model.

Contract of an allocation: ``alloc(scores, masks, spec, *, min_keep=0) -> masks``. It splits the
prunable tensors into *pools* (``alloc.pools(names, spec) -> [(names, rate)]``), and in each pool
removes exactly ``n_prune(rate, surviving)`` = round-half-up(rate * surviving) of the pool's
surviving entries, those with the lowest scores (higher = keep); one pool shares one threshold. The
new masks are a subset of the old ones: pruned entries score -inf and stay pruned. Entries:

- ``layerwise``: every tensor is a pool; spec: rates per tensor (``{name: rate}``, missing = 0).
- ``global``: one pool over all tensors; spec: one rate (or a rates dict whose values are all equal).
- ``groups``: spec :class:`GroupRates`: a rate per group and a map tensor -> group (e.g. from
  :func:`kind_groups`: conv / fc / output / shortcut); a group is one pool (``pooled``) or each of
  its tensors is pruned at the group's rate; tensors in no group are pools of their own at
  ``default``.

Layer-collapse guard (``min_keep``): pruning at init with a global threshold can remove a whole
layer, which disconnects the network (Tanaka et al. 2020, "layer collapse"). With ``min_keep = k > 0``
each tensor first keeps its ``min(k, surviving)`` highest-scoring entries, and the pool's remaining
budget goes to the best of the rest; the counts stay exact unless the guard alone needs more than
the budget, in which case the guard wins. ``min_keep = 0`` (the default) is plain allocation.

The criteria ``magnitude`` / ``random`` ``(weights, masks, rates, scope) -> masks`` (scope ``layer``
or ``global``) are kept: they are the ``magnitude`` / ``random`` scores under ``layerwise`` /
``global`` allocation, with the same results to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from . import masks as M
from .errors import ConfigError
from .registry import Registry
from .scores import SCORES, Score, ScoreInputs, random_scores  # noqa: F401  (random_scores: older callers)

Rates = dict[str, float]
Criterion = Callable[..., M.Masks]
Pool = tuple[tuple[str, ...], float]  # tensors that share one threshold, and the rate they are pruned at


def n_prune(rate: float, surviving: int) -> int:
    """How many of ``surviving`` weights a rate removes (round half up, never more than exist)."""
    return min(surviving, int(rate * surviving + 0.5))


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` largest entries of a flat score vector."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    if keep > 0:
        out[torch.topk(scores, keep, sorted=False).indices] = True
    return out


def _rankable(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flat scores to rank: float32 (float64 kept), non-finite survivors clamped, pruned entries -inf."""
    s = score.detach().flatten()
    s = s if s.dtype == torch.float64 else s.float()
    lo, hi = torch.finfo(s.dtype).min, torch.finfo(s.dtype).max
    s = torch.nan_to_num(s, nan=lo, posinf=hi, neginf=lo)  # a no-op on finite scores
    return torch.where(mask.flatten(), s, torch.full_like(s, -float("inf")))


def allocate(scores: dict[str, torch.Tensor], masks: M.Masks, pools: list[Pool], *, min_keep: int = 0) -> M.Masks:
    """New masks: in each pool remove ``n_prune(rate, surviving)`` lowest-scoring survivors."""
    new = dict(masks)
    for names, rate in pools:
        flat = [_rankable(scores[n], masks[n]) for n in names]
        alive = [int(masks[n].sum()) for n in names]
        keep = sum(alive) - n_prune(rate, sum(alive))
        reserved = None
        if min_keep > 0:  # the layer-collapse guard: each tensor's best min_keep first
            reserved = [_keep_top(s, min(min_keep, a)) for s, a in zip(flat, alive)]
            n_res = sum(min(min_keep, a) for a in alive)
            keep = max(keep, n_res) - n_res
            flat = [s.masked_fill(r, -float("inf")) for s, r in zip(flat, reserved)]
        kept = _keep_top(flat[0] if len(flat) == 1 else torch.cat(flat), keep)
        i = 0
        for j, n in enumerate(names):
            k = masks[n].numel()
            m = kept[i : i + k]
            new[n] = (m if reserved is None else m | reserved[j]).view_as(masks[n])
            i += k
    return new


@dataclass(frozen=True)
class Allocation:
    """A registered allocation: ``pools(names, spec)`` and, called, the masks (see the docstring)."""

    name: str
    pools: Callable[[list[str], Any], list[Pool]]

    def __call__(self, scores, masks: M.Masks, spec, *, min_keep: int = 0) -> M.Masks:
        return allocate(scores, masks, self.pools(list(masks), spec), min_keep=min_keep)


@dataclass(frozen=True)
class GroupRates:
    """Spec of the ``groups`` allocation: ``rates`` group -> rate, ``of`` tensor -> group."""

    rates: dict[str, float]
    of: dict[str, str]
    default: float | Rates = 0.0  # rate of a tensor in no group (a dict: per tensor)
    pooled: bool = True  # one threshold per group; False: each tensor on its own at the group's rate


ALLOCATIONS: Registry[Allocation] = Registry("allocation")


def _allocation(name: str):
    def add(pools):
        ALLOCATIONS.register(name)(Allocation(name, pools))
        return pools

    return add


@_allocation("layerwise")
def layerwise_pools(names: list[str], rates: Rates) -> list[Pool]:
    return [((n,), rates.get(n, 0.0)) for n in names]


@_allocation("global")
def global_pools(names: list[str], rate: float | Rates) -> list[Pool]:
    if isinstance(rate, dict):
        values = set(rate.values())
        if len(values) != 1:
            raise ConfigError("global pruning takes one rate for all layers, got several")
        rate = values.pop()
    return [(tuple(names), rate)]


@_allocation("groups")
def group_pools(names: list[str], spec: GroupRates) -> list[Pool]:
    unknown = sorted(set(spec.of.values()) - set(spec.rates))
    if unknown:
        raise ConfigError(f"groups {unknown} have no rate (rates given for {sorted(spec.rates)})")
    pools: list[Pool] = []
    for group, rate in spec.rates.items():
        members = tuple(n for n in names if spec.of.get(n) == group)
        if members:
            pools += [(members, rate)] if spec.pooled else [((n,), rate) for n in members]
    d = spec.default
    return pools + [((n,), d.get(n, 0.0) if isinstance(d, dict) else d) for n in names if n not in spec.of]


def allocation(scope: str) -> Allocation:
    """The allocation a scope names (``layer`` is ``layerwise``, the lottery's name for it)."""
    return ALLOCATIONS.get("layerwise" if scope == "layer" else scope)


def kind_groups(model: nn.Module, names: list[str]) -> dict[str, str]:
    """Tensor -> ``output`` | ``shortcut`` | ``conv`` | ``fc``, for :class:`GroupRates`.

    The output layer is ``model.output_layer`` when the model names it, else the last tensor;
    shortcuts are names containing ``shortcut`` or ``downsample``; conv kernels have dim >= 3.
    """
    out, params = getattr(model, "output_layer", None), dict(model.named_parameters())

    def kind(n: str) -> str:
        if n.startswith(f"{out}.") if out else n == names[-1]:
            return "output"
        if "shortcut" in n or "downsample" in n:
            return "shortcut"
        return "conv" if params[n].dim() >= 3 else "fc"

    return {n: kind(n) for n in names}


def _scored(weights, masks, rates, scope, score: Score, seed: int = 0) -> M.Masks:
    return allocation(scope)(score(ScoreInputs(weights, masks, seed=seed)), masks, rates)


def magnitude(weights: dict[str, torch.Tensor], masks: M.Masks, rates: Rates, scope: str = "layer") -> M.Masks:
    """Remove the surviving weights of smallest magnitude (Han et al. 2015; Frankle & Carbin 2019)."""
    return _scored(weights, masks, rates, scope, SCORES.get("magnitude"))


def random(weights, masks: M.Masks, rates: Rates, scope: str = "layer", *, seed: int = 0) -> M.Masks:
    """Remove surviving weights uniformly at random (same counts as magnitude pruning would)."""
    return _scored(weights, masks, rates, scope, SCORES.get("random"), seed)


def random_like(masks: M.Masks, seed: int) -> M.Masks:
    """A random mask with exactly the same number of survivors per tensor as ``masks``.

    This is the 'random pruning' control of Frankle & Carbin: the ticket's per-layer sparsity, but
    a mask chosen at random over the whole tensor.
    """
    out = {}
    for name, m in masks.items():
        s = random_scores(seed, name, m.shape).flatten().to(m.device)
        out[name] = _keep_top(s, int(m.sum())).view_as(m)
    return out


CRITERIA: dict[str, Criterion] = {"magnitude": magnitude, "random": random}


def layer_rates(names: list[str], rate: float, overrides: dict[str, float] | None = None) -> Rates:
    """Per-tensor rates: ``rate`` everywhere except where ``overrides`` names a tensor."""
    overrides = overrides or {}
    unknown = set(overrides) - set(names)
    if unknown:
        raise ConfigError(f"layer_rates names unknown prunable tensors: {sorted(unknown)} (have {names})")
    for n, r in {"*": rate, **overrides}.items():
        if not 0.0 <= r < 1.0:
            raise ConfigError(f"prune rate for {n} must be in [0, 1), got {r}")
    return {n: overrides.get(n, rate) for n in names}


class Pruner:
    """Owns the masks of one model, the way an optimizer owns its state: a score x an allocation.

    >>> pruner = Pruner(model, rate=0.2)          # masks all True over weights with dim >= 2
    >>> opt.step(); pruner.apply()                 # keep pruned weights at exactly zero
    >>> pruner.step()                              # prune 20% of the surviving weights by magnitude
    >>> pruner.step_to(0.05)                       # prune to 5% density (what sparsity schedules call)
    >>> Pruner(model, 0.5, criterion="snip").step(ScoreInputs(loss=batch_loss))
    >>> pruner.state_dict()                        # {'masks': ..., 'rates': ..., 'scope': ...}

    ``criterion``: a ``SCORES`` name, a :class:`~lth.scores.Score`, or a criterion function
    ``(weights, masks, rates, scope) -> masks`` (only :meth:`step` takes those). ``scope``: an
    ``ALLOCATIONS`` name or ``layer``; ``groups`` takes ``groups`` (tensor -> group) and
    ``group_rates`` (group -> rate), tensors in no group use ``rate`` / ``layer_rates_``.
    ``min_keep``: the layer-collapse guard. ``rounds``: rounds per step (default: the score's, 100
    for SynFlow); round k of n moves each pool from ``a`` survivors towards its target ``t`` along
    the exponential schedule ``a * (t / a) ** (k / n)``, rescoring before each round.
    """

    def __init__(self, model: nn.Module, rate: float = 0.2, *, scope: str = "layer",
                 criterion: str | Score | Criterion = "magnitude", layer_rates_: dict[str, float] | None = None,
                 names: list[str] | None = None, seed: int = 0, groups: dict[str, str] | None = None,
                 group_rates: dict[str, float] | None = None, min_keep: int = 0, rounds: int | None = None):
        self.model = model
        self.params = dict(model.named_parameters())
        self.names = names if names is not None else M.prunable_names(model)
        self.rates = layer_rates(self.names, rate, layer_rates_)
        self.allocation = allocation(scope)
        self.scope = scope
        self.groups = None
        if self.allocation.name == "groups":
            layer_rates(list(group_rates or {}), 0.0, group_rates)  # validates the group rates
            self.groups = GroupRates(dict(group_rates or {}), dict(groups or {}), default=self.rates)
        self.criterion = None if isinstance(criterion, (str, Score)) else criterion
        self.score = None if self.criterion else SCORES.get(criterion) if isinstance(criterion, str) else criterion
        if min_keep < 0 or (rounds is not None and rounds < 1):
            raise ConfigError(f"min_keep must be >= 0 and rounds >= 1, got {min_keep} and {rounds}")
        self.min_keep = min_keep
        self.rounds = rounds
        self.seed = seed
        self.level = 0
        self.masks = M.ones(self.params, self.names)

    def spec(self):
        """What the allocation is given: the groups spec, or the per-tensor rates."""
        return self.groups if self.groups is not None else self.rates

    def score_inputs(self, inputs: ScoreInputs | None = None) -> ScoreInputs:
        """``inputs`` (its loss, input shape, model) with this pruner's weights, masks and seed."""
        inputs = inputs or ScoreInputs()
        return replace(
            inputs,
            weights=self.params,
            masks=self.masks,
            model=inputs.model if inputs.model is not None else self.model,
            seed=self.seed + self.level,
        )

    @torch.no_grad()
    def step(self, inputs: ScoreInputs | None = None) -> M.Masks:
        """Prune one level: each pool loses ``n_prune(rate, surviving)``; applied to the weights.

        ``inputs`` supplies what data-driven (``loss``) and data-free (``input_shape``) scores need;
        the pruner supplies weights, masks and the seed.
        """
        if self.criterion is not None:
            kw = {"seed": self.seed + self.level} if self.criterion is random else {}
            self.masks = self.criterion(self.params, self.masks, self.rates, self.scope, **kw)
        else:
            pools = self.allocation.pools(self.names, self.spec())
            alive = [sum(int(self.masks[n].sum()) for n in names) for names, _ in pools]
            self._reach([(names, a - n_prune(r, a)) for (names, r), a in zip(pools, alive)], inputs)
        return self._advance()

    @torch.no_grad()
    def step_to(self, density, inputs: ScoreInputs | None = None) -> M.Masks:
        """Prune every pool to ``round-half-up(density * size)`` survivors (never regrows).

        Under ``global`` that is the overall density; under ``layerwise`` every tensor's (rates are
        ignored: the target is the density). ``density`` may also be a spec shaped like the
        allocation's (per-tensor dict, :class:`GroupRates`) whose values are densities: each pool to
        its own. Iterative scores take ``rounds`` rounds to get there.
        """
        one = isinstance(density, (int, float))
        pools = self.allocation.pools(self.names, self.spec() if one else density)
        pools = [(names, density if one else d) for names, d in pools]
        for _, d in pools:
            if not 0.0 <= d <= 1.0:
                raise ConfigError(f"density must be in [0, 1], got {d}")
        if self.criterion is not None:
            raise ConfigError("step_to needs a score (a SCORES name or a Score), not a criterion function")
        sizes = [sum(self.masks[n].numel() for n in names) for names, _ in pools]
        self._reach([(names, int(d * k + 0.5)) for (names, d), k in zip(pools, sizes)], inputs)
        return self._advance()

    def _rounds(self) -> int:
        return self.rounds if self.rounds is not None else self.score.rounds

    def _reach(self, targets: list[tuple[tuple[str, ...], int]], inputs: ScoreInputs | None) -> None:
        """Move each pool to its target count of survivors over ``rounds`` exponential rounds."""
        n = self._rounds()
        start = [sum(int(self.masks[x].sum()) for x in names) for names, _ in targets]
        for k in range(1, n + 1):
            pools = []
            for (names, target), a in zip(targets, start):
                target = min(target, a)
                keep = target if k == n or a == 0 else int(a * (target / a) ** (k / n) + 0.5)
                alive = sum(int(self.masks[x].sum()) for x in names)
                pools.append((names, (alive - keep) / alive if alive > keep else 0.0))
            scores = self.score(self.score_inputs(inputs))
            self.masks = allocate(scores, self.masks, pools, min_keep=self.min_keep)
            self.apply()

    def _advance(self) -> M.Masks:
        self.level += 1
        self.apply()
        return self.masks

    @torch.no_grad()
    def apply(self) -> None:
        """Zero pruned weights (call after every optimizer step)."""
        M.apply(self.params, self.masks)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights, so optimizer state for them stays zero."""
        for n, m in self.masks.items():
            g = self.params[n].grad
            if g is not None:
                g.mul_(m)

    @torch.no_grad()
    def reset(self, state: dict[str, torch.Tensor]) -> None:
        """Reset surviving weights to ``state`` (init or rewind point) and re-apply the masks."""
        for n, p in self.params.items():
            if n in state:
                p.copy_(state[n])
        self.apply()

    def remaining(self) -> float:
        return M.remaining(self.masks)

    def state_dict(self) -> dict:
        return {
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "rates": dict(self.rates),
            "scope": self.scope,
            "level": self.level,
        }

    def load_state_dict(self, state: dict) -> None:
        M.check_compatible(state["masks"], self.params)
        self.masks = {n: m.bool().to(self.params[n].device) for n, m in state["masks"].items()}
        self.names = list(self.masks)
        self.rates = dict(state.get("rates", self.rates))
        self.scope = state.get("scope", self.scope)
        self.allocation = allocation(self.scope)
        self.level = state.get("level", 0)
        self.apply()


def prune_at_init(model: nn.Module, density: float, score: str | Score = "synflow", *, scope: str = "global",
                  loss: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
                  input_shape: tuple[int, ...] | None = None, min_keep: int = 1, **pruner_kw) -> M.Masks:
    """Masks of ``density`` chosen at init by ``score`` (SynFlow: 100 rounds; SNIP/GraSP: one shot,
    or ``rounds=n``), with the layer-collapse guard on (``min_keep=1``). Zeroes the pruned weights."""
    pruner = Pruner(model, 0.0, scope=scope, criterion=score, min_keep=min_keep, **pruner_kw)
    return pruner.step_to(density, ScoreInputs(loss=loss, input_shape=input_shape))


# interop with torch.nn.utils.prune lives in lth.torch_prune; importable from here as before
from .torch_prune import from_torch_prune, remove_torch_prune, to_torch_prune  # noqa: E402,F401
