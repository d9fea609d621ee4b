"""Instability analysis: linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"). ``lth instability RUN_DIR --level L --steps k1,k2,...`` asks, for each
step k, whether the network at step k is stable to SGD noise: whether two copies trained on from it
with different data orders end up linearly connected (no rise in error on the line between them).

1. θk. Level L's ticket (level 0: the dense network) starts from its checkpoint's reset weights and
   masks at its start step (level 0: step 0; L > 0: the run's ``rewind_step``; an earlier k is
   refused), and its training is deterministic given the config and the member seeds. So the level is
   trained again as the run trained it, with the same members in one batch (every trial and control of
   the level when the run was batched, else the ticket alone) and the same seeds (so the same data
   order and step randomness), up to max(k) in one pass (``train(..., capture=ks, stop=max(ks))``).
   θk is the ticket's member state at the top of step k: weights and buffers (BatchNorm statistics).
   On the machine that trained the run, the replay to the end gives the recorded final weights bit
   for bit (tested).
2. Two copies. θk is trained twice from step k to the end of the run's schedule (its optimizer, its LR
   schedule resumed at step k, its iterations, the ticket's masks) as one two-member ensemble. Copy c
   (0, 1) draws its data order, augmentation and dropout from the seed ``trial seed + 1_000_003 *
   (c + 1)`` (:func:`copy_seeds`, through ``lth.train.Batches`` and ``step_rng``); both start from the
   same θk. The optimizer state at k is not carried over: each copy starts a fresh optimizer at step k
   (Adam's moments and step count at zero), which is what the lottery's rewinding does
   (``Lottery.train_level`` starts ``train``, and so a new optimizer, at the rewind step): step k here
   means what ``--rewind-step k`` means.
3. The path. For α = i / (P - 1), i = 0..P-1 (``--points`` P, default 11): :func:`interpolate` (A, B, α)
   = (1 - α) A + α B of the trained copies, every float tensor (integer buffers from the nearer end); α =
   0 and 1 are the copies exactly. Where the model has BatchNorm running statistics, the interior points
   get them recomputed (``lth.batchnorm.recompute_bn``): forward passes in training mode without
   gradients over ``--bn-batches`` (default 32) fixed training batches of the run's batch size (the first
   of the trial seed's epoch-0 order, each batch's randomness seeded), each statistic the mean over those
   batches (what ``momentum=None`` computes). The ends keep the copies' own statistics; their errors with
   recomputed ones are recorded beside (``bn_recomputed_end_errors``).
4. Error and barrier. Each point is evaluated by training's evaluation code (``lth.train.evaluate``)
   on the split of the task's headline metric (``metrics.json``, ``lth.metrics``; ``test_acc``: the
   test split). Error (:func:`error`): 1 - accuracy for an accuracy column (``*_acc``), the metric
   itself where lower is better (a loss, bits per byte), else its negative. :func:`barrier`: the
   path's highest error minus the mean of its ends', a fraction (x 100: percentage points). θk is
   stable when it is about 0; ``lth report`` suggests as ``--rewind-step`` the smallest k with barrier
   <= :data:`THRESHOLD` (0.02: 2 percentage points; in the metric's units for other metrics).
5. Results: ``RUN_DIR/instability/level_LL/instability.json``, rewritten atomically after each (trial,
   k) under the run directory's lock: the settings (level, start step, metric and error rule, points,
   BatchNorm batches, the run's config) and per trial and k the copies' seeds and metrics, the path's
   metrics and errors, the barrier. The same command resumes: a finished (trial, k) is not redone, and
   the settings must be the file's. Plots (``lth.plots``): ``error_vs_interpolation.png`` (a line per
   k, mean over trials) and ``barrier_vs_k.png``.

Refused in one line: a RUN_DIR that is not a lottery run, a level it has not finished, a trial it does
not have, steps that are not integers, before the level's start or not below ``iterations``, fewer
than 3 points, a run under a time budget (``max_minutes``: its steps depend on the clock). Torch is
imported inside the functions only, so ``lth``'s argument parser stays light.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .batchnorm import batchnorms, bn_indices, recompute_bn  # noqa: F401  (re-exported)
from .errors import ConfigError, LthError

FILE = "instability.json"
POINTS = 11
BN_BATCHES = 32
COPY_STRIDE = 1_000_003
THRESHOLD = 0.02  # a barrier at most this (2 percentage points of error) counts as stable


# --- pure parts -------------------------------------------------------------------------------------

def copy_seeds(trial_seed: int) -> list[int]:
    """The data seeds of the two copies (their weights both start from θk)."""
    return [trial_seed + COPY_STRIDE * (c + 1) for c in range(2)]


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation weights from 0 to 1, both included exactly."""
    return [i / (points - 1) for i in range(points)]


def interpolate(a: dict, b: dict, alpha: float) -> dict:
    """(1 - alpha) a + alpha b for every float tensor; integer tensors from the nearer end. At alpha 0
    and 1: copies of ``a`` and ``b`` exactly."""
    if alpha in (0, 1):
        return {n: (a if alpha == 0 else b)[n].clone() for n in a}
    return {n: x.lerp(b[n], alpha) if x.is_floating_point() else (x if alpha < 0.5 else b[n]).clone()
            for n, x in a.items()}


def barrier(errors: list[float]) -> float:
    """The error barrier of a path: its highest error minus the mean of its two ends' errors."""
    if len(errors) < 2:
        raise ValueError("a path has at least its two ends")
    return max(errors) - (errors[0] + errors[-1]) / 2


def error(value: float, column) -> float:
    """The error a headline metric value (an :class:`lth.metrics.Column`) stands for (module doc, 4)."""
    return 1.0 - value if column.name.endswith("_acc") else value if column.mode == "min" else -value


def error_rule(column) -> str:
    return f"1 - {column.name}" if column.name.endswith("_acc") else ("" if column.mode == "min" else "-") + column.name


def to_int(text, what: str, low: int = 0) -> int:
    """An integer flag value, or one line."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{what} takes an integer, got {text!r}") from None
    if value < low:
        raise ConfigError(f"{what} must be >= {low}, got {value}")
    return value


def parse_steps(text) -> list[int]:
    """``"0,50,200"`` -> [0, 50, 200] (sorted, without repeats), or one line."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        return sorted({int(p) for p in parts})
    except ValueError:
        raise ConfigError(f"--steps takes comma-separated integers such as 0,50,200, got {text!r}") from None


# --- the run and θk ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Setup:
    """A finished level of a lottery run, ready to replay: config.json as recorded (``raw``), the resolved
    Config, task, template, TrainSpec, headline metric column, device, level and its start step."""

    run_dir: Path
    raw: dict
    cfg: object
    task: object
    template: object
    spec: object
    column: object
    device: str
    level: int
    start: int


def setup(run_dir, level: int, device: str | None = None, ks=(), trials=()) -> Setup:
    """The level ready to replay; a bad run directory, level, step k in ``ks`` or trial refused in one line
    before any data is loaded."""
    from . import lottery, metrics, tasks
    from .pack import _config, _done, _run_config
    from .presets import check_device
    from .train import TrainSpec

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LthError(f"{run_dir}: {'not a directory' if run_dir.exists() else 'no such run directory'}")
    raw = _config(run_dir)
    cfg = _run_config(raw)
    if cfg.rule is not None:
        raise LthError(f"{run_dir} is a supermask run; lth instability analyses lottery runs")
    if cfg.max_minutes:
        raise ConfigError(f"{run_dir} trained under a time budget (max_minutes {cfg.max_minutes:g}): its steps "
                          "depend on the clock, so they cannot be replayed")
    done = _done(run_dir, "levels_done")
    if level not in done or not (run_dir / f"level_{level:02d}").is_dir():
        raise LthError(f"level {level} is not a finished level of {run_dir} (finished: {sorted(done) or 'none'})")
    start = 0 if level == 0 else cfg.rewind_step
    for k in ks:  # config.json records the resolved iterations
        if not start <= k < cfg.iterations:
            raise ConfigError(f"step {k} is outside level {level}'s training: steps run from {start} to "
                              f"{cfg.iterations - 1} (iterations {cfg.iterations})")
    for t in trials:
        if not 0 <= t < cfg.trials:
            raise ConfigError(f"trial {t} is not in the run (trials 0 to {cfg.trials - 1})")
    check_device(device or cfg.device)
    device = lottery.pick_device(device or cfg.device)
    task = lottery.load_task(cfg, device)
    cfg = lottery.resolve(cfg, task.train_size)
    spec = metrics.read(run_dir) or tasks.entry(cfg).metrics
    return Setup(run_dir, raw, cfg, task, lottery.build_template(cfg, task), TrainSpec.from_config(cfg),
                 spec.columns[0], device, level, start)


def checkpoint(s: Setup, experiment: str, trial: int) -> dict:
    from . import checkpoints

    return checkpoints.read(checkpoints.member_path(s.run_dir, s.level, experiment, trial), ("mask", "init"))


def replay(s: Setup, trials: list[int], ks: list[int], progress=None) -> dict[int, dict[int, dict]]:
    """``{trial: {k: θk}}``: the level trained again as the run trained it, up to max(ks) (module doc, 1)."""
    from . import masks as M
    from .ensemble import Ensemble
    from .train import train

    everyone = [(e, t) for t in range(s.cfg.trials) for e in ["ticket"] + ([] if s.level == 0 else s.cfg.controls)]
    groups = [everyone] if s.cfg.batched else [[m] for m in everyone]
    out: dict[int, dict[int, dict]] = {}
    for group in groups:
        if not any(e == "ticket" and t in trials for e, t in group):
            continue
        parts = [checkpoint(s, e, t) for e, t in group]
        ens = Ensemble(s.template, [p["init"] for p in parts]).to(s.device)
        masks = M.stack([{n: v.to(s.device) for n, v in p["mask"].items()} for p in parts])
        captured = train(ens, masks, s.task, s.spec, [s.cfg.seed + t for _, t in group], start=s.start,
                         capture=tuple(ks), stop=max(ks), progress=progress)
        for i, (e, t) in enumerate(group):
            if e == "ticket" and t in trials:
                out[t] = {k: captured[k][i] for k in ks}
    return out


# --- two copies, the path between them --------------------------------------------------------------

def train_copies(s: Setup, theta: dict, mask: dict, k: int, seeds: list[int], progress=None):
    """The :class:`~lth.ensemble.Ensemble` of two copies of ``theta`` trained from step k to the end,
    copy c on data seed ``seeds[c]``, each with a fresh optimizer (module doc, 2)."""
    from . import masks as M
    from .ensemble import Ensemble
    from .train import train

    ens = Ensemble(s.template, [theta, theta]).to(s.device)
    on_dev = {n: v.to(s.device) for n, v in mask.items()}
    train(ens, M.stack([on_dev, on_dev]), s.task, s.spec, seeds, start=k, progress=progress)
    return ens


def _rows(metrics: dict) -> list[dict]:
    """``{name: [M]}`` -> one ``{name: float}`` per member."""
    names = list(metrics)
    return [{n: float(metrics[n][m]) for n in names} for m in range(len(metrics[names[0]]))]


def analyse(s: Setup, theta: dict, mask: dict, k: int, trial_seed: int, points: int = POINTS,
            bn_batches: int = BN_BATCHES, progress=None) -> dict:
    """One step k of one trial: the copies, the path between them, the errors and the barrier."""
    from .ensemble import Ensemble
    from .train import evaluate

    seeds = copy_seeds(trial_seed)
    copies = train_copies(s, theta, mask, k, seeds, progress)
    split = s.column.name.split("_")[0]  # evaluate the headline's split only
    splits = (split,) if split in getattr(s.task, "splits", ("val", "test")) else None
    ends = _rows(evaluate(copies, s.task, splits=splits))
    a, b = copies.member_state(0), copies.member_state(1)
    path = Ensemble(s.template, [interpolate(a, b, x) for x in alphas(points)]).to(s.device)
    bn = bool(batchnorms(s.template))
    if bn:
        recompute_bn(path, s.task, bn_indices(trial_seed, s.task.train_size, s.cfg.batch_size, bn_batches),
                     trial_seed)
    rows = _rows(evaluate(path, s.task, splits=splits))
    name = s.column.name
    entry = {"k": k, "copy_seeds": seeds, "endpoints": ends,
             "endpoint_errors": [error(m[name], s.column) for m in ends]}
    if bn:  # the ends are the copies themselves, with their own statistics
        entry["bn_recomputed_end_errors"] = [error(rows[i][name], s.column) for i in (0, -1)]
        rows[0], rows[-1] = ends
    errors = [error(m[name], s.column) for m in rows]
    entry.update(errors=errors, barrier=barrier(errors), metrics=rows)
    return entry


# --- the command ------------------------------------------------------------------------------------

def _settings(s: Setup, points: int, bn_batches: int) -> dict:
    from .run import RESUMABLE_FIELDS

    acc = s.column.name.endswith("_acc")
    return {"level": s.level, "start_step": s.start, "metric": s.column.name, "error": error_rule(s.column),
            "error_scale": 100.0 if acc else 1.0, "error_unit": "percentage points" if acc else s.column.name,
            "points": points, "alphas": alphas(points), "threshold": THRESHOLD,
            "bn_batches": bn_batches if batchnorms(s.template) else None,
            "copy_seeds": f"trial seed + {COPY_STRIDE} * (copy + 1)",
            "optimizer_state": "fresh at step k, LR schedule resumed at k (as rewinding)",
            "config": {k: v for k, v in s.raw.items() if k not in RESUMABLE_FIELDS}}


def _open(path: Path, settings: dict) -> dict:
    """The results so far (settings checked against this command's), or a new document."""
    from .run import read_json

    if not path.is_file():
        return {**settings, "trials": {}}
    doc = read_json(path, "delete it to redo this level's instability analysis")
    for key, want in settings.items():
        if doc.get(key) != want:
            shown = "the run's config" if key == "config" else f"{key} {doc.get(key)!r}"
            raise ConfigError(f"{path} holds results made with {shown}, not this command's; use the same "
                              "settings, or delete it to start over")
    if not isinstance(doc.get("trials"), dict):
        raise LthError(f"{path}: no 'trials' table; delete it to redo this level's instability analysis")
    return doc


def run(run_dir, level: int, steps, *, points: int = POINTS, trials: list[int] | None = None,
        bn_batches: int = BN_BATCHES, device: str | None = None, progress: bool = True) -> dict:
    """Analyse ``steps`` of ``level`` for ``trials`` (None: every trial); returns the results document
    (module doc, 5). Resumes: (trial, k) pairs the file already holds are not redone."""
    from tqdm.auto import tqdm

    from . import plots
    from .io import atomic_write_json, make_dir, remove_stale_temps
    from .run import RunDir

    ks = parse_steps(steps) if isinstance(steps, str) else sorted(set(steps))
    if points < 3 or bn_batches < 1:
        raise ConfigError(f"--points must be >= 3 and --bn-batches >= 1, got {points} and {bn_batches}")
    s = setup(run_dir, level, device, ks, trials or ())
    trials = list(range(s.cfg.trials)) if trials is None else trials
    lock = RunDir(s.run_dir)
    lock.lock()
    try:
        out = make_dir(s.run_dir / "instability" / f"level_{level:02d}")
        remove_stale_temps(out)
        doc = _open(out / FILE, _settings(s, points, bn_batches))
        todo = {t: [k for k in ks if str(k) not in doc["trials"].get(str(t), {}).get("steps", {})] for t in trials}
        todo = {t: mine for t, mine in todo.items() if mine}
        need = sorted({k for mine in todo.values() for k in mine})
        groups = 1 if s.cfg.batched else len(todo)
        total = (max(need, default=s.start) - s.start) * groups + sum(s.cfg.iterations - k for mine in todo.values()
                                                                        for k in mine)
        with tqdm(total=total, desc=f"instability level {level}", unit="step",
                  disable=not progress, dynamic_ncols=True) as bar:
            thetas = replay(s, list(todo), need, bar) if todo else {}
            for t, mine in todo.items():
                seed = s.cfg.seed + t
                mask = checkpoint(s, "ticket", t)["mask"]
                trial = doc["trials"].setdefault(str(t), {"seed": seed, "copy_seeds": copy_seeds(seed), "steps": {}})
                for k in mine:
                    bar.set_postfix(trial=t, k=k)
                    trial["steps"][str(k)] = {**analyse(s, thetas[t][k], mask, k, seed, points, bn_batches, bar),
                                              "device": s.device}
                    trial["steps"] = dict(sorted(trial["steps"].items(), key=lambda kv: int(kv[0])))
                    atomic_write_json(out / FILE, doc)
        plots.write_figures(plots.instability_figures(doc), out)
        return doc
    finally:
        lock.unlock()


def add_parser(sub) -> None:
    """``lth instability``: its arguments (values checked by :func:`cmd`, one line each)."""
    p = sub.add_parser("instability", help="linear mode connectivity: error barrier between two copies "
                       "trained on from step k with different data orders (Frankle et al. 2020)")
    p.add_argument("run_dir", help="a lottery run directory")
    p.add_argument("--level", default="0", help="level whose ticket to analyse (0: the dense network)")
    p.add_argument("--steps", required=True, help="comma-separated steps k, e.g. 0,50,200")
    p.add_argument("--points", default=str(POINTS), help=f"interpolation points, ends included (default {POINTS})")
    p.add_argument("--trial", default="0", help="trial to analyse (default 0)")
    p.add_argument("--all-trials", action="store_true", help="analyse every trial of the run")
    p.add_argument("--bn-batches", default=str(BN_BATCHES),
                   help=f"training batches BatchNorm statistics are recomputed on (default {BN_BATCHES})")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd)


def cmd(args) -> int:
    from .instability_report import format_instability

    trial = to_int(args.trial, "--trial")
    doc = run(args.run_dir, to_int(args.level, "--level"), args.steps, points=to_int(args.points, "--points", 3),
              trials=None if args.all_trials else [trial], bn_batches=to_int(args.bn_batches, "--bn-batches", 1),
              device=args.device, progress=not args.no_progress)
    print(format_instability(doc, trial=trial, all_trials=args.all_trials))
    out = Path(args.run_dir) / "instability" / f"level_{doc['level']:02d}"
    print(f"results in {out}/ ({FILE}, error_vs_interpolation.png, barrier_vs_k.png)")
    return 0
