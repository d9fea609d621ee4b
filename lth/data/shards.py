"""Token shards: the parameter-golf binary format (a ``lth data encode`` directory's train.bin / val.bin).

A shard is a little-endian header of ``HEADER_INTS`` int32 (``MAGIC``, ``VERSION``, the token count, the
rest zero) followed by the tokens as uint16, so a vocabulary has at most ``MAX_VOCAB`` tokens.
:func:`write_shard` writes one atomically; :func:`read_shard` validates magic, version, count and size
and fails in one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lth.data.idx import one_line
from lth.errors import DataError
from lth.io import atomic_write_bytes

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
MAX_VOCAB = 1 << 16  # tokens are uint16


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write ``tokens`` (ints in [0, 65535]) as a shard, atomically; returns the path."""
    toks = np.asarray(tokens)
    if toks.ndim != 1:
        raise DataError(f"{path}: tokens must be 1-D, got shape {toks.shape}")
    if toks.size and not np.issubdtype(toks.dtype, np.integer):
        raise DataError(f"{path}: tokens must be integers, got dtype {toks.dtype}")
    if toks.size and (toks.min() < 0 or toks.max() >= MAX_VOCAB):
        raise DataError(f"{path}: tokens must lie in [0, {MAX_VOCAB - 1}], found [{toks.min()}, {toks.max()}]")
    if toks.size > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {toks.size} tokens do not fit the header's int32 count")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, toks.size)
    atomic_write_bytes(path, header.tobytes() + toks.astype("<u2").tobytes())
    return Path(path)


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The tokens of a shard as a read-only uint16 ``np.memmap`` (an empty array for 0 tokens).

    Rejects a file that is not a regular file, has a short header, a wrong magic or version, or whose
    size is not exactly ``1024 + 2 * count``, with a one-line DataError naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: {'not a regular file' if p.exists() else 'no such file'}")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from exc
    if len(head) < HEADER_BYTES:
        raise DataError(f"{path}: truncated: {len(head)} bytes, shorter than the {HEADER_BYTES}-byte shard header")
    magic, version, count = (int(v) for v in np.frombuffer(head, dtype="<i4", count=3))
    if magic != MAGIC:
        raise DataError(f"{path}: bad magic {magic}: not a token shard (expected {MAGIC})")
    if version != VERSION:
        raise DataError(f"{path}: unsupported shard version {version} (expected {VERSION})")
    if count < 0 or size != HEADER_BYTES + 2 * count:
        raise DataError(
            f"{path}: size {size} bytes does not match the header's {count} tokens "
            f"(expected {HEADER_BYTES + 2 * max(count, 0)} bytes)"
        )
    if count == 0:
        return np.zeros(0, dtype="<u2")
    return np.memmap(p, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))
