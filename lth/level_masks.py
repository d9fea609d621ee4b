"""What each lottery level prunes: per-tensor rates, the allocation, the sparsity schedule, the score.

:class:`LevelPruning` turns a config into calls of :class:`lth.pruning.Pruner` (score x allocation)
along a level schedule from :mod:`lth.sparsity`. Specification:

Rates per prunable tensor (scope ``layer``): ``prune_rate``; a tensor whose kind
(``pruning.kind_groups``: ``conv`` / ``fc`` / ``output`` / ``shortcut``) has a ``group_rates`` entry
takes that rate; a tensor named in ``layer_rates`` takes that one; the output layer's tensors
(``lth.models.output_layers``) take ``output_rate`` when it is set (it wins over ``layer_rates``, so
``--output-rate`` works on a preset that names its output layer).

Allocation: scope ``layer`` is ``layerwise`` with those rates. Scope ``global`` is one pool at
``prune_rate`` over every tensor (``layer_rates`` ignored), unless ``group_rates`` is set (each
group with a rate is one pool at its rate, the other tensors pools of their own at their rates) or
``output_rate`` is (the output tensors are then left out of the global pool and pruned at
``output_rate``).

Schedule: ``iterative`` is ``sparsity.Levels`` (level L prunes level L-1's ticket), ``oneshot`` is
``sparsity.OneShot`` (level L prunes level 0 at ``1 - (1 - r) ** L``, every rate transformed). With
``prune_of="original"`` each rate ``r`` is of the original count (``sparsity.Original``): level L's
target density is ``1 - L r`` per pool (per tensor, group or the global pool, at its rate), reached
with ``Pruner.step_to`` from whichever masks the schedule (or a criterion at init) starts from, so the
count is exactly ``round-half-up((1 - L r) * size)`` at every level.

Criterion (``Config.criterion``, a ``lth.scores.SCORES`` name; None is ``magnitude``):

- scores of the trained weights (``magnitude``, ``random``: neither data-driven nor iterative) prune
  the schedule's source level: its trained weights, among its surviving weights;
- data-driven (``snip``, ``grasp``) and iterative (``synflow``) scores prune AT INIT: level L's
  masks are computed from θ0 with all-ones masks, one-shot to level L's density (the ``oneshot``
  rates, whatever the schedule), with the layer-collapse guard on (``min_keep=1``). Data-driven
  scores see a fixed batch: ``SCORE_BATCHES`` training batches in the order of a seed derived from
  the trial seed, the loss the mean of the task's loss over them, on the outputs divided by the
  score's ``temperature`` (GraSP: 200); SynFlow sees one all-ones input of the task's example shape.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import masks as M
from . import gradual, models, pruning, sparsity
from .scores import SCORES, ScoreInputs

SCORE_BATCHES = 4  # training batches a data-driven score at init sees (batch_size examples each)


class LevelPruning:
    """The masks of every lottery level of one config (see the module docstring)."""

    def __init__(self, cfg, template: nn.Module, names: list[str]):
        self.cfg, self.template, self.names = cfg, template, names
        self.score = SCORES.get(cfg.criterion or "magnitude")
        self.at_init = self.score.needs_data or self.score.iterative
        kinds = pruning.kind_groups(template, names) if names else {}
        output = set(models.output_layers(template)) & set(names)
        group_rates = cfg.group_rates or {}
        rates = {n: group_rates.get(kinds[n], cfg.prune_rate) for n in names}
        rates.update({n: r for n, r in (cfg.layer_rates or {}).items()})
        if cfg.output_rate is not None:
            rates.update({n: cfg.output_rate for n in output})
        self.groups: dict[str, str] | None = None
        self.group_rates: dict[str, float] | None = None
        if cfg.prune_scope == "global" and group_rates:
            self.groups = {n: kinds[n] for n in names if kinds[n] in group_rates}
            self.group_rates = dict(group_rates)
        elif cfg.prune_scope == "global" and cfg.output_rate is not None:
            self.groups = {n: "global" for n in names if n not in output}
            self.group_rates = {"global": cfg.prune_rate}
        elif cfg.prune_scope == "global":
            rates = {n: cfg.prune_rate for n in names}  # one rate over all layers
        pruning.layer_rates(names, cfg.prune_rate, rates)  # one-line errors for unknown names, bad rates
        self.rates = rates
        self.scope = "groups" if self.groups is not None else cfg.prune_scope
        self.schedule = sparsity.SPARSITY_SCHEDULES.get("oneshot" if cfg.schedule == "oneshot" else "levels")
        self.oneshot = sparsity.SPARSITY_SCHEDULES.get("oneshot")
        self.original = sparsity.PRUNE_OF[cfg.prune_of] == "original"

    def densities(self, level: int):
        """``prune_of="original"``: level ``level``'s target densities, shaped as the allocation's spec."""
        per_tensor = sparsity.Original(self.rates).density(level)
        if self.groups is None:
            return per_tensor
        return pruning.GroupRates(sparsity.Original(self.group_rates).density(level), self.groups, per_tensor)

    def source(self, level: int) -> int | None:
        """The level whose ticket level ``level`` prunes (None: pruned at init, from θ0)."""
        return None if self.at_init else self.schedule(self.rates).prune_from(level)

    def _pruner(self, model: nn.Module, level: int, schedule, seed: int, min_keep: int) -> pruning.Pruner:
        rates = schedule(self.rates).rate_at(level)
        group_rates = schedule(self.group_rates).rate_at(level) if self.group_rates else None
        return pruning.Pruner(model, self.cfg.prune_rate, scope=self.scope, criterion=self.score,
                              layer_rates_=rates, names=self.names, seed=seed, groups=self.groups,
                              group_rates=group_rates, min_keep=min_keep)

    def _model(self, weights: dict[str, torch.Tensor], device=None) -> nn.Module:
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n])
        return model.to(device) if device is not None else model

    def prune(self, weights: dict[str, torch.Tensor], masks: M.Masks, level: int, seed: int = 0) -> M.Masks:
        """Level ``level``'s masks from the source level's trained ``weights`` and ``masks``."""
        targets = self.cfg.sparsities is not None  # lth.gradual: every pool straight to level L's density
        if targets:  # step_to prunes to a density: the pruner's rates play no part
            pruner = pruning.Pruner(self._model(weights), scope=self.cfg.prune_scope, criterion=self.score,
                                    names=self.names, seed=seed)
        else:
            pruner = self._pruner(self._model(weights), level, self.schedule, seed, 0)
        pruner.masks = {n: m.bool().clone() for n, m in masks.items()}
        pruner.names = list(masks)  # the masks' order: a global pool concatenates in it (ties)
        if targets:
            return pruner.step_to(gradual.density(self.cfg, level))
        return pruner.step_to(self.densities(level)) if self.original else pruner.step()

    def at_init_masks(self, theta0: dict[str, torch.Tensor], level: int, seed: int, task) -> M.Masks:
        """Level ``level``'s masks chosen at init by a data-driven or iterative score."""
        from .branches import derive_seed
        from .train import Batches

        inputs = ScoreInputs(input_shape=tuple(task.shape))
        model = self._model(theta0)
        if self.score.needs_data:
            order = Batches([derive_seed(seed, "score-batches")], task.train_size, self.cfg.batch_size)
            batches = [task.batch(order(i)) for i in range(SCORE_BATCHES)]
            model = model.to(batches[0][0].device)  # where the task's data lives

            def loss(params):
                total = 0.0
                for x, y in batches:
                    out = torch.func.functional_call(model, params, (x[0],)) / self.score.temperature
                    total = total + task.loss(out.unsqueeze(0), y)
                return total / len(batches)

            inputs = ScoreInputs(loss=loss, input_shape=tuple(task.shape))
        pruner = self._pruner(model, level, self.oneshot, derive_seed(seed, "criterion", level), 1)
        masks = pruner.step_to(self.densities(level), inputs) if self.original else pruner.step(inputs)
        return {n: m.cpu() for n, m in masks.items()}
