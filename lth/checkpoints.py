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

from .io import load_tensors


def member_path(run_dir, level: int, experiment: str, trial: int) -> Path:
    return Path(run_dir) / f"level_{level:02d}" / f"{experiment}_trial{trial}.safetensors"


def supermask_path(run_dir, trial: int) -> Path:
    return Path(run_dir) / f"supermask_trial{trial}.safetensors"


def read(path, kinds: tuple[str, ...] = ()) -> dict[str, dict[str, torch.Tensor]]:
    """``{kind: {name: tensor}}`` of a member or trial file; ``kinds`` are present even when empty."""
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in kinds}
    for key, v in load_tensors(path).items():
        kind, _, name = key.partition(".")
        out.setdefault(kind, {})[name] = v.bool() if kind == "mask" else v
    return out


def read_rewind(run_dir, trial: int) -> dict[str, torch.Tensor]:
    """θk of one trial from ``rewind.safetensors``."""
    prefix = f"trial{trial}."
    return {k[len(prefix):]: v for k, v in load_tensors(Path(run_dir) / "rewind.safetensors").items()
            if k.startswith(prefix)}


def metadata(path) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint (``{}`` when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}
