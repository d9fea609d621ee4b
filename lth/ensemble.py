"""Ensemble: M copies of one architecture trained together as one batched model.

Trials (seeds) and control branches of a lottery level differ only in their weights, masks and data
order, so we stack their parameters along a new leading dimension and run one forward/backward for all
of them. Adam and SGD are elementwise, so one optimizer over the stacked tensors is exactly M
independent optimizers; the loss is the sum of the members' mean losses, so each member gets exactly
its own gradient.

State. Parameters are stacked ``[M, ...]`` in ``stacked`` (an ``nn.ParameterList`` aligned with
``names``; matrices stored transposed, see ``transposed``), buffers (BatchNorm's ``running_mean``,
``running_var``, ``num_batches_tracked``, any other) ``[M, ...]`` in ``stacked_buffers`` (registered
buffers aligned with ``buffer_names``), so ``.to(device)`` moves both and the state dict holds both.
In training mode a BatchNorm updates member m's running statistics from member m's batch only; in
evaluation mode member m normalises with its own.

Calls. ``forward(*args, **kwargs)``: every tensor in ``args`` and ``kwargs`` (at any depth of tuples,
lists and dicts) has a leading member dimension ``[M, ...]``; anything else (flags, ``None``) reaches
every member unchanged. The output is whatever the model returns (a tensor, tuple, dict, or any other
``torch.utils._pytree`` node such as a Hugging Face ``ModelOutput``) with every tensor ``[M, ...]``.

Paths (``mode``, see :mod:`lth.ensemble_modes` for ``"auto"``'s measured rules):

* ``"direct"``: models that declare ``stackable = True`` (their forward accepts stacked parameters, see
  ``lth.models.layers``; they must have no buffers) are called once with the stacked parameters.
* ``"vmap"``: any other model goes through ``torch.func.vmap`` over parameters, buffers and inputs,
  with ``randomness="different"``: each member draws its own dropout masks.
* ``"loop"``: one ``torch.func.functional_call`` per member on its slices of the stacked parameters
  (one ``unbind``, so the backward pass writes the gradients back in one stack) and buffers (views, so
  BatchNorm's in-place updates land in the stack); outputs stacked. Optimizers and the rest of this API
  see no difference. A stackable model is called per member with its ``[1, ...]`` slices.

All paths compute the same function up to float rounding; with dropout in training mode they draw
different masks (vmap draws all members' at once, the loop one member after another).

One member. ``member_forward(m, *args, **kwargs)`` runs member m exactly as an ``Ensemble`` holding only
that member (same mode) would: parameters and buffers ``[m:m+1]``, inputs and outputs ``[1, ...]``, so
the same kernels on the same shapes whatever M is. Evaluating member by member therefore gives numbers
independent of how many members are stacked.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from . import ensemble_modes as modes


class BufferList(nn.Module):
    """Registered buffers named ``'0'``, ``'1'``, ... (a buffer's name cannot contain ``'.'``)."""

    def __init__(self, tensors: list[torch.Tensor], persistent: list[bool]):
        super().__init__()
        for i, (t, keep) in enumerate(zip(tensors, persistent)):
            self.register_buffer(str(i), t, persistent=keep)

    def __len__(self) -> int:
        return len(self._buffers)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._buffers[str(i)]

    def __iter__(self):
        return iter(self._buffers.values())


class Ensemble(nn.Module):
    def __init__(self, model: nn.Module, states: list[dict[str, torch.Tensor]], mode: str = "auto"):
        """``model`` gives the architecture; ``states[m]`` member m's tensors (name -> tensor): every
        parameter, and any buffers (a buffer a state leaves out is a copy of ``model``'s). ``mode``:
        ``"auto"``, ``"stacked"`` or ``"loop"`` (module docstring)."""
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
        own = dict(self.base.named_buffers())
        self.buffer_names = list(own)
        persistent = set(self.base.state_dict())
        self.stacked_buffers = BufferList(
            [torch.stack([s.get(n, own[n]).detach() for s in states]) for n in own],
            [n in persistent for n in own],
        )
        self.stackable = bool(getattr(model, "stackable", False)) and not own
        self.mode = modes.check_mode(mode)
        self.rule = {} if self.stackable else modes.rule_for(model)

    @staticmethod
    def _store(x: torch.Tensor, transposed: bool) -> torch.Tensor:
        return x.mT.contiguous() if transposed else x.clone()

    # --- tensors ---------------------------------------------------------------------------------

    def params(self) -> dict[str, torch.Tensor]:
        """name -> stacked parameter [M, ...] in the model's layout (a view of the storage)."""
        return {n: p.mT if t else p for n, p, t in zip(self.names, self.stacked, self.transposed)}

    def grads(self) -> dict[str, torch.Tensor | None]:
        """name -> gradient of the stacked parameter, in the model's layout."""
        return {
            n: (None if p.grad is None else p.grad.mT if t else p.grad)
            for n, p, t in zip(self.names, self.stacked, self.transposed)
        }

    def buffer_dict(self) -> dict[str, torch.Tensor]:
        """name -> stacked buffer [M, ...] (the registered tensor itself, wherever ``.to`` moved it).

        Not called ``buffers()``: ``nn.Module.buffers()`` must keep yielding tensors for DDP, FSDP,
        ``swa_utils.AveragedModel`` and CUDA graphs."""
        return dict(zip(self.buffer_names, self.stacked_buffers))

    def eval_state(self) -> dict[str, torch.Tensor]:
        """name -> stacked tensor [M, ...] that the model is called with: parameters and buffers."""
        return {**self.params(), **self.buffer_dict()}

    def call(self, state: dict[str, torch.Tensor], *args, **kwargs):
        """The model on stacked ``state`` (as :meth:`eval_state`, any leading size) and stacked inputs."""
        params = {n: state[n] for n in self.names}
        return self._call(params, {n: state[n] for n in self.buffer_names}, args, kwargs)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """A detached copy of member m's parameters and buffers."""
        both = {**self.params(), **self.buffer_dict()}
        return {n: t[m].detach().contiguous().clone() for n, t in both.items()}

    @torch.no_grad()
    def load_member(self, m: int, state: dict[str, torch.Tensor]) -> None:
        """Copy the parameters and buffers ``state`` names into member m (others are left as they are)."""
        for n, t in {**self.params(), **self.buffer_dict()}.items():
            if n in state:
                t[m].copy_(state[n])

    # --- calls -----------------------------------------------------------------------------------

    def path(self, device: torch.device | str | None = None) -> str:
        """``"direct"``, ``"vmap"`` or ``"loop"``: how a call on ``device`` (default: the parameters')
        runs the members."""
        mode = self.mode
        if mode == "auto":
            dev = torch.device(device) if device is not None else self._device()
            mode = "stacked" if self.stackable else self.rule.get(dev.type, "stacked")
        if mode == "stacked":
            return "direct" if self.stackable else "vmap"
        return "loop"

    def _device(self) -> torch.device:
        for t in (*self.stacked, *self.stacked_buffers):
            return t.device
        return torch.device("cpu")

    def forward(self, *args, **kwargs):  # tensors [M, ...] -> outputs [M, ...]
        return self._call(self.params(), self.buffer_dict(), args, kwargs)

    def member_forward(self, m: int, *args, **kwargs):  # tensors [1, ...] -> outputs [1, ...]
        """Member m alone, as an Ensemble of that one member would run it (module docstring)."""
        one = slice(m, m + 1)
        params = {n: p[one] for n, p in self.params().items()}
        return self._call(params, {n: b[one] for n, b in self.buffer_dict().items()}, args, kwargs)

    def member_pass(self, m: int, *args, **kwargs):  # tensors [1, ...] -> (outputs [1, ...], leaves)
        """Member m alone through fresh leaf tensors that share its storage: a backward fills only their
        own [1, ...] gradients, not a zero-filled [M, ...] one per parameter (as slicing the stacked
        leaves would); :meth:`add_member_grads` adds them into the stacked gradients."""
        one = slice(m, m + 1)
        leaves = [s.detach()[one].requires_grad_(s.requires_grad) for s in self.stacked]
        params = {n: (x.mT if t else x) for n, x, t in zip(self.names, leaves, self.transposed)}
        return self._call(params, {n: b[one] for n, b in self.buffer_dict().items()}, args, kwargs), leaves

    def add_member_grads(self, m: int, leaves: list[torch.Tensor]) -> None:
        """Add the gradients of :meth:`member_pass`'s ``leaves`` into member m's slot of the stacked ones."""
        for s, x in zip(self.stacked, leaves):
            if x.grad is not None:
                if s.grad is None:
                    s.grad = torch.zeros_like(s)
                s.grad[m : m + 1] += x.grad

    def _call(self, params: dict, buffers: dict, args: tuple, kwargs: dict):
        path = self.path()
        if path == "direct":
            return functional_call(self.base, params, args, kwargs)
        if path == "vmap":

            def one(p, b, a, k):
                return functional_call(self.base, (p, b), a, k)

            dims = (0, 0, modes.in_dims(args), modes.in_dims(kwargs))
            return vmap(one, in_dims=dims, randomness="different")(params, buffers, args, kwargs)
        return self._loop(params, buffers, args, kwargs)

    def _loop(self, params: dict, buffers: dict, args: tuple, kwargs: dict):
        cols = {n: p.unbind(0) for n, p in params.items()}  # one UnbindBackward: gradients stacked once
        outs = []
        for m in range(len(next(iter(cols.values())))):
            p = {n: c[m] for n, c in cols.items()}
            b = {n: t[m] for n, t in buffers.items()}  # views: in-place running-stat updates reach the stack
            if self.stackable:  # the model's stacked forward, on [1, ...] slices
                p = {n: t.unsqueeze(0) for n, t in p.items()}
                a, k = modes.map_tensors(lambda t, m=m: t[m : m + 1], (args, kwargs))
                outs.append(functional_call(self.base, p, a, k))
            else:
                a, k = modes.map_tensors(lambda t, m=m: t[m], (args, kwargs))
                outs.append(functional_call(self.base, (p, b), a, k))
        return modes.join(outs, torch.cat if self.stackable else torch.stack)
