"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic (``0x00 0x00 <dtype code> <ndim>``), then ``ndim`` big-endian
uint32 dimension sizes, then the array in C order, big-endian. The files are usually gzipped;
gzip is recognised by its own magic bytes rather than the file name, so a mis-named file still
reads (IDX always starts with ``0x00 0x00`` and gzip with ``0x1f 0x8b``, so they cannot clash).

Every problem a user's file can have is reported as a one-line :class:`lth.errors.DataError`
that starts with the file's path, so the CLI can print it as is; no numpy/gzip/zlib traceback
escapes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from lth.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype, as defined by the MNIST database page.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def one_line(text: object) -> str:
    """Collapse whitespace so an error message from a library stays on one line."""
    return " ".join(str(text).split())


def read_bytes(path: str | os.PathLike) -> bytes:
    """Return the file's contents, gunzipped if it is gzip; raise DataError on any I/O problem."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if not p.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from exc
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        detail = one_line(exc) or type(exc).__name__
        raise DataError(f"{path}: corrupt gzip: {detail}") from exc


def parse_header(path: str | os.PathLike, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the magic and dimensions; return (dtype, shape, header length in bytes)."""
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{path}: bad magic: expected an IDX file starting 0x00 0x00, found 0x{zero0:02x} 0x{zero1:02x}"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}={d.name}" for c, d in IDX_DTYPES.items())
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated: header of {ndim} dimensions needs {header_len} bytes, found {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    return IDX_DTYPES[code], shape, header_len


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX or gzipped IDX file into a writable, native-endian numpy array.

    The payload must be exactly as long as the header's dimensions say: a short file means a
    broken download and a long one means the wrong file or a wrong header, and either would
    silently shift every image, so both are errors.
    """
    data = read_bytes(path)
    dtype, shape, header_len = parse_header(path, data)
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise DataError(f"{path}: truncated: expected {expected} bytes of payload, found {found}")
    if found > expected:
        raise DataError(
            f"{path}: overlong: expected {expected} bytes of payload, found {found} "
            f"({found - expected} trailing bytes)"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_len)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as IDX, gzipped if ``path`` ends in ``.gz``; the inverse of :func:`read_idx`.

    Exists so tests and users can make small datasets in the same format as the real ones.
    """
    arr = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"{path}: cannot write dtype {arr.dtype} as IDX (no IDX dtype code)")
    if arr.ndim > 255:
        raise DataError(f"{path}: cannot write {arr.ndim} dimensions as IDX (at most 255)")
    header = bytes([0, 0, codes[native], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=native.newbyteorder(">")).tobytes()
    blob = header + payload
    p = Path(path)
    p.write_bytes(gzip.compress(blob) if p.name.endswith(".gz") else blob)
    return p
