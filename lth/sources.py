"""Weight sources: where a trial's starting weights θ0 come from.

Registry ``SOURCES``. ``Config.weights`` picks an entry and its argument: ``None`` or ``"seed"`` is
``seed``; ``"checkpoint:PATH"`` is ``checkpoint`` (with ``Config.weights_sha256``); ``"run:DIR"`` or
``"run:DIR@LEVEL"`` is ``run``.

Contract of an entry (:class:`Source`):

- ``check(cfg, arg)``: a one-line :class:`~lth.errors.ConfigError` for a source that cannot work
  (no such file, no SHA-256, a digest that does not match), before any training.
- ``theta0(cfg, arg, template, seed, trial) -> state``: every parameter of ``template`` (CPU
  tensors, the template's dtypes), for the trial with seed ``seed`` and index ``trial``.
- ``regenerates``: whether a packed ticket can get θ0 back without storing floats: ``seed`` from its
  seed (bit-exact, ``lth.init``), ``checkpoint`` from the file, verified by its SHA-256 when the
  ticket is built. ``run`` does not: its tickets store the surviving floats.
- ``describe(cfg, arg) -> dict``: what a ticket records as ``meta["weights_source"]``
  (``{"kind": "seed"}``, ``{"kind": "checkpoint", "path", "sha256"}``, ``{"kind": "run", ...}``).

Entries:

- ``seed``: ``init_from_seed(template, seed, cfg.init)`` (the default).
- ``checkpoint``: a safetensors file named by path and SHA-256 (of the file's bytes). It must hold
  every parameter of the template under its name, with its shape (other tensors are ignored), except
  those the model lists in ``seeded_parameters()`` (a pre-trained encoder's new task head, BERT):
  those it lacks come from ``init_from_seed(template, seed, cfg.init)``. The file's part is the same
  θ0 for every trial (trials differ in data order, controls and seeded heads). A ``bert.`` prefix
  (Hugging Face task checkpoints) is stripped from names the template does not have.
- ``run``: θk of another run directory: its ``rewind.safetensors`` (the weights at its rewind step),
  or without one level 0's reset weights; ``@LEVEL``: that level's ticket reset weights. Trial t
  takes the run's trial t.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Source:
    """A registered weight source (see the module docstring)."""

    name: str
    theta0: Callable[..., State]
    check: Callable[..., None]
    regenerates: bool
    describe: Callable[..., dict]


SOURCES: Registry[Source] = Registry("weight source")


def parse(weights: str | None) -> tuple[str, str]:
    """``Config.weights`` -> (source name, argument)."""
    if weights in (None, "seed"):
        return "seed", ""
    kind, colon, arg = str(weights).partition(":")
    if not colon:
        raise ConfigError(f"weights must be seed, checkpoint:PATH or run:DIR[@LEVEL], got {weights!r}")
    SOURCES.get(kind)
    return kind, arg


def of(cfg) -> tuple[Source, str]:
    kind, arg = parse(cfg.weights)
    return SOURCES.get(kind), arg


def check(cfg) -> None:
    """Validate ``cfg.weights`` (and ``weights_sha256``) in one line; called by ``presets.validate``."""
    source, arg = of(cfg)
    if cfg.weights_sha256 is not None and source.name != "checkpoint":
        raise ConfigError("weights_sha256 goes with weights checkpoint:PATH")
    source.check(cfg, arg)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state(template: nn.Module, tensors: dict, where: str, seeded: State | None = None) -> State:
    """Every parameter of ``template`` from ``tensors``; with ``seeded``, the ones the model lists in
    ``seeded_parameters()`` and ``tensors`` lacks come from ``seeded`` instead."""
    out = {}
    optional = set(getattr(template, "seeded_parameters", list)()) if seeded is not None else set()
    for n, p in template.named_parameters():
        if n not in tensors and n in optional:
            out[n] = seeded[n].to(device="cpu", dtype=p.dtype).clone()
            continue
        if n not in tensors:
            raise ConfigError(f"{where} has no tensor {n!r} for the model's parameter")
        if tuple(tensors[n].shape) != tuple(p.shape):
            raise ConfigError(f"{where}: {n} has shape {list(tensors[n].shape)}, the model {list(p.shape)}")
        out[n] = tensors[n].to(device="cpu", dtype=p.dtype).clone()
    return out


# --- seed ---------------------------------------------------------------------------------------------

def _seed_theta0(cfg, arg, template, seed, trial) -> State:
    from .init import init_from_seed

    model = init_from_seed(copy.deepcopy(template).cpu(), seed, cfg.init)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


SOURCES.register("seed")(Source("seed", _seed_theta0, lambda cfg, arg: None, True, lambda cfg, arg: {"kind": "seed"}))


# --- checkpoint ------------------------------------------------------------------------------------

def _checkpoint_check(cfg, arg) -> None:
    if not Path(arg).is_file():
        raise ConfigError(f"weights checkpoint {arg} is not a file")
    if not cfg.weights_sha256:
        raise ConfigError(f"weights checkpoint:{arg} needs weights_sha256 (its SHA-256: {sha256_file(arg)})")
    verify(arg, cfg.weights_sha256)


def verify(path, sha256: str) -> None:
    """One line when the file's SHA-256 is not ``sha256``."""
    got = sha256_file(path)
    if got != str(sha256).lower():
        raise ConfigError(f"weights checkpoint {path}: SHA-256 {got} is not the expected {sha256}")


def load_checkpoint(template: nn.Module, path, sha256: str, seeded: State | None = None) -> State:
    """θ0 from a verified safetensors checkpoint (also what a ``source`` ticket is rebuilt from);
    ``seeded``: the seed-derived values of the model's ``seeded_parameters()`` the file lacks."""
    from .io import load_tensors

    verify(path, sha256)
    tensors = load_tensors(path)
    own = {n for n, _ in template.named_parameters()}
    tensors.update({k[5:]: v for k, v in list(tensors.items()) if k.startswith("bert.") and k[5:] in own
                    and k[5:] not in tensors})
    return _state(template, tensors, str(path), seeded)


def _checkpoint_theta0(cfg, arg, template, seed, trial) -> State:
    seeded = _seed_theta0(cfg, "", template, seed, trial) if hasattr(template, "seeded_parameters") else None
    return load_checkpoint(template, arg, cfg.weights_sha256, seeded)


SOURCES.register("checkpoint")(Source(
    "checkpoint", _checkpoint_theta0, _checkpoint_check, True,
    lambda cfg, arg: {"kind": "checkpoint", "path": str(arg), "name": Path(arg).parent.name + "/" + Path(arg).name,
                      "sha256": cfg.weights_sha256}))


# --- run --------------------------------------------------------------------------------------------

def _run_parts(arg: str) -> tuple[Path, int | None]:
    path, at, level = arg.rpartition("@") if "@" in arg else (arg, "", "")
    if at and not level.isdigit():
        raise ConfigError(f"weights run:DIR@LEVEL needs a level number, got {level!r}")
    return Path(path), int(level) if at else None


def _run_check(cfg, arg) -> None:
    run_dir, level = _run_parts(arg)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"weights run:{arg}: {run_dir} is not a run directory (no config.json)")
    if level is not None and not (run_dir / f"level_{level:02d}").is_dir():
        raise ConfigError(f"weights run:{arg}: the run has no level {level}")


def _run_theta0(cfg, arg, template, seed, trial) -> State:
    from . import checkpoints

    run_dir, level = _run_parts(arg)
    rewind = run_dir / "rewind.safetensors"
    if level is None and rewind.is_file():
        return _state(template, checkpoints.read_rewind(run_dir, trial), f"{rewind} (trial {trial})")
    path = checkpoints.member_path(run_dir, level or 0, "ticket", trial)
    if not path.is_file():
        raise ConfigError(f"weights run:{arg}: no {path.name} in level {level or 0}")
    return _state(template, checkpoints.read(path, ("init",))["init"], str(path))


SOURCES.register("run")(Source("run", _run_theta0, _run_check, False, lambda cfg, arg: {"kind": "run", "run": arg}))
