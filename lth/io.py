"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Everything lth writes goes to a temporary file in the same directory and is renamed over the target
with ``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from .errors import LthError

# ``.<name>.<pid>.<8 hex>.tmp``: what :func:`atomic_write_bytes` writes before its rename
TEMP_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")

# torch is imported inside the tensor functions only, so that reports (which import this module)
# do not pay for it.


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, then ``os.replace`` it over ``path``.

    ``os.open`` with mode 0o666 gives the file the umask's usual permissions (mkstemp's are 0o600).
    """
    def write(tmp: Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)

    atomic_write_with(path, write)


def atomic_write_with(path: str | Path, write) -> None:
    """``write(tmp)`` creates a temp file beside ``path``; it is synced to disk and renamed over ``path``,
    or removed if anything fails (an OSError becomes :func:`unwritable`'s one line)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    make_dir(path.parent)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. a directory where the file goes, a full disk
            raise unwritable(path, exc) from None
        raise


def unwritable(path, exc: OSError) -> LthError:
    """One line for a path lth cannot write: a file in the way, no permission, a full disk."""
    why = {NotADirectoryError: "a parent is a file, not a directory", FileExistsError: "a file is in the way",
           PermissionError: "permission denied", IsADirectoryError: "it is a directory"}.get(type(exc), exc.strerror)
    return LthError(f"{path}: cannot write ({why or exc}); choose another path")


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` with one line (:func:`unwritable`) when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(path, exc) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise unwritable(path, PermissionError(13, "permission denied"))
    return path


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete the temp files killed writers left under ``root`` (call only while holding its lock)."""
    gone = []
    for p in Path(root).rglob(".*.tmp"):
        if TEMP_NAME.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """Save tensors as safetensors, atomically (never pickle)."""
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    def write(tmp: Path) -> None:  # save_file streams to the file: no second in-memory copy (a 12-member
        save_file(data, str(tmp), metadata=metadata)  # BERT snapshot is ~4 GB); it makes the file 0o600
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions every other file of a run gets

    atomic_write_with(path, write)


def _umask() -> int:
    try:  # Linux: read it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_tensors(path: str | Path, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))
