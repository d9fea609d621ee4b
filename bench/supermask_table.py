"""The supermask quality table: rule x init x density -> test accuracy of LeNet-300-100 on MNIST whose
weights are never trained (mean ± std over trials, trained together as one batched model).

    python bench/supermask_table.py [--trials 3] [--out bench/runs/supermask]
        [--cells topk:0.5,0.3,0.1 ste:0.5 bernoulli:0.5] [--inits signed_constant,kaiming_normal]

Each cell is `lth supermask PRESET --out OUT/RULE_INIT_dDENSITY --init INIT --density DENSITY --trials T`
with the rule's preset recipe (mnist_supermask, mnist_supermask_ste, mnist_supermask_bernoulli; 8 epochs),
so a killed table resumes cell by cell. Writes bench/results/supermask_table.json and the block between
the markers in docs/supermask.md (the text around it is kept); every number is read back from the runs'
results.csv.
"""

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import common
from common import ROOT, record

from lth import supermask as S
from lth.io import atomic_write_json
from lth.presets import override, preset

PRESETS = {"topk": "mnist_supermask", "ste": "mnist_supermask_ste", "bernoulli": "mnist_supermask_bernoulli"}
DEFAULT_CELLS = ["topk:0.5,0.3,0.1", "ste:0.5,0.3,0.1", "bernoulli:0.5,0.3,0.1"]


def parse_cells(items: list[str]) -> list[tuple[str, float]]:
    out = []
    for item in items:
        rule, _, densities = item.partition(":")
        if rule not in PRESETS or not densities:
            sys.exit(f"error: cells look like topk:0.5,0.3 (rules {', '.join(PRESETS)}), got {item!r}")
        out += [(rule, float(d)) for d in densities.split(",")]
    return out


def final_rows(run_dir: Path) -> list[dict]:
    """Each trial's row at the last step (the numbers a packed ticket reproduces). Read with csv, not
    lth.report: a bernoulli run at low density has an empty evaluation mask at step 0 (remaining 0.0),
    which the report refuses."""
    with open(run_dir / "results.csv", newline="") as f:
        rows = [{k: v if k == "experiment" else float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    last = max(int(r["step"]) for r in rows)
    return sorted((r for r in rows if int(r["step"]) == last), key=lambda r: int(r["trial"]))


def mean_std(xs) -> tuple[float, float]:
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


def run_cell(rule: str, init: str, density: float, trials: int, out: Path, epochs: float | None) -> dict:
    values = {"init": init, "density": density, "trials": trials}
    if epochs is not None:
        values["epochs"] = epochs
    cfg = override(preset(PRESETS[rule]), values)
    run_dir = out / f"{rule}_{init}_d{density:g}"
    t0 = time.perf_counter()
    sm = S.SupermaskRun(cfg, run_dir, progress=sys.stderr.isatty())
    fresh = not sm.trials_done()
    sm.run_trials()
    # A resumed table must still report how long each cell took to train: kept beside its run.
    timing = run_dir / "bench_seconds.json"
    if fresh:
        atomic_write_json(timing, {"seconds": round(time.perf_counter() - t0, 1),
                                   "torch_threads": torch.get_num_threads()})
    took = json.loads(timing.read_text()) if timing.exists() else {"seconds": None, "torch_threads": None}
    rows = final_rows(run_dir)
    acc_m, acc_s = mean_std([r["test_acc"] for r in rows])
    dens_m, dens_s = mean_std([r["remaining"] for r in rows])
    counts = S.trained_floats(sm.template, sm.names)
    return {
        "rule": rule, "init": init, "density_target": density, "density_actual_mean": dens_m,
        "density_actual_std": dens_s, "test_acc_mean": acc_m, "test_acc_std": acc_s,
        "test_acc_trials": [r["test_acc"] for r in rows], "val_acc_mean": mean_std([r["val_acc"] for r in rows])[0],
        "trials": len(rows), "step": int(rows[0]["step"]), "preset": PRESETS[rule],
        "trained_floats_shipped": counts["trained_floats_shipped"], "scores_trained": counts["scores"],
        "frozen_floats": counts["frozen"], **took, "run_dir": str(run_dir),
        "config": {k: getattr(sm.cfg, k) for k in ("optimizer", "lr", "momentum", "weight_decay", "batch_size",
                                                   "iterations", "lr_schedule", "scale_lr", "score_init",
                                                   "temperature", "temperature_final", "threshold",
                                                   "density_penalty")},
    }


BEGIN, END = "<!-- supermask_table.py: begin -->", "<!-- supermask_table.py: end -->"


def markdown(cells: list[dict], command: str, machine: str) -> str:
    """The generated part of docs/supermask.md: table, best cell, trained-float count, command, machine."""
    best = max(cells, key=lambda c: c["test_acc_mean"])
    c0 = cells[0]
    lines = [
        "| rule | init | target density | actual density | test acc (%) | trials | trained floats shipped | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        lines.append(f"| {c['rule']} | {c['init']} | {c['density_target']:.2f} | {c['density_actual_mean']:.4f} | "
                     f"{100 * c['test_acc_mean']:.2f} ± {100 * c['test_acc_std']:.2f} | {c['trials']} | "
                     f"{c['trained_floats_shipped']} | {c['seconds'] if c['seconds'] is not None else '?'} |")
    lines += [
        "",
        f"Best: **{best['rule']}** over {best['init']} at {best['density_target']:.0%} density, "
        f"{100 * best['test_acc_mean']:.2f} ± {100 * best['test_acc_std']:.2f}% "
        f"(quality bar 97%: {'met' if best['test_acc_mean'] >= 0.97 else 'NOT met'}; "
        f"goal 98%: {'met' if best['test_acc_mean'] >= 0.98 else 'not met'}).",
        "",
        f"Trained floats, exactly, per trial: {c0['scores_trained']:,} scores during training (one per masked "
        f"weight, shipped only as that many mask bits) and {c0['trained_floats_shipped']} learned scales (one "
        f"per weight matrix), the only trained floats shipped. All {c0['frozen_floats']:,} parameters of the "
        f"network (weights and biases) are regenerated from the seed and never change.",
        "",
        "Reproduce (resumes a killed table cell by cell, trial group by trial group):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {machine}. \"train s\" is the wall time of a cell's training (its trials batched);",
        "the machine was shared with other jobs, so equal cells can differ by 2x.",
    ]
    return "\n".join(lines)


def write_doc(path: Path, generated: str) -> None:
    """Replace the generated block of ``path``, keeping the hand-written text around it."""
    from lth.io import atomic_write_bytes

    block = f"{BEGIN}\n{generated}\n{END}"
    text = path.read_text() if path.exists() else f"# Supermasks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        sys.exit(f"error: {path} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    atomic_write_bytes(path, (head + block + rest.split(END, 1)[1]).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "runs" / "supermask"))
    ap.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, help="RULE:D1,D2,... per rule")
    ap.add_argument("--inits", default="signed_constant,kaiming_normal")
    ap.add_argument("--epochs", type=float, default=None, help="override the presets' 8 epochs (smoke runs)")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/supermask.md")
    args = ap.parse_args()

    cells = []
    grid = parse_cells(args.cells)
    rules = list(dict.fromkeys(rule for rule, _ in grid))
    order = [(r, i, d) for r in rules for i in args.inits.split(",") for rr, d in grid if rr == r]
    for rule, init, density in order:
        c = run_cell(rule, init, density, args.trials, Path(args.out), args.epochs)
        cells.append(c)
        print(f"{rule:<9} {init:<15} target {density:.2f}  actual {c['density_actual_mean']:.4f}  "
              f"test acc {100 * c['test_acc_mean']:.2f} ± {100 * c['test_acc_std']:.2f}%  "
              f"trained floats {c['trained_floats_shipped']}  ({c['seconds']} s)", flush=True)
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = threads + " ".join(["python bench/supermask_table.py", *map(shlex.quote, sys.argv[1:])])
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
               f"torch {torch.__version__} (CPU)")
    best = max(cells, key=lambda c: c["test_acc_mean"])
    checks = {"best_cell": {k: best[k] for k in ("rule", "init", "density_target", "test_acc_mean", "test_acc_std")},
              "best_test_acc_at_least_97": best["test_acc_mean"] >= 0.97,
              "best_test_acc_at_least_98": best["test_acc_mean"] >= 0.98}
    path = record("supermask_table", {"command": command, "machine": machine, "checks": checks, "cells": cells})
    print(f"wrote {path}")
    if not args.no_docs:
        write_doc(ROOT / "docs" / "supermask.md", markdown(cells, command, machine))
        print(f"wrote {ROOT / 'docs' / 'supermask.md'}")


if __name__ == "__main__":
    common.run_main(main)
