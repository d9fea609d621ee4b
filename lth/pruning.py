"""Pruning criteria and the Pruner, an optimizer-like object that owns a model's masks.

A criterion is a function ``(weights, masks, rates) -> masks``: given the current weights and masks of
ONE model and the fraction of *surviving* weights to remove per tensor, it returns new masks that are a
subset of the old ones and remove exactly ``round(rate * surviving)`` entries (per tensor, or over all
tensors together for the global scope).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import masks as M
from .errors import ConfigError, LthError

Rates = dict[str, float]
Criterion = Callable[..., M.Masks]


def n_prune(rate: float, surviving: int) -> int:
    """How many of ``surviving`` weights a rate removes (round half up, never more than exist)."""
    return min(surviving, int(rate * surviving + 0.5))


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` largest entries of a flat score vector."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    if keep > 0:
        out[torch.topk(scores, keep, sorted=False).indices] = True
    return out


def _scored(weights, masks, rates, scope, score_fn) -> M.Masks:
    """Shared core: prune the lowest-scoring survivors; pruned entries score -inf so they stay pruned."""
    scores = {}
    for name, m in masks.items():
        s = score_fn(name, weights[name]).float().flatten()
        scores[name] = torch.where(m.flatten(), s, torch.full_like(s, -float("inf")))
    if scope == "layer":
        new = {}
        for name, m in masks.items():
            alive = int(m.sum())
            keep = alive - n_prune(rates.get(name, 0.0), alive)
            new[name] = _keep_top(scores[name], keep).view_as(m)
        return new
    if scope == "global":
        rate = set(rates.values())
        if len(rate) != 1:
            raise ConfigError("global pruning takes one rate for all layers, got several")
        alive = sum(int(m.sum()) for m in masks.values())
        keep = alive - n_prune(rate.pop(), alive)
        names = list(masks)
        flat = _keep_top(torch.cat([scores[n] for n in names]), keep)
        new, i = {}, 0
        for n in names:
            k = masks[n].numel()
            new[n] = flat[i : i + k].view_as(masks[n])
            i += k
        return new
    raise ConfigError(f"prune scope must be 'layer' or 'global', got {scope!r}")


def magnitude(weights: dict[str, torch.Tensor], masks: M.Masks, rates: Rates, scope: str = "layer") -> M.Masks:
    """Remove the surviving weights of smallest magnitude (Han et al. 2015; Frankle & Carbin 2019)."""
    return _scored(weights, masks, rates, scope, lambda _n, w: w.detach().abs())


def random(weights, masks: M.Masks, rates: Rates, scope: str = "layer", *, seed: int = 0) -> M.Masks:
    """Remove surviving weights uniformly at random (same counts as magnitude pruning would)."""
    return _scored(weights, masks, rates, scope, lambda n, w: random_scores(seed, n, w.shape))


def random_scores(seed: int, name: str, shape) -> torch.Tensor:
    """Seed-derived uniform scores, bit-exact on every machine (they go through lth.init's hash)."""
    from .init import Dist, generate

    return generate(seed, "random_mask/" + name, tuple(shape), Dist("uniform", 1.0))


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
    """Owns the masks of one model, the way an optimizer owns its state.

    >>> pruner = Pruner(model, rate=0.2)          # masks all True over weights with dim >= 2
    >>> opt.step(); pruner.apply()                 # keep pruned weights at exactly zero
    >>> pruner.step()                              # prune 20% of the surviving weights by magnitude
    >>> pruner.state_dict()                        # {'masks': ..., 'rates': ..., 'scope': ...}
    """

    def __init__(
        self,
        model: nn.Module,
        rate: float = 0.2,
        *,
        scope: str = "layer",
        criterion: str | Criterion = "magnitude",
        layer_rates_: dict[str, float] | None = None,
        names: list[str] | None = None,
        seed: int = 0,
    ):
        self.model = model
        self.params = dict(model.named_parameters())
        self.names = names if names is not None else M.prunable_names(model)
        self.rates = layer_rates(self.names, rate, layer_rates_)
        if scope not in ("layer", "global"):
            raise ConfigError(f"prune scope must be 'layer' or 'global', got {scope!r}")
        self.scope = scope
        if isinstance(criterion, str):
            if criterion not in CRITERIA:
                raise ConfigError(f"unknown criterion {criterion!r}; choose from {sorted(CRITERIA)}")
            criterion = CRITERIA[criterion]
        self.criterion = criterion
        self.seed = seed
        self.level = 0
        self.masks = M.ones(self.params, self.names)

    @torch.no_grad()
    def step(self) -> M.Masks:
        """Prune one level: new masks from the current weights, applied to the weights."""
        kw = {"seed": self.seed + self.level} if self.criterion is random else {}
        self.masks = self.criterion(self.params, self.masks, self.rates, self.scope, **kw)
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
        self.level = state.get("level", 0)
        self.apply()


# --- interop with torch.nn.utils.prune ------------------------------------------------------------


def to_torch_prune(model: nn.Module, masks: M.Masks) -> nn.Module:
    """Attach masks with ``torch.nn.utils.prune.custom_from_mask`` (``weight_orig`` + ``weight_mask``)."""
    from torch.nn.utils import prune

    for name, m in masks.items():
        module_name, _, pname = name.rpartition(".")
        module = model.get_submodule(module_name)
        prune.custom_from_mask(module, pname, m.to(getattr(module, pname).device))
    return model


def from_torch_prune(model: nn.Module) -> M.Masks:
    """Read the masks of a model pruned with ``torch.nn.utils.prune`` (its ``*_mask`` buffers)."""
    out = {}
    for mname, module in model.named_modules():
        for bname, buf in module.named_buffers(recurse=False):
            if bname.endswith("_mask"):
                pname = bname[: -len("_mask")]
                out[f"{mname}.{pname}" if mname else pname] = buf.bool().clone()
    if not out:
        raise LthError("model has no torch.nn.utils.prune masks (no '*_mask' buffers)")
    return out


def remove_torch_prune(model: nn.Module) -> nn.Module:
    """Make pruning permanent (``prune.remove``): plain ``weight`` parameters with zeros."""
    from torch.nn.utils import prune

    for mname, module in model.named_modules():
        for bname, _ in list(module.named_buffers(recurse=False)):
            if bname.endswith("_mask"):
                prune.remove(module, bname[: -len("_mask")])
    return model
