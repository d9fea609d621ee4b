"""The bit-exact counter-based generator behind :mod:`lth.init` (its docstring is the specification).

Every value is a pure function of (seed, tensor name, stream, index): a splitmix64-style hash of a
key derived from those gives 64 random bits per element, turned into uniform, normal (Box-Muller) or
signed-constant values with float64 arithmetic built only from exactly rounded operations (+ - * /,
exact constants, polynomial ln and cos evaluated by Horner), so no library RNG or libm takes part and
every machine computes the same bits. Work is split into fixed chunks (and threads above a size), which
changes the speed, never the values.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


