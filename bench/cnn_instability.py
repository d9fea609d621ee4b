"""Instability analysis of dense ResNet-20 width 8 on Fashion-MNIST-32 (Frankle et al. 2020), resumable.

    python bench/cnn_instability.py [--schedule long|cpu]

``long``: the ``fmnist_resnet20_cpu`` recipe trained 4x longer (2,496 steps = 32 epochs of the first
10,000 images; milestones at 2/3 and 5/6 as in the preset), k in {0, 100, 500, 2000} (the issue's grid).
``cpu``: the preset's own 624-step schedule, k in {0, 25, 50, 100, 200, 400}: the barrier the rewinding
runs of that preset should look at.

Trains the dense network (1 trial, ``levels=0``) into ``bench/runs/cnn/instability_<schedule>``, runs
``lth instability`` on it (two copies per k with different data orders and augmentation, 11 points,
BatchNorm statistics recomputed at interior points), and writes ``docs/cnn/instability_<schedule>/``:
the table, both plots, the JSON and the check "the barrier falls as k grows" (the barrier at the
largest k is below the barrier at k = 0), plus the suggested ``--rewind-step`` (smallest k with barrier
<= 2 points).
"""

import argparse
import time

import common
from common import ROOT, record

from lth import instability, lottery
from lth.presets import override, preset
from lth.instability_report import format_instability

SCHEDULES = {"long": (2496, [0, 100, 500, 2000]), "cpu": (624, [0, 25, 50, 100, 200, 400]),
             "smoke": (20, [0, 10])}  # smoke: the script's mechanics in a minute


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedule", choices=sorted(SCHEDULES), default="long")
    args = ap.parse_args()
    steps, ks = SCHEDULES[args.schedule]
    cfg = override(preset("fmnist_resnet20_cpu"), dict(
        iterations=steps, milestones=[round(steps * 2 / 3), round(steps * 5 / 6)], levels=0, trials=1,
        controls=[], epochs=None, eval_every=max(10, steps // 8)))
    label = f"instability_{args.schedule}"
    out, docs = ROOT / "bench" / "runs" / "cnn" / label, ROOT / "docs" / "cnn" / label
    t = time.time()
    lottery.run(cfg, out, dense_only=True)
    doc = instability.run(out, 0, ks, trials=[0])
    minutes = (time.time() - t) / 60
    table = format_instability(doc, trial=0)
    barriers = {int(k): v["barrier"] for k, v in doc["trials"]["0"]["steps"].items()}
    check = {"check": f"barrier falls as k grows (k={max(ks)} below k=0)",
             "value": {k: round(100 * b, 2) for k, b in barriers.items()},
             "pass": barriers[max(ks)] < barriers[0]}
    common.copy_outputs(out / "instability" / "level_00", docs)
    line = f"{'PASS' if check['pass'] else 'FAIL'}  {check['check']}: {check['value']} (points)"
    (docs / "table.txt").write_text(f"python bench/cnn_instability.py --schedule {args.schedule}\n\n{table}\n\n{line}\n")
    record(f"cnn_{label}", {"config": cfg.to_dict(), "ks": ks, "barriers": barriers, "check": check,
                            "minutes_this_invocation": minutes})
    print(table)
    print(line)
    print(f"this invocation: {minutes:.1f} min")


if __name__ == "__main__":
    common.run_main(main)
