"""Masks: named boolean tensors beside a model's prunable parameters.

A mask set is a plain ``dict[str, torch.BoolTensor]`` keyed by parameter name (``"fc1.weight"``), the
same names ``model.named_parameters()`` gives. True keeps a weight, False prunes it. A stacked mask set
(one mask per member of an :class:`~lth.ensemble.Ensemble`) has a leading member dimension.
Everything here is a small pure function so that criteria, the trainer and the ticket file share it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import LthError

Masks = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, *, biases: bool = False, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the parameters that pruning acts on: weight matrices and kernels (dim >= 2).

    Biases and other 1-D parameters (norm gains) are left dense unless ``biases`` is set, as in
    Frankle & Carbin (2019). ``exclude`` drops names containing any of the given substrings
    (e.g. ``("embed",)`` to keep embeddings dense).
    """
    names = []
    for name, p in model.named_parameters():
        if any(s in name for s in exclude):
            continue
        if p.dim() >= 2 or (biases and p.dim() == 1):
            names.append(name)
    return names


def ones(params: dict[str, torch.Tensor], names: list[str]) -> Masks:
    """All-True masks for ``names`` shaped like ``params`` (stacked params give stacked masks)."""
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


@torch.no_grad()
def apply(params: dict[str, torch.Tensor], masks: Masks) -> None:
    """Zero the pruned entries of ``params`` in place."""
    for name, m in masks.items():
        params[name].mul_(m)


def count(masks: Masks) -> dict[str, int]:
    """Surviving entries per tensor."""
    return {n: int(m.sum()) for n, m in masks.items()}


def remaining(masks: Masks) -> float:
    """Fraction of masked entries that survive, over all tensors together."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def density(masks: Masks) -> dict[str, float]:
    """Fraction of surviving entries per tensor."""
    return {n: int(m.sum()) / m.numel() for n, m in masks.items()}


def member(masks: Masks, i: int) -> Masks:
    """The masks of member ``i`` of a stacked mask set."""
    return {n: m[i] for n, m in masks.items()}


def stack(mask_sets: list[Masks]) -> Masks:
    """Stack several mask sets with the same names into one with a leading member dimension."""
    return {n: torch.stack([ms[n] for ms in mask_sets]) for n in mask_sets[0]}


def check_compatible(masks: Masks, params: dict[str, torch.Tensor]) -> None:
    """Raise a one-line LthError when masks name unknown parameters or have the wrong shape."""
    for name, m in masks.items():
        if name not in params:
            raise LthError(f"mask {name!r} names no parameter of the architecture")
        if tuple(m.shape) != tuple(params[name].shape):
            raise LthError(f"mask {name!r} has shape {list(m.shape)} but the architecture's parameter is "
                           f"{list(params[name].shape)}")


def save(masks: Masks, path: str | Path) -> None:
    """Write masks to a safetensors file (uint8, since safetensors has no packed bool)."""
    from .io import atomic_save_tensors

    atomic_save_tensors({n: m.to(torch.uint8) for n, m in masks.items()}, path)


def load(path: str | Path) -> Masks:
    from safetensors.torch import load_file

    return {n: t.bool() for n, t in load_file(str(path)).items()}
