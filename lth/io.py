"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Everything lth writes goes to a temporary file in the same directory and is renamed over the target
with ``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

# torch is imported inside the tensor functions only, so that reports (which import this module)
# do not pay for it.


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, then ``os.replace`` it over ``path``.

    ``os.open`` with mode 0o666 gives the file the umask's usual permissions (mkstemp's are 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """Save tensors as safetensors, atomically (never pickle)."""
    from safetensors.torch import save

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata=metadata))


def load_tensors(path: str | Path, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))
