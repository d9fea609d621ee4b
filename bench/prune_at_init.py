"""Pruning at init against lottery tickets on LeNet-300-100 / MNIST, with Frankle et al.'s sanity check.

Every method goes through the same lottery command (``lth lottery mnist_lenet_300_100 --criterion X``):

* ``imp``: iterative magnitude pruning, global, 20% of the survivors per level, reset to θ0 (the ticket);
* ``snip`` (|g ⊙ w|), ``grasp`` (−w ⊙ Hg) and ``synflow`` (iterative, data-free): masks computed at
  θ0, one-shot to each level's density, with the layer-collapse guard, then trained from θ0;
* ``random``: a random mask (schedule oneshot from level 0: the scores do not depend on the weights).

Levels 7, 13 and 19 of the 20%-per-level schedule leave 0.8^7 = 21.0%, 0.8^13 = 5.5% and 0.8^19 =
1.44% of the weights; the at-init methods train only those levels (``--train-levels``). Each run has the
``random`` control, which keeps the method's per-layer counts but places the survivors at random: the
sanity check of Frankle et al. 2021 ("each method's masks shuffled within each layer: does accuracy
drop?"). 3 trials, mean ± std of test accuracy at the early-stop iteration (minimum validation loss).

    python bench/prune_at_init.py            # 12 min on 2 idle cores (Xeon); resumable (run it again)
    python bench/prune_at_init.py --smoke    # seconds: the script runs end to end

Writes ``bench/results/prune_at_init.json`` and ``docs/prune_at_init.md`` (table and findings data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common  # noqa: E402
from common import record  # noqa: E402

from lth import lottery  # noqa: E402
from lth.presets import override, preset  # noqa: E402
from lth.report import read_results, summarize  # noqa: E402

METHODS = {
    "imp": {},
    "snip": {"criterion": "snip"},
    "grasp": {"criterion": "grasp"},
    "synflow": {"criterion": "synflow"},
    "random": {"criterion": "random", "schedule": "oneshot"},
}
LEVELS = [7, 13, 19]


def config(method: str, smoke: bool):
    values = {"prune_scope": "global", "prune_rate": 0.2, "layer_rates": {}, "levels": max(LEVELS),
              "controls": ["random"], "trials": 3, "epochs": 3, "eval_every": 200, **METHODS[method]}
    if method != "imp":
        values["train_levels"] = LEVELS
    if smoke:
        values.update(trials=2, epochs=None, iterations=20, eval_every=10)
    return override(preset("mnist_lenet_300_100"), values)


def table(results: dict) -> str:
    head = "| method | masks | " + " | ".join(f"{100 * 0.8 ** L:.1f}% left" for L in LEVELS) + " |"
    lines = [head, "|" + " --- |" * (2 + len(LEVELS))]
    for method, rows in results.items():
        for branch, label in (("ticket", "its own"), ("random", "shuffled in each layer")):
            cells = []
            for L in LEVELS:
                r = next((x for x in rows if x["experiment"] == branch and x["level"] == L), None)
                cells.append("–" if r is None else f"{100 * r['test_acc_mean']:.2f} ± {100 * (r['test_acc_std'] or 0):.2f}")
            lines.append(f"| {method} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drops(results: dict) -> str:
    lines = ["| method | " + " | ".join(f"{100 * 0.8 ** L:.1f}% left" for L in LEVELS) + " |",
             "|" + " --- |" * (1 + len(LEVELS))]
    for method, rows in results.items():
        cells = []
        for L in LEVELS:
            own = next(x for x in rows if x["experiment"] == "ticket" and x["level"] == L)
            shuf = next(x for x in rows if x["experiment"] == "random" and x["level"] == L)
            cells.append(f"{100 * (own['test_acc_mean'] - shuf['test_acc_mean']):+.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny schedule: checks the script runs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "runs" / "prune_at_init"))
    args = ap.parse_args()
    out = Path(args.out) / ("smoke" if args.smoke else "full")
    results, dense = {}, None
    for method in METHODS:
        run = lottery.run(config(method, args.smoke), out / method, progress=not args.smoke)
        rows = summarize(read_results(run.path / "results.csv"))
        results[method] = [r for r in rows if r["level"] in LEVELS]
        dense = dense or next(r for r in rows if r["level"] == 0)
    text = table(results)
    print(f"dense (level 0): {100 * dense['test_acc_mean']:.2f} ± {100 * (dense['test_acc_std'] or 0):.2f}\n")
    print(text)
    if args.smoke:
        return
    payload = {"levels": LEVELS, "remaining": [0.8 ** L for L in LEVELS], "dense": dense, "results": results,
               "config": {m: config(m, False).to_dict() for m in METHODS}}
    record("prune_at_init", payload)
    doc = ROOT / "docs" / "prune_at_init.md"
    old = doc.read_text() if doc.exists() else ""
    findings = old[old.index("## Findings"):] if "## Findings" in old else ""  # hand-written: kept
    doc.write_text(f"""# Pruning at init against lottery tickets (LeNet-300-100, MNIST)

`python bench/prune_at_init.py` (3 trials, 3 epochs a level, global scope, Adam 1.2e-3, batch 60; test
accuracy at the early-stop iteration, mean ± std; JSON in `bench/results/prune_at_init.json`).
"Shuffled" is each run's `random` control: the method's per-layer counts, survivors placed at random
(Frankle et al. 2021's sanity check). Dense: {100 * dense['test_acc_mean']:.2f} ± {100 * (dense['test_acc_std'] or 0):.2f}%.

{text}

Drop in test accuracy when each method's masks are shuffled within each layer (points, own − shuffled):

{drops(results)}

{findings}""")
    print(f"wrote {doc}")


if __name__ == "__main__":
    common.run_main(main)
