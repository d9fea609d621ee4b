"""Layer 1 of the ticket file: the entropy coding of one bool mask into a payload and back.

This module knows nothing of files, headers or networks: :func:`encode_mask` turns a bool tensor into
``(coding, payload)`` and :func:`decode_mask` turns ``(coding, payload, shape, count)`` back into the
tensor (``count`` = kept entries, stored beside the payload by :mod:`lth.ticket.container`). Every
problem with a payload is a :class:`TicketError`, the one error type of the whole ticket package.

Mask codings (the encoder tries every applicable one per tensor and keeps the smallest; ties go to the
earlier in this list). A mask is read in row-major order; a "row" is a slice along the first dimension
(the mask viewed as ``R = shape[0]`` rows of ``C = n / R`` entries), a "column" one of the ``C`` slices
across it.

* ``none`` / ``all``: 0 bytes; every entry pruned / kept (``count`` is 0 / n).
* ``raw``: ``numpy.packbits`` of the n bits, most significant bit first, the last byte zero-padded:
  ``ceil(n / 8)`` bytes.
* ``range``: one range-coded stream (below) of the n bits, each coded with probability ``k / n``
  (``k = count``): costs ``n * H(k / n)`` bits plus the coder's few bytes of termination.
* ``range_rows``: ``varint(ref)``, one byte ``g``, then ``k_r - ref`` for every row ``r`` as an order-``g``
  Exp-Golomb code of its zigzag value (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), most significant bit first,
  zero-padded to a byte; then one range-coded stream of the rows in order, row ``r`` coded with
  probability ``k_r / C``; rows with ``k_r`` of 0 or ``C`` cost nothing and are skipped. Wins when rows
  differ in density (whole neurons pruned away). ``varint`` is unsigned LEB128.
* ``range_cols``: ``range_rows`` of the transposed ``R x C`` matrix (C columns of R entries), e.g. the
  dead border pixels of an MNIST network's first layer.

The range-coded stream is constriction's ``stream.queue.RangeEncoder`` (32-bit words, 64-bit state,
24-bit fixed-point probabilities), every bit coded with ``stream.model.Categorical([n - k, k],
perfect=False)`` (float64). Its words are written big-endian; the encoder may drop up to 4 trailing
bytes after checking that the stream still decodes to the same bits, so the decoder pads the payload
with zero bytes to a multiple of 4 first. That bitstream and constriction's float -> fixed-point
quantisation are part of the format (a golden test pins them).

:func:`entropy_bound_bits` is the yardstick: ``sum_i n_i * H(k_i / n_i)`` bits, what an ideal coder of
i.i.d. bits pays; ``range`` lands within a few bytes of it and ``range_rows`` / ``range_cols`` can beat it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LthError

_DECODE_CHUNK = 1 << 20  # symbols per constriction decode call
CODINGS = ("none", "all", "raw", "range", "range_rows", "range_cols")
_MAX_TRIM = 4  # bytes _range_encode may drop from a stream
_MAX_GOLOMB_ZEROS = 40  # counts are far below 2**40, so a longer zero run is garbage


# The one error of the whole ticket package, defined in this bottom layer because every layer raises it.
class TicketError(LthError):
    """A ticket file that is truncated, corrupted, malformed or does not fit its architecture."""


# ---------------------------------------------------------------------------------------------------
# Entropy bound.
def _h2(k: int, n: int) -> float:
    """Binary entropy of k/n in bits (0 for k in {0, n})."""
    if k <= 0 or k >= n:
        return 0.0
    p = k / n
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def entropy_bound_bits(masks) -> float:
    """``sum_i n_i * H(k_i / n_i)``: what an ideal coder of i.i.d. bits at each tensor's own density pays.

    ``masks`` is a dict of bool tensors (or arrays); the bound ignores structure (rows, columns), which
    is why ``range_rows`` / ``range_cols`` can beat it.
    """
    total = 0.0
    for m in masks.values():
        n, k = int(m.numel() if isinstance(m, torch.Tensor) else np.size(m)), int(m.sum())
        total += n * _h2(k, n)
    return total


# ---------------------------------------------------------------------------------------------------
# Small binary helpers: varints and Exp-Golomb codes.
def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise TicketError("varint runs past the end of its payload")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise TicketError("varint longer than 10 bytes")


def _zigzag(d: np.ndarray) -> np.ndarray:
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def _golomb_bits(values: np.ndarray, g: int) -> int:
    """Total length of the order-g Exp-Golomb codes of ``values`` (>= 0), in bits."""
    w = values.astype(np.int64) + (1 << g)
    floor_log2 = np.frexp(w.astype(np.float64))[1].astype(np.int64) - 1  # exact for w < 2**53
    return int(np.sum(2 * floor_log2 - g + 1))


def _golomb_encode(values: np.ndarray, g: int) -> bytes:
    """Order-g Exp-Golomb: ``w = v + 2**g`` as (bitlen(w) - 1 - g) zeros then w's bits; byte-padded."""
    parts = []
    for v in values.tolist():
        w = v + (1 << g)
        parts.append("0" * (w.bit_length() - 1 - g) + format(w, "b"))
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def _golomb_decode(buf: bytes, pos: int, count: int, g: int) -> tuple[list[int], int]:
    """Read ``count`` order-g Exp-Golomb codes starting at byte ``pos``; returns values and the byte
    offset after the (zero) padding."""
    bits = (np.unpackbits(np.frombuffer(buf, np.uint8, offset=pos)) + ord("0")).tobytes().decode("ascii")
    out, i = [], 0
    for _ in range(count):
        one = bits.find("1", i)
        if one < 0 or one - i > _MAX_GOLOMB_ZEROS:
            raise TicketError("row counts are malformed (Exp-Golomb code runs off)")
        length = one - i + g + 1
        if one + length > len(bits):
            raise TicketError("row counts run past the end of their payload")
        out.append(int(bits[one : one + length], 2) - (1 << g))
        i = one + length
    end = -(-i // 8) * 8
    if "1" in bits[i:end]:
        raise TicketError("row counts have nonzero padding bits")
    return out, pos + end // 8


# ---------------------------------------------------------------------------------------------------
# Range coding (constriction). A "segment" is a run of bits coded at one probability k / n.
def _bernoulli(n: int, k: int):
    import constriction

    return constriction.stream.model.Categorical(np.array([n - k, k], dtype=np.float64), perfect=False)


def _range_decode(payload: bytes, sizes: list[tuple[int, int]]) -> np.ndarray:
    """Decode consecutive segments of ``(n, k)`` into one flat bool array; trivial segments (k in {0, n})
    are not in the stream. Decodes in chunks, so that constriction (which aborts the process when an
    allocation fails) never allocates more than a chunk; the output is the only big allocation."""
    import constriction

    padded = payload + b"\0" * (-len(payload) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = np.empty(sum(n for n, _ in sizes), dtype=bool)
    pos = 0
    for n, k in sizes:
        if k == 0 or k == n:
            out[pos : pos + n] = k == n
        else:
            model = _bernoulli(n, k)
            for start in range(pos, pos + n, _DECODE_CHUNK):
                size = min(_DECODE_CHUNK, pos + n - start)
                out[start : start + size] = np.asarray(decoder.decode(model, size)) == 1
        pos += n
    return out


def _decodes_to(payload: bytes, segments: list[np.ndarray]) -> bool:
    try:
        got = _range_decode(payload, [(len(s), int(s.sum())) for s in segments])
    except Exception:  # constriction raises AssertionError on streams that are invalid for the model
        return False
    return np.array_equal(got, np.concatenate(segments))


def _range_encode(segments: list[np.ndarray], trim: bool = True) -> bytes:
    """Range-code bool segments, each at its own empirical density, then (``trim``) drop the trailing
    bytes that decoding does not need (up to one word): the last word only has to land inside the
    coder's final interval, so one rounded to a multiple of 2**(8j) often does, and its j low bytes
    need not be sent. Trimming costs a few trial decodes, so ``encode_mask`` only trims contenders."""
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    for s in segments:
        k = int(s.sum())
        if 0 < k < len(s):
            encoder.encode(s.astype(np.int32), _bernoulli(len(s), k))
    words = encoder.get_compressed()
    full = words.astype(">u4").tobytes()
    if not trim or not len(words):
        return full
    head, last = full[:-4], int(words[-1])
    for j in (4, 3, 2, 1):
        unit = 1 << (8 * j)
        for cand in ((last // unit) * unit, -(-last // unit) * unit):
            if cand < 1 << 32:
                trimmed = (head + cand.to_bytes(4, "big"))[: len(full) - j]
                if _decodes_to(trimmed, segments):
                    return trimmed
    return full


# ---------------------------------------------------------------------------------------------------
# Mask codings: each encoder returns a payload (or None where it does not apply); each decoder gets
# (payload, shape, count) and returns the flat bool array or raises TicketError.
def _as_matrix(shape: tuple[int, ...], cols: bool) -> tuple[int, int] | None:
    """(rows, length) of the row view, or of the column view; None where one of them is trivial."""
    if len(shape) < 2 or math.prod(shape) == 0:
        return None
    r, c = shape[0], math.prod(shape[1:])
    if r < 2 or c < 2:
        return None
    return (c, r) if cols else (r, c)


def _lines(flat: np.ndarray, shape: tuple[int, ...], cols: bool) -> np.ndarray:
    r, c = shape[0], math.prod(shape[1:])
    mat = flat.reshape(r, c)
    return np.ascontiguousarray(mat.T if cols else mat)


def _encode_lines(flat: np.ndarray, shape: tuple[int, ...], cols: bool, trim: bool) -> bytes | None:
    if _as_matrix(shape, cols) is None:
        return None
    lines = _lines(flat, shape, cols)
    counts = lines.sum(axis=1).astype(np.int64)
    ref = int(np.median(counts))
    zz = _zigzag(counts - ref)
    g = min(range(int(lines.shape[1]).bit_length() + 1), key=lambda g: _golomb_bits(zz, g))
    head = _varint(ref) + bytes([g]) + _golomb_encode(zz, g)
    return head + _range_encode(list(lines), trim)


def _decode_lines(payload: bytes, shape: tuple[int, ...], count: int, cols: bool) -> np.ndarray:
    dims = _as_matrix(shape, cols)
    if dims is None:
        raise TicketError(f"row/column coding needs at least 2 rows and 2 columns, got shape {list(shape)}")
    rows, length = dims
    ref, pos = _read_varint(payload, 0)
    if pos >= len(payload) or payload[pos] > 40:
        raise TicketError("row coding has a bad Exp-Golomb order")
    zz, pos = _golomb_decode(payload, pos + 1, rows, payload[pos])
    counts = [ref + ((v >> 1) ^ -(v & 1)) for v in zz]
    if any(not 0 <= k <= length for k in counts) or sum(counts) != count:
        raise TicketError("row counts do not match the mask")
    lines = _range_decode(payload[pos:], [(length, k) for k in counts]).reshape(rows, length)
    return (lines.T if cols else lines).reshape(-1)


def _encode_raw(flat: np.ndarray, shape, trim: bool) -> bytes:
    return np.packbits(flat).tobytes()


def _decode_raw(payload: bytes, shape, count: int) -> np.ndarray:
    n = math.prod(shape)
    if len(payload) != -(-n // 8):
        raise TicketError(f"raw mask payload is {len(payload)} bytes, expected {-(-n // 8)}")
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    if bits[n:].any():
        raise TicketError("raw mask has nonzero padding bits")
    return bits[:n].astype(bool)


def _encode_range(flat: np.ndarray, shape, trim: bool) -> bytes | None:
    return _range_encode([flat], trim) if 0 < int(flat.sum()) < flat.size else None


def _decode_range(payload: bytes, shape, count: int) -> np.ndarray:
    n = math.prod(shape)
    if not 0 < count < n:  # an empty or full mask is coded "none" / "all": this payload would be ignored
        raise TicketError(f"range mask must keep between 1 and {n - 1} entries, got count {count}")
    return _range_decode(payload, [(n, count)])


_ENCODERS = {
    "raw": _encode_raw,
    "range": _encode_range,
    "range_rows": lambda flat, shape, trim: _encode_lines(flat, shape, False, trim),
    "range_cols": lambda flat, shape, trim: _encode_lines(flat, shape, True, trim),
}
_DECODERS = {
    "raw": _decode_raw,
    "range": _decode_range,
    "range_rows": lambda payload, shape, count: _decode_lines(payload, shape, count, cols=False),
    "range_cols": lambda payload, shape, count: _decode_lines(payload, shape, count, cols=True),
}


def encode_mask(mask: torch.Tensor) -> tuple[str, bytes]:
    """The smallest (coding, payload) for one bool mask (ties go to the earlier coding in CODINGS)."""
    flat = mask.detach().cpu().reshape(-1).numpy().astype(bool)
    shape, k = tuple(mask.shape), int(flat.sum())
    if k == flat.size:
        return ("all", b"") if k else ("none", b"")
    if k == 0:
        return "none", b""
    drafts = [(coding, enc(flat, shape, trim=False)) for coding, enc in _ENCODERS.items()]
    drafts = sorted((d for d in drafts if d[1] is not None), key=lambda d: len(d[1]))  # stable: ties keep order
    best = None
    for coding, draft in drafts:
        if best is not None and len(draft) - _MAX_TRIM >= len(best[1]):
            break  # trimming saves at most one word, so no later draft can win
        payload = _ENCODERS[coding](flat, shape, trim=True)
        if best is None or (len(payload), CODINGS.index(coding)) < (len(best[1]), CODINGS.index(best[0])):
            best = (coding, payload)
    return best


def decode_mask(coding: str, payload: bytes, shape, count: int) -> torch.Tensor:
    """Inverse of :func:`encode_mask`; checks that the decoded mask keeps exactly ``count`` entries."""
    shape = tuple(shape)
    n = math.prod(shape)
    if coding in ("none", "all"):
        want = 0 if coding == "none" else n
        if payload or count != want:
            raise TicketError(f"{coding!r} mask must have count {want} and no payload")
        flat = np.full(n, coding == "all", dtype=bool)
    else:
        try:
            flat = _DECODERS[coding](payload, shape, count)
        except TicketError:
            raise
        except Exception as e:  # constriction asserts on streams that cannot come from this count
            raise TicketError(f"{coding} payload does not decode with mask count {count} ({e})") from None
    if int(flat.sum()) != count:
        raise TicketError(f"mask count {count} does not match its decoded payload ({int(flat.sum())} kept)")
    return torch.from_numpy(flat).reshape(shape)

