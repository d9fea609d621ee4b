"""The run directory: everything a run records, written atomically, and what lets it resume.

Layout (names a person can read)::

    DIR/config.json            resolved config
    DIR/env.json               versions, git commit, command line, device (one entry per invocation)
    DIR/state.json             levels finished so far
    DIR/results.csv            long format, one row per evaluation
    DIR/level_03/ticket_trial0.safetensors   mask.*, init.* (weights at reset) and final.* weights
    DIR/rewind.safetensors     weights at the rewind step, per trial
    DIR/.lock                  held (``fcntl.flock``) by the one process writing the run; holds its PID

A file that cannot be read gives one line naming it and what to delete to redo only the work it holds
(:func:`read_json`); a level whose directory is gone is trained again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConfigError, RunDirError
from .io import atomic_write_json, atomic_write_text, make_dir, remove_stale_temps

STATE_TODO = "delete it to redo every level (or trial) of this run"

# Fields that may change between invocations of the same run without changing its results.
RESUMABLE_FIELDS = ("levels", "device", "batched", "description")


def git_commit() -> str | None:
    """Commit of the lth source tree (with '-dirty' if it has uncommitted changes), if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str = "cpu") -> dict:
    import numpy
    import torch

    from . import __version__, threads

    env = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "lth": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threading": threads.record(),  # OMP wait policy and thread count: lth's choice, the user's
        "device": device,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    try:  # an embedded bpe<N> tokenizer is rebuilt by it, so its version belongs to the run
        import sentencepiece

        env["sentencepiece"] = sentencepiece.__version__
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name()
    return env


def read_json(path: Path, todo: str, *, kind: type = dict):
    """``path``'s JSON (a ``kind``), or one line naming the file and ``todo`` (what to delete to redo)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(obj, kind):
            raise ValueError(f"a JSON {type(obj).__name__}, not a {kind.__name__}")
        return obj
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunDirError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]}); {todo}") from None


def int_list(obj: dict, key: str, path: Path, todo: str) -> list[int]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise RunDirError(f"{path}: {key!r} is not a list of non-negative integers; {todo}")
    return v


class RunDir:
    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer  # only rank 0 writes under torchrun
        self._lock = None  # the open lock file while this process holds the run

    # --- one writer -------------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold ``DIR/.lock`` (an advisory ``flock``) until :meth:`unlock` or this process ends; a run
        another process holds gives one line with its PID."""
        import fcntl

        if self._lock is not None or not self.writer:
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path}: a file, not a run directory; choose another --out")
        make_dir(self.path)
        lock_path = self.path / ".lock"
        try:
            f = open(lock_path, "a+")
        except OSError as exc:
            raise RunDirError(f"{lock_path}: cannot open the run's lock file ({exc.strerror})") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise RunDirError(f"{self.path} is in use by another lth process (pid {pid}); wait for it to "
                              "finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    # --- config and environment ---------------------------------------------------------------

    def open(self, config: dict, device: str, defaults: dict | None = None) -> None:
        """Create the directory, or check that an existing one was made by the same config.

        A field absent from the stored config (the run predates it) counts as ``defaults[field]``: fields
        are added with a default that keeps the old behaviour, so such a run resumes unless it is now
        asked for something else."""
        cfg_path = self.path / "config.json"
        self.lock()
        if cfg_path.exists():
            old = read_json(cfg_path, f"it is not a run lth can resume: choose another --out, or delete "
                                      f"{self.path} to start over")
            old = {**(defaults or {}), **old}  # what the run was made with, fields it predates at their defaults
            diff = sorted(
                k for k in set(old) | set(config) if k not in RESUMABLE_FIELDS and old.get(k) != config.get(k)
            )
            if diff:
                k = diff[0]
                raise ConfigError(
                    f"{self.path} holds a run with a different config ({k}: {old.get(k)!r} there, "
                    f"{config.get(k)!r} now); use another --out or the same settings to resume"
                )
        state = self.state()  # an unreadable state.json is refused before anything is written
        for key in ("levels_done", "trials_done"):
            int_list(state, key, self.path / "state.json", STATE_TODO)
        if not self.writer:
            return
        remove_stale_temps(self.path)  # what killed writers left: nobody else writes here now
        atomic_write_json(cfg_path, config)
        env_path = self.path / "env.json"
        todo = "delete it (it only records earlier invocations)"
        history = read_json(env_path, todo).get("invocations", []) if env_path.exists() else []
        if not isinstance(history, list):
            raise RunDirError(f"{env_path}: 'invocations' is not a list; {todo}")
        atomic_write_json(env_path, {"invocations": history + [environment(device)]})

    # --- progress state -------------------------------------------------------------------------

    def state(self) -> dict:
        """``state.json`` (``{}`` before the first finished level)."""
        p = self.path / "state.json"
        return read_json(p, STATE_TODO) if p.exists() else {}

    def done_levels(self) -> list[int]:
        return int_list(self.state(), "levels_done", self.path / "state.json", STATE_TODO)

    def mark_done(self, level: int) -> None:
        if self.writer:
            done = sorted(set(self.done_levels()) | {level})
            atomic_write_json(self.path / "state.json", {"levels_done": done})

    # --- results --------------------------------------------------------------------------------

    def read_rows(self) -> list[dict]:
        p = self.path / "results.csv"
        if not p.exists():
            return []
        todo = "delete it and state.json to redo every level (checkpoints are rewritten)"
        try:
            with open(p, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                int(r["level"]), int(r["trial"])  # noqa: B018 - what replacing a level's rows needs
        except (OSError, ValueError, KeyError, TypeError, csv.Error) as exc:
            raise RunDirError(f"{p}: unreadable ({type(exc).__name__}: {str(exc)[:120]}); {todo}") from None
        return rows

    def write_rows(self, rows: list[dict]) -> None:
        if not self.writer:
            return
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path / "results.csv", buf.getvalue())

    def replace_level_rows(self, level: int, rows: list[dict]) -> None:
        """Results of ``level`` become ``rows`` (rows a killed attempt left behind are dropped)."""
        kept = [r for r in self.read_rows() if int(r["level"]) != level]
        self.write_rows(kept + rows)

    def level_dir(self, level: int) -> Path:
        return self.path / f"level_{level:02d}"
