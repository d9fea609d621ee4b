"""Masks to and from ``torch.nn.utils.prune``'s form: a ``weight_orig`` parameter and a ``weight_mask``
buffer per pruned tensor, ``weight`` recomputed as their product by a forward pre-hook.

- :func:`to_torch_prune` attaches lth masks (``{"fc1.weight": bool tensor}``) with
  ``prune.custom_from_mask``, for users whose code expects that form;
- :func:`from_torch_prune` reads the masks of a model pruned that way (its ``*_mask`` buffers) as lth
  masks, a one-line error if it has none;
- :func:`remove_torch_prune` makes the pruning permanent (``prune.remove``): plain parameters with
  exact zeros.
"""

from __future__ import annotations

from torch import nn

from . import masks as M
from .errors import LthError


def to_torch_prune(model: nn.Module, masks: M.Masks) -> nn.Module:
    """Attach masks with ``torch.nn.utils.prune.custom_from_mask`` (``weight_orig`` + ``weight_mask``)."""
    from torch.nn.utils import prune

    for name, m in masks.items():
        module_name, _, pname = name.rpartition(".")
        module = model.get_submodule(module_name)
        prune.custom_from_mask(module, pname, m.to(getattr(module, pname).device))
    return model


def from_torch_prune(model: nn.Module) -> M.Masks:
    """Read the masks of a model pruned with ``torch.nn.utils.prune`` (its ``*_mask`` buffers)."""
    out = {}
    for mname, module in model.named_modules():
        for bname, buf in module.named_buffers(recurse=False):
            if bname.endswith("_mask"):
                pname = bname[: -len("_mask")]
                out[f"{mname}.{pname}" if mname else pname] = buf.bool().clone()
    if not out:
        raise LthError("model has no torch.nn.utils.prune masks (no '*_mask' buffers)")
    return out


def remove_torch_prune(model: nn.Module) -> nn.Module:
    """Make pruning permanent (``prune.remove``): plain ``weight`` parameters with zeros."""
    from torch.nn.utils import prune

    for mname, module in model.named_modules():
        for bname, _ in list(module.named_buffers(recurse=False)):
            if bname.endswith("_mask"):
                prune.remove(module, bname[: -len("_mask")])
    return model
