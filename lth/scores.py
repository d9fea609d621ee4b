"""Scores: *what* to keep. Registry ``SCORES``; the allocation (``lth.pruning``) decides how many.

Contract of an entry: a :class:`Score` wrapping ``fn(inp: ScoreInputs) -> dict[name, Tensor]`` that
returns, for every name in ``inp.masks``, a float tensor shaped like that weight; **higher = keep**.
Scores of already-pruned entries do not matter (allocations never revive them). An entry never
changes ``inp.weights`` or the model and is deterministic given its inputs. Its flags:

- ``needs_data``: it needs ``inp.loss`` (params -> scalar loss on a fixed batch); others are data-free.
- ``iterative``: pruning at init applies it over ``rounds`` rounds, rescoring after each (SynFlow).
- ``rounds``: default number of rounds for one pruning step (1 = one shot).
- ``temperature``: a data-driven score's logit temperature: whoever builds ``inp.loss`` divides the
  model's outputs by it before the loss (GraSP: 200, as the paper; 1 elsewhere).

Scores that differentiate evaluate the network at the *masked* weights ``w * m`` (pruned entries at
zero, as they are in the model) and take derivatives with respect to the prunable weights only; the
other parameters (biases, norms) are held fixed.

Entries:

- ``magnitude``: ``|w|`` (Han et al. 2015; Frankle & Carbin 2019).
- ``random``: seed-derived uniform scores from ``lth.init``'s hash, bit-exact on every machine.
- ``snip``: ``|g ⊙ w|`` with ``g = ∂L/∂w`` (Lee et al. 2019, connection sensitivity ``|∂L/∂c|`` at c=1).
- ``grasp``: ``w ⊙ Hg`` with ``H`` the Hessian of L, ``g`` its gradient, ``Hg`` by double backprop
  (Wang et al. 2020). Sign convention: the paper scores ``S = -w ⊙ Hg`` and removes the weights with
  the *largest* S (those whose removal reduces gradient flow least); in this module's higher = keep
  convention the score is ``-S = w ⊙ Hg``, so the lowest values are pruned: the paper's ranking, the
  same weights removed. The temperature on the logits (the paper's T=200, the entry's
  ``temperature``) is part of ``loss``.
- ``synflow``: data-free, ``|w ⊙ ∂R/∂w|`` with ``R = sum(f(1; |θ|))``: the network's output summed,
  with *every* parameter and floating buffer (biases, BatchNorm statistics) replaced by its absolute
  value, on one all-ones input of ``inp.input_shape``, in float64 and in eval mode (Tanaka et al.
  2020, as their reference code does). Iterative: 100 rounds by default (see ``lth.pruning``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError
from .masks import Masks
from .registry import Registry

Scores = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ScoreInputs:
    """Everything a score may look at, for one model.

    ``weights``: all of the model's parameters (name -> tensor). ``masks``: the current bool masks
    over the prunable names. ``model``: the architecture, called functionally as
    ``torch.func.functional_call(model, params, (x,))``. ``loss``: params -> scalar loss on a fixed
    batch (data-driven scores). ``input_shape``: one example's shape without batch (data-free
    scores). ``seed``: for ``random``.
    """

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: Masks = field(default_factory=dict)
    model: nn.Module | None = None
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0


@dataclass(frozen=True)
class Score:
    """A registered score: the function and its flags (see the module docstring)."""

    name: str
    fn: Callable[[ScoreInputs], Scores]
    needs_data: bool = False
    iterative: bool = False
    rounds: int = 1
    temperature: float = 1.0

    def __call__(self, inp: ScoreInputs) -> Scores:
        if self.needs_data and inp.loss is None:
            raise ConfigError(f"score {self.name!r} needs data: give ScoreInputs a loss(params) on a fixed batch")
        return self.fn(inp)


SCORES: Registry[Score] = Registry("score")


def _entry(name: str, **flags):
    def add(fn):
        SCORES.register(name)(Score(name, fn, **flags))
        return fn

    return add


def random_scores(seed: int, name: str, shape) -> torch.Tensor:
    """Seed-derived uniform scores, bit-exact on every machine (they go through lth.init's hash)."""
    from .init import Dist, generate

    return generate(seed, "random_mask/" + name, tuple(shape), Dist("uniform", 1.0))


def _masked_leaves(inp: ScoreInputs, cast=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(all params detached, with the prunable ones replaced by ``w * m`` leaves requiring grad)."""
    cast = cast or (lambda t: t)
    params = {n: cast(t.detach()) for n, t in inp.weights.items()}
    leaves = {n: (params[n] * m).requires_grad_() for n, m in inp.masks.items()}
    return {**params, **leaves}, leaves


def _grad(out: torch.Tensor, leaves: dict[str, torch.Tensor], **kw) -> dict[str, torch.Tensor]:
    """d out / d leaves, zeros where a leaf does not reach ``out``."""
    if not out.requires_grad:
        return {n: torch.zeros_like(v) for n, v in leaves.items()}
    gs = torch.autograd.grad(out, list(leaves.values()), allow_unused=True, **kw)
    return {n: torch.zeros_like(v) if g is None else g for (n, v), g in zip(leaves.items(), gs)}


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@_entry("magnitude")
def magnitude(inp: ScoreInputs) -> Scores:
    return {n: inp.weights[n].detach().abs() for n in inp.masks}


@_entry("random")
def random(inp: ScoreInputs) -> Scores:
    return {n: random_scores(inp.seed, n, m.shape).to(m.device) for n, m in inp.masks.items()}


@_entry("snip", needs_data=True)
def snip(inp: ScoreInputs) -> Scores:
    with torch.enable_grad():
        params, leaves = _masked_leaves(inp)
        g = _grad(inp.loss(params), leaves)
    return {n: (g[n] * w).detach().abs() for n, w in leaves.items()}


@_entry("grasp", needs_data=True, temperature=200.0)
def grasp(inp: ScoreInputs) -> Scores:
    with torch.enable_grad():
        params, leaves = _masked_leaves(inp)
        g = _grad(inp.loss(params), leaves, create_graph=True)
        z = sum((gi.detach() * gi).sum() for gi in g.values())  # g^T g with the first g held fixed
        hg = _grad(z, leaves)
    return {n: (w * hg[n]).detach() for n, w in leaves.items()}


@_entry("synflow", iterative=True, rounds=100)
def synflow(inp: ScoreInputs) -> Scores:
    if inp.model is None or inp.input_shape is None:
        raise ConfigError("score 'synflow' needs ScoreInputs.model and ScoreInputs.input_shape")

    def absolute(t: torch.Tensor) -> torch.Tensor:
        return t.abs().double() if t.is_floating_point() else t

    with torch.enable_grad(), _eval_mode(inp.model):
        params, leaves = _masked_leaves(inp, absolute)
        buffers = {n: absolute(b.detach()) for n, b in inp.model.named_buffers()}
        device = next(iter(leaves.values())).device
        x = torch.ones((1, *inp.input_shape), dtype=torch.float64, device=device)
        out = torch.func.functional_call(inp.model, {**buffers, **params}, (x,))
        g = _grad(out.sum(), leaves)
    return {n: (g[n] * w).detach().abs() for n, w in leaves.items()}
