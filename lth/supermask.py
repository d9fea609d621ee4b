"""Supermask training: learn which weights to keep, never the weights themselves.

The prunable weights (``lth.masks.prunable_names``: matrices and kernels) stay frozen, bit-exactly, at
their seed-derived init (:func:`lth.init.init_from_seed`); biases and other 1-D parameters stay at
their init too (zeros for biases). Each frozen weight tensor ``W`` gets a score tensor ``s`` of its
shape, and the network is called (``torch.func.functional_call``) with the effective weights

    W_eff = scale * W * mask(s)

where ``mask`` is binary in the forward pass and differentiable by a straight-through estimator (STE)
in the backward pass. Three mask rules:

``topk``  (edge-popup, Ramanujan et al. 2020) per tensor keep exactly ``round(density * n)`` entries of
          largest ``|s|``; backward: ``d mask / d s = sign(s)`` (gradient straight to the scores).
``ste``   ``mask = 1[sigmoid(s / T) >= tau]`` with ``tau != 0.5``: the threshold on the scores is
          ``T * logit(tau)``, so it really moves as the temperature ``T`` anneals (geometrically from
          ``temperature`` to ``temperature_final``). With ``tau < 0.5`` the threshold is negative and rises
          towards 0: at fixed scores the mask gets sparser as ``T`` falls, and only scores that the task
          keeps pushing up survive. Backward: the gradient of ``sigmoid(s / T)``. Density control: each
          score is also pulled by ``density_penalty * (density_l - target)`` (through the same STE,
          ``density_l`` being the layer's actual mask density), i.e. the loss gets
          ``density_penalty / 2 * sum_l n_l (density_l - target)^2``.
``bernoulli`` (Zhou et al. 2019) in training ``mask ~ Bernoulli(sigmoid(s))``, backward through
          ``sigmoid(s)``; in evaluation ``mask = 1[sigmoid(s) > 0.5]`` (deterministic). ``density`` sets
          the initial expected density (scores centred on ``logit(density)``); the same density pull as
          ``ste`` is available (``density_penalty``, default 0: the density is learned).

Scores are seed-derived too (``score_init``, an :mod:`lth.init` scheme, under a seed derived from the
trial's), so a trial is reproducible from its seed alone. Scores train with the config's optimizer,
learning rate and weight decay (cosine schedule by default); scales with their own Adam at ``scale_lr``
(one scale's gradient sums over a whole layer, and SGD at the scores' rate overshoots), no decay.
Presets: ``mnist_supermask`` (topk, SGD), ``mnist_supermask_ste`` and ``mnist_supermask_bernoulli``
(Adam; the sigmoid rules' scores live in logit units, where SGD at 0.2 learns too slowly).

What trains: the scores (one float per masked weight; they become the mask bits and are not shipped)
and a few float *scales*. By default one scale per masked tensor (LeNet-300-100: 3; the last one is
the pre-logit scale; in a bias-free ReLU network only their product matters). A model may declare more scale points with an attribute
``supermask_scale_groups = {"blocks.0.attn.qkv.weight": 36, ...}``: the tensor's output dimension is split
into that many equal groups, each with its own scale (e.g. one per attention head). Nothing else
trains, except the model's own learned scales: a model may list parameter names (last component) in
``supermask_trainable`` (the GPT's ``head_scale``, ``out_scale``, ``logit_scale``); those 1-D parameters
train beside the scales, from their init. :func:`trained_floats` gives the exact counts.

A run (:class:`SupermaskRun`, in :mod:`lth.supermask_run`) uses the lottery run-directory layout: ``config.json``, ``env.json``,
``state.json`` (``trials_done``), ``results.csv`` (experiment = the rule, level 0, remaining = the
actual mask density at that evaluation, plus the target ``density``), and per trial
``supermask_trial{t}.safetensors`` with ``mask.<name>`` (uint8), ``score.<name>`` and ``scale.<name>``.
A finished trial is skipped when the same command runs again; ``lth report DIR`` works on it, and
``lth pack DIR --trial T`` packs a trial into a ticket file (seed, masks and the float32 scales) whose
``lth eval`` prints the metrics of the trial's last results row exactly (:mod:`lth.pack`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from . import masks as M
from .errors import ConfigError

RULES = ("ste", "topk", "bernoulli")

# ---------------------------------------------------------------------------------------------------
# mask rules: stacked scores [M, ...] -> float masks with a straight-through gradient


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, ``soft``'s gradient in the backward pass. Without autograd (evaluation)
    exactly ``hard``: ``hard + soft - soft`` can round to 1 +- 2**-23, and then a packed network built
    from the mask bits would not compute bit-identical logits."""
    if not (torch.is_grad_enabled() and soft.requires_grad):
        return hard
    return hard + soft - soft.detach()


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per member, exactly the ``k`` entries of largest ``|score|`` (ties broken by ``torch.topk``), as 0/1 floats;
    backward: gradient straight to the scores through ``|s|`` (edge-popup)."""
    a = scores.abs()
    flat = a.detach().flatten(1)
    hard = torch.zeros_like(flat)
    if k > 0:
        hard.scatter_(1, flat.topk(k, dim=1, sorted=False).indices, 1.0)
    return _straight_through(hard.view_as(a), a)


def ste_threshold(temperature: float, tau: float) -> float:
    """The score threshold of rule ``ste``: ``sigmoid(s / T) >= tau``  <=>  ``s >= T * logit(tau)``."""
    return temperature * math.log(tau / (1.0 - tau))


def ste_mask(scores: torch.Tensor, temperature: float, tau: float) -> torch.Tensor:
    soft = torch.sigmoid(scores / temperature)
    return _straight_through((soft >= tau).to(scores.dtype), soft)


def bernoulli_mask(scores: torch.Tensor, training: bool, generators: list[torch.Generator] | None) -> torch.Tensor:
    p = torch.sigmoid(scores)
    if not training:
        return (p > 0.5).to(scores.dtype)  # deterministic: the most likely mask
    # One generator per member, so a member's samples do not depend on which others train beside it.
    u = torch.stack([torch.rand(p.shape[1:], generator=g, device=p.device) for g in generators])
    return _straight_through((u < p.detach()).to(scores.dtype), p)


# ---------------------------------------------------------------------------------------------------
# the supermask network


def scale_groups(model: nn.Module, name: str) -> int:
    return int(getattr(model, "supermask_scale_groups", {}).get(name, 1))


class Supermask(nn.Module):
    """M members (trials) of one architecture with frozen weights, trainable scores and scales.

    ``weights[m]`` is member m's full parameter dict (name -> tensor) at init; ``scores[m]`` its initial
    scores for the masked names. Inputs are ``[M, B, ...]``, outputs ``[M, B, ...]`` (as
    :class:`lth.ensemble.Ensemble`, so tasks evaluate it the same way).
    """

    def __init__(self, model: nn.Module, weights: list[dict[str, torch.Tensor]], scores: list[dict[str, torch.Tensor]],
                 *, rule: str, density: float, scale_init: float = 1.0, threshold: float = 0.3,
                 temperature: float = 1.0, seeds: list[int] | None = None):
        super().__init__()
        if rule not in RULES:
            raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.base = copy.deepcopy(model)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rule, self.density, self.threshold = rule, float(density), float(threshold)
        self.scale_lr = 1e-3  # Adam rate of the scales (train_supermask sets the config's)
        self.temperature = float(temperature)
        self.members = len(weights)
        self.names = [n for n, _ in model.named_parameters()]
        self.masked = list(scores[0])
        self.stackable = getattr(model, "stackable", False) and not dict(self.base.named_buffers())
        # Frozen tensors are buffers: they move with .to() but are no parameters, so no optimizer can
        # touch them. Buffer names cannot contain '.', hence the index-aligned names.
        for i, n in enumerate(self.names):
            self.register_buffer(f"w{i}", torch.stack([w[n].detach() for w in weights]).clone())
        self.scores = nn.ParameterList([nn.Parameter(torch.stack([s[n].detach() for s in scores]).clone())
                                        for n in self.masked])
        self.groups = {n: scale_groups(model, n) for n in self.masked}
        for n in self.masked:
            out = weights[0][n].shape[0]
            if out % self.groups[n]:
                raise ConfigError(f"{n}: {self.groups[n]} scale groups do not divide its {out} outputs")
        self.scales = nn.ParameterList(
            [nn.Parameter(torch.full((self.members, self.groups[n]), float(scale_init))) for n in self.masked]
        )
        # the model's own learned scales (e.g. per attention head): trained, from their init
        own = tuple(getattr(model, "supermask_trainable", ()))
        self.learned = [n for n in self.names if n.rsplit(".", 1)[-1] in own and n not in self.masked]
        self.learned_params = nn.ParameterList(
            [nn.Parameter(torch.stack([w[n].detach() for w in weights]).clone()) for n in self.learned])
        self.ks = {n: max(1, round(self.density * weights[0][n].numel())) for n in self.masked}
        seeds = seeds if seeds is not None else list(range(self.members))
        self.generators = None
        if rule == "bernoulli":
            self.generators = []
            for s in seeds:
                g = torch.Generator(device="cpu")
                g.manual_seed(int(s))
                self.generators.append(g)
        # the model's own buffers (BatchNorm running statistics), one copy per member, stacked [M, ...]
        self.buffer_names = [n for n, _ in self.base.named_buffers()]
        for i, (n, b) in enumerate(self.base.named_buffers()):
            self.register_buffer(f"b{i}", b.detach().unsqueeze(0).repeat(self.members, *([1] * b.dim())))

    # --- tensors ---------------------------------------------------------------------------------

    def frozen(self) -> dict[str, torch.Tensor]:
        """name -> stacked frozen parameter [M, ...] (weights at init, biases, norms)."""
        return {n: getattr(self, f"w{i}") for i, n in enumerate(self.names) if n not in self.learned}

    def learned_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.learned, self.learned_params))

    def score_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.masked, self.scores))

    def scale_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.masked, self.scales))

    def soft_masks(self) -> dict[str, torch.Tensor]:
        """Float masks [M, ...]: binary values, straight-through gradients to the scores."""
        out = {}
        for n, s in self.score_dict().items():
            if self.rule == "topk":
                out[n] = topk_mask(s, self.ks[n])
            elif self.rule == "ste":
                out[n] = ste_mask(s, self.temperature, self.threshold)
            else:
                gens = self.generators
                if gens is not None and s.device.type != "cpu":
                    gens = self._device_generators(s.device)
                out[n] = bernoulli_mask(s, self.training, gens)
        return out

    def _device_generators(self, device):
        if getattr(self, "_dev_gens", None) is None:
            self._dev_gens = []
            for g in self.generators:
                dg = torch.Generator(device=device)
                dg.manual_seed(g.initial_seed())
                self._dev_gens.append(dg)
        return self._dev_gens

    @torch.no_grad()
    def masks(self) -> M.Masks:
        """The binary masks the network uses now (evaluation mode for ``bernoulli``), stacked, bool."""
        was = self.training
        self.eval()
        out = {n: m.detach() > 0.5 for n, m in self.soft_masks().items()}
        self.train(was)
        return out

    def effective(self, masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """name -> stacked effective parameter: ``scale * W * mask`` for masked names, frozen otherwise."""
        params = dict(self.frozen())
        params.update(self.learned_dict())
        masks = self.soft_masks() if masks is None else masks
        for n, scale in self.scale_dict().items():
            w = params[n] * masks[n]
            g = self.groups[n]
            shape = w.shape
            params[n] = (w.reshape(shape[0], g, -1) * scale[:, :, None]).reshape(shape)
        return params

    def buffer_dict(self) -> dict[str, torch.Tensor]:
        """name -> the members' stacked buffers [M, ...] (BatchNorm statistics update per member)."""
        return {n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)}

    def forward(self, *args, masks: dict[str, torch.Tensor] | None = None, **kwargs):
        """Inputs ``[M, B, ...]`` (one or several, or keywords) -> ``[M, B, ...]``; ``masks`` (from
        :meth:`soft_masks`) saves recomputing them."""
        return self._call(self.effective(masks), self.buffer_dict(), args, kwargs)

    def eval_state(self) -> dict[str, torch.Tensor]:
        """name -> stacked effective parameter [M, ...] (evaluation masks) and the members' buffers."""
        return {**self.effective(), **self.buffer_dict()}

    def call(self, state: dict[str, torch.Tensor], *args, **kwargs):
        """The frozen network with stacked effective ``state`` (as :meth:`eval_state`, any leading size)."""
        bufs = {n: state[n] for n in self.buffer_names}
        return self._call({n: v for n, v in state.items() if n not in bufs}, bufs, args, kwargs)

    def _call(self, params: dict, buffers: dict, args: tuple, kwargs: dict):
        if self.stackable:
            return functional_call(self.base, params, args, kwargs)
        from .ensemble_modes import in_dims

        def one(p, b, a, k):
            return functional_call(self.base, (p, b), a, k)

        dims = (0, 0, in_dims(args), in_dims(kwargs))
        return vmap(one, in_dims=dims, randomness="different")(params, buffers, args, kwargs)

    def training_state(self) -> dict[str, torch.Tensor]:
        """What training changes (for a mid-run snapshot): scores, scales, learned scales, and the
        ``bernoulli`` rule's mask-sampling generators."""
        out = {f"score.{n}": t for n, t in self.score_dict().items()}
        out.update({f"scale.{n}": t for n, t in self.scale_dict().items()})
        out.update({f"param.{n}": t for n, t in self.learned_dict().items()})
        out.update({f"buffer.{n}": t for n, t in self.buffer_dict().items()})
        gens = getattr(self, "_dev_gens", None) or self.generators or []
        out.update({f"generator.{i}": g.get_state() for i, g in enumerate(gens)})
        return out

    @torch.no_grad()
    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        mine = self.training_state()
        if set(mine) != set(state):
            raise ValueError(f"snapshot entries {sorted(set(state) ^ set(mine))[:3]} do not fit this supermask")
        gens = getattr(self, "_dev_gens", None) or self.generators or []
        for k, v in mine.items():
            if k.startswith("generator."):
                gens[int(k.split(".")[1])].set_state(state[k])
            else:
                v.copy_(state[k])

    def optim_groups(self, spec) -> list:
        """Scores: the config's optimizer, rate and weight decay. Scales (and the model's own learned
        scales): Adam at ``scale_lr``, no decay. Both in torch's default (foreach) kernels.

        The scales get their own optimizer because one scale's gradient sums over a whole layer: at the
        scores' SGD rate (~0.1) it overshoots (scales turn negative and the ReLUs die), while Adam moves it
        by about ``scale_lr`` per step whatever the gradient's size."""
        from .optimizers import Group

        if spec.optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"supermask scores train with sgd, adam or adamw, not {spec.optimizer!r}")
        return [Group(list(self.scores), spec.optimizer, spec.lr, spec.weight_decay, spec.momentum, fused=False),
                Group([*self.scales, *self.learned_params], "adam", self.scale_lr, fused=False)]

    # --- density control -------------------------------------------------------------------------

    def density_loss(self, strength: float, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``strength / 2 * sum_l n_l (density_l - target)^2`` through the STE: each score is pulled by
        ``strength * (density_l - target)`` times its mask's straight-through derivative."""
        total = 0.0
        masks = self.soft_masks() if masks is None else masks
        for n, m in masks.items():
            d = m.flatten(1).mean(1)  # [M]: the value is the actual density, the gradient the soft one
            total = total + 0.5 * strength * m[0].numel() * ((d - self.density) ** 2).sum()
        return total

    # --- members ---------------------------------------------------------------------------------

    def member_checkpoint(self, m: int) -> dict[str, torch.Tensor]:
        masks = self.masks()
        out = {}
        for n in self.masked:
            out[f"mask.{n}"] = masks[n][m].to(torch.uint8).cpu()
            out[f"score.{n}"] = self.score_dict()[n][m].detach().cpu().clone()
            out[f"scale.{n}"] = self.scale_dict()[n][m].detach().cpu().clone()
        for n, p in self.learned_dict().items():
            out[f"param.{n}"] = p[m].detach().cpu().clone()
        for n, b in self.buffer_dict().items():
            out[f"buffer.{n}"] = b[m].detach().cpu().clone()
        return out


def trained_floats(sm: Supermask | nn.Module, names: list[str] | None = None) -> dict[str, int]:
    """Exact counts for one member (trial).

    ``mask_bits``: masked weights (one bit each in the shipped network); ``scores``: floats trained
    during training (one per masked weight, shipped only as the mask bits); ``scales``: the learned floats
    that are shipped; ``trained_floats_shipped`` = ``scales``; ``frozen``: floats regenerated from the
    seed (weights and biases).
    """
    if isinstance(sm, Supermask):
        frozen = sum(t[0].numel() for t in sm.frozen().values())
        bits = sum(s[0].numel() for s in sm.scores)
        scales = sum(s[0].numel() for s in sm.scales) + sum(p[0].numel() for p in sm.learned_params)
    else:
        names = names if names is not None else M.prunable_names(sm)
        params = dict(sm.named_parameters())
        own = tuple(getattr(sm, "supermask_trainable", ()))
        learned = [n for n in params if n.rsplit(".", 1)[-1] in own and n not in names]
        frozen = sum(p.numel() for n, p in params.items() if n not in learned)
        bits = sum(params[n].numel() for n in names)
        scales = sum(scale_groups(sm, n) for n in names) + sum(params[n].numel() for n in learned)
    return {"mask_bits": bits, "scores": bits, "scales": scales, "trained_floats_shipped": scales,
            "frozen": frozen}


def remaining(sm: Supermask) -> list[float]:
    """Actual mask density of each member (evaluation masks), over all masked tensors."""
    masks = sm.masks()
    total = sum(m[0].numel() for m in masks.values())
    return [sum(int(m[i].sum()) for m in masks.values()) / total for i in range(sm.members)]


# Training (hooks for the one loop) and the run (SupermaskRun, checkpoints, materialize) live in
# lth.supermask_run; importable from here.
from .supermask_init import init_scores, scale_init, score_seed, temperature_at  # noqa: E402,F401
from .supermask_run import (DEFAULTS, SUPERMASK_FIELDS, SupermaskHooks, SupermaskRun,  # noqa: E402,F401
                            check, evaluate, load_checkpoint, materialize, resolve_config, run, train_supermask)
