"""How an :class:`lth.ensemble.Ensemble` runs its members, and the pytree plumbing its paths share.

Modes (``Ensemble(..., mode=...)``):

* ``"stacked"``: one call for all M members. A ``stackable`` model is called directly with the stacked
  parameters (path ``"direct"``); any other model through ``torch.func.vmap`` (path ``"vmap"``).
* ``"loop"``: one ``functional_call`` per member on its slices of the stacked parameters and buffers,
  outputs stacked (path ``"loop"``).
* ``"auto"``: ``"stacked"`` for ``stackable`` models; otherwise a rule looked up per call on the device
  type of the parameters (``"cpu"``, ``"cuda"``, ...), from the first of:

  1. the model's own ``ensemble_mode`` attribute: a mode, or ``{device type: mode}``;
  2. the first entry of :data:`MODE_RULES` whose module type occurs in the model;
  3. :data:`DEFAULT_RULE`.

  A device type a rule does not name gets ``"stacked"``.

The rules below are data measured with ``bench/ensemble_mode.py`` (table in ``docs/benchmarks.md``):
milliseconds per training step per model, vmap against the loop, M in {1, 2, 4}. CUDA entries are not
measured yet (no GPU was available); they say ``"stacked"``, where one batched kernel per layer is the
expected winner.

Known limit of vmap: ``nn.TransformerEncoder``'s evaluation fast path (padding mask, ``use_nested_tensor``)
calls ``aten::_nested_tensor_from_mask_left_aligned``, which has no batching rule; build it with
``enable_nested_tensor=False`` or use the loop (the ``nn.MultiheadAttention`` rule picks it on CPU).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .errors import ConfigError

MODES = ("auto", "stacked", "loop")

# (module type, {device type: mode}): a model containing a module of this type gets this rule; the
# first match wins. Measured on 2 shared CPU cores at M = 4, two runs (docs/benchmarks.md):
# * convolutions: vmap turns the member dimension into grouped convolutions, slower per model than M
#   ordinary ones (Conv-2 at 32x32, with or without BatchNorm: the loop takes 0.33-0.81 of vmap's time);
# * nn.MultiheadAttention (an nn.Transformer encoder-decoder with dropout): the loop takes 0.42-0.74.
MODE_RULES: tuple[tuple[type, dict[str, str]], ...] = (
    (nn.modules.conv._ConvNd, {"cpu": "loop", "cuda": "stacked"}),
    (nn.MultiheadAttention, {"cpu": "loop", "cuda": "stacked"}),
)
# Everything else that is not stackable (MLPs, GPT-style attention written with linears): vmap measured
# faster than the loop on CPU (tiny GPT at M = 4: the loop takes 1.4-3.9 times vmap's time).
DEFAULT_RULE: dict[str, str] = {"cpu": "stacked", "cuda": "stacked"}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"ensemble mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def rule_for(model: nn.Module) -> dict[str, str]:
    """The ``{device type: mode}`` rule ``"auto"`` uses for a model that is not stackable."""
    own = getattr(model, "ensemble_mode", None)
    if own is not None:
        rule = {"cpu": own, "cuda": own} if isinstance(own, str) else dict(own)
    else:
        kinds = [rule for kind, rule in MODE_RULES if any(isinstance(m, kind) for m in model.modules())]
        rule = dict(kinds[0] if kinds else DEFAULT_RULE)
    for mode in rule.values():
        if check_mode(mode) == "auto":
            raise ConfigError("a model's ensemble_mode must say 'stacked' or 'loop', not 'auto'")
    return rule


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def map_tensors(fn: Callable[[torch.Tensor], Any], tree: Any) -> Any:
    """``tree`` with every tensor leaf replaced by ``fn(leaf)``; other leaves unchanged."""
    return pytree.tree_map(lambda x: fn(x) if is_tensor(x) else x, tree)


def in_dims(tree: Any) -> Any:
    """vmap's ``in_dims`` for ``tree``: 0 for tensors (leading member dimension), None for the rest."""
    return pytree.tree_map(lambda x: 0 if is_tensor(x) else None, tree)


def join(outputs: list[Any], combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> Any:
    """One output pytree from the members' (same structure): tensor leaves combined with ``combine``
    (``torch.stack`` or ``torch.cat``), other leaves taken from the first member."""
    flat, spec = pytree.tree_flatten(outputs[0])
    columns = zip(flat, *(pytree.tree_flatten(o)[0] for o in outputs[1:]))
    return pytree.tree_unflatten([combine(list(c)) if is_tensor(c[0]) else c[0] for c in columns], spec)
