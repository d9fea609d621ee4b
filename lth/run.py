"""The run directory: everything a run records, written atomically, and what lets it resume.

Layout (names a person can read)::

    DIR/config.json            resolved config
    DIR/env.json               versions, git commit, command line, device (one entry per invocation)
    DIR/state.json             levels finished so far
    DIR/results.csv            long format, one row per evaluation
    DIR/level_03/ticket_trial0.safetensors   mask.*, init.* (weights at reset) and final.* weights
    DIR/rewind.safetensors     weights at the rewind step, per trial
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

from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text

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


class RunDir:
    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer  # only rank 0 writes under torchrun

    # --- config and environment ---------------------------------------------------------------

    def open(self, config: dict, device: str) -> None:
        """Create the directory, or check that an existing one was made by the same config."""
        cfg_path = self.path / "config.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            diff = sorted(
                k
                for k in set(old) | set(config)
                if k not in RESUMABLE_FIELDS and old.get(k) != config.get(k)
            )
            if diff:
                k = diff[0]
                raise ConfigError(
                    f"{self.path} holds a run with a different config ({k}: {old.get(k)!r} there, "
                    f"{config.get(k)!r} now); use another --out or the same settings to resume"
                )
        if not self.writer:
            return
        atomic_write_json(cfg_path, config)
        env_path = self.path / "env.json"
        history = json.loads(env_path.read_text()).get("invocations", []) if env_path.exists() else []
        atomic_write_json(env_path, {"invocations": history + [environment(device)]})

    # --- progress state -------------------------------------------------------------------------

    def done_levels(self) -> list[int]:
        p = self.path / "state.json"
        return json.loads(p.read_text())["levels_done"] if p.exists() else []

    def mark_done(self, level: int) -> None:
        if self.writer:
            done = sorted(set(self.done_levels()) | {level})
            atomic_write_json(self.path / "state.json", {"levels_done": done})

    # --- results --------------------------------------------------------------------------------

    def read_rows(self) -> list[dict]:
        p = self.path / "results.csv"
        if not p.exists():
            return []
        with open(p, newline="") as f:
            return list(csv.DictReader(f))

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
