"""Why IMP reset to init (k = 0) does not fail on ResNet-20 width 8 here: the instability of the
tickets themselves beside the dense network's, on the lottery run's own schedule. Resumable.

    python bench/cnn_ticket_instability.py [--run bench/runs/cnn/fmnist_resnet20_cpu] [--levels 0,1,5]
                                           [--steps 0,100]

Needs the lottery run ``python bench/cnn_lottery.py fmnist_resnet20_cpu`` (lr 0.1, k = 0, 624 steps a
level). For each level L (0: the dense network; L > 0: level L's ticket reset to init) and each step k,
``lth instability RUN --level L --steps K`` (trial 0): two copies trained from the state at step k with
different data orders and augmentation draws, the test error along the line between them (11 points,
BatchNorm statistics recomputed at interior points), the barrier (max error minus the ends' mean).
An analysis already in the run directory is not redone (the command resumes).

Writes ``docs/cnn/fmnist_resnet20_cpu/instability/level_LL/`` (each level's JSON and plots),
``docs/cnn/resnet20_ticket_instability.png`` (error along the path, one line per level and k: dense
dashed, tickets solid), its table, and ``bench/results/cnn_resnet20_ticket_instability.json``. The
check, Frankle et al. 2020's claim in this setting: the sparsest ticket at k = 0 is stable (barrier <=
2 points) while the dense network at k = 0 is not.
"""

import argparse
import json
import time

import common
from common import ROOT, record

from lth import instability
from lth.instability import parse_steps


def figure(docs: dict[int, dict], remaining: dict[int, float]):
    """Error (%) along the path: one line per (level, k); dense dashed, tickets solid."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    i = 0
    for level, doc in docs.items():
        for k, entry in sorted(doc["trials"]["0"]["steps"].items(), key=lambda kv: int(kv[0])):
            who = "dense" if level == 0 else f"ticket, {remaining[level]:.1f}% left"
            ax.plot(doc["alphas"], 100 * np.asarray(entry["errors"]), marker="o", markersize=3,
                    linestyle="--" if level == 0 else "-", color=f"C{i % 10}",
                    label=f"{who}, k = {k} (barrier {100 * entry['barrier']:.2f})")
            i += 1
    ax.set_xlabel("Interpolation α (0: copy A, 1: copy B)")
    ax.set_ylabel("Test error (%)")
    ax.set_title("ResNet-20 width 8, lr 0.1: dense vs tickets")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(ROOT / "bench" / "runs" / "cnn" / "fmnist_resnet20_cpu"))
    ap.add_argument("--levels", default="0,1,5")
    ap.add_argument("--steps", default="0,100")
    args = ap.parse_args()
    levels, ks = parse_steps(args.levels), parse_steps(args.steps)
    run = ROOT / args.run  # an absolute --run stays itself
    docs_dir = ROOT / "docs" / "cnn" / "fmnist_resnet20_cpu" / "instability"
    t = time.time()
    docs = {level: instability.run(run, level, ks, trials=[0]) for level in levels}
    minutes = (time.time() - t) / 60
    summary = json.loads((ROOT / "docs" / "cnn" / "fmnist_resnet20_cpu" / "results.json").read_text())["summary"]
    remaining = {int(r["level"]): 100.0 * r["remaining"] for r in summary if r["experiment"] == "ticket"}
    for level in levels:
        common.copy_outputs(run / "instability" / f"level_{level:02d}", docs_dir / f"level_{level:02d}")
    barriers = {level: {int(k): round(100 * e["barrier"], 2) for k, e in doc["trials"]["0"]["steps"].items()}
                for level, doc in docs.items()}
    lines = ["python bench/cnn_ticket_instability.py", "",
             "level  remaining (%)  " + "  ".join(f"barrier k={k:<4d}" for k in ks)]
    for level in levels:
        lines.append(f"{level:5d}  {remaining[level]:13.1f}  " + "  ".join(f"{barriers[level][k]:14.2f}" for k in ks))
    sparsest = max(levels)
    ok = 0 in levels and sparsest > 0 and 0 in ks
    check = {"check": "the sparsest ticket is stable at k = 0 (barrier <= 2 points) and the dense network is not",
             "value": {"dense_k0": barriers.get(0, {}).get(0), f"ticket_level{sparsest}_k0": barriers[sparsest].get(0)},
             "pass": bool(ok and barriers[sparsest][0] <= 100 * instability.THRESHOLD < barriers[0][0])}
    lines += ["", f"{'PASS' if check['pass'] else 'FAIL'}  {check['check']}: {check['value']}"]
    text = "\n".join(lines) + "\n"
    (ROOT / "docs" / "cnn" / "resnet20_ticket_instability.txt").write_text(text)
    fig = figure(docs, remaining)
    fig.savefig(ROOT / "docs" / "cnn" / "resnet20_ticket_instability.png", dpi=120)
    record("cnn_resnet20_ticket_instability", {"run": str(args.run), "levels": levels, "ks": ks,
                                               "remaining": remaining, "barriers": barriers, "check": check,
                                               "minutes_this_invocation": minutes})
    print(text)
    print(f"this invocation: {minutes:.1f} min")


if __name__ == "__main__":
    common.run_main(main)
