"""Seed-derived starting values of a supermask's scores and scales, and its temperature schedule
(the rules are :mod:`lth.supermask`'s).

- :func:`score_seed`: the scores' seed, derived from the trial seed (``"supermask-scores"``).
- :func:`init_scores`: raw values from ``cfg.score_init`` (an :mod:`lth.init` scheme) under that seed;
  ``topk`` uses them as they are, ``ste`` and ``bernoulli`` standardize and place them so that the
  target ``density`` is kept at the start.
- :func:`scale_init`: ``1 / sqrt(density)``; :func:`temperature_at`: geometric annealing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .init import generate, resolve_scheme
from .supermask import ste_threshold


def score_seed(seed: int) -> int:
    from .lottery import derive_seed

    return derive_seed(seed, "supermask-scores")


def init_scores(template: nn.Module, names: list[str], seed: int, cfg) -> dict[str, torch.Tensor]:
    """Seed-derived initial scores per masked tensor.

    Raw values come from ``cfg.score_init`` (an :mod:`lth.init` scheme) under a seed derived from the
    trial seed. ``topk`` uses them as they are. ``ste`` standardizes each tensor and shifts it so that
    exactly the ``density`` fraction is at or above the threshold ``T0 * logit(tau)``, in units of ``T0``.
    ``bernoulli`` standardizes and centres them on ``logit(density)`` (expected density ~ target).
    """
    scheme = resolve_scheme(cfg.score_init)
    params = dict(template.named_parameters())
    s0 = score_seed(seed)
    out = {}
    for n in names:
        raw = generate(s0, n, params[n].shape, scheme(n, params[n]))
        if cfg.rule == "topk":
            out[n] = raw
            continue
        z = (raw - raw.mean()) / raw.std().clamp_min(1e-12)
        if cfg.rule == "ste":
            k = max(1, round(cfg.density * z.numel()))
            kth = z.flatten().topk(k).values.min()  # the k-th largest value
            theta = ste_threshold(1.0, cfg.threshold)
            # a hair above so that the k-th largest is kept despite rounding
            out[n] = cfg.temperature * (z - kth + theta + 1e-4)
        else:
            d = min(max(cfg.density, 1e-4), 1 - 1e-4)
            out[n] = z + math.log(d / (1 - d))
    return out


def scale_init(cfg) -> float:
    """1/sqrt(density): keeps each layer's pre-activation variance at its dense value."""
    return 1.0 / math.sqrt(cfg.density)


def temperature_at(cfg, step: int) -> float:
    """Geometric annealing from ``temperature`` (step 0) to ``temperature_final`` (the last step)."""
    frac = min(1.0, step / max(1, cfg.iterations - 1))
    return cfg.temperature * (cfg.temperature_final / cfg.temperature) ** frac
