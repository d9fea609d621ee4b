"""From a run directory to a ticket file, and from a ticket file back to a model that runs.

A lottery ticket at init is just (seed, mask): lottery runs use seed-derived init, so a ticket whose
reset weights regenerate bit-exactly from a seed packs into that seed plus its masks. Where they do
not (rewinding to step k > 0), the surviving reset weights travel as fp16/bf16 floats. ``trained=True``
ships the trained weights instead (always stored floats). A supermask trial is (seed, masks) plus its
few learned scales as float32 entries: its weights were never trained.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import __version__, checkpoints, head_fit, models, sources
from . import ticket as T
from .errors import LthError
from .init import init_from_seed


def _config(run_dir: Path) -> dict:
    p = run_dir / "config.json"
    if not p.exists():
        raise LthError(f"{run_dir} is not a run directory (no config.json)")
    from .errors import RunDirError
    from .run import read_json

    todo = "it is not a run lth can pack (its config is lost): rerun the experiment"
    cfg = read_json(p, todo)
    try:
        _run_config(cfg)
        if not (isinstance(cfg["model"], str) and isinstance(cfg["init"], str) and type(cfg["seed"]) is int):
            raise TypeError("model, init or seed of the wrong type")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{p}: not a run config ({type(exc).__name__}: {str(exc)[:120]}); {todo}") from None
    return cfg


def _done(run_dir: Path, key: str) -> list[int]:
    from .run import STATE_TODO, RunDir, int_list

    return int_list(RunDir(run_dir, writer=False).state(), key, run_dir / "state.json", STATE_TODO)


def _run_config(cfg: dict):
    """The recorded config as a :class:`lth.presets.Config` (fields it does not know are dropped)."""
    import dataclasses

    from .presets import Config

    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in cfg.items() if k in names})


def _tokenizer_meta(cfg: dict) -> dict:
    """What the run's task records to check its data at evaluation (``TaskEntry.ticket_meta``)."""
    from . import tasks

    run_cfg = _run_config(cfg)
    return tasks.entry(run_cfg).ticket_meta(run_cfg)


def _arch(cfg: dict) -> dict:
    """The architecture of a run: its model, constructor overrides and its task's shapes."""
    from . import tasks

    shape, classes = tasks.shape(_run_config(cfg))
    kwargs = {k: v for k, v in (cfg.get("model_args") or {}).items() if k != "seq_len"}
    return T.make_arch(cfg["model"], shape, classes, **kwargs)


def _member_seed(cfg: dict, meta: dict, experiment: str, trial: int, level: int) -> int | None:
    """The seed a member's reset weights regenerate from, as its checkpoint records it (None: stored
    floats); a checkpoint from before the record: the trial seed, or the reinit control's own."""
    if "weights" in meta:
        return int(meta["seed"]) if meta["weights"] == "seed" else None
    from .branches import derive_seed

    seed = cfg["seed"] + trial
    return derive_seed(seed, "reinit", level) if experiment == "reinit" else seed


def _results_for(run_dir: Path, experiment: str, trial: int, level: int) -> dict:
    """The member's last evaluation row (metrics recorded before packing)."""
    from .errors import RunDirError
    from .run import RunDir

    rows = [r for r in RunDir(run_dir, writer=False).read_rows()
            if r.get("experiment") == experiment and int(r["trial"]) == trial and int(r["level"]) == level]
    try:
        if not rows:
            return {}
        last = max(rows, key=lambda r: int(r["step"]))
        return {k: float(v) for k, v in last.items() if k not in ("experiment", "trial", "level") and v}
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{run_dir / 'results.csv'}: unreadable row ({type(exc).__name__}: {str(exc)[:120]}); "
                          "delete it and state.json to redo every level") from None


def from_lottery_run(run_dir, *, level: int | None = None, experiment: str = "ticket", trial: int = 0,
                     trained: bool = False, dtype: str = "float16") -> T.Ticket:
    run_dir = Path(run_dir)
    cfg = _config(run_dir)
    done = _done(run_dir, "levels_done")
    if not done:
        raise LthError(f"{run_dir} has no finished level to pack")
    level = max(done) if level is None else level
    if level not in done:
        raise LthError(f"level {level} is not finished in {run_dir} (finished: {sorted(done)})")
    from .branches import BRANCHES

    BRANCHES.get(experiment)  # one-line error for an unknown branch
    ckpt = checkpoints.member_path(run_dir, level, experiment, trial)
    if not ckpt.exists():
        raise LthError(f"no checkpoint {ckpt.name} in level {level} (experiment and trial exist?)")
    parts = checkpoints.read(ckpt, ("mask", "init", "final"))
    masks, reset, final = parts["mask"], parts["init"], parts["final"]
    arch = _arch(cfg)
    ck_meta = _checkpoint_meta(ckpt)
    seed = _member_seed(cfg, ck_meta, experiment, trial, level)
    model = models.build(arch["model"], arch["input_shape"], arch["num_classes"], **arch["kwargs"])
    regenerates = None  # "seed" or "source" when the reset weights come back bit for bit without floats
    if seed is not None:  # verified: the reset weights must regenerate from it bit for bit
        regenerated = _state(init_from_seed(model, seed, cfg["init"]))
        regenerates = "seed" if all(torch.equal(regenerated[n].detach(), v) for n, v in reset.items()) else None
    run_cfg = _run_config(cfg)
    source, arg = sources.of(run_cfg)
    head = head_fit.read(run_dir, trial)  # a head fit on the frozen checkpoint: param.<name> floats
    if ck_meta.get("weights") == "source" and source.regenerates:  # θ0 from a checkpoint, verified
        theta0 = {**source.theta0(run_cfg, arg, model, cfg["seed"] + trial, trial), **head}
        regenerates = "source" if all(torch.equal(theta0[n], v) for n, v in reset.items()) else None
    seed = cfg["seed"] + trial if seed is None else seed
    weights = final if trained else reset
    meta = {"source": str(run_dir), "level": level, "experiment": experiment, "trial": trial,
            "dataset": cfg.get("dataset", "mnist"), "kind": "lottery", "trained": trained,
            "rewind_step": cfg.get("rewind_step", 0), "config": cfg, **_tokenizer_meta(cfg), "lth_version": __version__,
            "weights_source": source.describe(run_cfg, arg)}
    meta["results"] = _results_for(run_dir, experiment, trial, level)  # trained: what `lth eval` reproduces
    if not trained and regenerates is not None:
        floats = {f"param.{n}": v.float().contiguous() for n, v in head.items()} if regenerates == "source" else {}
        return T.Ticket(arch, seed, cfg["init"], masks, floats=floats, weights=regenerates, meta=meta)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(weights[n])
    floats = T.surviving_floats(model, masks, T.FLOAT_DTYPES[dtype])
    floats.update(buffer_floats(model, weights))
    if not trained and ck_meta.get("branch") in CONSTANT_BRANCHES:
        constant = _as_constant(T.Ticket(arch, seed, cfg["init"], masks, floats=floats, weights="stored", meta=meta),
                                reset)
        if constant is not None:
            return constant
    return T.Ticket(arch, seed, cfg["init"], masks, floats=floats, weights="stored", meta=meta)


CONSTANT_BRANCHES = ("constant", "constant_random_sign")  # lth.branches: survivors are ±α_l


def _as_constant(t: T.Ticket, reset: dict[str, torch.Tensor]) -> T.Ticket | None:
    """``t`` with its masked matrices as sign bits (``weights="constant"``), if that rebuilds ``reset``'s
    survivors exactly (else None: e.g. a survivor whose value was exactly 0)."""
    import dataclasses

    signs = {n: reset[n][m] > 0 for n, m in t.masks.items() if m.dim() >= 2}
    floats = {k: v for k, v in t.floats.items() if k not in signs}
    c = dataclasses.replace(t, floats=floats, signs=signs, weights="constant")
    built = dict(T.build_model(c).named_parameters())
    ok = all(torch.equal(built[n].detach()[m], reset[n][m]) for n, m in t.masks.items() if n in signs)
    return c if ok else None


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name (a member's state as checkpoints record it)."""
    return {**{n: p.detach() for n, p in model.named_parameters()}, **dict(model.named_buffers())}


def buffer_floats(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``buffer.<name>`` float32 entries for the floating-point buffers (BatchNorm running statistics) whose
    values in ``state`` differ from the freshly built model's: the ticket restores them on rebuild."""
    out = {}
    for n, b in model.named_buffers():
        if n in state and b.is_floating_point() and not torch.equal(state[n].to(b.dtype), b):
            out[f"buffer.{n}"] = state[n].to(torch.float32).contiguous()
    return out


def is_supermask_run(run_dir) -> bool:
    """A supermask run records its mask rule in config.json and leaves supermask_trial{t} checkpoints."""
    run_dir = Path(run_dir)
    return _config(run_dir).get("rule") is not None and any(run_dir.glob("supermask_trial*.safetensors"))


def from_run(run_dir, *, level: int | None = None, experiment: str | None = None, trial: int = 0,
             trained: bool = False, dtype: str = "float16") -> T.Ticket:
    """Pack a lottery or a supermask run (told apart by :func:`is_supermask_run`)."""
    if not is_supermask_run(run_dir):
        return from_lottery_run(run_dir, level=level, experiment=experiment or "ticket", trial=trial,
                                trained=trained, dtype=dtype)
    if level not in (None, 0) or experiment is not None or trained:
        raise LthError(f"{run_dir} is a supermask run: it has one level, one experiment and untrained weights "
                       f"(give only --trial)")
    return from_supermask_run(run_dir, trial=trial)


def from_supermask_run(run_dir, *, trial: int = 0) -> T.Ticket:
    """A supermask trial as a ``weights="seed"`` ticket: seed, init scheme and masks regenerate the frozen
    network, and the learned scales travel as float32 ``scale.<name>`` entries (applied by build)."""
    from . import supermask as S
    from .init import weights_sha256

    run_dir = Path(run_dir)
    cfg = _config(run_dir)
    done = _done(run_dir, "trials_done")
    ckpt_path = run_dir / f"supermask_trial{trial}.safetensors"
    if trial not in done or not ckpt_path.exists():
        raise LthError(f"trial {trial} is not finished in {run_dir} (finished: {sorted(done)})")
    ckpt = S.load_checkpoint(ckpt_path)
    arch = _arch(cfg)
    seed = cfg["seed"] + trial
    model = init_from_seed(models.build(arch["model"], arch["input_shape"], arch["num_classes"], **arch["kwargs"]), seed, cfg["init"])
    # The frozen weights must still regenerate from the seed (an init change would silently ship others).
    recorded = _checkpoint_meta(ckpt_path).get("weights_sha256")
    if recorded is not None and recorded != weights_sha256(model):
        raise LthError(f"{ckpt_path.name}: the weights of trial {trial} no longer regenerate from seed {seed} "
                       f"with init {cfg['init']!r} (lth.init changed?)")
    masks = ckpt["mask"]
    floats = {f"scale.{n}": v.to(torch.float32).contiguous() for n, v in ckpt["scale"].items()}
    # the model's own learned scales (a GPT's per-head and per-branch scales) replace their init
    floats.update({f"param.{n}": v.to(torch.float32).contiguous() for n, v in ckpt.get("param", {}).items()})
    floats.update(buffer_floats(model, ckpt.get("buffer", {})))  # BatchNorm statistics of the supermask run
    meta = {"source": str(run_dir), "kind": "supermask", "rule": cfg["rule"], "density": cfg["density"],
            "trial": trial, "dataset": cfg.get("dataset", "mnist"), "level": 0,
            "results": _results_for(run_dir, cfg["rule"], trial, 0),
            "trained_floats": S.trained_floats(model, list(masks)), "config": cfg, **_tokenizer_meta(cfg),
            "lth_version": __version__}
    return T.Ticket(arch, seed, cfg["init"], masks, floats=floats, weights="seed", meta=meta)


def _checkpoint_meta(path: Path) -> dict:
    return checkpoints.metadata(path)


def build(t: T.Ticket) -> torch.nn.Module:
    """The network a ticket describes: regenerated weights, stored floats, learned scales, masks applied."""
    return T.build_model(t)


def evaluate(t: T.Ticket, data_dir=None, device: str = "cpu") -> dict[str, float]:
    """Validation and test metrics of the ticket's network, through the same evaluation code (and
    chunking) that training used, so a packed model reproduces its recorded numbers exactly."""
    from . import dist as D
    from .ensemble import Ensemble
    from .lottery import load_task
    from .train import evaluate as run_eval

    import dataclasses

    # the run's own task settings (input normalization; an LM's tokens, context and evaluated prefix)
    cfg = _run_config(t.meta.get("config") or {"dataset": t.meta.get("dataset", "mnist")})
    if data_dir is not None:  # a token directory brings its own tokenizer
        cfg = dataclasses.replace(cfg, data_dir=data_dir, tokenizer=None)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise LthError(f"data directory {cfg.data_dir} (recorded in the ticket) does not exist; give --data-dir")
    task = load_task(cfg, device)
    packed, rebuilt = t.meta.get("tokenizer_sha256"), getattr(getattr(task, "data", None), "tokenizer_sha256", None)
    if data_dir is None and packed is not None and rebuilt != packed:
        raise LthError(f"the {cfg.tokenizer} tokenizer rebuilt here (sha256 {str(rebuilt)[:12]}) is not the one the "
                       f"ticket was trained with ({packed[:12]}): another sentencepiece version?")
    model = build(t)
    ens = Ensemble(model, [{n: p.detach() for n, p in model.named_parameters()}]).to(device)
    metrics = run_eval(ens, task, D.Context())
    return {k: float(v[0]) for k, v in metrics.items()}


def export(t: T.Ticket, out_dir, *, torch_prune: bool = False) -> list[Path]:
    """Write the ticket's network as dense safetensors (pruned weights exactly zero), plus with
    ``torch_prune`` the ``torch.nn.utils.prune`` form (``*.weight_orig`` and ``*.weight_mask``)."""
    from .io import atomic_save_tensors, atomic_write_json
    from .pruning import to_torch_prune

    out = Path(out_dir)
    model = build(t)
    paths = [out / "model.safetensors", out / "arch.json"]
    atomic_save_tensors({n: p.detach() for n, p in model.named_parameters()}, paths[0])
    atomic_write_json(paths[1], {"arch": t.arch, "seed": t.seed, "init": t.init, "meta": t.meta})
    if torch_prune:
        to_torch_prune(model, t.masks)
        state = {k: v.detach() for k, v in model.state_dict().items()}
        paths.append(out / "model_torch_prune.safetensors")
        atomic_save_tensors(state, paths[-1])
    return paths


def export_hf(t: T.Ticket, out_dir) -> list[Path]:
    """A BERT ticket as a ``save_pretrained``-style directory that ``transformers`` loads offline with
    ``AutoModel`` / ``AutoModelForSequenceClassification`` (or ``AutoModelForMaskedLM``): ``config.json``,
    ``model.safetensors`` (pruned weights exactly zero) and the checkpoint's tokenizer files."""
    import shutil

    from safetensors.torch import save_file

    from .io import atomic_write_json

    model = build(t)
    if not hasattr(model, "state_dict_hf"):
        raise LthError(f"--hf exports a bert model; this ticket's model is {t.arch.get('model')!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", model.cfg.to_hf(model.head, model.num_labels))
    save_file(model.state_dict_hf(), str(out / "model.safetensors"), metadata={"format": "pt"})
    paths = [out / "config.json", out / "model.safetensors"]
    from .models.bert import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        if model.pretrained and (Path(model.pretrained) / name).is_file():
            shutil.copy(Path(model.pretrained) / name, out / name)
            paths.append(out / name)
    return paths
