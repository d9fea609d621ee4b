"""The lottery procedure (Frankle & Carbin 2019; Frankle et al. 2020 for rewinding).

Level 0 trains the dense network from θ0 (the config's weight source, ``lth.sources``: by default
the seed-derived init) and keeps θk, the weights at the rewind step k. Each later level L:

1. computes the ticket's masks (``lth.level_masks``: a ``Pruner`` with the config's score,
   allocation and rates along the ``levels`` or ``oneshot`` schedule): by default it prunes the
   ticket of level L-1 (its trained weights, among its surviving weights) by magnitude, or with
   ``schedule="oneshot"`` the dense level 0 straight to level L's sparsity; a data-driven or
   iterative ``criterion`` (snip, grasp, synflow) chooses level L's masks at init from θ0 instead;
2. resets the survivors to θ0 (or θk) and trains again from step k;
3. trains the controls beside it (``lth.branches.BRANCHES``: reinit, random, constant, random_sign,
   shuffle), each from the ticket's masks and reset weights.

All trials and branches of a level train together as one batched :class:`~lth.ensemble.Ensemble`
(``batched=False`` trains them one after another instead). Finished levels are recorded in the run
directory, so the same command resumes after the last finished level. The run directory also gets
the task's metric spec (``metrics.json``), and each checkpoint's metadata says how the member's
starting weights come back (seed, weight source, or stored), which is all ``lth pack`` needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import branches, gradual, head_fit, models, sources, tasks
from . import dist as D
from . import masks as M
from . import metrics as metric_spec
from .branches import BranchContext, derive_seed  # noqa: F401  (derive_seed: older importers)
from .ensemble import Ensemble
from .best import fill_test
from .errors import ConfigError, NonFiniteLoss
from .init import init_from_seed
from . import checkpoints
from .io import atomic_save_tensors
from .level_masks import LevelPruning
from .presets import Config, validate
from .run import RunDir
from .snapshots import BETWEEN_EVALS_SECONDS, SNAPSHOT_SECONDS, Snapshots  # noqa: F401 - tests lower these
from .train import TrainSpec, train
from .transfer import configure, is_transfer, masks_for



@dataclass
class Member:
    experiment: str  # ticket or a control: a lth.branches.BRANCHES name
    trial: int
    masks: M.Masks
    reset: dict[str, torch.Tensor]  # the weights it starts from (θ0, θk or a fresh init)
    weights: str = "seed"  # how `reset` comes back in a ticket: seed | source | stored
    seed: int | None = None  # with weights "seed": the seed `reset` regenerates from


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def init_state(template: torch.nn.Module, seed: int, scheme: str) -> dict[str, torch.Tensor]:
    model = init_from_seed(copy.deepcopy(template).cpu(), seed, scheme)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def load_task(cfg: Config, device: str):
    """The task a config's ``dataset`` names (``lth.tasks.TASKS``), its data on ``device``."""
    return tasks.load(cfg, device)


def task_shape(cfg: Config) -> tuple[tuple[int, ...], int]:
    """(example shape, classes or vocabulary) of the config's task, without loading its data."""
    return tasks.shape(cfg)


lm_seq_len = tasks.seq_len  # tokens per example of a language model (older name)


def build_template(cfg: Config, task) -> torch.nn.Module:
    """The architecture a config names, shaped for its task (the seq_len and vocabulary of an LM)."""
    args = {k: v for k, v in cfg.model_args.items() if k != "seq_len"}
    return models.build(cfg.model, task.shape, task.num_classes, **args)


def prunable(cfg: Config, template: torch.nn.Module) -> list[str]:
    """What pruning acts on: the model's ``default_prunable`` (matrices; biases, embeddings if asked)."""
    return models.default_prunable(template, cfg)


def resolve(cfg: Config, train_size: int) -> Config:
    """Fill in derived values (iterations from epochs) and check the ones that depend on them."""
    import dataclasses

    if cfg.epochs is not None:
        cfg = dataclasses.replace(cfg, iterations=max(1, round(cfg.epochs * (train_size // cfg.batch_size))))
    if cfg.batch_size > train_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the training split ({train_size} examples)")
    cfg = gradual.apply(cfg)  # a registered method's fields (lt, slt, mp, slt_mp, mp_slt)
    if cfg.sparsities is not None:  # lth.gradual: one level per target sparsity
        cfg = dataclasses.replace(cfg, levels=len(cfg.sparsities))
    if cfg.rewind_step >= cfg.iterations:
        raise ConfigError(f"rewind_step {cfg.rewind_step} must be below iterations {cfg.iterations}")
    return cfg


class Lottery:
    """One lottery experiment bound to a run directory."""

    def __init__(self, cfg: Config, out, *, progress: bool = True, ticket=None, transfer: bool = False):
        validate(cfg)
        # a lth.ticket.Ticket: level 0 trains its subnetwork instead of the dense net; with `transfer`
        # (lth.transfer) only its masks, matched to this config's model, from this config's θ0
        self.ticket = None if transfer else ticket
        self.device = pick_device(cfg.device)
        self.ctx = D.setup(self.device)
        self.task = load_task(cfg, self.device)
        self.cfg = resolve(cfg, self.task.train_size)
        # everything that can refuse the config (model args, layer names, the weight source) before the
        # run directory is created or changed: a refused command leaves it as it was
        self.template = build_template(self.cfg, self.task)
        self.names = prunable(self.cfg, self.template)
        self.pruning = LevelPruning(self.cfg, self.template, self.names)
        self.start_masks = masks_for(ticket.masks, self.template, self.names) if transfer else None
        self.source, self.source_arg = sources.of(self.cfg)
        self.head = head_fit.head_names(self.template, self.source_arg) if self.cfg.head_fit_steps else []
        self.run = RunDir(out, writer=self.ctx.main)
        self.run.open(self.cfg.to_dict(), self.device, type(self.cfg)().to_dict())
        self.progress = progress and self.ctx.main
        if self.ctx.main:  # what the task measures and early-stops on, for `lth report`
            metric_spec.write(self.run.path, tasks.entry(self.cfg).metrics)
        self.seeds = [self.cfg.seed + t for t in range(self.cfg.trials)]
        self.spec = TrainSpec.from_config(self.cfg)

    # --- the weights each level resets to -------------------------------------------------------

    def theta0(self, t: int) -> dict[str, torch.Tensor]:
        """Trial t's starting weights, from the config's weight source (``lth.sources``)."""
        state = self.source.theta0(self.cfg, self.source_arg, self.template, self.seeds[t], t)
        return head_fit.apply(self.run.path, t, state) if self.head else state  # a fitted head (lth.head_fit)

    def rewind_point(self, t: int, level: int = 1) -> dict[str, torch.Tensor]:
        """The weights level ``level`` resets to: θ0, the dense run's θk, or (``rewind_from="previous"``)
        θk of its source level's run, pruned entries filled from the dense θk (``lth.gradual``)."""
        src = gradual.source(self.cfg, level)
        if self.cfg.rewind_step == 0 or (src == 0 and gradual.is_gradual(self.cfg, level)):
            return self.theta0(t)
        dense = checkpoints.read_rewind(self.run.path, t)
        if self.cfg.rewind_from != "previous" or src == 0:
            return dense
        own = checkpoints.read_rewind(self.run.level_dir(src), t)
        mask = self.checkpoint(src, "ticket", t)["mask"]
        return {n: torch.where(mask[n], v, dense[n]) if n in mask else v for n, v in own.items()}

    def checkpoint(self, level: int, experiment: str, t: int) -> dict[str, dict[str, torch.Tensor]]:
        path = checkpoints.member_path(self.run.path, level, experiment, t)
        return checkpoints.read(path, ("mask", "init", "final"))

    # --- masks -----------------------------------------------------------------------------------

    def ticket_masks(self, level: int, t: int) -> M.Masks:
        if level == 0 and (self.ticket is not None or self.start_masks is not None):
            return {n: m.clone() for n, m in (self.start_masks or self.ticket.masks).items()}
        if level == 0:
            return {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.theta0(t).items() if n in self.names}
        if gradual.is_gradual(self.cfg, level):  # pruned while it trains, from its source level's masks
            return self.ticket_masks(0, t) if gradual.source(self.cfg, level) == 0 else \
                self.checkpoint(gradual.source(self.cfg, level), "ticket", t)["mask"]
        src = self.pruning.source(level)
        if src is None:  # a score at init (snip, grasp, synflow): from θ0, one-shot to this level
            return self.pruning.at_init_masks(self.theta0(t), level, self.seeds[t], self.task)
        prev = self.checkpoint(src, "ticket", t)
        return self.pruning.prune(prev["final"], prev["mask"], level, seed=derive_seed(self.seeds[t], "criterion", level))

    def reset_kind(self, level: int) -> str:
        """How the ticket's reset weights come back in a packed ticket: ``seed`` (from the trial seed),
        ``source`` (from the weight source's verified file) or ``stored`` (θk, a retrained ticket's)."""
        from_theta0 = level == 0 or (gradual.is_gradual(self.cfg, level) and gradual.source(self.cfg, level) == 0)
        if (level == 0 and self.ticket is not None) or (not from_theta0 and self.cfg.rewind_step > 0):
            return "stored"
        return ("seed" if self.source.name == "seed" else "source") if self.source.regenerates else "stored"

    def _weights_meta(self, branch, ctx: BranchContext, level: int) -> tuple[str, int | None]:
        if branch.keeps_reset:
            kind = self.reset_kind(level)
            return kind, ctx.seed if kind == "seed" else None
        seed = branch.seed(ctx)
        return ("stored", None) if seed is None else ("seed", seed)

    def members(self, level: int) -> list[Member]:
        out = []
        for t, seed in enumerate(self.seeds):
            m = {n: D.broadcast(v, self.ctx) for n, v in self.ticket_masks(level, t).items()}
            reset = self.theta0(t) if level == 0 else self.rewind_point(t, level)
            if level == 0 and self.ticket is not None:
                from .ticket import build_model

                reset = {n: p.detach().clone() for n, p in build_model(self.ticket).named_parameters()}
            ctx = BranchContext(m, reset, seed, level, self.template, self.cfg.init)
            only = self.cfg.control_levels or {}
            controls = [] if level == 0 or gradual.is_gradual(self.cfg, level) else \
                [c for c in self.cfg.controls if level in only.get(c, [level])]
            for name in ["ticket"] + controls:
                branch = branches.BRANCHES.get(name)
                masks, start = branch(ctx)
                out.append(Member(name, t, masks, start, *self._weights_meta(branch, ctx, level)))
        return out

    # --- one level ------------------------------------------------------------------------------

    def train_level(self, level: int) -> None:
        members = self.members(level)
        cfg = self.cfg
        start = 0 if level == 0 or cfg.restart_schedule else cfg.rewind_step
        if level == 0 and self.ticket is not None:
            start = int(self.ticket.meta.get("rewind_step", 0))  # a rewound ticket resumes at step k
        keeps_k = level == 0 or (cfg.rewind_from == "previous" and start < cfg.rewind_step)
        capture = (cfg.rewind_step,) if keeps_k and cfg.rewind_step > 0 and self.ticket is None else ()
        groups = [members] if self.cfg.batched else [[m] for m in members]
        remaining = M.remaining(members[0].masks)
        rows: list[dict] = []
        budget = f", {self.cfg.max_minutes:g} min each" if self.cfg.max_minutes else ""
        bar = tqdm(  # under a time budget the step count is unknown: no total, so no made-up ETA
            total=None if budget else (self.cfg.iterations - start) * len(groups),
            desc=f"level {level}/{self.cfg.levels} ({remaining:.1%} left, {len(members)} models{budget})",
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        rewind = {}
        for group in groups:
            partial = len(groups) == 1  # mid-level snapshots for the batched (one-group) case
            finals, captured, found = self._train_group(group, level, start, capture, rows, bar, partial=partial)
            for i, (mem, final) in enumerate(zip(group, finals)):
                if found is not None:  # a gradual level's masks came out of training
                    mem.masks = found.member_masks(i)
                self._save_member(level, mem, final)
            for i, mem in enumerate(group):
                for n, v in captured.get(self.cfg.rewind_step, [{}] * len(group))[i].items():
                    rewind[f"trial{mem.trial}.{n}"] = v
        bar.close()
        if rewind and self.ctx.main:  # the dense run's θk at the run's root, a later level's in its directory
            where = self.run.path if level == 0 else self.run.level_dir(level)
            atomic_save_tensors(rewind, where / "rewind.safetensors")
        self.run.replace_level_rows(level, rows)
        self.run.mark_done(level)
        self._drop_snapshot(level)
        D.barrier(self.ctx)

    # --- mid-level snapshots ---------------------------------------------------------------------

    def _snapshots(self, level: int) -> Snapshots:
        return Snapshots(self.run.level_dir(level) / "partial", writer=self.ctx.main, every=SNAPSHOT_SECONDS,
                         between=BETWEEN_EVALS_SECONDS)

    def _drop_snapshot(self, level: int) -> None:
        self._snapshots(level).drop()

    def _train_group(self, group, level, start, capture, rows, bar, *, partial: bool = False):
        dev = self.device
        ens = Ensemble(self.template, [g.reset for g in group]).to(dev)
        masks = M.stack([{n: v.to(dev) for n, v in g.masks.items()} for g in group])
        remaining = [M.remaining(g.masks) for g in group]
        hooks = None
        if gradual.is_gradual(self.cfg, level):
            hooks = gradual.GradualPruning(ens, masks, gradual.schedule(self.cfg, level, start, self.spec.iterations),
                                           self.cfg.prune_scope)
            remaining = [gradual.density(self.cfg, level)] * len(group)

        def on_eval(step, metrics):
            for i, g in enumerate(group):
                row = {"experiment": g.experiment, "trial": g.trial, "level": level,
                       "remaining": round(remaining[i], 6), "step": step}
                if self.cfg.method is not None:  # lth.gradual: the method's label, a control's branch name
                    row["method"] = self.cfg.method if g.experiment == "ticket" else g.experiment
                row.update({k: round(float(v[i]), 6) for k, v in metrics.items()})
                rows.append(row)
            tickets = [i for i, g in enumerate(group) if g.experiment == "ticket"] or [0]
            acc = metrics.get("val_acc")
            if acc is not None:
                bar.set_postfix(val_acc=f"{float(acc[tickets].mean()):.4f}", step=step)

        def on_test(step, final, best_steps, best):  # test_at="best": lth.best
            keys = [(("experiment", g.experiment), ("trial", g.trial), ("level", level)) for g in group]
            fill_test(rows, keys, step, final, best_steps, best)

        resume, snapshot = None, None
        if partial:
            snaps = self._snapshots(level)
            found = snaps.load(ens)
            if found is not None:
                step, resume, saved = found
                rows.extend(r for r in saved if int(r["step"]) != step)  # step `step` is evaluated again
                bar.update(step - start)
                start = step
            snapshot = snaps.callback(ens, rows)

        try:
            captured = train(
                ens, masks, self.task, self.spec, [self.seeds[g.trial] for g in group],
                start=start, capture=capture, on_eval=on_eval, ctx=self.ctx, progress=bar,
                snapshot=snapshot, resume=resume, on_test=on_test, hooks=hooks,
            )
        except NonFiniteLoss as e:  # the level is not marked done
            who = "" if e.member is None else f"{group[e.member].experiment} trial {group[e.member].trial}, "
            raise NonFiniteLoss(f"level {level}, {who}{e}", e.step, e.member) from None
        finals = [ens.member_state(i) for i in range(len(group))]
        return finals, captured, hooks

    def _save_member(self, level: int, mem: Member, final: dict) -> None:
        if not self.ctx.main:
            return
        flat = {f"mask.{n}": m.to(torch.uint8) for n, m in mem.masks.items()}
        flat.update({f"init.{n}": v for n, v in mem.reset.items()})
        flat.update({f"final.{n}": v for n, v in final.items()})
        path = self.run.level_dir(level) / f"{mem.experiment}_trial{mem.trial}.safetensors"
        # how `lth pack` gets the reset weights back: the seed they regenerate from, or stored floats
        meta = {"branch": mem.experiment, "weights": mem.weights, "seed": "" if mem.seed is None else str(mem.seed),
                "init": self.cfg.init, "weights_source": self.cfg.weights or "seed"}
        atomic_save_tensors(flat, path, metadata=meta)

    # --- the whole experiment -------------------------------------------------------------------

    def run_levels(self, last: int | None = None) -> RunDir:
        last = self.cfg.levels if last is None else last
        # a finished level whose directory was deleted (to redo it, after a corrupt checkpoint) trains again
        done = {lv for lv in self.run.done_levels() if self.run.level_dir(lv).is_dir()}
        wanted = self.cfg.train_levels
        head_fit.fit(self)  # with head_fit_steps: the new head fit alone on the frozen θ0, before level 0
        for level in range(last + 1):
            if level in done or (wanted is not None and level and level not in wanted):
                continue
            self.train_level(level)
        return self.run


def run(cfg: Config, out, *, progress: bool = True, dense_only: bool = False, ticket=None, transfer: bool = False,
        ticket_path=None) -> RunDir:
    """Run (or resume) a lottery experiment into ``out``; ``dense_only`` trains level 0 alone.

    With ``ticket`` (a :class:`lth.ticket.Ticket`), level 0 retrains that subnetwork from the file:
    its masks, its regenerated (or stored) weights, and its seed's data order. When ``cfg`` names
    another dataset than the ticket's, or with ``transfer``, it is a transfer instead (``lth.transfer``):
    ``cfg``'s task, model and θ0 under the ticket's masks (``ticket_path``: the file, recorded).
    """
    transfer = is_transfer(cfg, ticket, transfer)
    if transfer:
        cfg = configure(cfg, ticket, ticket_path)
    elif ticket is not None:
        import dataclasses

        arch = ticket.arch
        cfg = dataclasses.replace(cfg, model=arch["model"], init=ticket.init, seed=ticket.seed, trials=1,
                                  dataset=ticket.meta.get("dataset", cfg.dataset), controls=[])
    lottery = Lottery(cfg, out, progress=progress, ticket=ticket, transfer=transfer)
    try:
        return lottery.run_levels(0 if dense_only else None)
    finally:
        lottery.run.unlock()
        D.teardown(lottery.ctx)
