"""The trainer: one loop for every experiment, mask-aware, batched over ensemble members.

Each member has its own data order (from its seed), its own slice of the stacked parameters and of the
optimizer state, and its own masks. Pruned weights are kept at exactly zero: their gradients are
zeroed before the optimizer step (so Adam's moments for them stay zero) and the masks are re-applied
after it. Under torchrun the ensemble is wrapped in DistributedDataParallel and each rank takes an
equal share of every member's batch, so the global batch and the result match one process.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import dist as D
from . import member_passes
from .errors import ConfigError
from .evaluation import autocast, evaluate, member_forwards  # noqa: F401  (lth.train's API since the start)


@dataclass
class TrainSpec:
    iterations: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_every: int = 100
    warmup: int = 0  # steps of linear warmup
    warmdown: float = 0.0  # final fraction of training with lr decaying linearly to 0
    grad_clip: float | None = None  # per-member global gradient norm
    grad_accum: int = 1  # micro-batches per step
    max_minutes: float | None = None  # training wall-clock budget (evaluation time not counted)
    matrix_lr: float | None = None  # muon: rate of the hidden matrices
    compile: bool | None = None  # torch.compile: None = on CUDA only
    lr_schedule: str | None = None  # an lth.optimizers.LR_SCHEDULES name (None: constant + warmup/warmdown)
    milestones: list | None = None  # lr_schedule "step": steps where the rate is multiplied by gamma
    gamma: float | None = None  # lr_schedule "step": the factor (default 0.1)
    test_at: str | None = None  # "best": the test split at the early-stop state and the end only (lth.best)
    early_stop: tuple = ("val_loss", "min")  # the task's early-stop column and mode (lth.metrics)
    betas: list | None = None  # adam/adamw: (beta1, beta2); None: torch's (0.9, 0.999)
    member_passes: bool = True  # loop path: forward + backward a member at a time (lth.member_passes)

    @classmethod
    def from_config(cls, cfg) -> "TrainSpec":
        import dataclasses

        from .tasks import TASKS

        spec = cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)})
        if cfg.dataset in TASKS:
            m = TASKS.get(cfg.dataset).metrics
            spec.early_stop = (m.early_stop, m.mode)
        return spec


def lr_factor(spec: TrainSpec, step: int, elapsed: float = 0.0) -> float:
    """The factor of the base rates at ``step`` under ``spec.lr_schedule`` (:mod:`lth.optimizers`)."""
    from .optimizers import lr_factor as factor

    return factor(spec, step, elapsed)


def optim_groups(model, spec: TrainSpec) -> list:
    """The stacked tensors a module trains, in :class:`lth.optimizers.Group` s: its own
    ``optim_groups(spec)`` where it declares them (the supermask: scores and scales), else every stacked
    parameter of an :class:`~lth.ensemble.Ensemble` with the spec's optimizer, in one group."""
    from .optimizers import Group

    if hasattr(model, "optim_groups"):
        return model.optim_groups(spec)
    transposed = [n for n, t in zip(model.names, model.transposed) if t]
    if not spec.weight_decay or spec.optimizer == "muon":  # muon sorts its own groups
        return [Group(list(model.stacked), spec.optimizer, spec.lr, spec.weight_decay, spec.momentum, fused=True,
                      names=list(model.names), transposed=transposed, matrix_lr=spec.matrix_lr, betas=spec.betas)]
    from .models import param_groups

    # weight decay only where the model says so (lth.models.param_groups: not on norms and biases)
    no_decay = set(param_groups(model.base)["no_decay"])
    by_name = dict(zip(model.names, model.stacked))
    return [Group([by_name[n] for n in model.names if (n in no_decay) == nd], spec.optimizer, spec.lr,
                  0.0 if nd else spec.weight_decay, spec.momentum, fused=True, betas=spec.betas) for nd in (False, True)]


@contextlib.contextmanager
def step_rng(seeds: list[int], step: int, micro: int, rank: int, device):
    """Torch's global generator seeded from (member seeds, step, micro-batch, rank) for one forward and
    backward, its previous state restored after: dropout (and anything else drawing from it) is a
    function of the step, so a resumed run draws what the uninterrupted one would have."""
    import hashlib

    seed = int.from_bytes(hashlib.sha256(repr(("step-rng", list(seeds), step, micro, rank)).encode()).digest()[:8],
                          "little")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        yield


class Hooks:
    """What a training method changes in the one loop (:func:`train`); each is a no-op by default.

    ``begin_step(step, at)`` before the step's forward (``at``: the step a step-indexed schedule is at,
    see :func:`lth.optimizers.schedule_step`; e.g. the supermask's temperature); ``forward(model, x)``
    forms the outputs (e.g. weights formed from masks first); ``extra_loss()`` a term added to the task's
    loss (e.g. a density pull) or None; ``end_step(step)`` after the optimizer step: new stacked masks
    when they changed (gradual pruning), else None; ``metrics(m)`` adds to an evaluation's metrics.
    A stateful hook returns its tensors from ``state_dict()`` (kept in mid-level snapshots) and takes
    them back in ``load_state_dict(state)``, which returns the stacked masks to resume under (or None).
    """

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict):
        return None

    def begin_step(self, step: int, at: int) -> None:
        pass

    def forward(self, model, x):
        return call_with(model, x)

    def extra_loss(self):
        return None

    def end_step(self, step: int):
        return None

    def metrics(self, metrics: dict) -> None:
        pass


def call_with(model, x, **extra):
    """``model`` on a task's inputs: one tensor, a tuple of positional inputs or a dict of keyword ones
    (``extra``: more keyword arguments, e.g. the supermask's masks)."""
    if isinstance(x, dict):
        return model(**x, **extra)
    if isinstance(x, tuple):
        return model(*x, **extra)
    return model(x, **extra)


def data_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the training set a member with this seed sees in this epoch.

    numpy's PCG64 stream is stable across versions and machines, so a resumed or rewound run sees
    exactly the same batches.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batches:
    """Index batches [M, B] for step t: member m's epoch permutation, drop-last.

    ``order(seed, epoch, n, batch_size)``: the permutation instead of :func:`data_order` (a task's
    ``data_order``, e.g. translation's length buckets: each slice of ``batch_size`` is one bucket)."""

    def __init__(self, seeds: list[int], n: int, batch_size: int, order: Callable | None = None):
        if batch_size > n:
            raise ConfigError(f"batch_size {batch_size} exceeds the {n} training examples")
        self.seeds, self.n, self.b = seeds, n, batch_size
        self.order = order or (lambda seed, epoch, n, b: data_order(seed, epoch, n))
        self.per_epoch = n // batch_size
        self._epoch, self._perm = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.from_numpy(np.stack([self.order(s, epoch, self.n, self.b) for s in self.seeds]))
            self._epoch = epoch
        return self._perm[:, i * self.b : (i + 1) * self.b]


class CompiledOrEager:
    """``torch.compile(model)``, falling back to the eager model (with a warning) if compiling fails on
    the first call: a model that dynamo cannot trace still trains, only slower."""

    def __init__(self, model):
        self.eager, self.compiled = model, torch.compile(model)
        if hasattr(model, "no_sync"):  # DDP's, for gradient accumulation
            self.no_sync = model.no_sync

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly instead
                import warnings

                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly")
                self.compiled = None
        return self.eager(*args, **kwargs)


def clip_members(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale each member's gradients (leading dim of every stacked tensor) to global norm <= max_norm."""
    sq = sum(g.flatten(1).double().pow(2).sum(1) for g in grads)  # [M]
    factor = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))


class Clock:
    """Training wall-clock seconds (evaluation excluded), the same on every rank (rank 0's max)."""

    def __init__(self, ctx: D.Context, device):
        self.ctx, self.device, self.spent, self._t = ctx, device, 0.0, None

    def start(self):
        self._t = time.perf_counter()

    def stop(self):
        if self._t is not None:
            self.spent += time.perf_counter() - self._t
            self._t = None

    def elapsed(self) -> float:
        now = self.spent + (time.perf_counter() - self._t if self._t is not None else 0.0)
        if self.ctx.active:  # ranks must agree on the lr and on when to stop
            t = torch.tensor([now], dtype=torch.float64, device=self.device)
            D.all_reduce_max(t, self.ctx)
            now = float(t[0])
        return now


def _never() -> bool:
    return False


def train(
    ens,
    masks: dict[str, torch.Tensor],
    task,
    spec: TrainSpec,
    seeds: list[int],
    *,
    hooks: Hooks | None = None,
    start: int = 0,
    capture: tuple[int, ...] = (),
    on_eval: Callable[[int, dict], None] | None = None,
    ctx: D.Context | None = None,
    progress=None,
    snapshot: Callable[[int, dict], None] | None = None,
    resume: dict | None = None,
    on_test: Callable[[int, dict, list[int], dict], None] | None = None,
    stop: int | None = None,
) -> dict[int, list[dict[str, torch.Tensor]]]:
    """Train ``ens`` (an :class:`~lth.ensemble.Ensemble`, or any module of stacked members with the same
    protocol, e.g. :class:`lth.supermask.Supermask`) from step ``start`` to ``spec.iterations`` under
    stacked ``masks``; what a method changes comes in through ``hooks``.

    Calls ``on_eval(step, metrics)`` every ``eval_every`` steps and at the end (also when the time
    budget ``max_minutes`` stops training early); returns the member states captured at the steps in
    ``capture`` (used for rewinding to step k). With ``spec.test_at == "best"`` evaluations leave out
    the test split, and at the end ``on_test(step, test metrics, best steps, test metrics at the best
    steps)`` gets it (:mod:`lth.best`).

    ``snapshot(step, state)`` is called after each evaluation past ``start``, and at any step where its
    optional ``snapshot.due()`` says so (:mod:`lth.snapshots`: time-based, between evaluations), with what
    a killed run needs to continue exactly: ``state = {"optimizer": state_dict, "train_seconds",
    "captured"[, "best"]}`` (the weights are ``ens``'s). ``resume`` is such a state (with ``ens`` already holding the weights and
    ``start`` its step): the optimizer, clock and captured states continue from it. Data order is a
    function of the step, so the continued run sees the batches the killed one would have.

    ``stop`` ends training at that step instead (before its update; the LR schedule is still
    ``spec.iterations``'): a replay of the first ``stop`` steps, e.g. to capture states at steps k
    (``lth.instability``).
    """
    from .finite import check_grads, check_loss
    from .optimizers import Optimizers, Progress, schedule_step

    ctx = ctx or D.Context()
    hooks = hooks or Hooks()
    opt = Optimizers(optim_groups(ens, spec))
    dev = opt.params()[0].device
    # Float copies of the masks: multiplying by a bool tensor would convert it on every step.
    # Masks that keep everything (a dense level) are skipped: multiplying by 1 changes nothing.
    params = ens.params() if hasattr(ens, "params") else {}  # what masks (given, or from hooks) apply to

    def float_masks(ms):
        return {n: m.to(params[n].dtype) for n, m in ms.items() if not bool(m.all())}

    fmasks, dynamic = float_masks(masks), False
    with torch.no_grad():
        for n, m in fmasks.items():
            params[n].mul_(m)
    model = ens
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(ens, device_ids=None if dev.type == "cpu" else [ctx.local_rank])
    if spec.compile or (spec.compile is None and dev.type == "cuda"):
        model = CompiledOrEager(model)
    batches = Batches(seeds, task.train_size, spec.batch_size, getattr(task, "data_order", None))
    by_member = spec.member_passes and member_passes.applies(model, ens, hooks, ctx)
    if spec.batch_size % (spec.grad_accum * ctx.world):
        raise ConfigError(f"batch_size {spec.batch_size} is not divisible by grad_accum x processes "
                          f"= {spec.grad_accum * ctx.world}")
    captured = {}
    clock = Clock(ctx, dev)
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        clock.spent = float(resume["train_seconds"])
        captured.update(resume.get("captured", {}))
        if resume.get("hook") and hasattr(hooks, "load_state_dict"):  # a stateful hook (gradual pruning)
            restored = hooks.load_state_dict(resume["hook"])
            if restored is not None:
                fmasks, dynamic = float_masks(restored), True

    reported: list[int] = []
    best = None
    if spec.test_at == "best" and on_eval is not None and "test" in getattr(task, "splits", ("val", "test")):
        from .best import BestStates

        best = BestStates(ens.members, *spec.early_stop)
        if resume is not None and "best" in resume:
            best.load(resume["best"])

    def report(step):
        reported.append(step)
        if on_eval is not None:
            metrics = evaluate(ens, task, ctx, splits=("val",) if best is not None else None)
            if best is not None:
                best.update(step, metrics, ens)
            hooks.metrics(metrics)
            # training seconds so far (evaluation excluded): throughput, and bpb against wall-clock
            metrics["train_seconds"] = torch.full((ens.members,), round(clock.spent, 3), dtype=torch.float64)
            on_eval(step, metrics)

    ens.train()
    step = start
    end = spec.iterations if stop is None else min(stop, spec.iterations)
    while step < end:
        if step in capture:
            captured[step] = [ens.member_state(i) for i in range(ens.members)]
        at_eval = step % spec.eval_every == 0
        if at_eval:
            report(step)
        # at an evaluation, or between two far apart when the snapshot's clock says one is due
        if snapshot is not None and step > start and (at_eval or getattr(snapshot, "due", _never)()):
            hook_state = hooks.state_dict() if hasattr(hooks, "state_dict") else None  # duck-typed hooks
            snapshot(step, {"optimizer": opt.state_dict(), "train_seconds": clock.spent, "captured": captured,
                            **({"best": best.state()} if best is not None else {}),
                            **({"hook": hook_state} if hook_state else {})})
        clock.start()
        elapsed = clock.elapsed() if spec.max_minutes else 0.0  # only a budget needs the clock (and its all-reduce)
        # the budget never stops a run before its capture steps (the rewind point must exist)
        if spec.max_minutes and elapsed >= 60.0 * spec.max_minutes and step > max(capture, default=-1):
            clock.stop()
            break
        hooks.begin_step(step, schedule_step(spec, Progress(step, elapsed)))
        opt.set_factor(lr_factor(spec, step, elapsed))
        idx = batches(step)[:, ctx.rank :: ctx.world]  # this rank's share of every member's batch
        opt.zero_grad()
        for i, part in enumerate(idx.chunk(spec.grad_accum, dim=1)):
            last = i == spec.grad_accum - 1
            # DDP all-reduces gradients on the last micro-batch only
            sync = model.no_sync() if ctx.active and not last and hasattr(model, "no_sync") else contextlib.nullcontext()
            with sync, step_rng(seeds, step, i, ctx.rank, dev):
                x, y = task.batch(part)  # augmentation or token masking draws from the step's generator
                if by_member:  # lth.member_passes: one member's activations alive at a time
                    loss = member_passes.forward_backward(ens, task, x, y, spec.grad_accum, lambda: autocast(dev))
                else:
                    with autocast(dev):
                        loss = task.loss(hooks.forward(model, x), y)
                        extra = hooks.extra_loss()
                        if extra is not None:
                            loss = loss + extra
                        loss = loss / spec.grad_accum
                    loss.backward()
            if not ctx.active:
                check_loss(loss, opt.params(), ens.members, step)  # NaN or inf: stop, naming step and member
        if ctx.active:  # all-reduced gradients: every process stops at the same step (lth.finite)
            check_grads(opt.params(), ens.members, step)
        with torch.no_grad():
            if fmasks:
                grads = ens.grads()
                for n, m in fmasks.items():
                    grads[n].mul_(m)
            if spec.grad_clip:  # in the model's layout where the module has one (the norms' summation order)
                grads = list(ens.grads().values()) if hasattr(ens, "grads") else [p.grad for p in opt.params()]
                clip_members([g for g in grads if g is not None], spec.grad_clip)
        opt.step()
        # Elementwise optimizers leave a zero weight with zero gradient and zero state at zero; once a
        # hook has pruned mid-training, the state of newly pruned weights is not zero: re-apply.
        if not opt.elementwise or dynamic:
            with torch.no_grad():
                for n, m in fmasks.items():
                    params[n].mul_(m)
        changed = hooks.end_step(step)
        if changed is not None:  # masks that change during training (gradual pruning)
            fmasks, dynamic = float_masks(changed), True
            with torch.no_grad():
                for n, m in fmasks.items():
                    params[n].mul_(m)
        clock.stop()
        step += 1
        if progress is not None:
            progress.update(1)
    if step in capture:  # the loop captures at its top, so only the final step can be left (a budget stops later)
        captured[step] = [ens.member_state(i) for i in range(ens.members)]
    if reported[-1:] != [step]:  # a budget that ran out right after an evaluation: no second row
        report(step)
    if best is not None:  # the test split at the end and at each member's early-stop state (lth.best)
        test = evaluate(ens, task, ctx, splits=("test",))
        at_best = best.evaluate(ens, lambda e: evaluate(e, task, ctx, splits=("test",)))
        if on_test is not None:
            on_test(step, test, best.steps, at_best)
    return captured
