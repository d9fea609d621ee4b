"""Muon for the matrices, AdamW for the rest: the optimizer of modded-nanogpt and the parameter-golf baseline.

Muon (Jordan et al. 2024) is SGD with Nesterov momentum whose update for each weight matrix is replaced
by the nearest semi-orthogonal matrix (all singular values ~1), computed by 5 Newton-Schulz iterations:
every direction of the update moves at the same rate, however skewed the gradient's spectrum. The update
is then scaled by ``max(1, rows / cols) ** 0.5`` for the matrix's logical shape ``[out, in]``.

Embeddings (names containing ``"embed"``; here also the tied output head), vectors and scalars get AdamW:
:func:`make_muon_adamw` sorts a model's named parameters into the two kinds of group of one
:class:`Muon` optimizer, so one ``state_dict`` and one set of ``param_groups`` (each with ``"lr"``, for an
external schedule) cover both.

Stacked members (:class:`lth.ensemble.Ensemble`). A parameter ``[M, out, in]`` holds M members' matrices;
each member's update is orthogonalized separately (the iteration is batched over the leading dimensions).
The orthogonalization of a matrix's transpose is the transpose of its orthogonalization, so storage
layout does not change the direction; it changes only which dimension is "rows" for the scale factor.
Hence a group flag ``transposed``: its parameters are stored ``[..., in, out]`` (as Ensemble stores its
matrices), and the scale uses ``shape[-1] / shape[-2]``. With ``stacked=True`` in :func:`make_muon_adamw`
the leading dimension is the member, so a stacked 1-D scale ``[M, d]`` counts as a vector (AdamW).
Muon always takes the last two dimensions as the matrix and any before them as members: a convolution
filter ``[out, in, kh, kw]`` would need reshaping to ``[out, in * kh * kw]`` first (lth's models have none).

Masks. AdamW is elementwise: a masked (zero) gradient on a zero weight leaves it exactly zero. Muon is
not: the orthogonalized update of a masked gradient is dense. A caller that prunes must mask the
gradients before ``step`` (so the momentum stays zero there) AND re-apply the masks to the weights
after it.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz: maximal slope at 0 (Jordan et al.)


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalize the matrices ``G [..., rows, cols]`` (batched over leading dims).

    Returns ~ U V^T of G = U S V^T with singular values brought into roughly [0.7, 1.2] (the quintic
    trades exact convergence for speed). bfloat16 on CUDA (tensor cores), float32 elsewhere; the result
    has G's dtype.
    """
    if G.dim() < 2:
        raise ConfigError(f"newton_schulz needs matrices [..., rows, cols], got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm = 1
    wide = X.size(-2) <= X.size(-1)
    if not wide:  # iterate on the wide orientation: X @ X^T is then the smaller Gram matrix
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return (X if wide else X.mT).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon on groups with ``use_muon=True`` (matrices), AdamW on groups with ``use_muon=False``.

    Muon group keys: ``lr``, ``momentum``, ``nesterov``, ``ns_steps``, ``weight_decay`` (decoupled,
    ``p *= 1 - lr * wd``), ``transposed`` (parameters stored ``[..., in, out]``; see the module docstring).
    AdamW group keys: ``lr``, ``betas``, ``eps``, ``weight_decay`` (as torch.optim.AdamW).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 transposed: bool = False, use_muon: bool = True):
        if not lr >= 0:
            raise ConfigError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay,
                        betas=betas, eps=eps, transposed=transposed, use_muon=use_muon)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"]:
                for p in group["params"]:
                    if p.dim() < 2:
                        raise ConfigError(f"Muon needs matrices (dim >= 2), got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._muon if group["use_muon"] else self._adamw)(group)
        return loss

    def _muon(self, group: dict) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(g)
            g = g.add(buf, alpha=mu) if group["nesterov"] else buf
            update = newton_schulz(g, steps=group["ns_steps"])
            rows, cols = (p.size(-1), p.size(-2)) if group["transposed"] else (p.size(-2), p.size(-1))
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(update, alpha=-lr * max(1.0, rows / cols) ** 0.5)

    def _adamw(self, group: dict) -> None:
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0  # a Python int: no device sync for the bias corrections
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            if wd:
                p.mul_(1 - lr * wd)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / (1 - b2**t) ** 0.5).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


def make_muon_adamw(named_params, lr_matrix: float = 0.02, lr_other: float = 3e-4, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, momentum: float = 0.95,
                    nesterov: bool = True, ns_steps: int = 5, *, stacked: bool = False,
                    transposed=()) -> Muon:
    """One :class:`Muon` optimizer: Muon for matrices, AdamW for embeddings (``"embed"`` in the name),
    vectors and scalars.

    ``named_params``: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()`` or, for an Ensemble,
    ``zip(ens.names, ens.stacked)``. ``stacked``: every parameter has a leading member dimension (so a
    matrix has dim >= 3). ``transposed``: names of parameters stored ``[..., in, out]`` (for an Ensemble:
    ``{n for n, t in zip(ens.names, ens.transposed) if t}``). Groups without parameters are left out;
    group order is Muon (not transposed, transposed), then AdamW.
    """
    transposed = set(transposed)
    muon, muon_t, other = [], [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if p.dim() - int(stacked) >= 2 and "embed" not in name:
            (muon_t if name in transposed else muon).append(p)
        else:
            other.append(p)
    groups = [dict(params=muon, transposed=False), dict(params=muon_t, transposed=True)]
    groups = [g for g in groups if g["params"]]
    if other:
        groups.append(dict(params=other, use_muon=False, lr=lr_other))
    if not groups:
        raise ConfigError("make_muon_adamw: no trainable parameters")
    return Muon(groups, lr=lr_matrix, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                weight_decay=weight_decay, betas=betas, eps=eps)
