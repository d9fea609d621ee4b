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
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from .errors import ConfigError

FORMAT_VERSION = 1  # bump (and keep the old path) if anything below changes the bits

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_STREAMS = {"normal": 1, "uniform": 2, "signed_constant": 3}
KINDS = ("normal", "uniform", "zeros", "ones", "signed_constant", "constant")

_CHUNK = 1 << 16  # elements per chunk: speed only, never the values
_PARALLEL_MIN = 1 << 18  # below this, no thread pool
# Nonzero scales are limited to [2**-64, 2**64] so no value or intermediate is ever subnormal or
# infinite: flush-to-zero / denormals-are-zero CPU modes (torch.set_flush_denormal) cannot change a bit.
_MIN_SCALE, _MAX_SCALE = 2.0**-64, 2.0**64

# ---------------------------------------------------------------------------------------------------
# Constants. Built with + - * / only (exactly rounded in IEEE double), or given as exact hex literals.
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")  # 32 trailing zero bits: e * _LN2_HI is exact
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_LN_OFF = 0x3FE6A09E667F3BCD  # bits of sqrt(0.5) (rounded): where the reduced mantissa range starts
# atanh series: ln m = 2s + 2 s^3 (1/3 + s^2/5 + ... + s^14/17), highest first for Horner;
# the first omitted term is < 8e-16 relative for |s| <= 0.1716
_LN_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(8, 0, -1))
# sin(2 pi w) = w * sum_k (-1)^k (2 pi)^(2k+1) / (2k+1)! * w^(2k), k = 0..9, highest first;
# the first omitted term is < 3e-16 for |w| <= 1/4
_TWO_PI = 2.0 * math.pi


def _sin_coeffs(n: int) -> tuple[float, ...]:
    c, out, pp = _TWO_PI, [_TWO_PI], _TWO_PI * _TWO_PI
    for k in range(1, n):
        c = -c * pp / ((2 * k) * (2 * k + 1))
        out.append(c)
    return tuple(reversed(out))


_SIN_COEFFS = _sin_coeffs(10)


# ---------------------------------------------------------------------------------------------------
# Scalar (Python int) splitmix64 for keys.
def _mix64(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _absorb(state: int, word: int) -> int:
    return _mix64(((state ^ word) + _GAMMA) & _MASK)


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _key(seed: int, name: str, stream: int) -> int:
    return _absorb(_absorb(_absorb(0, seed), _name_hash(name)), stream)


_BASE = np.empty(0, np.uint64)
_BASE_LOCK = threading.Lock()


def _base(n: int) -> np.ndarray:
    """(i + 1) * GAMMA mod 2**64 for i < n (cached)."""
    global _BASE
    with _BASE_LOCK:
        if _BASE.shape[0] < n:
            b = np.arange(1, n + 1, dtype=np.uint64)
            np.multiply(b, np.uint64(_GAMMA), out=b)  # uint64 array arithmetic wraps, silently
            b.setflags(write=False)
            _BASE = b
        return _BASE[:n]


class _Buffers:
    """Scratch arrays for one chunk; one set per worker thread."""

    def __init__(self, n: int):
        self.h = np.empty(n, np.uint64)
        self.t = np.empty(n, np.uint64)
        self.a = np.empty(n, np.float64)
        self.b = np.empty(n, np.float64)
        self.c = np.empty(n, np.float64)
        self.d = np.empty(n, np.float64)


def _hash_chunk(key: int, start: int, n: int, buf: _Buffers) -> np.ndarray:
    """h_i = mix64(key + (i + 1) * GAMMA) for i in [start, start + n)."""
    h, t = buf.h[:n], buf.t[:n]
    offset = np.uint64((key + start * _GAMMA) & _MASK)
    np.add(_base(n), offset, out=h)  # wraps mod 2**64
    np.right_shift(h, np.uint64(30), out=t)
    np.bitwise_xor(h, t, out=h)
    np.multiply(h, np.uint64(_M1), out=h)
    np.right_shift(h, np.uint64(27), out=t)
    np.bitwise_xor(h, t, out=h)
    np.multiply(h, np.uint64(_M2), out=h)
    np.right_shift(h, np.uint64(31), out=t)
    np.bitwise_xor(h, t, out=h)
    return h


def _horner(x: np.ndarray, coeffs: tuple[float, ...], out: np.ndarray) -> np.ndarray:
    """out = polynomial(x), coefficients highest degree first; fixed order, no FMA."""
    np.multiply(x, coeffs[0], out=out)
    np.add(out, coeffs[1], out=out)
    for c in coeffs[2:]:
        np.multiply(out, x, out=out)
        np.add(out, c, out=out)
    return out


def _ln_into(x: np.ndarray, buf: _Buffers, out: np.ndarray) -> np.ndarray:
    """Natural log of positive, normal (not subnormal), finite float64 ``x`` into ``out``.

    Scratch: buf.t, buf.b, buf.c. ``x`` is read only by the first two operations, so ``out`` may
    alias it. Reduction with integer ops (as musl's log): ``x = 2**k * m``, m in [sqrt(.5), sqrt(2)).
    """
    n = x.shape[0]
    bits = x.view(np.uint64)
    tmp, m, s = buf.t[:n], buf.b[:n], buf.c[:n]
    mbits = m.view(np.uint64)
    np.subtract(bits, np.uint64(_LN_OFF), out=tmp)  # wraps for x < sqrt(.5): k < 0 below
    np.bitwise_and(tmp, np.uint64(0xFFF0000000000000), out=mbits)
    np.subtract(bits, mbits, out=mbits)  # m = x * 2**-k, exact
    k = tmp.view(np.int64)
    np.right_shift(k, np.int64(52), out=k)  # arithmetic shift: the exponent k
    np.add(m, 1.0, out=s)
    np.subtract(m, 1.0, out=m)  # exact (Sterbenz)
    np.divide(m, s, out=s)  # s = (m - 1) / (m + 1), |s| <= 0.1716
    np.multiply(s, s, out=m)  # s^2
    r = _horner(m, _LN_COEFFS, out)
    np.multiply(r, m, out=r)
    np.multiply(r, s, out=r)  # s^3 * P(s^2)
    np.add(r, s, out=r)
    np.multiply(r, 2.0, out=r)  # ln(m) = 2 atanh(s) = 2 (s + s^3 P(s^2))
    kf = m  # s^2 no longer needed
    np.multiply(k, _LN2_LO, out=kf)  # int64 -> float64 is exact for |k| < 2**53
    np.add(r, kf, out=r)
    np.multiply(k, _LN2_HI, out=kf)  # exact: _LN2_HI has 32 trailing zero bits
    np.add(r, kf, out=r)
    return r


def _cos_turns_into(t: np.ndarray, buf: _Buffers, out: np.ndarray) -> np.ndarray:
    """cos(2 pi t) for float64 ``t`` in [0, 1] into ``out``.

    Scratch: buf.b, buf.c. ``t`` is read only by the first operation, so ``out`` may alias it.
    """
    n = t.shape[0]
    w, w2 = buf.b[:n], buf.c[:n]
    np.subtract(t, 0.5, out=w)  # exact for t in [1/4, 1] and for dyadic t with <= 52 fraction bits
    np.absolute(w, out=w)
    np.subtract(0.25, w, out=w)  # exact; w in [-1/4, 1/4] and cos(2 pi t) = -sin(2 pi w)
    np.multiply(w, w, out=w2)
    _horner(w2, _SIN_COEFFS, out)
    np.multiply(out, w, out=out)
    np.negative(out, out=out)
    return out


def _ln(x) -> np.ndarray:
    """Deterministic natural log (float64 array), for tests."""
    x = np.ascontiguousarray(x, dtype=np.float64).ravel()
    return _ln_into(x, _Buffers(x.shape[0]), np.empty_like(x))


def _cos_turns(t) -> np.ndarray:
    """Deterministic cos(2 pi t) for t in [0, 1] (float64 array), for tests."""
    t = np.ascontiguousarray(t, dtype=np.float64).ravel()
    return _cos_turns_into(t, _Buffers(t.shape[0]), np.empty_like(t))


# ---------------------------------------------------------------------------------------------------
# Per-chunk fillers: write out[start:start+n] (float32) from the element hashes.
def _fill_uniform(key: int, scale: float, start: int, out: np.ndarray, buf: _Buffers) -> None:
    n = out.shape[0]
    h = _hash_chunk(key, start, n, buf)
    np.right_shift(h, np.uint64(40), out=h)  # 24 bits
    a = buf.a[:n]
    np.multiply(h, 2.0**-23, out=a, casting="unsafe")  # 2u, exact
    np.subtract(a, 1.0, out=a)  # 2u - 1 in [-1, 1), exact
    np.multiply(a, scale, out=a)
    out[...] = a  # the one float64 -> float32 rounding


def _fill_normal(key: int, scale: float, start: int, out: np.ndarray, buf: _Buffers) -> None:
    n = out.shape[0]
    h, t = _hash_chunk(key, start, n, buf), buf.t[:n]
    r, u = buf.a[:n], buf.d[:n]
    np.right_shift(h, np.uint64(32), out=t)
    np.multiply(t, 2.0**-32, out=u, casting="unsafe")  # exact
    np.add(u, 2.0**-32, out=u)  # u1 in (0, 1], exact
    _ln_into(u, buf, r)
    np.multiply(r, -2.0, out=r)
    np.maximum(r, 0.0, out=r)  # only effect: ln(1) = 0 gives +0.0, not -0.0
    np.sqrt(r, out=r)  # radius sqrt(-2 ln u1)
    np.bitwise_and(h, np.uint64(0xFFFFFFFF), out=t)
    np.multiply(t, 2.0**-32, out=u, casting="unsafe")  # u2 in [0, 1), exact
    _cos_turns_into(u, buf, u)
    np.multiply(r, u, out=r)  # z
    np.multiply(r, scale, out=r)
    out[...] = r  # the one float64 -> float32 rounding


def _fill_signed(key: int, scale: float, start: int, out: np.ndarray, buf: _Buffers) -> None:
    n = out.shape[0]
    h = _hash_chunk(key, start, n, buf)
    np.right_shift(h, np.uint64(63), out=h)  # top bit, i.e. u >= 0.5
    a = buf.a[:n]
    np.multiply(h, 2.0 * scale, out=a, casting="unsafe")  # 0 or 2c, exact
    np.subtract(a, scale, out=a)  # -c or c, exact
    out[...] = a


_FILLERS = {"uniform": _fill_uniform, "normal": _fill_normal, "signed_constant": _fill_signed}


def _num_workers(numel: int) -> int:
    if numel < _PARALLEL_MIN:
        return 1
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, -(-numel // _CHUNK)))


def _fill(kind: str, key: int, scale: float, out: np.ndarray) -> None:
    """Fill flat float32 ``out`` chunk by chunk; chunks are independent, so any split gives the same bits."""
    filler, numel = _FILLERS[kind], out.shape[0]
    nchunks = -(-numel // _CHUNK)

    def work(c0: int, c1: int) -> None:
        buf = _Buffers(min(_CHUNK, numel))
        for c in range(c0, c1):
            start = c * _CHUNK
            filler(key, scale, start, out[start : start + _CHUNK], buf)

    workers = _num_workers(numel)
    if workers == 1:
        work(0, nchunks)
        return
    bounds = [nchunks * w // workers for w in range(workers + 1)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(work, a, b) for a, b in zip(bounds, bounds[1:])]:
            f.result()


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


SCHEMES: dict[str, Callable[[str, torch.Tensor], Dist]] = {
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
