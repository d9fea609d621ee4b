"""Layer 3 of the ticket file: a :class:`Ticket` back into the network it names.

:func:`build_model` does, in this order:

1. builds the architecture on the "meta" device (shapes only, nothing allocated) and checks that every
   mask names a parameter, with its shape: a ticket that does not fit its architecture, or an absurdly
   large one, is refused before a single weight is allocated;
2. ``lth.models.build`` from ``arch``, then ``lth.init.init_from_seed(model, seed, init)``: every weight,
   bit-exact from the seed; with ``weights="source"``, every weight from the checkpoint
   ``meta["weights_source"]`` names, verified by its SHA-256 (:func:`lth.sources.load_checkpoint`),
   except the model's ``seeded_parameters()`` the file lacks (a BERT task head), which keep the seed's;
3. with ``weights="stored"``, scatters the float entries named like parameters into place (only the
   surviving entries of a masked parameter, in row-major mask order);
4. copies every ``param.<name>`` entry over its unmasked parameter, in either kind of ticket;
5. multiplies every masked parameter that has a ``scale.<name>`` entry by its scales, group by output
   group, in either kind of ticket;
6. zeroes the pruned entries: exactly +0.0, even over NaN, and after the scales so they stay +0.0.

Every other float entry is left to the caller; every problem is a one-line :class:`TicketError`. The
meaning of the entries is specified in :mod:`lth.ticket`.

:func:`weights_sha256` is the digest of the rebuilt network, one value that pins what a ticket means
however its masks happen to be coded; :func:`inspect` reports a file's sizes, codings, gap to the
entropy bound and that digest (it lives here because it rebuilds). :func:`surviving_floats` goes the
other way: a model's float entries for a ``weights="stored"`` ticket.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import LthError
from .coding import TicketError, _h2, entropy_bound_bits
from .container import _DIGEST_BYTES, _PREAMBLE, Ticket, _check_survivors, _decode, _get, _wrap

def _build_arch(arch: dict, device: str = "cpu") -> torch.nn.Module:
    """``models.build`` from the arch dict; on the "meta" device it allocates nothing (shapes only)."""
    from .. import models

    model = _get(arch, "model", str, "arch")
    shape = _get(arch, "input_shape", list, "arch")
    num_classes = _get(arch, "num_classes", int, "arch")
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise TicketError("arch field 'kwargs' has the wrong type")
    try:
        with torch.device(device), warnings.catch_warnings():
            if device == "meta":  # e.g. "Initializing zero-element tensors is a no-op": not the caller's concern
                warnings.simplefilter("ignore")
            return models.build(model, shape, num_classes, **kwargs)
    except Exception as e:
        raise TicketError(f"cannot build architecture {model!r}: {e}") from None


def _check_fit(masks: dict, params: dict) -> None:
    from ..masks import check_compatible

    try:
        check_compatible(masks, params)
    except LthError as e:
        raise TicketError(str(e)) from None


@torch.no_grad()
def _load_stored(params: dict, masks: dict, floats: dict) -> None:
    """Scatter stored floats named like parameters into place (surviving entries only where masked)."""
    for name, values in floats.items():
        if name not in params:
            continue  # scales and other caller data
        p = params[name]
        if name in masks:
            _check_survivors(name, values, masks[name])
            p.view(-1)[masks[name].reshape(-1)] = values.reshape(-1).to(p.dtype)
        else:
            if values.numel() != p.numel():
                raise TicketError(f"stored float {name!r} has {values.numel()} values, the parameter {p.numel()}")
            p.copy_(values.reshape(p.shape).to(p.dtype))


def _build_model(t: Ticket) -> torch.nn.Module:
    from ..init import init_from_seed

    if not isinstance(t.arch, dict):
        raise TicketError("ticket arch must be a dict")
    # Shapes first, on the meta device: an architecture that does not fit the masks (or is absurdly
    # large) is refused before a single weight is allocated.
    _check_fit(t.masks, dict(_build_arch(t.arch, "meta").named_parameters()))
    model = _build_arch(t.arch)
    try:
        init_from_seed(model, t.seed, t.init)
    except LthError as e:
        raise TicketError(f"cannot initialise: {e}") from None
    params = dict(model.named_parameters())
    with torch.no_grad():
        if t.weights == "source":
            _load_source(model, params, t.meta.get("weights_source"))
        if t.weights in ("stored", "constant"):
            _load_stored(params, t.masks, t.floats)
        if t.weights == "constant":
            _apply_signs(params, t.masks, t.signs)
        _apply_params(params, t.masks, t.floats)
        _apply_buffers(dict(model.named_buffers()), t.floats)
        _apply_scales(params, t.masks, t.floats)  # before masking, so that pruned entries stay +0.0
        for name, m in t.masks.items():
            params[name].masked_fill_(~m.to(params[name].device), 0.0)  # +0.0 exactly, even over NaN
    return model


def _apply_signs(params: dict, masks: dict, signs: dict) -> None:
    """``weights="constant"`` (Brix et al.'s constant tickets): each survivor of a masked matrix is
    ``±α_l``, ``α_l = sqrt(6 / (fan_in + fan_out))`` of its layer, the sign from its bit (True = +)."""
    import math

    from ..init import fans

    for name, bits in signs.items():
        p = params[name]
        fan_in, fan_out = fans(p.shape)
        alpha = math.sqrt(6.0 / (fan_in + fan_out))
        values = torch.where(bits.to(p.device), alpha, -alpha).to(p.dtype)
        p.view(-1)[masks[name].reshape(-1).to(p.device)] = values


def _load_source(model, params: dict, src) -> None:
    """θ0 of a ``weights="source"`` ticket: the checkpoint its meta names, verified by SHA-256."""
    from ..sources import load_checkpoint

    if not isinstance(src, dict) or src.get("kind") != "checkpoint" or not src.get("path") or not src.get("sha256"):
        raise TicketError(f"a weights='source' ticket needs meta weights_source {{kind: checkpoint, path, sha256}}, "
                          f"got {src!r}")
    try:  # the model's seeded parameters the file lacks (a task head) keep their seed-derived values
        seeded = {n: p.detach().clone() for n, p in params.items()}
        state = load_checkpoint(model, src["path"], src["sha256"], seeded)
    except (LthError, OSError) as e:
        raise TicketError(f"weights source: {e}") from None
    for n, v in state.items():
        params[n].copy_(v)


def _apply_params(params: dict, masks: dict, floats: dict) -> None:
    """``param.<name>`` entries replace whole unmasked parameters (see :mod:`lth.ticket`)."""
    for key, v in floats.items():
        if not key.startswith("param."):
            continue
        name = key[len("param."):]
        if name not in params or name in masks:
            raise TicketError(f"float {key!r} names no unmasked parameter of the architecture")
        if tuple(v.shape) != tuple(params[name].shape):
            raise TicketError(f"float {key!r} has shape {list(v.shape)}, the parameter {list(params[name].shape)}")
        params[name].copy_(v.to(params[name].dtype))


def _apply_buffers(buffers: dict, floats: dict) -> None:
    """``buffer.<name>`` entries replace floating-point buffers (BatchNorm running statistics)."""
    for key, v in floats.items():
        if not key.startswith("buffer."):
            continue
        name = key[len("buffer."):]
        if name not in buffers or not buffers[name].is_floating_point():
            raise TicketError(f"float {key!r} names no floating-point buffer of the architecture")
        if tuple(v.shape) != tuple(buffers[name].shape):
            raise TicketError(f"float {key!r} has shape {list(v.shape)}, the buffer {list(buffers[name].shape)}")
        buffers[name].copy_(v.to(buffers[name].dtype))


def _apply_scales(params: dict, masks: dict, floats: dict) -> None:
    """``scale.<name>`` entries of masked parameters multiply their output groups (see :mod:`lth.ticket`).
    Kept entries come out as ``W * scale``, the very float32 products Supermask.effective computes
    (``W * 1.0`` is exact), so a packed supermask matches the trained one bit for bit."""
    for name in masks:
        scale = floats.get(f"scale.{name}")
        if scale is None:
            continue
        p = params[name]
        if scale.dim() != 1 or scale.numel() == 0 or p.shape[0] % scale.numel():
            raise TicketError(f"float 'scale.{name}' must be 1-D with a length that divides {name}'s "
                              f"{p.shape[0]} outputs, got shape {list(scale.shape)}")
        groups = p.view(scale.numel(), -1)
        groups.mul_(scale.to(device=p.device, dtype=p.dtype)[:, None])


def build_model(t: Ticket) -> torch.nn.Module:
    """``models.build`` + ``init_from_seed`` + stored floats (``weights="stored"``) + masks applied, so
    pruned weights are exactly +0.0, and learned scales (``scale.<name>`` entries) multiplied in. Masks
    must name parameters of the architecture, with their shapes."""
    return _wrap("ticket", _build_model, t)


def weights_sha256(t: Ticket) -> str:
    """:func:`lth.init.weights_sha256` of the rebuilt, masked network: one digest that pins what a ticket
    means, independent of how its masks happen to be coded."""
    from ..init import weights_sha256 as digest

    return digest(build_model(t))


def surviving_floats(model: torch.nn.Module, masks: dict, dtype: torch.dtype = torch.float16) -> dict:
    """Float entries for a ``weights="stored"`` ticket: each masked parameter's surviving values (mask
    order) and every other parameter whole, in ``dtype``."""
    out = {}
    for name, p in model.named_parameters():
        values = p.detach().cpu()
        out[name] = (values[masks[name].cpu()] if name in masks else values).to(dtype).contiguous()
    return out


# ---------------------------------------------------------------------------------------------------
# Reports.
def inspect(data: bytes, *, source: str = "ticket", strict: bool = True, max_params: int | None = None) -> dict:
    """Sizes, codings and the gap to the entropy bound of a ticket file (verified as by
    :func:`lth.ticket.decode`, with the same ``strict`` and ``max_params``)."""
    ticket, header = _wrap(source, _decode, data, strict, max_params)
    hlen = _PREAMBLE.unpack_from(data, 0)[2]
    tensors = []
    for e in header["masks"]:
        m = ticket.masks[e["name"]]
        n = m.numel()
        tensors.append({
            "name": e["name"], "shape": e["shape"], "density": e["count"] / n if n else 0.0, "coding": e["coding"],
            "bytes": e["nbytes"], "bound_bytes": n * _h2(e["count"], n) / 8,
        })
    mask_bytes = sum(e["nbytes"] for e in header["masks"])
    bound = entropy_bound_bits(ticket.masks) / 8
    prunable = sum(m.numel() for m in ticket.masks.values())
    try:
        digest, build_error = weights_sha256(ticket), None
    except TicketError as e:
        digest, build_error = None, str(e)
    return {
        "total_bytes": len(data),
        "header_bytes": _PREAMBLE.size + hlen,
        "mask_bytes": mask_bytes,
        "sign_bytes": sum(e["nbytes"] for e in header.get("signs", [])),  # weights="constant": a bit per survivor
        "float_bytes": sum(e["nbytes"] for e in header["floats"]),
        "checksum_bytes": _DIGEST_BYTES,
        "entropy_bound_bytes": bound,
        "gap_to_bound": (mask_bytes - bound) / bound if bound else 0.0,
        "prunable_weights": prunable,
        "bits_per_prunable_weight": 8 * len(data) / prunable if prunable else 0.0,
        "mask_bits_per_prunable_weight": 8 * mask_bytes / prunable if prunable else 0.0,
        "masks": tensors,
        "floats": [{"name": e["name"], "shape": e["shape"], "dtype": e["dtype"], "bytes": e["nbytes"]}
                   for e in header["floats"]],
        "weights": ticket.weights,
        "weights_sha256": digest,
        "build_error": build_error,
    }
