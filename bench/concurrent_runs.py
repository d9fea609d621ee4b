"""Concurrent runs on one machine: one `lth train mnist_lenet_300_100 --epochs 1` alone, against two and
four of them started at once (each the same run, so k at once is k times the work of one).

Each run is its own `lth` process with lth's threading defaults (OMP_WAIT_POLICY=PASSIVE unless the
user set it: lth/threads.py). Prints, and writes to bench/results/concurrent_runs.json and the
"Concurrent runs" section of docs/benchmarks.md:

- ``wall_vs_alone``: the wall time until all k finish, over the time one takes alone (the issue's
  target: two at once within 1.5x on 2 cores);
- ``vs_one_after_another``: that wall time over k runs one after another (k x alone): below 1 means
  running them together costs no throughput.

The machine's load average before and after is recorded beside the numbers: other jobs on the same
cores slow every row alike. ``--smoke`` runs 5 iterations per run into a temporary directory and
writes nothing under bench/ or docs/. ``--policy ACTIVE`` measures the spinning default lth replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Concurrent runs on one machine"


def start(out: Path, smoke: bool, env: dict) -> subprocess.Popen:
    work = ["--iterations", "5", "--eval-every", "5"] if smoke else ["--epochs", "1"]
    cmd = [sys.executable, "-m", "lth.cli", "train", "mnist_lenet_300_100", "--out", str(out), "--no-progress",
           "--device", "cpu", *work]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def at_once(k: int, base: Path, smoke: bool, env: dict) -> dict:
    t = time.perf_counter()
    procs = [start(base / f"k{k}_run{i}", smoke, env) for i in range(k)]
    each = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a run failed (exit {p.returncode}): {err.strip()[-500:]}")
        each.append(time.perf_counter() - t)
    return {"runs": k, "wall_s": round(max(each), 2), "each_s": [round(x, 2) for x in each]}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def docs_section(res: dict) -> str:
    rows = ["| runs at once | wall (s) | wall / one alone | wall / (k x one alone) |", "|---|---:|---:|---:|"]
    for r in res["rows"]:
        rows.append(f"| {r['runs']} | {r['wall_s']:.1f} | {r['wall_vs_alone']:.2f}x | {r['vs_one_after_another']:.2f} |")
    th = res["threading"]
    return "\n".join([
        SECTION, "",
        f"`python bench/concurrent_runs.py` ({res['cores']} cores; {res['date']}): `lth train mnist_lenet_300_100 "
        "--epochs 1` alone, then 2 and 4 of them started together (k at once = k times the work). lth sets "
        "`OMP_WAIT_POLICY=PASSIVE` before torch starts unless the user set it (`lth/threads.py`; recorded in "
        f"`env.json` under `threading`); this run: OMP_WAIT_POLICY={th['OMP_WAIT_POLICY']}, "
        f"OMP_NUM_THREADS={th['OMP_NUM_THREADS'] or 'unset (torch default)'}.", "",
        *rows, "",
        f"Load average (1, 5, 15 min) before: {res['load_before']}, after: {res['load_after']}. "
        + ("The machine was shared with other jobs during this run, so every row is slowed by them; "
           if res["load_before"][0] >= 0.5 else "")
        + "before the change, two at once took 92 s against 13 s alone (spinning OpenMP threads; issue 10).",
        "",
        f"Two at once within 1.5x of one alone: **{'yes' if res['two_within_1_5x'] else 'no'}** "
        f"({res['rows'][1]['wall_vs_alone']:.2f}x).", "",
        *active_note(), ])


def active_note() -> list[str]:
    """The spinning default for comparison (`--policy ACTIVE --counts 1,2`), if it was measured."""
    p = ROOT / "bench" / "results" / "concurrent_runs_active.json"
    if not p.exists():
        return []
    a = json.loads(p.read_text())
    r = {x["runs"]: x for x in a["rows"]}
    return [f"For comparison, `--policy ACTIVE --counts 1,2` (the spinning OpenMP default, {a['date']}, load "
            f"average before {a['load_before']}): one alone {r[1]['wall_s']:.1f} s, two at once "
            f"{r[2]['wall_s']:.1f} s ({r[2]['wall_vs_alone']:.2f}x). Under other jobs' load a spinning run is "
            "slowed even alone.", ""]


def write_docs(section: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + section + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="5 iterations per run, nothing written under bench/ or docs/")
    ap.add_argument("--counts", default="1,2,4", help="runs at once to measure (the first must be 1)")
    ap.add_argument("--docs-only", action="store_true",
                    help="rewrite the docs section from bench/results/concurrent_runs.json, measure nothing")
    ap.add_argument("--policy", default=None, help="set OMP_WAIT_POLICY for every run (default: lth's choice)")
    args = ap.parse_args(argv)
    if args.docs_only:
        res = json.loads((ROOT / "bench" / "results" / "concurrent_runs.json").read_text())
        write_docs(docs_section(res))
        return 0
    counts = [int(c) for c in args.counts.split(",")]
    assert counts[0] == 1, "the first count is the run alone"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.policy:
        env["OMP_WAIT_POLICY"] = args.policy
    before = load()
    with tempfile.TemporaryDirectory(prefix="lth_concurrent_") as tmp:
        rows = [at_once(k, Path(tmp), args.smoke, env) for k in counts]
        threading = json.loads((Path(tmp) / "k1_run0" / "env.json").read_text())["invocations"][-1]["threading"]
    alone = rows[0]["wall_s"]
    for r in rows:
        r["wall_vs_alone"] = round(r["wall_s"] / alone, 3)
        r["vs_one_after_another"] = round(r["wall_s"] / (r["runs"] * alone), 3)
    res = {"cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "smoke": args.smoke,
           "policy_override": args.policy, "threading": threading, "load_before": before, "load_after": load(),
           "rows": rows}
    two = [r for r in rows if r["runs"] == 2]
    res["two_within_1_5x"] = bool(two) and two[0]["wall_vs_alone"] <= 1.5
    for r in rows:
        print(f"{r['runs']} at once: {r['wall_s']:7.2f} s  ({r['wall_vs_alone']:.2f}x one alone, "
              f"{r['vs_one_after_another']:.2f} of one after another)")
    print(f"load average before {before}, after {res['load_after']}; threading {threading}")
    if not args.smoke:
        sys.path.insert(0, str(ROOT / "bench"))
        from common import record

        print(f"wrote {record('concurrent_runs' + (f'_{args.policy.lower()}' if args.policy else ''), res)}")
        if args.policy is None and len(two) == 1 and counts == [1, 2, 4]:
            write_docs(docs_section(res))
            print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
