"""Seeded, bit-exact weight initialisation: every initial weight in lth comes from :func:`generate`.

Tickets are shipped as ``(seed, mask)`` and the weights are regenerated from the seed, so the bits this
module produces are part of the ticket file format (``FORMAT_VERSION``). For a given ``(seed, name,
shape, Dist)`` :func:`generate` returns the same float32 bits on every machine, process, thread count,
torch/numpy version and device. That is why it does not use torch's (or numpy's) RNG, nor any libm
function (``log``/``cos`` differ between libms and SIMD paths by an ulp):

* Random bits: a counter-based splitmix64. The key of a tensor absorbs, in order, the seed (uint64), the
  first 8 bytes (little-endian) of ``sha256(name.encode())`` and a stream id for the distribution
  (normal 1, uniform 2, signed_constant 3); ``absorb(state, word) = mix64((state ^ word) + GAMMA)``
  starting from state 0. Element ``i`` (row-major / C order over ``shape``) gets
  ``h_i = mix64(key + (i + 1) * GAMMA)`` (mod 2**64), i.e. the i-th output of splitmix64 seeded with the
  key. Each element depends only on its index, so chunking and threading cannot change the result.
* All float work is float64 using only IEEE-754 exactly rounded operations (``+ - * /``, ``sqrt``) and
  exact ones (integer/bit operations on the float64 representation, small int -> float conversions,
  multiplying by powers of two), one numpy array operation at a time in a fixed order (no reductions,
  so no pairwise/SIMD summation orders, and no fused multiply-adds since every op is a separate numpy
  call); the result is cast to float32 once (round to nearest even). Nonzero scales must lie in
  [2**-64, 2**64], so no value is ever subnormal or infinite and flush-to-zero modes
  (``torch.set_flush_denormal``) cannot change a bit. Python-side constants and scales are built from
  exact hex literals, ``+ - * /`` and ``math.sqrt`` only.
* uniform(-a, a): ``u = (h >> 40) * 2**-24`` (exact), value ``(2u - 1) * a`` in float64, then float32.
  Values lie in ``[-a, a]`` (after float32 rounding).
* normal(0, std): Box-Muller, ``u1 = ((h >> 32) + 1) * 2**-32`` in (0, 1],
  ``u2 = (h & 0xFFFFFFFF) * 2**-32`` in [0, 1), ``z = sqrt(-2 ln u1) * cos(2 pi u2)``, value ``z * std``.
  ``ln`` splits off the binary exponent with integer ops (``u1 = 2**k m``, m in [sqrt(.5), sqrt(2)))
  and sums the atanh series ``ln m = 2 atanh((m-1)/(m+1))``; ``cos(2 pi u2)`` is reduced exactly in turns
  (``cos(2 pi t) = -sin(2 pi w)``, ``w = 1/4 - |t - 1/2|`` in [-1/4, 1/4], exact for dyadic ``t``)
  and evaluated with a Taylor polynomial by Horner's rule. Both agree with ``math`` to ~2e-15.
  Tails are truncated at |z| <= sqrt(64 ln 2) ~ 6.66 (u1 >= 2**-32).
* signed_constant(c): ``+c`` if the top bit of ``h`` is set (i.e. ``u >= 0.5``), else ``-c``.
* zeros / ones / constant(c): no randomness; ``scale == 0`` for normal/uniform gives exact ``+0.0``.

Schemes are data: a scheme maps ``(parameter name, parameter) -> Dist`` and
:func:`init_from_seed` fills every parameter of a model (``named_parameters()``, so a tied parameter is
filled once, under its first name; buffers are left alone). Built-in schemes live in ``SCHEMES``.
Parameters with fewer than 2 dimensions follow one rule in every scheme: a name ending in ``bias`` gets
zeros, anything else (norm gains, scales) gets ones. Scales use only ``/`` and ``math.sqrt``, which are
exactly rounded, so they are deterministic too.
"""

from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from .errors import ConfigError

FORMAT_VERSION = 1  # bump (and keep the old path) if anything below changes the bits

from .counter_rng import _MASK, _MAX_SCALE, _MIN_SCALE, _STREAMS, KINDS, _fill, _key  # noqa: F401

# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """What one tensor is filled with.

    ``kind`` is one of ``KINDS``; ``scale`` is the std for "normal", the bound ``a`` of U(-a, a) for
    "uniform", the magnitude for "signed_constant" and the value for "constant" (ignored by "zeros" and
    "ones").
    """

    kind: str
    scale: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown init distribution {self.kind!r}; choose from {list(KINDS)}")
        try:
            scale = float(self.scale)
        except (TypeError, ValueError):
            raise ConfigError(f"init scale must be a number, got {self.scale!r}") from None
        if not math.isfinite(scale):
            raise ConfigError(f"init scale must be finite, got {scale}")
        if self.kind in ("normal", "uniform") and scale < 0:
            raise ConfigError(f"{self.kind} init scale must be >= 0, got {scale}")
        if scale != 0.0 and not _MIN_SCALE <= abs(scale) <= _MAX_SCALE:
            raise ConfigError(f"init scale must be 0 or have magnitude in [2**-64, 2**64], got {scale}")
        object.__setattr__(self, "scale", scale)


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ConfigError(f"shape must be a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ConfigError(f"shape must not have negative sizes, got {dims}")
    return dims


def _check_seed(seed) -> int:
    if isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}") from None
    if not 0 <= seed <= _MASK:
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed}")
    return seed


def generate(seed: int, name: str, shape, dist: Dist) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` filled from ``dist``, bit-exact for ``(seed, name, shape, dist)``.

    Element ``i`` in row-major order depends only on ``(seed, name, dist.kind, i)`` and ``dist.scale``,
    so a tensor's leading elements do not depend on its shape.
    """
    seed = _check_seed(seed)
    if not isinstance(name, str):
        raise ConfigError(f"parameter name must be a str, got {name!r}")
    if not isinstance(dist, Dist):
        raise ConfigError(f"dist must be an lth.init.Dist, got {dist!r}")
    dims = _check_shape(shape)
    numel = math.prod(dims)
    kind, scale = dist.kind, dist.scale
    if kind == "zeros" or (kind in ("normal", "uniform") and scale == 0.0):
        out = np.zeros(numel, np.float32)
    elif kind == "ones":
        out = np.ones(numel, np.float32)
    elif kind == "constant":
        out = np.full(numel, np.float32(scale), np.float32)
    else:
        out = np.empty(numel, np.float32)
        if numel:
            _fill(kind, _key(seed, name, _STREAMS[kind]), scale, out)
    return torch.from_numpy(out).reshape(dims)


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as torch.nn.init computes them: ``shape[1] * r`` and ``shape[0] * r`` with
    receptive field ``r = prod(shape[2:])``; needs at least 2 dimensions."""
    dims = _check_shape(shape)
    if len(dims) < 2:
        raise ValueError(f"fans need a tensor with at least 2 dimensions, got shape {dims}")
    r = math.prod(dims[2:])
    return dims[1] * r, dims[0] * r


# ---------------------------------------------------------------------------------------------------
# Schemes: (name, param) -> Dist. Pure functions of the name and shape.
def _low_dim(name: str) -> Dist:
    """The rule for parameters with < 2 dims, in every scheme: '...bias' -> zeros, else ones."""
    return Dist("zeros") if name.endswith("bias") else Dist("ones")


def _fan_scheme(make: Callable[[int, int], Dist]) -> Callable[[str, torch.Tensor], Dist]:
    def scheme(name: str, p: torch.Tensor) -> Dist:
        if p.dim() < 2:
            return _low_dim(name)
        if p.numel() == 0:
            return Dist("zeros")
        return make(*fans(p.shape))

    return scheme


def glorot_normal(name: str, p: torch.Tensor) -> Dist:
    """N(0, sqrt(2 / (fan_in + fan_out))): Glorot & Bengio; Frankle & Carbin's LeNet init."""
    return _fan_scheme(lambda fi, fo: Dist("normal", math.sqrt(2.0 / (fi + fo))))(name, p)


def kaiming_normal(name: str, p: torch.Tensor) -> Dist:
    """N(0, sqrt(2 / fan_in)): He et al., for ReLU."""
    return _fan_scheme(lambda fi, fo: Dist("normal", math.sqrt(2.0 / fi)))(name, p)


def kaiming_uniform(name: str, p: torch.Tensor) -> Dist:
    """U(-a, a) with a = sqrt(6 / fan_in) (He uniform, same variance as kaiming_normal)."""
    return _fan_scheme(lambda fi, fo: Dist("uniform", math.sqrt(6.0 / fi)))(name, p)


def xavier_uniform(name: str, p: torch.Tensor) -> Dist:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    return _fan_scheme(lambda fi, fo: Dist("uniform", math.sqrt(6.0 / (fi + fo))))(name, p)


def signed_constant(name: str, p: torch.Tensor) -> Dist:
    """+-sqrt(2 / fan_in) with a random sign per weight (edge-popup's signed Kaiming constant)."""
    return _fan_scheme(lambda fi, fo: Dist("signed_constant", math.sqrt(2.0 / fi)))(name, p)


_RELU_INPUT_MODULES = frozenset({"fc1", "c_fc", "up", "up_proj"})


def _feeds_relu(name: str) -> bool:
    parts = name.split(".")
    owner = parts[-2] if len(parts) >= 2 else ""
    before = parts[-3] if len(parts) >= 3 else ""
    return owner in _RELU_INPUT_MODULES or (owner == "fc" and before == "mlp")


def golf(name: str, p: torch.Tensor) -> Dist:
    """The parameter-golf supermask scheme: He uniform into ReLUs, Xavier uniform elsewhere.

    A >= 2-D parameter whose owning module (the dotted component before the parameter's own name) is
    ``fc1``, ``c_fc``, ``up`` or ``up_proj``, or is ``fc`` directly under ``mlp`` (``...mlp.fc.weight``),
    is the expansion layer of an MLP block and feeds a ReLU: He (kaiming) uniform. Every other >= 2-D
    parameter (embeddings, attention, projections, ``mlp.proj``/``c_proj``/``fc2``/``down``, heads):
    Xavier uniform. Whole components are matched, not substrings, so ``mlp.fc2`` or ``group`` do not
    count. Parameters with < 2 dims: '...bias' -> zeros, else ones (as in every scheme).
    """
    if p.dim() >= 2 and _feeds_relu(name):
        return kaiming_uniform(name, p)
    return xavier_uniform(name, p)


def bert(name: str, p: torch.Tensor) -> Dist:
    """N(0, 0.02) for every matrix and embedding (BERT's ``initializer_range``); biases 0, LayerNorm gains 1.
    Hugging Face's ``_init_weights`` also zeroes the padding token's embedding row; this does not."""
    return _low_dim(name) if p.dim() < 2 else Dist("normal", 0.02)


SCHEMES: dict[str, Callable[[str, torch.Tensor], Dist]] = {
    "bert": bert,
    "glorot_normal": glorot_normal,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "xavier_uniform": xavier_uniform,
    "signed_constant": signed_constant,
    "golf": golf,
}


def resolve_scheme(scheme: str | Callable[[str, torch.Tensor], Dist]) -> Callable[[str, torch.Tensor], Dist]:
    """A scheme name from ``SCHEMES`` or a callable ``(name, param) -> Dist``."""
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown init scheme {scheme!r}; choose from {sorted(SCHEMES)}")
        return SCHEMES[scheme]
    if callable(scheme):
        return scheme
    raise ConfigError(f"init scheme must be a name or a callable, got {scheme!r}; choose from {sorted(SCHEMES)}")


def init_from_seed(
    model: torch.nn.Module, seed: int, scheme: str | Callable[[str, torch.Tensor], Dist] = "glorot_normal"
) -> torch.nn.Module:
    """Fill every parameter of ``model`` in place from ``seed`` and return ``model``.

    Each parameter ``name, p`` in ``model.named_parameters()`` gets ``generate(seed, name, p.shape,
    scheme(name, p))``, made on the CPU in float32 and then moved to ``p``'s device and dtype (a
    narrower dtype gets the float32 value rounded to nearest even). Buffers are not touched.
    """
    fn = resolve_scheme(scheme)
    seed = _check_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            dist = fn(name, p)
            if not isinstance(dist, Dist):
                raise ConfigError(f"init scheme returned {dist!r} for {name!r}, not an lth.init.Dist")
            p.copy_(generate(seed, name, p.shape, dist).to(device=p.device, dtype=p.dtype))
    return model


def weights_sha256(tensors: Mapping[str, torch.Tensor] | torch.nn.Module) -> str:
    """Hex SHA-256 of named tensors (a module means its ``named_parameters()``).

    For each name in sorted order: the UTF-8 name, a NUL byte, the number of dims and each dim as
    little-endian uint64, then the values as little-endian float32 in row-major order.
    """
    if isinstance(tensors, torch.nn.Module):
        tensors = dict(tensors.named_parameters())
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to(device="cpu", dtype=torch.float32).contiguous()
        h.update(name.encode("utf-8") + b"\0")
        h.update(np.asarray([t.dim(), *t.shape], dtype="<u8").tobytes())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()
