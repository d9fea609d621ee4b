"""A general-purpose compressor as the baseline a language model must beat: xz's bits per byte on the
validation text *given* the training text.

A model that has trained on the training split is compared with a compressor that has read it: the
cost of the validation text is what it adds to an xz stream that already holds the training text,

    bpb = (len(xz(train + val)) - len(xz(train))) * 8 / len(val as UTF-8)

with ``xz -9e`` settings (``preset 9 | PRESET_EXTREME``: LZMA2, 64 MiB dictionary, so a training text
up to 64 MiB is all within reach of the validation text). The container is the XZ format with
``CHECK_NONE``: no integrity check, so the sizes count only the coded data (a CRC32/CRC64 check would
add the same 4/8 bytes to both streams and cancel in the difference anyway).
"""

from __future__ import annotations

import lzma

from lth.errors import ConfigError

PRESET = 9 | lzma.PRESET_EXTREME  # = xz -9e
CHECK = lzma.CHECK_NONE


def xz_size(data: bytes) -> int:
    """Bytes of ``data`` compressed as an XZ stream at ``xz -9e`` with no integrity check."""
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, check=CHECK, preset=PRESET))


def conditional_bpb(train_text: str, val_text: str) -> dict:
    """xz's rate on ``val_text`` after it has seen ``train_text``, in bits per UTF-8 byte of val.

    Returns train_bytes, val_bytes, xz_train_bytes, xz_all_bytes (xz of train + val) and bpb.
    """
    train, val = train_text.encode("utf-8"), val_text.encode("utf-8")
    if not val:
        raise ConfigError("conditional_bpb needs a non-empty validation text")
    xz_train, xz_all = xz_size(train), xz_size(train + val)
    return {
        "train_bytes": len(train),
        "val_bytes": len(val),
        "xz_train_bytes": xz_train,
        "xz_all_bytes": xz_all,
        "bpb": (xz_all - xz_train) * 8 / len(val),
    }
