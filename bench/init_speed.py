"""Time lth.init.generate: float32 normal / uniform / signed_constant values per second.

    python bench/init_speed.py [--elements 100000000] [--threads 1 2]

Prints a table and writes bench/results/init_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lth.init import Dist, generate, weights_sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=100_000_000)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--kinds", nargs="+", default=["normal", "uniform", "signed_constant"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "init_speed.json")
    args = ap.parse_args()

    old = torch.get_num_threads()
    rows = []
    print(f"{'elements':>12} {'scheme':>16} {'threads':>7} {'seconds':>8} {'M el/s':>8} {'ms/M el':>8}  sha256[:16]")
    try:
        for kind in args.kinds:
            for threads in args.threads:
                torch.set_num_threads(threads)  # lth.init sizes its thread pool from this
                t0 = time.perf_counter()
                x = generate(0, "bench.weight", (args.elements,), Dist(kind, 0.02))
                dt = time.perf_counter() - t0
                digest = weights_sha256({"x": x})[:16]
                del x
                row = {
                    "elements": args.elements,
                    "scheme": kind,
                    "threads": threads,
                    "seconds": round(dt, 3),
                    "M_elements_per_s": round(args.elements / dt / 1e6, 1),
                    "ms_per_M_elements": round(dt / args.elements * 1e9, 2),
                    "sha256_16": digest,
                }
                rows.append(row)
                print(
                    f"{row['elements']:>12,} {kind:>16} {threads:>7} {row['seconds']:>8.2f} "
                    f"{row['M_elements_per_s']:>8.1f} {row['ms_per_M_elements']:>8.2f}  {digest}"
                )
    finally:
        torch.set_num_threads(old)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
