"""Shared helpers for the benchmarks: the machine's float32 matmul peak, a results record, kept runs, and
``run_main`` (lth's one-line errors and resume hint, as the CLI prints them)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_peak_gflops(n: int = 2048, reps: int = 20, dtype=torch.float32, device="cpu") -> float:
    """Best-of-3 sustained GFLOP/s of an n x n matmul: the practical peak that models are held to."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def record(name: str, payload: dict) -> Path:
    """Write results JSON with the environment beside them (bench/results/NAME.json)."""
    from lth.io import atomic_write_json
    from lth.run import environment

    out = ROOT / "bench" / "results" / f"{name}.json"
    atomic_write_json(out, {"environment": environment(), "machine": platform.machine(), **payload})
    return out


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(f"{c:>{widths[c]}}" for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(f"{str(r.get(c, '')):>{widths[c]}}" for c in cols) for r in rows]
    return "\n".join(lines)


# --- results that outlive a session's run directories -------------------------------------------------
# A long benchmark spans sessions, and ``bench/runs/`` (git-ignored) may not survive from one to the next.
# When a run finishes, its small files are kept in a tracked folder beside the benchmark's docs; a later
# invocation uses the kept copy instead of running it again (lth's report and merge read only these files).

KEPT_FILES = ("config.json", "metrics.json", "results.csv", "env.json", "state.json")
DONE = "kept.json"


def keep(run_dir: Path, kept_dir: Path, requested: dict, **extra) -> Path:
    """Copy the finished run ``run_dir``'s small files into ``kept_dir``; ``requested`` (the config the
    benchmark asked for) and ``extra`` (JSON) are written last, in ``kept.json``, which marks it complete."""
    from lth.io import atomic_write_bytes, atomic_write_json

    kept_dir.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        if (run_dir / name).is_file():
            atomic_write_bytes(kept_dir / name, (run_dir / name).read_bytes())
    atomic_write_json(kept_dir / DONE, {"requested": requested, **extra})
    return kept_dir


def kept(kept_dir: Path, requested: dict) -> dict | None:
    """``kept.json`` of ``kept_dir`` if it holds a finished run of the config ``requested``, else None.
    A config field the kept run predates counts as at its default (as ``lth.run.RunDir.open`` does), so
    adding a field to ``Config`` does not make every kept run stale."""
    path = kept_dir / DONE
    if not path.is_file():
        return None
    from lth.presets import Config
    from lth.run import read_json

    doc = read_json(path, f"delete {kept_dir} to run it again")
    have, want = doc.get("requested"), json.loads(json.dumps(requested, default=str))
    if not isinstance(have, dict):
        return None
    defaults = json.loads(json.dumps(Config().to_dict(), default=str))
    have = {**{k: defaults[k] for k in want.keys() - have.keys() if k in defaults}, **have}
    return doc if want == have else None


def copy_outputs(src: Path, dst: Path, suffixes=(".png", ".json")) -> None:
    """Copy the files of ``src`` whose suffix is in ``suffixes`` into ``dst`` (made if missing)."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in suffixes:
            shutil.copy(f, dst / f.name)


def run_main(main) -> None:
    """Run a benchmark's ``main()`` the way ``lth`` runs a command: an ``LthError`` (a missing run, a bad
    flag) is one line on stderr and exit status 2; Ctrl-C says to run the same command again to resume."""
    from lth.errors import LthError

    try:
        rc = main()
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)


def loop_step_seconds(ens, task, cfg, seeds: list[int] | None = None) -> float:
    """Median seconds per step of ``cfg.iterations`` steps of lth's own training loop (``lth.train.train``)
    on the ensemble ``ens`` (one member seed each in ``seeds``; default ``[cfg.seed]``), the first two
    steps not counted (allocation and warm-up)."""
    import statistics

    from lth.train import TrainSpec, train

    times = []

    class Timer:  # the loop's progress bar: called once per step
        last = None

        def update(self, n):
            now = time.perf_counter()
            if self.last is not None:
                times.append(now - self.last)
            self.last = now

    train(ens, {}, task, TrainSpec.from_config(cfg), seeds or [cfg.seed], progress=Timer())
    return statistics.median(times[1:])  # times[0] is step 1 (step 0 is the loop's first, not timed)
