"""Configs and named presets. Every field of :class:`Config` can be overridden from the CLI.

A preset is a documented starting point; the *resolved* config (preset + overrides + values derived
from the data, such as iterations from epochs) is what a run records in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    # task and model
    dataset: str = "mnist"
    data_dir: str | None = None  # None: the embedded copy
    normalize: bool = True  # standardize pixels with the training mean/std; False: pixels in [0, 1]
    # training batches get the CIFAR augmentation (4-pixel zero pad-and-crop, horizontal flip; lth.tasks.augment)
    # on the tasks that have it (fashion-mnist-32, cifar10); None: off
    augment: bool | None = None
    train_images: int | None = None  # image tasks: train on the first N training images only (None: all)
    model: str = "lenet_300_100"
    model_args: dict = field(default_factory=dict)  # constructor overrides, e.g. {"n_layer": 2} for gpt
    init: str = "glorot_normal"
    # language modeling (dataset "text"; data_dir: an `lth data encode` directory, None: embedded bytes)
    # the embedded corpus's tokens: None/"bytes", or "bpe<N>" (SentencePiece BPE trained on its train split);
    # a data_dir brings its own tokens, so giving one clears a preset's tokenizer (see override)
    tokenizer: str | None = None
    seq_len: int | None = None  # None: the model size's context
    eval_tokens: int | None = None  # validate on the first N tokens of the validation split (None: all)
    # training
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 60
    iterations: int = 50000
    epochs: float | None = None  # if set, overrides iterations (epochs * steps per epoch)
    eval_every: int = 100
    test_at: str | None = None  # None/"every": test split at every evaluation; "best": at early stop and end (lth.best)
    warmup: int = 0  # steps of linear learning-rate warmup from 0
    warmdown: float = 0.0  # final fraction of training (steps or the time budget) that decays lr to 0
    grad_clip: float | None = None  # clip the global gradient norm (per member)
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is the whole step's batch)
    max_minutes: float | None = None  # wall-clock budget per training run; stops early when spent
    matrix_lr: float | None = None  # optimizer "muon": its rate for hidden matrices (lr: the rest)
    compile: bool | None = None  # torch.compile the model: None = on CUDA only
    # learning-rate schedule (lth.optimizers.LR_SCHEDULES; None: constant with warmup/warmdown)
    lr_schedule: str | None = None
    milestones: list | None = None  # lr_schedule "step": steps where the rate is multiplied by gamma
    gamma: float | None = None  # lr_schedule "step": that factor (None: 0.1)
    # the lottery procedure
    levels: int = 20
    # train only these levels (and level 0): for criteria at init (snip, grasp, synflow) or the oneshot
    # schedule, where each level is pruned from θ0 or level 0 and needs no level before it
    train_levels: list | None = None
    prune_rate: float = 0.2
    layer_rates: dict = field(default_factory=lambda: {"fc3.weight": 0.1})
    prune_scope: str = "layer"
    prune_biases: bool = False
    prune_embeddings: bool = False  # language models: prune the (tied) embedding matrix too
    schedule: str = "iterative"  # or "oneshot": level L prunes the dense net straight to level L's sparsity
    rewind_step: int = 0
    controls: list = field(default_factory=list)  # lth.branches.BRANCHES names: reinit, random, constant, ...
    # lth.gradual (Brix et al. 2020): target sparsity per level, levels pruned while training (MP),
    # θk from the previous level's run, the schedule restarted at every level, a method label
    sparsities: list | None = None
    gradual_levels: list | None = None
    gradual_end: float | None = None  # gradual levels: pruning ends at this fraction of training (None: 0.8)
    rewind_from: str = "dense"
    restart_schedule: bool = False
    method: str | None = None
    trials: int = 1
    seed: int = 0
    # New fields default to None: a run directory's config.json from before them still resumes.
    output_rate: float | None = None  # the output layer's rate (lth.models.output_layers); None: as the rest
    group_rates: dict | None = None  # rates per kind: conv / fc / output / shortcut (lth.level_masks)
    criterion: str | None = None  # a lth.scores.SCORES name; None: magnitude. snip/grasp/synflow prune at init
    weights: str | None = None  # θ0's source (lth.sources): None/seed, checkpoint:PATH, run:DIR[@LEVEL]
    weights_sha256: str | None = None  # the checkpoint's SHA-256 (required with checkpoint:PATH)
    prune_pooler: bool | None = None  # model bert (head cls): prune pooler.dense.weight too (lth.models.bert)
    transfer_source: dict | None = None  # set by a transfer run (lth.transfer): the source ticket's record
    prune_of: str | None = None  # rates of: remaining (None: the survivors) or original (density 1 - L*rate)
    head_fit_steps: int | None = None  # fit a new head alone on the frozen checkpoint first (lth.head_fit)
    head_fit_lr: float | None = None  # the head fit's learning rate (None: lr)
    control_levels: dict | None = None  # control name -> the levels it trains at (None, or a control not named: all)
    # supermask training (`lth supermask`, lth.supermask): None means the rule's default, and fields a
    # rule does not use must stay None. Lottery runs ignore these (and record them as None).
    rule: str | None = None  # ste | topk | bernoulli (default topk)
    density: float | None = None  # target fraction of weights kept (topk: exact per layer)
    score_init: str | None = None  # lth.init scheme for the initial scores (seed derived from the trial's)
    scale_lr: float | None = None  # Adam rate of the learned scales (0: scales stay at 1/sqrt(density))
    temperature: float | None = None  # ste: T at step 0 (mask = sigmoid(score / T) >= threshold)
    temperature_final: float | None = None  # ste: T at the last step (geometric annealing)
    threshold: float | None = None  # ste: tau in (0, 1), not 0.5; the score threshold is T * logit(tau)
    density_penalty: float | None = None  # ste, bernoulli: pull of each layer's density to the target
    # adam/adamw (beta1, beta2); None: torch's (0.9, 0.999). The translation presets: (0.9, 0.98)
    betas: list | None = None
    # translation (dataset "translation", lth.tasks.translate; tokenizer "unigram<N>")
    reverse: bool | None = None  # Spanish -> English instead of English -> Spanish
    label_smoothing: float | None = None  # of the training loss (None: 0)
    beam: int | None = None  # the test split's beam size (None: 4); the dev split is decoded greedily
    train_pairs: int | None = None  # train (and fit the tokenizer) on the first N training pairs only
    eval_pairs: int | None = None  # evaluate on the first N dev and test pairs only
    # execution
    batched: bool = True
    device: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _tracks() -> dict[str, dict]:
    from . import bert_presets, cnn_presets, lm_presets, mnist_presets, translation_presets

    return {**mnist_presets.presets(), **lm_presets.presets(), **cnn_presets.presets(),
            **translation_presets.presets(), **bert_presets.presets()}


# LeNet on MNIST (lth.mnist_presets), the language models (lth.lm_presets), the CNN track (lth.cnn_presets),
# translation (lth.translation_presets) and BERT (lth.bert_presets: bert_*_cpu when all-MiniLM-L6-v2 is
# installed)
PRESETS: dict[str, dict] = _tracks()

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; see `lth presets` ({', '.join(sorted(PRESETS))})")
    return Config(name=name, **PRESETS[name])


def field_types() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


def parse_value(key: str, text: str):
    """Parse a CLI string for field ``key``: lists comma-separated, dicts as ``k=v,k=v`` where a value
    with colons is a list (``hidden=300:100`` is ``{"hidden": [300, 100]}``); a list or dict may also
    be given as JSON (``'{"hidden": [300, 100]}'``)."""
    import json

    types = field_types()
    if key not in types:
        raise ConfigError(f"unknown config field {key!r}")
    t = str(types[key])
    try:
        if t.startswith(("list", "dict")) and text.lstrip()[:1] in ("[", "{"):
            value = json.loads(text)
            if not isinstance(value, list if t.startswith("list") else dict):
                raise ValueError(text)
            return value
        if t.startswith("list"):
            return [_scalar(s) for s in text.split(",") if s]
        if t.startswith("dict"):
            out = {}
            for item in filter(None, text.split(",")):
                k, eq, v = item.partition("=")
                if not eq:
                    raise ValueError(item)
                out[k] = [_scalar(x) for x in v.split(":")] if ":" in v else _scalar(v)
            return out
        if t.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if text.lower() in ("none", "null") and "None" in t:
            return None
        if t.startswith("int"):
            return int(text)
        if t.startswith("float"):
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"bad value for {key}: {text!r}") from None


def _scalar(text: str):
    """A dict value from the command line: bool, None, int, float or else the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def override(cfg: Config, values: dict) -> Config:
    types = field_types()
    for k in values:
        if k not in types:
            raise ConfigError(f"unknown config field {k!r}")
    if values.get("data_dir") is not None and "tokenizer" not in values:
        values = {**values, "tokenizer": None}  # the directory's tokens replace the embedded corpus's
    return dataclasses.replace(cfg, **values)


def check_device(name, *, allow_auto: bool = True) -> None:
    """``name`` is a device this machine has: auto (if allowed), cpu, or cuda[:N] with CUDA present."""
    ok = isinstance(name, str) and (name == "cpu" or (allow_auto and name == "auto") or name == "cuda"
                                    or (name.startswith("cuda:") and name[5:].isdigit()))
    if not ok:
        raise ConfigError(f"device must be {'auto, ' if allow_auto else ''}cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} requested but CUDA is not available on this machine")
        index = int(name[5:] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} requested but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_types(cfg: Config) -> None:
    """Each field holds its declared type (a recorded config.json or --set can hold anything), and
    every number is finite: inf and nan mean nothing for any field (``None`` is "no limit")."""
    for f in dataclasses.fields(Config):
        v, t = getattr(cfg, f.name), str(f.type)
        if v is None:
            if "None" not in t:
                raise ConfigError(f"{f.name} must be given, got None")
            continue
        if t.startswith("bool"):
            ok = isinstance(v, bool)
        elif t.startswith("int"):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif t.startswith("float"):
            ok = _is_number(v)
        elif t.startswith("str"):
            ok = isinstance(v, str)
        elif t.startswith("list"):
            ok = isinstance(v, list)
        elif t.startswith("dict"):
            ok = isinstance(v, dict) and all(isinstance(k, str) for k in v)
        else:  # pragma: no cover - a new field type
            ok = True
        if not ok:
            raise ConfigError(f"{f.name} must be {t.split(' |')[0]}, got {v!r}")
        values = v.values() if isinstance(v, dict) else v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{f.name} must be finite, got {v!r}")
    for name in ("layer_rates", "group_rates"):
        for k, x in (getattr(cfg, name) or {}).items():
            if not _is_number(x):
                raise ConfigError(f"{name}: the rate for {k} must be a number, got {x!r}")
    for name in ("controls",):
        bad = [x for x in getattr(cfg, name) if not isinstance(x, str)]
        if bad:
            raise ConfigError(f"{name} must be names, got {bad[0]!r}")


def validate(cfg: Config) -> Config:
    """Fail fast, in one line, on any value that would break a run later."""

    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)

    _check_types(cfg)
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    need(cfg.seed + cfg.trials <= 2**63, f"seed + trials must be below 2**63, got {cfg.seed} + {cfg.trials}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.iterations >= 1, f"iterations must be >= 1, got {cfg.iterations}")
    need(cfg.epochs is None or cfg.epochs > 0, f"epochs must be > 0, got {cfg.epochs}")
    need(cfg.eval_every >= 1, f"eval_every must be >= 1, got {cfg.eval_every}")
    need(cfg.test_at in (None, "every", "best"), f"test_at must be every or best, got {cfg.test_at!r}")
    need(cfg.train_images is None or cfg.train_images >= 1, f"train_images must be >= 1, got {cfg.train_images}")
    need(cfg.levels >= 0, f"levels must be >= 0, got {cfg.levels}")
    need(0.0 <= cfg.prune_rate < 1.0, f"prune_rate must be in [0, 1), got {cfg.prune_rate}")
    for k, v in {**cfg.layer_rates, **(cfg.group_rates or {}), "output": cfg.output_rate or 0.0}.items():
        need(0.0 <= v < 1.0, f"layer rate for {k} must be in [0, 1), got {v}")
    bad = sorted(set(cfg.group_rates or {}) - {"conv", "fc", "output", "shortcut"})
    need(not bad, f"group_rates names unknown groups {bad}; choose from conv, fc, output, shortcut")
    need(cfg.prune_scope in ("layer", "global"), f"prune_scope must be layer or global, got {cfg.prune_scope!r}")
    need(cfg.schedule in ("iterative", "oneshot"), f"schedule must be iterative or oneshot, got {cfg.schedule!r}")
    need(cfg.rewind_step >= 0, f"rewind_step must be >= 0, got {cfg.rewind_step}")
    from . import branches, tasks

    branches.check(cfg.controls)
    for c, lv in (cfg.control_levels or {}).items():
        need(c in cfg.controls, f"control_levels names {c!r}, which is not one of the controls {cfg.controls}")
        need(isinstance(lv, list) and all(isinstance(v, int) and v >= 1 for v in lv),
             f"control_levels[{c!r}] must be a list of levels >= 1, got {lv!r}")
    need(cfg.trials >= 1, f"trials must be >= 1, got {cfg.trials}")
    need(cfg.momentum >= 0 and cfg.weight_decay >= 0, "momentum and weight_decay must be >= 0")
    need(cfg.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    need(cfg.dataset in tasks.TASKS, f"dataset must be one of {', '.join(tasks.TASKS)}, got {cfg.dataset!r}")
    task = tasks.TASKS.get(cfg.dataset)
    need(cfg.warmup >= 0, f"warmup must be >= 0 steps, got {cfg.warmup}")
    need(0.0 <= cfg.warmdown <= 1.0, f"warmdown must be a fraction in [0, 1], got {cfg.warmdown}")
    need(cfg.grad_clip is None or cfg.grad_clip > 0, f"grad_clip must be > 0, got {cfg.grad_clip}")
    need(cfg.grad_accum >= 1, f"grad_accum must be >= 1, got {cfg.grad_accum}")
    need(cfg.batch_size % cfg.grad_accum == 0,
         f"batch_size {cfg.batch_size} is not divisible by grad_accum {cfg.grad_accum}")
    need(cfg.max_minutes is None or cfg.max_minutes > 0, f"max_minutes must be > 0, got {cfg.max_minutes}")
    need(cfg.matrix_lr is None or cfg.matrix_lr > 0, f"matrix_lr must be > 0, got {cfg.matrix_lr}")
    need(cfg.head_fit_lr is None or cfg.head_fit_lr > 0, f"head_fit_lr must be > 0, got {cfg.head_fit_lr}")
    from .optimizers import LR_SCHEDULES

    need(cfg.lr_schedule is None or cfg.lr_schedule in LR_SCHEDULES,
         f"lr_schedule must be one of {', '.join(LR_SCHEDULES.names())}, got {cfg.lr_schedule!r}")
    need(cfg.gamma is None or 0.0 < cfg.gamma <= 1.0, f"gamma must be in (0, 1], got {cfg.gamma}")
    need(cfg.milestones is None or all(isinstance(m, int) and m > 0 for m in cfg.milestones),
         f"milestones must be positive step counts, got {cfg.milestones}")
    need(cfg.seq_len is None or cfg.seq_len >= 1, f"seq_len must be >= 1, got {cfg.seq_len}")
    need(cfg.eval_tokens is None or cfg.eval_tokens >= 1, f"eval_tokens must be >= 1, got {cfg.eval_tokens}")
    need(cfg.betas is None or (len(cfg.betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in cfg.betas)),
         f"betas must be two numbers in [0, 1), got {cfg.betas}")
    need(cfg.betas is None or cfg.optimizer in ("adam", "adamw"), f"betas are for adam and adamw, not {cfg.optimizer}")
    check_device(cfg.device)
    if cfg.data_dir is not None:
        need(Path(cfg.data_dir).is_dir(), f"data_dir {cfg.data_dir} is not a directory")
    task.check(cfg)
    need(not task.needs_data_dir or cfg.data_dir is not None, f"dataset {cfg.dataset} needs --data-dir")
    need(cfg.rule in (None, "ste", "topk", "bernoulli"), f"rule must be one of ste, topk, bernoulli, got {cfg.rule!r}")
    need(cfg.density is None or 0.0 < cfg.density <= 1.0, f"density must be in (0, 1], got {cfg.density}")
    from . import models
    from .init import SCHEMES

    need(cfg.model in models.MODELS, f"unknown model {cfg.model!r}; choose from {sorted(models.MODELS)}")
    models.check_args(cfg.model, cfg.model_args)
    takes = models.MODELS.get(cfg.model).inputs
    need(takes == task.inputs, f"model {cfg.model} does not fit dataset {cfg.dataset} ({cfg.model} takes "
         f"{takes} inputs, {cfg.dataset} gives {task.inputs})")
    need(cfg.init in SCHEMES, f"unknown init {cfg.init!r}; choose from {sorted(SCHEMES)}")
    at_init = False
    if cfg.criterion is not None:
        from .scores import SCORES

        score = SCORES.get(cfg.criterion)
        at_init = score.needs_data or score.iterative
    if cfg.train_levels is not None:
        need(all(isinstance(v, int) and 1 <= v <= cfg.levels for v in cfg.train_levels),
             f"train_levels must be levels in 1..{cfg.levels}, got {cfg.train_levels}")
        need(at_init or cfg.schedule == "oneshot", "train_levels needs a criterion at init (snip, grasp, "
             "synflow) or schedule oneshot: an iterative level prunes the level before it")
    from . import gradual, head_fit, sparsity
    from .sources import check as check_weights

    gradual.check(cfg)
    sparsity.check_prune_of(cfg)
    head_fit.check(cfg)

    check_weights(cfg)
    return cfg
