"""Supermask training and runs (the training half of :mod:`lth.supermask`).

:class:`SupermaskHooks` is what supermask training changes in the one training loop
(:func:`lth.train.train`); :func:`train_supermask` runs it. :class:`SupermaskRun` trains ``cfg.trials`` trials batched as one :class:`lth.supermask.Supermask` through
the one training loop, in the lottery run-directory layout: ``config.json``, ``env.json``, ``state.json``
(``trials_done``), ``results.csv`` (experiment = the rule, level 0, remaining = the actual mask density
at that evaluation, plus the target ``density``), and per trial ``supermask_trial{t}.safetensors`` with
``mask.<name>`` (uint8), ``score.<name>``, ``scale.<name>`` and ``param.<name>`` (the model's own learned
scales). A finished trial is skipped when the same command runs again, a killed group continues from
its mid-run snapshot (``partial_trials<t>-<t>.*``, :mod:`lth.snapshots`), and under torchrun the trials
train data-parallel with rank 0 alone writing. :func:`load_checkpoint` reads a trial's file and
:func:`materialize` turns it into the plain network ``scale * W * mask``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
from torch import nn

from .init import weights_sha256
from .errors import ConfigError
from .init import SCHEMES
from .supermask import RULES, Supermask, remaining
from .supermask_init import init_scores, scale_init, score_seed, temperature_at

# Resolved values of the supermask Config fields when the config leaves them None. Fields a rule does
# not use must stay None (setting them is an error, so that a run never records an ignored knob).
DEFAULTS = {
    "topk": dict(density=0.5, score_init="kaiming_uniform", lr_schedule="cosine", scale_lr=1e-3),
    "ste": dict(density=0.5, score_init="kaiming_uniform", lr_schedule="cosine", scale_lr=1e-3, temperature=1.0,
                temperature_final=0.05, threshold=0.3, density_penalty=0.1),
    "bernoulli": dict(density=0.5, score_init="kaiming_uniform", lr_schedule="cosine", scale_lr=1e-3,
                      density_penalty=0.0),
}
SUPERMASK_FIELDS = ("rule", "density", "score_init", "lr_schedule", "scale_lr", "temperature", "temperature_final",
                    "threshold", "density_penalty")


def resolve_config(cfg):
    """The config with every supermask field filled in for its rule; one-line errors on bad values."""
    rule = cfg.rule if cfg.rule is not None else "topk"
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    defaults = DEFAULTS[rule]
    values = {"rule": rule}
    for f in SUPERMASK_FIELDS[1:]:
        v = getattr(cfg, f)
        if f not in defaults:
            if v is not None:
                raise ConfigError(f"{f} applies to rule {'ste' if f != 'density_penalty' else 'ste or bernoulli'} "
                                  f"only, not {rule}")
            continue
        values[f] = defaults[f] if v is None else v
    cfg = dataclasses.replace(cfg, **values)
    check(cfg)
    return cfg


def check(cfg) -> None:
    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)

    need(cfg.rule in RULES, f"rule must be one of {', '.join(RULES)}, got {cfg.rule!r}")
    need(0.0 < cfg.density <= 1.0, f"density must be in (0, 1], got {cfg.density}")
    need(cfg.score_init in SCHEMES, f"unknown score_init {cfg.score_init!r}; choose from {sorted(SCHEMES)}")
    need(cfg.scale_lr >= 0, f"scale_lr must be >= 0 (0: scales stay at their init), got {cfg.scale_lr}")
    from .optimizers import LR_SCHEDULES

    need(cfg.lr_schedule in LR_SCHEDULES,
         f"lr_schedule must be one of {', '.join(LR_SCHEDULES.names())}, got {cfg.lr_schedule!r}")
    if cfg.rule == "ste":
        need(cfg.temperature > 0 and cfg.temperature_final > 0,
             f"temperatures must be > 0, got {cfg.temperature} and {cfg.temperature_final}")
        need(0.0 < cfg.threshold < 1.0 and cfg.threshold != 0.5,
             f"threshold must be in (0, 1) and not 0.5 (at 0.5 the mask would not depend on T), got {cfg.threshold}")
    if cfg.density_penalty is not None:
        need(cfg.density_penalty >= 0, f"density_penalty must be >= 0, got {cfg.density_penalty}")





# ---------------------------------------------------------------------------------------------------
# training: the one loop (lth.train.train) with the supermask's hooks


class SupermaskHooks:
    """What supermask training changes in the one training loop (:func:`lth.train.train`): the masks are
    formed once per step from the scores (so the forward pass and the density pull see the same, for
    ``bernoulli`` the same sampled, masks), the temperature anneals with the schedule's step, and each
    evaluation also records the actual mask density and the temperature."""

    def __init__(self, sm: Supermask, cfg):
        self.sm, self.cfg = sm, cfg
        self.penalty = cfg.density_penalty or 0.0
        self._masks = None

    def begin_step(self, step: int, at: int) -> None:
        if self.cfg.rule == "ste":
            self.sm.temperature = temperature_at(self.cfg, at)

    def forward(self, model, x):
        from .train import call_with

        self._masks = self.sm.soft_masks()
        return call_with(model, x, masks=self._masks)

    def extra_loss(self):
        return self.sm.density_loss(self.penalty, self._masks) if self.penalty > 0 else None

    def end_step(self, step: int):
        return None

    def metrics(self, metrics: dict) -> None:
        metrics["remaining"] = remaining(self.sm)
        metrics["temperature"] = self.sm.temperature


def evaluate(sm: Supermask, task, splits=None) -> dict[str, torch.Tensor]:
    """Mean metrics per member, with the deterministic masks (evaluation mode): the trainer's evaluation."""
    from .train import evaluate as run_eval

    return run_eval(sm, task, splits=splits)


def train_supermask(sm: Supermask, task, cfg, seeds: list[int], *,
                    on_eval: Callable[[int, dict], None] | None = None, progress=None, **kw) -> None:
    """Train scores and scales for ``cfg.iterations`` steps, or until the time budget ``max_minutes`` is
    spent (then the schedules run on the fraction of it spent): the one training loop,
    :func:`lth.train.train`, with :class:`SupermaskHooks` (``kw``: its ``ctx``, ``snapshot``, ``resume``,
    ``start``). Scores train with ``cfg``'s optimizer and schedule, scales with Adam at ``scale_lr``."""
    from .train import TrainSpec, train

    sm.scale_lr = cfg.scale_lr
    train(sm, {}, task, TrainSpec.from_config(cfg), seeds, hooks=SupermaskHooks(sm, cfg), on_eval=on_eval,
          progress=progress, **kw)


class SupermaskRun:
    """One supermask experiment (``cfg.trials`` trials) bound to a run directory."""

    def __init__(self, cfg, out, *, progress: bool = True):
        from . import dist as D
        from .lottery import build_template, load_task, pick_device, prunable, resolve
        from .presets import validate
        from .run import RunDir

        cfg = resolve_config(validate(cfg))
        self.device = pick_device(cfg.device)
        self.ctx = D.setup(self.device)  # under torchrun: data-parallel, rank 0 alone writes
        self.task = load_task(cfg, self.device)
        self.cfg = resolve(cfg, self.task.train_size)
        # what can refuse the config (model args, the prunable tensors) before the run directory is touched
        self.template = build_template(self.cfg, self.task)
        self.names = prunable(self.cfg, self.template)
        self.run = RunDir(out, writer=self.ctx.main)
        self.run.open(self.cfg.to_dict(), self.device, type(self.cfg)().to_dict())
        if self.ctx.main:  # what the task's metrics are, for lth report
            from . import metrics, tasks

            metrics.write(self.run.path, tasks.entry(self.cfg).metrics)
        self.progress = progress and self.ctx.main
        self.seeds = [self.cfg.seed + t for t in range(self.cfg.trials)]

    # --- state -----------------------------------------------------------------------------------

    def trials_done(self) -> list[int]:
        from .run import STATE_TODO, int_list

        done = int_list(self.run.state(), "trials_done", self.run.path / "state.json", STATE_TODO)
        return [t for t in done if self.checkpoint_path(t).is_file()]  # a deleted checkpoint: redo that trial

    def _mark_done(self, trials: list[int]) -> None:
        from .io import atomic_write_json

        done = sorted(set(self.trials_done()) | set(trials))
        state = {"trials_done": done}
        if len(done) == self.cfg.trials:
            state["levels_done"] = [0]
        atomic_write_json(self.run.path / "state.json", state)

    def checkpoint_path(self, t: int):
        return self.run.path / f"supermask_trial{t}.safetensors"

    # --- members ---------------------------------------------------------------------------------

    def weights(self, t: int) -> dict[str, torch.Tensor]:
        from .lottery import init_state

        return init_state(self.template, self.seeds[t], self.cfg.init)

    def build(self, trials: list[int]) -> Supermask:
        cfg = self.cfg
        return Supermask(
            self.template, [self.weights(t) for t in trials],
            [init_scores(self.template, self.names, self.seeds[t], cfg) for t in trials],
            rule=cfg.rule, density=cfg.density, scale_init=scale_init(cfg),
            threshold=cfg.threshold if cfg.threshold is not None else 0.3,
            temperature=cfg.temperature or 1.0, seeds=[self.seeds[t] for t in trials],
        ).to(self.device)

    def train_group(self, trials: list[int], bar) -> None:
        cfg = self.cfg
        sm = self.build(trials)
        rows: list[dict] = []

        def on_eval(step, metrics):
            for i, t in enumerate(trials):
                row = {"experiment": cfg.rule, "trial": t, "level": 0,
                       "remaining": round(metrics["remaining"][i], 6), "step": step}
                row.update({k: round(float(v[i]), 6) for k, v in metrics.items()
                            if k not in ("remaining", "temperature")})
                row["density"] = cfg.density
                rows.append(row)
            bar.set_postfix(val_acc=f"{float(metrics['val_acc'].mean()):.4f}",
                            density=f"{sum(metrics['remaining']) / len(trials):.3f}", step=step)

        from .dist import barrier
        from .lottery import SNAPSHOT_SECONDS
        from .snapshots import Snapshots

        snaps = Snapshots(self.run.path / f"partial_trials{'-'.join(map(str, trials))}", writer=self.ctx.main,
                          every=SNAPSHOT_SECONDS)
        start, resume = 0, None
        found = snaps.load(sm)
        if found is not None:  # a killed run continues from its last snapshot, exactly
            start, resume, saved = found
            rows.extend(r for r in saved if int(r["step"]) != start)  # step `start` is evaluated again
            bar.update(start)
        from .errors import NonFiniteLoss

        try:
            train_supermask(sm, self.task, cfg, [self.seeds[t] for t in trials], on_eval=on_eval, progress=bar,
                            ctx=self.ctx, start=start, resume=resume, snapshot=snaps.callback(sm, rows))
        except NonFiniteLoss as e:  # the trial is not marked done
            who = "" if e.member is None else f"trial {trials[e.member]}, "
            raise NonFiniteLoss(f"supermask {cfg.rule}, {who}{e}", e.step, e.member) from None
        if self.ctx.main:
            self._save_group(sm, trials, rows)
            snaps.drop()
        barrier(self.ctx)

    def _save_group(self, sm: Supermask, trials: list[int], rows: list[dict]) -> None:
        from .io import atomic_save_tensors

        cfg = self.cfg
        for i, t in enumerate(trials):
            flat = sm.member_checkpoint(i)
            meta = {"rule": cfg.rule, "seed": str(self.seeds[t]), "init": cfg.init, "model": cfg.model,
                    "density": str(cfg.density), "weights_sha256": weights_sha256(self.weights(t)),
                    "temperature": str(sm.temperature), "score_seed": str(score_seed(self.seeds[t]))}
            atomic_save_tensors(flat, self.checkpoint_path(t), metadata=meta)
        # results rows of these trials replace any that a killed attempt left behind
        kept = [r for r in self.run.read_rows() if int(r["trial"]) not in trials]
        self.run.write_rows(kept + rows)
        self._mark_done(trials)

    def run_trials(self):
        from tqdm.auto import tqdm

        done = set(self.trials_done())
        todo = [t for t in range(self.cfg.trials) if t not in done]
        groups = [todo] if self.cfg.batched and todo else [[t] for t in todo]
        budget = f", {self.cfg.max_minutes:g} min each" if self.cfg.max_minutes else ""
        bar = tqdm(total=None if budget else self.cfg.iterations * len(groups),  # a budget: no made-up ETA
                   desc=f"supermask {self.cfg.rule} ({self.cfg.density:.1%} density, {len(todo)} trials{budget})",
                   disable=not self.progress or not todo, unit="step", dynamic_ncols=True)
        for g in groups:
            self.train_group(g, bar)
        bar.close()
        return self.run


def run(cfg, out, *, progress: bool = True):
    """Run (or resume) a supermask experiment into ``out``; returns its :class:`lth.run.RunDir`."""
    sm = SupermaskRun(cfg, out, progress=progress)
    try:
        return sm.run_trials()
    finally:
        sm.run.unlock()


def load_checkpoint(path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"mask": {name: bool}, "score": {...}, "scale": {...}, "param": {...}}`` from a
    ``supermask_trial{t}`` file (``param``: the model's own learned scales, see ``supermask_trainable``)."""
    from .checkpoints import read

    return read(path, ("mask", "score", "scale", "param", "buffer"))


def materialize(template: nn.Module, seed: int, init: str, ckpt: dict) -> nn.Module:
    """A plain copy of ``template`` whose weights are ``scale * W * mask`` from a checkpoint, W
    regenerated from the seed: the trained network, for evaluation or export."""
    from .init import init_from_seed

    model = init_from_seed(copy.deepcopy(template), seed, init)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in ckpt["mask"]:
                scale = ckpt["scale"][n]
                w = (p * ckpt["mask"][n]).reshape(scale.numel(), -1) * scale[:, None]
                p.copy_(w.reshape(p.shape))
            elif n in ckpt.get("param", {}):
                p.copy_(ckpt["param"][n])
        for n, b in model.named_buffers():
            if n in ckpt.get("buffer", {}):
                b.copy_(ckpt["buffer"][n])
    return model
