"""Ensemble: M copies of one architecture trained together as one batched model.

Trials (seeds) and control branches of a lottery level differ only in their weights, masks and data
order, so we stack their parameters along a new leading dimension and run one forward/backward for all
of them. Adam and SGD are elementwise, so one optimizer over the stacked tensors is exactly M
independent optimizers; the loss is the sum of the members' mean losses, so each member gets exactly
its own gradient.

Models that declare ``stackable = True`` (their forward accepts stacked parameters, see
``lth.models.layers``) are called directly; any other ``nn.Module`` goes through ``torch.func.vmap``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap


class Ensemble(nn.Module):
    def __init__(self, model: nn.Module, states: list[dict[str, torch.Tensor]]):
        """``model`` gives the architecture; ``states[m]`` the parameters of member m (name -> tensor)."""
        super().__init__()
        self.base = copy.deepcopy(model)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in model.named_parameters()]
        self.members = len(states)
        # ParameterDict keys cannot contain '.', so parameters live in a list aligned with self.names.
        # Matrices are stored transposed ([M, in, out]) and handed to the model as a transposed view:
        # the bmm in the backward pass then produces gradients already in storage layout, which
        # saves autograd a copy of every weight gradient on every step.
        self.transposed = [states[0][n].dim() == 2 for n in self.names]
        self.stacked = nn.ParameterList(
            [
                nn.Parameter(self._store(torch.stack([s[n].detach() for s in states]), t))
                for n, t in zip(self.names, self.transposed)
            ]
        )
        self.buffers_ = {n: b for n, b in self.base.named_buffers()}
        self.stackable = getattr(model, "stackable", False) and not self.buffers_

    @staticmethod
    def _store(x: torch.Tensor, transposed: bool) -> torch.Tensor:
        return x.mT.contiguous() if transposed else x.clone()

    def params(self) -> dict[str, torch.Tensor]:
        """name -> stacked parameter [M, ...] in the model's layout (a view of the storage)."""
        return {n: p.mT if t else p for n, p, t in zip(self.names, self.stacked, self.transposed)}

    def grads(self) -> dict[str, torch.Tensor | None]:
        """name -> gradient of the stacked parameter, in the model's layout."""
        return {
            n: (None if p.grad is None else p.grad.mT if t else p.grad)
            for n, p, t in zip(self.names, self.stacked, self.transposed)
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [M, B, ...] -> [M, B, ...]
        params = self.params()
        if self.stackable:
            return functional_call(self.base, params, (x,))

        def one(p, xi):
            return functional_call(self.base, (p, self.buffers_), (xi,))

        return vmap(one)(params, x)

    def eval_state(self) -> dict[str, torch.Tensor]:
        """name -> stacked tensor [M, ...] that the model is called with: parameters and buffers."""
        return {**self.params(), **{n: b.unsqueeze(0).expand(self.members, *b.shape) for n, b in self.buffers_.items()}}

    def call(self, state: dict[str, torch.Tensor], *x: torch.Tensor) -> torch.Tensor:
        """The model on stacked ``state`` (as :meth:`eval_state`) and stacked inputs ``[m, B, ...]``."""
        if self.stackable:
            return functional_call(self.base, state, x)
        return vmap(lambda s, *xi: functional_call(self.base, s, xi))(state, *x)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """A detached copy of member m's parameters."""
        return {n: p[m].detach().contiguous().clone() for n, p in self.params().items()}

    @torch.no_grad()
    def load_member(self, m: int, state: dict[str, torch.Tensor]) -> None:
        for n, p in self.params().items():
            if n in state:
                p[m].copy_(state[n])
