"""The ticket file: one binary format that ships any lottery ticket or supermask in about as few bytes
as information theory allows.

A ticket is ``(architecture, seed, init scheme, masks)``: the weights are regenerated bit-exactly from
the seed by :mod:`lth.init`, so only the masks cost real space, and they are entropy coded to within a
few bytes of ``sum_i n_i * H(k_i / n_i)`` bits (``n_i`` entries, ``k_i`` kept, in tensor ``i``). Learned
scales, or the surviving weights of a ticket rewound to step K > 0, ride along as raw floats.

Byte layout (format version 2; all integers little-endian)::

    offset   size  field
    0        4     magic b"LTHT"
    4        2     format version, uint16 (= 2)
    6        4     H = header length in bytes, uint32
    10       H     header: a UTF-8 JSON object (written with sorted keys and no whitespace), zlib-compressed
                   (RFC 1950, level 9): the per-tensor entries and the run's config repeat a lot, and a
                   language model's header shrinks from about 7 kB to 1.3 kB. Version 1, still read, stored
                   the JSON as is.
    10+H     M     mask payloads, one per header["masks"] entry in that order, each "nbytes" long
    10+H+M   F     float payloads, one per header["floats"] entry in that order, each "nbytes" long
    end-32   32    SHA-256 of every byte before it

The file length must be exactly ``10 + H + M + F + 32``. The header holds:

* ``arch``: ``{"model", "kwargs", "input_shape", "num_classes"}``, the arguments of
  :func:`lth.models.build`;
* ``seed`` (int in [0, 2**64)) and ``init`` (a scheme name from :data:`lth.init.SCHEMES`);
* ``weights``: ``"seed"`` (every weight regenerates from the seed) or ``"stored"`` (float entries named
  like a parameter replace the regenerated values, see below);
* ``masks``: a list of ``{"name", "shape", "coding", "nbytes", "count"}`` (``count`` = kept entries);
* ``floats``: a list of ``{"name", "shape", "dtype", "nbytes"}``, dtype one of float32 / float16 /
  bfloat16; the payload is the row-major values, little-endian, bfloat16 as its 2-byte pattern;
* ``meta``: a free JSON object (task, metrics, source run, level, ...).

In a ``"stored"`` ticket a float entry named like a masked parameter (``fc1.weight``) holds only the
surviving values, in row-major mask order (``count`` values); one named like an unmasked parameter
(``fc1.bias``) holds the whole tensor; parameters without an entry keep their regenerated values.

In either kind of ticket, a float entry ``scale.<name>`` of a masked parameter (a supermask's learned
scales) is a 1-D tensor of ``g`` values, ``g`` dividing the parameter's first (output) dimension: the
masked tensor is split along that dimension into ``g`` equal groups and group ``i`` is multiplied by
value ``i``, so the network is ``W_eff = scale * W * mask`` (as :class:`lth.supermask.Supermask` computes
it). A float entry ``param.<name>`` of an unmasked parameter (a model's own learned scales, e.g. a
GPT's per-head ``head_scale``) replaces that whole tensor, in either kind. Every other float entry (``scale.fc1``, or one named like a parameter in a ``"seed"`` ticket) is
never applied to the model: it is kept for the caller.

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

Reading verifies the magic, the version and then the SHA-256 before it parses anything, and checks
every size and count afterwards (a file may hold at most ``MAX_ELEMENTS`` mask and float entries in all,
checked before anything is allocated); every problem is a one-line :class:`TicketError`. Nothing is
ever unpickled: the parser is struct, json and numpy.frombuffer.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import LthError

MAGIC = b"LTHT"
VERSION = 2
READS = (1, 2)  # version 1: the same file with the header JSON uncompressed
# The largest header JSON inflated from a version-2 file: a zlib stream expands up to ~1000x, so a crafted
# few-kB header must not be able to ask for gigabytes.
MAX_HEADER_BYTES = 64 << 20
_PREAMBLE = struct.Struct("<4sHI")  # magic, version, header length
_DIGEST_BYTES = 32
MIN_BYTES = _PREAMBLE.size + _DIGEST_BYTES
# Sanity cap on the entries of all masks and floats of one file together, checked before anything is
# allocated: the range coder turns a few bytes into billions of legitimate entries, so without it a
# crafted file could ask for any amount of memory. Raise it (lth.ticket.MAX_ELEMENTS = ...) to read
# tickets of networks with more than 2**32 prunable weights.
MAX_ELEMENTS = 1 << 32
_DECODE_CHUNK = 1 << 20  # symbols per constriction decode call
CODINGS = ("none", "all", "raw", "range", "range_rows", "range_cols")
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_WIRE_DTYPE = {"float32": "<f4", "float16": "<f2", "bfloat16": "<i2"}  # bf16 travels as its bit pattern
WEIGHTS = ("seed", "stored")
_MAX_TRIM = 4  # bytes _range_encode may drop from a stream
_MAX_GOLOMB_ZEROS = 40  # counts are far below 2**40, so a longer zero run is garbage


class TicketError(LthError):
    """A ticket file that is truncated, corrupted, malformed or does not fit its architecture."""


@dataclass(eq=False)
class Ticket:
    """Everything needed to rebuild a pruned network: architecture, seed, init scheme and masks.

    ``floats`` carries learned scales (supermasks) or, with ``weights="stored"``, the surviving weights
    (see the module docstring); ``meta`` is free JSON (task, metrics, source run, level).
    """

    arch: dict
    seed: int
    init: str
    masks: dict[str, torch.Tensor]
    floats: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: str = "seed"
    meta: dict = field(default_factory=dict)


def make_arch(model: str, input_shape, num_classes: int, **kwargs) -> dict:
    """The ``arch`` dict for ``lth.models.build(model, input_shape, num_classes, **kwargs)``."""
    return {"model": model, "kwargs": kwargs, "input_shape": list(input_shape), "num_classes": num_classes}


def surviving_floats(model: torch.nn.Module, masks: dict, dtype: torch.dtype = torch.float16) -> dict:
    """Float entries for a ``weights="stored"`` ticket: each masked parameter's surviving values (mask
    order) and every other parameter whole, in ``dtype``."""
    out = {}
    for name, p in model.named_parameters():
        values = p.detach().cpu()
        out[name] = (values[masks[name].cpu()] if name in masks else values).to(dtype).contiguous()
    return out


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


# ---------------------------------------------------------------------------------------------------
# Encoding.
def _float_bytes(name: str, t: torch.Tensor) -> tuple[str, bytes]:
    dtype = next((k for k, v in FLOAT_DTYPES.items() if v == t.dtype), None)
    if dtype is None:
        raise TicketError(f"float {name!r} has dtype {t.dtype}; a ticket stores {sorted(FLOAT_DTYPES)}")
    t = t.detach().cpu().contiguous()
    if dtype == "bfloat16":
        t = t.view(torch.int16)
    return dtype, t.numpy().astype(_WIRE_DTYPE[dtype], copy=False).tobytes()


def _check_survivors(name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
    """A stored float named like a masked parameter holds exactly its surviving entries."""
    if values.numel() != int(mask.sum()):
        raise TicketError(f"stored float {name!r} has {values.numel()} values but its mask keeps {int(mask.sum())}")


def _check_ticket(t: Ticket) -> None:
    """Refuse to write what decode would refuse to read."""
    if not isinstance(t.arch, dict) or not isinstance(t.meta, dict):
        raise TicketError("ticket arch and meta must be dicts")
    if isinstance(t.seed, bool) or not isinstance(t.seed, int) or not 0 <= t.seed < 1 << 64:
        raise TicketError(f"ticket seed must be an int in [0, 2**64), got {t.seed!r}")
    if not isinstance(t.init, str):
        raise TicketError(f"ticket init must be a scheme name, got {t.init!r}")
    if t.weights not in WEIGHTS:
        raise TicketError(f"ticket weights must be one of {list(WEIGHTS)}, got {t.weights!r}")
    if not isinstance(t.masks, dict) or not isinstance(t.floats, dict):
        raise TicketError("ticket masks and floats must be dicts of tensors")
    for kind, tensors in (("mask", t.masks), ("float", t.floats)):
        for name, v in tensors.items():
            if not isinstance(name, str) or not isinstance(v, torch.Tensor):
                raise TicketError(f"{kind} entries must map str names to tensors, got {name!r}")
    total = sum(v.numel() for v in [*t.masks.values(), *t.floats.values()])
    if total > MAX_ELEMENTS:
        raise TicketError(f"ticket has {total} mask and float entries, over lth.ticket.MAX_ELEMENTS={MAX_ELEMENTS}")
    for name, m in t.masks.items():
        if m.dtype != torch.bool:
            raise TicketError(f"mask {name!r} must be a bool tensor, got {m.dtype}")
        if t.weights == "stored" and name in t.floats:
            _check_survivors(name, t.floats[name], m)


def encode(t: Ticket) -> bytes:
    """The ticket file bytes for ``t`` (deterministic: the same ticket always gives the same bytes)."""
    _check_ticket(t)
    mask_entries, payloads = [], []
    for name, m in t.masks.items():
        coding, payload = encode_mask(m)
        mask_entries.append(
            {"name": name, "shape": list(m.shape), "coding": coding, "nbytes": len(payload), "count": int(m.sum())}
        )
        payloads.append(payload)
    float_entries = []
    for name, v in t.floats.items():
        dtype, payload = _float_bytes(name, v)
        float_entries.append({"name": name, "shape": list(v.shape), "dtype": dtype, "nbytes": len(payload)})
        payloads.append(payload)
    header = {
        "arch": t.arch, "seed": t.seed, "init": t.init, "weights": t.weights, "meta": t.meta,
        "masks": mask_entries, "floats": float_entries,
    }
    try:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TicketError(f"ticket arch/meta must be plain JSON (no NaN/inf): {e}") from None
    head = zlib.compress(text.encode("utf-8"), 9)
    body = _PREAMBLE.pack(MAGIC, VERSION, len(head)) + head + b"".join(payloads)
    return body + hashlib.sha256(body).digest()


# ---------------------------------------------------------------------------------------------------
# Decoding.
def _one_line(text: str, limit: int = 500) -> str:
    """Collapse whitespace (one line for the CLI) and cap the length (crafted files can hold huge reprs)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _declared_length(data: bytes) -> int:
    """Best-effort total length from an unverified header, only to word an error message: the header
    length alone if the JSON cannot be read (it may be cut off), plus the payload sizes if it can."""
    (version, hlen) = struct.unpack_from("<HI", data, 4)
    length = _PREAMBLE.size + hlen + _DIGEST_BYTES
    try:
        header = json.loads(_header_json(data[_PREAMBLE.size : _PREAMBLE.size + hlen], version).decode("utf-8"))
        return length + sum(int(e["nbytes"]) for e in header["masks"] + header["floats"])
    except Exception:
        return length


def _check_envelope(data: bytes) -> int:
    """Magic, version and checksum, in that order, before anything is parsed; returns the header length."""
    if len(data) < len(MAGIC) and MAGIC.startswith(bytes(data)):
        raise TicketError(f"truncated: {len(data)} bytes is too short for a ticket file")
    if bytes(data[:4]) != MAGIC:
        raise TicketError(f"not a ticket file: bad magic {bytes(data[:4])!r} (expected {MAGIC!r})")
    if len(data) < 6:
        raise TicketError(f"truncated: {len(data)} bytes is too short for a ticket file")
    (version,) = struct.unpack_from("<H", data, 4)
    if version not in READS:
        raise TicketError(f"unknown ticket format version {version} (this lth reads versions "
                          f"{', '.join(map(str, READS))})")
    if len(data) < MIN_BYTES:
        raise TicketError(f"truncated: {len(data)} bytes is too short for a ticket file (minimum {MIN_BYTES})")
    if hashlib.sha256(data[:-_DIGEST_BYTES]).digest() != bytes(data[-_DIGEST_BYTES:]):
        declared = _declared_length(data)
        if declared > len(data):
            raise TicketError(f"truncated or corrupted: header declares {declared} bytes but the file has {len(data)}")
        raise TicketError("checksum mismatch: file is corrupted")
    return _PREAMBLE.unpack_from(data, 0)[2]


def _reject_constant(name: str):
    raise TicketError(f"header JSON contains {name}")


def _get(obj: dict, key: str, kinds, where: str):
    if key not in obj:
        raise TicketError(f"{where} is missing {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):  # JSON true/false are never a field's type
        raise TicketError(f"{where} field {key!r} has the wrong type")
    return value


def _shape(obj: dict, where: str) -> tuple[int, ...]:
    shape = _get(obj, "shape", list, where)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise TicketError(f"{where} has a bad shape {shape!r}")
    numel = 0 if 0 in shape else 1
    for d in shape if numel else ():  # early stop: a long list of big dims must not cost bigint time
        numel *= d
        if numel > MAX_ELEMENTS:
            raise TicketError(f"{where} shape {shape!r} is over the lth.ticket.MAX_ELEMENTS={MAX_ELEMENTS} limit")
    return tuple(shape)


def _check_total(masks: list[dict], floats: list[dict]) -> None:
    """All entries together stay under MAX_ELEMENTS, checked before any of them is decoded."""
    total = 0
    for kind, e in [("mask", e) for e in masks] + [("float", e) for e in floats]:
        total += math.prod(_shape(e, f"{kind} {e['name']!r}"))
        if total > MAX_ELEMENTS:
            raise TicketError(f"masks and floats have over lth.ticket.MAX_ELEMENTS={MAX_ELEMENTS} entries in all")


def _entries(header: dict, key: str) -> list[dict]:
    entries = _get(header, key, list, "header")
    names = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise TicketError(f"header {key}[{i}] is not an object")
        name = _get(e, "name", str, f"header {key}[{i}]")
        if name in names:
            raise TicketError(f"header {key} names {name!r} twice")
        names.add(name)
        nbytes = _get(e, "nbytes", int, f"{key} {name!r}")
        if nbytes < 0:
            raise TicketError(f"{key} {name!r} has negative nbytes")
    return entries


def _header_json(raw: bytes, version: int) -> bytes:
    """The header's JSON bytes: as stored (version 1) or inflated (version 2, at most MAX_HEADER_BYTES)."""
    if version == 1:
        return raw
    z = zlib.decompressobj()
    try:
        text = z.decompress(raw, MAX_HEADER_BYTES)
    except zlib.error as e:
        raise TicketError(f"header is not a zlib stream: {e}") from None
    if z.unconsumed_tail:
        raise TicketError(f"header inflates past lth.ticket.MAX_HEADER_BYTES={MAX_HEADER_BYTES}")
    if not z.eof or z.unused_data:
        raise TicketError("header zlib stream is cut off" if not z.eof else "header has bytes after its zlib stream")
    return text


def _parse_header(data: bytes, hlen: int) -> dict:
    raw = data[_PREAMBLE.size : _PREAMBLE.size + hlen]
    if len(raw) != hlen:
        raise TicketError(f"header length {hlen} runs past the end of the file")
    (version,) = struct.unpack_from("<H", data, 4)
    try:
        header = json.loads(_header_json(raw, version).decode("utf-8"), parse_constant=_reject_constant)
    except TicketError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TicketError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise TicketError("header is not a JSON object")
    return header


def _ticket_fields(header: dict) -> dict:
    arch = _get(header, "arch", dict, "header")
    seed = _get(header, "seed", int, "header")
    if not 0 <= seed < 1 << 64:
        raise TicketError(f"header seed {seed} is outside [0, 2**64)")
    weights = _get(header, "weights", str, "header")
    if weights not in WEIGHTS:
        raise TicketError(f"header weights must be one of {list(WEIGHTS)}, got {weights!r}")
    return {
        "arch": arch, "seed": seed, "init": _get(header, "init", str, "header"), "weights": weights,
        "meta": _get(header, "meta", dict, "header"),
    }


def _decode_masks(entries: list[dict], data: bytes, pos: int) -> tuple[dict, int]:
    masks = {}
    for e in entries:
        name = e["name"]
        where = f"mask {name!r}"
        shape = _shape(e, where)
        coding = _get(e, "coding", str, where)
        if coding not in CODINGS:
            raise TicketError(f"{where} has unknown coding {coding!r}; known: {list(CODINGS)}")
        count = _get(e, "count", int, where)
        if not 0 <= count <= math.prod(shape):
            raise TicketError(f"{where} count {count} is outside [0, {math.prod(shape)}]")
        payload = data[pos : pos + e["nbytes"]]
        try:
            masks[name] = decode_mask(coding, payload, shape, count)
        except TicketError as err:
            raise TicketError(f"{where}: {err}") from None
        pos += e["nbytes"]
    return masks, pos


def _decode_floats(entries: list[dict], data: bytes, pos: int) -> dict:
    floats = {}
    for e in entries:
        name = e["name"]
        where = f"float {name!r}"
        shape = _shape(e, where)
        dtype = _get(e, "dtype", str, where)
        if dtype not in FLOAT_DTYPES:
            raise TicketError(f"{where} has unknown dtype {dtype!r}; known: {sorted(FLOAT_DTYPES)}")
        if e["nbytes"] != math.prod(shape) * _ITEMSIZE[dtype]:
            raise TicketError(f"{where} nbytes {e['nbytes']} does not match shape {list(shape)} of {dtype}")
        values = np.frombuffer(data, _WIRE_DTYPE[dtype], count=math.prod(shape), offset=pos)
        t = torch.from_numpy(values.astype(values.dtype.newbyteorder("="))).reshape(shape)
        floats[name] = t.view(torch.bfloat16) if dtype == "bfloat16" else t
        pos += e["nbytes"]
    return floats


def _decode(data: bytes) -> tuple[Ticket, dict]:
    data = bytes(data)
    hlen = _check_envelope(data)
    header = _parse_header(data, hlen)
    fields = _ticket_fields(header)
    mask_entries, float_entries = _entries(header, "masks"), _entries(header, "floats")
    payload = sum(e["nbytes"] for e in mask_entries + float_entries)
    expected = _PREAMBLE.size + hlen + payload + _DIGEST_BYTES
    if expected != len(data):
        raise TicketError(f"header/payload size mismatch: header declares {expected} bytes, file has {len(data)}")
    _check_total(mask_entries, float_entries)
    masks, pos = _decode_masks(mask_entries, data, _PREAMBLE.size + hlen)
    floats = _decode_floats(float_entries, data, pos)
    if fields["weights"] == "stored":
        for name, v in floats.items():
            if name in masks:
                _check_survivors(name, v, masks[name])
    return Ticket(masks=masks, floats=floats, **fields), header


def _wrap(source: str, fn, *args):
    """Run ``fn``; any error (ours or a library's on hostile input) becomes one TicketError line."""
    try:
        return fn(*args)
    except TicketError as e:
        raise TicketError(_one_line(f"{source}: {e}")) from None
    except Exception as e:  # numpy/constriction/json on input crafted to pass the checksum
        raise TicketError(_one_line(f"{source}: malformed ticket ({type(e).__name__}: {e})")) from None


def decode(data: bytes, *, source: str = "ticket") -> Ticket:
    """Parse and verify a ticket file (magic, version, checksum, every size and count)."""
    return _wrap(source, _decode, data)[0]


def save(t: Ticket, path) -> int:
    """Write ``t`` to ``path`` atomically; returns the number of bytes written."""
    from .io import atomic_write_bytes

    data = encode(t)
    atomic_write_bytes(path, data)
    return len(data)


def _read(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TicketError(_one_line(f"{path}: cannot read ticket: {e.strerror or e}")) from None


def load(path) -> Ticket:
    """Read and verify a ticket file."""
    return decode(_read(path), source=str(path))


# ---------------------------------------------------------------------------------------------------
# Rebuilding the network.
def _build_arch(arch: dict, device: str = "cpu") -> torch.nn.Module:
    """``models.build`` from the arch dict; on the "meta" device it allocates nothing (shapes only)."""
    from . import models

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
    for name, m in masks.items():
        if name not in params:
            raise TicketError(f"mask {name!r} names no parameter of the architecture")
        if tuple(m.shape) != tuple(params[name].shape):
            raise TicketError(
                f"mask {name!r} has shape {list(m.shape)} but the architecture's parameter is "
                f"{list(params[name].shape)}"
            )


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
    from .init import init_from_seed

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
        if t.weights == "stored":
            _load_stored(params, t.masks, t.floats)
        _apply_params(params, t.masks, t.floats)
        _apply_scales(params, t.masks, t.floats)  # before masking, so that pruned entries stay +0.0
        for name, m in t.masks.items():
            params[name].masked_fill_(~m.to(params[name].device), 0.0)  # +0.0 exactly, even over NaN
    return model


def _apply_params(params: dict, masks: dict, floats: dict) -> None:
    """``param.<name>`` entries replace whole unmasked parameters (see the module docstring)."""
    for key, v in floats.items():
        if not key.startswith("param."):
            continue
        name = key[len("param."):]
        if name not in params or name in masks:
            raise TicketError(f"float {key!r} names no unmasked parameter of the architecture")
        if tuple(v.shape) != tuple(params[name].shape):
            raise TicketError(f"float {key!r} has shape {list(v.shape)}, the parameter {list(params[name].shape)}")
        params[name].copy_(v.to(params[name].dtype))


def _apply_scales(params: dict, masks: dict, floats: dict) -> None:
    """``scale.<name>`` entries of masked parameters multiply their output groups (see the module
    docstring). Kept entries come out as ``W * scale``, the very float32 products Supermask.effective
    computes (``W * 1.0`` is exact), so a packed supermask matches the trained one bit for bit."""
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
    from .init import weights_sha256 as digest

    return digest(build_model(t))


# ---------------------------------------------------------------------------------------------------
def inspect(data: bytes, *, source: str = "ticket") -> dict:
    """Sizes, codings and the gap to the entropy bound of a ticket file (verified as by :func:`decode`)."""
    ticket, header = _wrap(source, _decode, data)
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
