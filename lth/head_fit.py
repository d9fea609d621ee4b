"""A new task head fit alone on the frozen pre-trained θ0 before level 0; every level rewinds to that fit.

The issue's MLM case: all-MiniLM-L6-v2's checkpoint has no MLM head, so ``model_args head=mlm`` makes one
(transform dense + GELU + LayerNorm and a bias; the decoder is tied to the word embeddings, which the
checkpoint has), seeded from the run's seed. With ``Config.head_fit_steps = N`` (None or 0: no fit):

- The head is the model's ``seeded_parameters()`` the checkpoint does not hold (:func:`head_names`); a
  fit needs ``weights=checkpoint:PATH`` and such a head (else one line).
- Before level 0, each trial's θ0 (checkpoint + seeded head) trains for N steps with every other
  parameter frozen (:class:`HeadOnly`: its optimizer sees the head only, and the frozen tensors get no
  gradients), with the config's optimizer, rate (``head_fit_lr`` where set: a head from scratch takes a
  larger one than fine-tuning), schedule (over the N steps), clipping and batch, data
  order from ``derive_seed(trial seed, "head-fit")``, no evaluation. The fitted heads are written to
  ``head_fit.safetensors`` at the run's root (``trial{t}.<name>``), atomically once all trials are fit;
  a killed fit is redone, a finished one is reused.
- θ0 of trial t is then the checkpoint with the fitted head (:func:`apply`): level 0 starts from it and
  every level rewinds to it (the encoder exactly the checkpoint's values, the head exactly the fit's).
- A packed ticket at θ0 still regenerates the encoder from the checkpoint (``weights="source"``) and
  carries the fitted head as ``param.<name>`` float32 entries (:func:`read`, used by ``lth.pack``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .ensemble import Ensemble
from .errors import ConfigError

FILE = "head_fit.safetensors"


def check(cfg) -> None:
    """One-line ConfigError for a bad ``head_fit_steps``."""
    n = cfg.head_fit_steps
    if n is None or n == 0:
        return
    if n < 0:
        raise ConfigError(f"head_fit_steps must be >= 0, got {n}")
    if not str(cfg.weights or "").startswith("checkpoint:"):
        raise ConfigError("head_fit_steps fits a new head on a pre-trained θ0: it needs weights checkpoint:PATH")


def head_names(template, checkpoint) -> list[str]:
    """The model's ``seeded_parameters()`` that the checkpoint file does not hold (nor as ``bert.<name>``)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        held = set(f.keys())
    seeded = getattr(template, "seeded_parameters", list)()
    names = [n for n in seeded if n not in held and f"bert.{n}" not in held]
    if not names:
        raise ConfigError(f"head_fit_steps: {checkpoint} holds every parameter of the model: no new head to fit")
    return names


class HeadOnly(Ensemble):
    """An ensemble whose optimizer trains only ``trainable``; the other stacked tensors are frozen."""

    def __init__(self, model, states, trainable):
        super().__init__(model, states)
        self.trainable = set(trainable)
        for n, p in zip(self.names, self.stacked):
            p.requires_grad_(n in self.trainable)

    def optim_groups(self, spec):
        from .optimizers import Group

        params = [p for n, p in zip(self.names, self.stacked) if n in self.trainable]
        return [Group(params, spec.optimizer, spec.lr, spec.weight_decay, spec.momentum, fused=True, betas=spec.betas)]


def read(run_dir, trial: int) -> dict[str, torch.Tensor]:
    """Trial ``trial``'s fitted head ({} when the run fit none)."""
    from .io import load_tensors

    path, prefix = Path(run_dir) / FILE, f"trial{trial}."
    if not path.is_file():
        return {}
    return {k[len(prefix):]: v for k, v in load_tensors(path).items() if k.startswith(prefix)}


def apply(run_dir, trial: int, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ0 with the trial's fitted head in place of the seeded one."""
    return {**state, **read(run_dir, trial)}


def fit(lottery) -> None:
    """Fit every trial's head on its frozen θ0 and write ``head_fit.safetensors`` (module docstring)."""
    from . import dist as D
    from .branches import derive_seed
    from .io import atomic_save_tensors
    from .train import train

    cfg, path = lottery.cfg, lottery.run.path / FILE
    if not cfg.head_fit_steps or path.is_file():
        return
    names = lottery.head
    states = [lottery.source.theta0(cfg, lottery.source_arg, lottery.template, s, t)
              for t, s in enumerate(lottery.seeds)]
    ens = HeadOnly(lottery.template, states, names).to(lottery.device)
    spec = dataclasses.replace(lottery.spec, iterations=cfg.head_fit_steps, eval_every=cfg.head_fit_steps + 1,
                               lr=lottery.spec.lr if cfg.head_fit_lr is None else cfg.head_fit_lr,
                               warmup=min(lottery.spec.warmup, cfg.head_fit_steps), test_at=None, max_minutes=None)
    train(ens, {}, lottery.task, spec, [derive_seed(s, "head-fit") for s in lottery.seeds], ctx=lottery.ctx)
    fitted = {f"trial{t}.{n}": v for t in range(len(states)) for n, v in ens.member_state(t).items() if n in names}
    if lottery.ctx.main:
        atomic_save_tensors({k: v.cpu().contiguous() for k, v in fitted.items()}, path)
    D.barrier(lottery.ctx)
