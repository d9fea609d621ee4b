"""Layer 2 of the ticket file: the container, ``bytes <-> Ticket``.

The byte layout and the header's fields are specified in :mod:`lth.ticket`; each mask payload is
:mod:`lth.ticket.coding`'s business, and what the float entries do to a network is
:mod:`lth.ticket.rebuild`'s. This layer guarantees:

* :func:`encode` writes format version 2 (the header JSON with sorted keys and no whitespace, then
  zlib level 9) and is deterministic: the same ticket always gives the same bytes. It refuses (a
  :class:`TicketError`) whatever :func:`decode` would refuse to read: a seed outside ``[0, 2**64)``, an
  unknown ``weights`` kind, a mask that is not bool, a float dtype other than float32 / float16 /
  bfloat16, an arch or meta that is not plain JSON (no NaN or inf), a stored float of a masked
  parameter whose length is not its mask's count, more than ``MAX_ELEMENTS`` entries in all.
* :func:`decode` reads versions 1 (header JSON stored as is) and 2. It verifies the magic, the version
  and then the SHA-256 before it parses anything, and checks every size and count afterwards: the
  inflated header may be at most ``MAX_HEADER_BYTES``, and a file may hold at most ``MAX_ELEMENTS`` mask
  and float entries in all, checked before anything is allocated. Every problem, a library's error on
  hostile input included, is a one-line :class:`TicketError` naming the source. Nothing is ever
  unpickled: the parser is struct, json and numpy.frombuffer.
* :func:`save` writes atomically; :func:`load` reads a path (:func:`lth.ticket.files.read_file`: a
  regular file only, at most ``MAX_FILE_BYTES``) and decodes it.

Both limits are raised through the package (``lth.ticket.MAX_ELEMENTS = ...``), which forwards the
assignment here.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from . import schema
from .files import read_file
from .coding import CODINGS, TicketError, decode_mask, encode_mask

MAGIC = b"LTHT"
VERSION = 2
READS = (1, 2)  # version 1: the same file with the header JSON uncompressed
# The largest header JSON inflated from a version-2 file: a zlib stream expands up to ~1000x, so a crafted
# few-kB header must not be able to ask for gigabytes.
MAX_HEADER_BYTES = 4 << 20  # a language model's header is ~7 kB, MAX_ENTRIES entries ~1.5 MB
_PREAMBLE = struct.Struct("<4sHI")  # magic, version, header length
_DIGEST_BYTES = 32
MIN_BYTES = _PREAMBLE.size + _DIGEST_BYTES
# Sanity cap on the entries of all masks and floats of one file together, checked before anything is
# allocated: the range coder turns a few bytes into billions of legitimate entries, so without it a
# crafted file could ask for any amount of memory. Raise it (lth.ticket.MAX_ELEMENTS = ...) to read
# tickets of networks with more than 2**32 prunable weights.
MAX_ELEMENTS = 1 << 32
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_WIRE_DTYPE = {"float32": "<f4", "float16": "<f2", "bfloat16": "<i2"}  # bf16 travels as its bit pattern
WEIGHTS = ("seed", "stored", "source", "constant")  # source: θ0 from meta["weights_source"]; constant: sign bits


@dataclass(eq=False)
class Ticket:
    """Everything needed to rebuild a pruned network: architecture, seed, init scheme and masks.

    ``floats`` carries learned scales (supermasks) or, with ``weights="stored"``, the surviving weights
    (see :mod:`lth.ticket`); ``meta`` is free JSON (task, metrics, source run, level).
    """

    arch: dict
    seed: int
    init: str
    masks: dict[str, torch.Tensor]
    floats: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: str = "seed"
    meta: dict = field(default_factory=dict)
    signs: dict[str, torch.Tensor] = field(default_factory=dict)  # weights="constant": True = +α, per survivor


def make_arch(model: str, input_shape, num_classes: int, **kwargs) -> dict:
    """The ``arch`` dict for ``lth.models.build(model, input_shape, num_classes, **kwargs)``."""
    return {"model": model, "kwargs": kwargs, "input_shape": list(input_shape), "num_classes": num_classes}


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
    _check_signs(t.weights, t.masks, t.signs)


def _check_signs(weights: str, masks: dict, signs: dict) -> None:
    """``weights="constant"``: one bool sign per survivor of every masked matrix, and signs nowhere else."""
    want = {n for n, m in masks.items() if m.dim() >= 2} if weights == "constant" else set()
    if set(signs) != want:
        raise TicketError(f"signs must name exactly the masked matrices of a weights='constant' ticket, "
                          f"got {sorted(signs)[:3]} for {sorted(want)[:3]}")
    for name, v in signs.items():
        if not isinstance(v, torch.Tensor) or v.dtype != torch.bool or tuple(v.shape) != (int(masks[name].sum()),):
            raise TicketError(f"signs {name!r} must be a bool vector of its mask's {int(masks[name].sum())} survivors")

def encode(t: Ticket) -> bytes:
    """The ticket file bytes for ``t`` (deterministic: the same ticket always gives the same bytes)."""
    _check_ticket(t)
    payloads = []

    def bit_entries(tensors: dict) -> list[dict]:
        out = []
        for name, m in tensors.items():
            coding, payload = encode_mask(m)
            out.append({"name": name, "shape": list(m.shape), "coding": coding, "nbytes": len(payload),
                        "count": int(m.sum())})
            payloads.append(payload)
        return out

    mask_entries, sign_entries = bit_entries(t.masks), bit_entries(t.signs)
    float_entries = []
    for name, v in t.floats.items():
        dtype, payload = _float_bytes(name, v)
        float_entries.append({"name": name, "shape": list(v.shape), "dtype": dtype, "nbytes": len(payload)})
        payloads.append(payload)
    header = {
        "arch": t.arch, "seed": t.seed, "init": t.init, "weights": t.weights, "meta": t.meta,
        "masks": mask_entries, "floats": float_entries, **({"signs": sign_entries} if t.weights == "constant" else {}),
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
        return length + sum(int(e["nbytes"]) for e in header["masks"] + header["floats"] + header.get("signs", []))
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


HEADER_FIELDS = ("arch", "seed", "init", "weights", "meta", "masks", "floats", "signs")


def _ticket_fields(header: dict) -> dict:
    unknown = sorted(set(header) - set(HEADER_FIELDS))
    if unknown:  # a newer format would say so in the version; an unknown field is a forged or broken file
        raise TicketError(f"header has unknown field {unknown[0]!r} (known: {', '.join(HEADER_FIELDS)})")
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


def _decode(data: bytes, strict: bool = True, max_params: int | None = None) -> tuple[Ticket, dict]:
    """``strict``: the header's schema (:mod:`lth.ticket.schema`) too, before any payload is decoded."""
    data = bytes(data)
    hlen = _check_envelope(data)
    header = _parse_header(data, hlen)
    fields = _ticket_fields(header)
    schema.check_counts(header)
    mask_entries, float_entries = _entries(header, "masks"), _entries(header, "floats")
    sign_entries = _entries(header, "signs") if fields["weights"] == "constant" else []
    if "signs" in header and fields["weights"] != "constant":
        raise TicketError("header has signs but its weights are not 'constant'")
    payload = sum(e["nbytes"] for e in mask_entries + float_entries + sign_entries)
    expected = _PREAMBLE.size + hlen + payload + _DIGEST_BYTES
    if expected != len(data):
        raise TicketError(f"header/payload size mismatch: header declares {expected} bytes, file has {len(data)}")
    _check_total(mask_entries + sign_entries, float_entries)
    if strict:
        schema.check_header(fields["arch"], fields["meta"], mask_entries, max_params)
    masks, pos = _decode_masks(mask_entries, data, _PREAMBLE.size + hlen)
    signs, pos = _decode_masks(sign_entries, data, pos)
    _check_signs(fields["weights"], masks, signs)
    floats = _decode_floats(float_entries, data, pos)
    if fields["weights"] == "stored":
        for name, v in floats.items():
            if name in masks:
                _check_survivors(name, v, masks[name])
    return Ticket(masks=masks, floats=floats, signs=signs, **fields), header


def _wrap(source: str, fn, *args):
    """Run ``fn``; any error (ours or a library's on hostile input) becomes one TicketError line."""
    try:
        return fn(*args)
    except TicketError as e:
        raise TicketError(_one_line(f"{source}: {e}")) from None
    except Exception as e:  # numpy/constriction/json on input crafted to pass the checksum
        raise TicketError(_one_line(f"{source}: malformed ticket ({type(e).__name__}: {e})")) from None


def decode(data: bytes, *, source: str = "ticket", strict: bool = True, max_params: int | None = None) -> Ticket:
    """Parse and verify a ticket file (magic, version, checksum, every size and count) and, ``strict``,
    its header's schema (:mod:`lth.ticket.schema`: architecture of at most ``max_params`` parameters,
    default ``lth.ticket.MAX_PARAMS``). ``strict=False`` checks the container alone (format tests)."""
    return _wrap(source, _decode, data, strict, max_params)[0]


def save(t: Ticket, path) -> int:
    """Write ``t`` to ``path`` atomically; returns the number of bytes written."""
    from ..io import atomic_write_bytes

    data = encode(t)
    atomic_write_bytes(path, data)
    return len(data)




def load(path, *, max_params: int | None = None) -> Ticket:
    """Read and verify a ticket file, its header's schema included (see :func:`decode`)."""
    return decode(read_file(path), source=str(path), max_params=max_params)

