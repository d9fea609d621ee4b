"""The one reader of a run directory's checkpoint layout (lottery, supermask, pack, bench and sources).

Files (safetensors, names ``<kind>.<tensor name>``; every file written atomically):

* ``level_XX/<experiment>_trial<t>.safetensors``: a lottery member of level XX: ``mask.*`` (uint8),
  ``init.*`` (the weights, and buffers, it was reset to), ``final.*`` (after training); its metadata
  says how the reset weights come back (``lth.branches``).
* ``supermask_trial<t>.safetensors``: a supermask trial: ``mask.*``, ``score.*``, ``scale.*``,
  ``param.*`` (the model's own learned scales), ``buffer.*`` (per-member buffers: BatchNorm statistics).
* ``rewind.safetensors``: θk of every trial, ``trial<t>.<name>``.

:func:`read` returns ``{kind: {name: tensor}}`` with masks as bool tensors, whatever the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import RunDirError
from .io import load_tensors


def redo_hint(path) -> str:
    """What to delete to redo only the work a run-directory file holds."""
    path = Path(path)
    if path.parent.name.startswith("level_"):
        return f"delete {path.parent}/ to redo level {int(path.parent.name[6:])} only"
    if path.name.startswith("supermask_trial"):
        return f"delete it to redo trial {path.stem[len('supermask_trial'):]} only"
    if path.name == "rewind.safetensors":
        return f"delete it and {path.parent / 'level_00'}/ to redo level 0"
    return "delete it to redo the work it holds"


def _load(path) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a cut or garbled file
        if isinstance(exc, FileNotFoundError):
            raise RunDirError(f"{path}: missing; {redo_hint(path)}") from None
        raise RunDirError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
                          f"{redo_hint(path)}") from None


def member_path(run_dir, level: int, experiment: str, trial: int) -> Path:
    return Path(run_dir) / f"level_{level:02d}" / f"{experiment}_trial{trial}.safetensors"


def supermask_path(run_dir, trial: int) -> Path:
    return Path(run_dir) / f"supermask_trial{trial}.safetensors"


def read(path, kinds: tuple[str, ...] = ()) -> dict[str, dict[str, torch.Tensor]]:
    """``{kind: {name: tensor}}`` of a member or trial file; ``kinds`` are present even when empty."""
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in kinds}
    for key, v in _load(path).items():
        kind, _, name = key.partition(".")
        out.setdefault(kind, {})[name] = v.bool() if kind == "mask" else v
    return out


def read_rewind(run_dir, trial: int) -> dict[str, torch.Tensor]:
    """θk of one trial from ``rewind.safetensors``."""
    prefix = f"trial{trial}."
    return {k[len(prefix):]: v for k, v in _load(Path(run_dir) / "rewind.safetensors").items()
            if k.startswith(prefix)}


def metadata(path) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint (``{}`` when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - as in _load
        raise RunDirError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
                          f"{redo_hint(path)}") from None
