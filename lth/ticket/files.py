"""Reading a ticket path: a regular file only, with a size cap, never a hang.

A directory, a device such as ``/dev/zero``, a named pipe or a socket is refused from ``stat`` alone
(nothing is opened that could block or read without end); the file is then opened non-blocking, checked
again (it may have been swapped) and read up to ``MAX_FILE_BYTES`` (1 GiB; raise it through the package,
``lth.ticket.MAX_FILE_BYTES = ...``). Every problem is a one-line :class:`TicketError` naming the path.
"""

from __future__ import annotations

import os
import stat

from .coding import TicketError

MAX_FILE_BYTES = 1 << 30


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")


def _read_regular(path) -> bytes:
    mode = os.stat(path).st_mode  # stat does not open: a FIFO cannot block here
    if not stat.S_ISREG(mode):
        raise TicketError(f"{_kind(mode)}, not a ticket file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise TicketError(f"{_kind(st.st_mode)}, not a ticket file")
        if st.st_size > MAX_FILE_BYTES:
            raise TicketError(f"{st.st_size:,} bytes is over lth.ticket.MAX_FILE_BYTES={MAX_FILE_BYTES:,}")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise TicketError(f"grew past lth.ticket.MAX_FILE_BYTES={MAX_FILE_BYTES:,} while read")
    return data


def read_file(path) -> bytes:
    """A ticket file's bytes: a regular file only, at most ``MAX_FILE_BYTES`` (a directory, a device such
    as /dev/zero or a named pipe is refused without reading from it)."""
    try:
        return _read_regular(path)
    except TicketError as e:
        raise TicketError(_line(f"{path}: {e}")) from None
    except (OSError, ValueError) as e:
        raise TicketError(_line(f"{path}: cannot read ticket: {getattr(e, 'strerror', None) or e}")) from None


def _line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
