"""The CNN track's lottery experiments on 2 CPU cores (Frankle & Carbin 2019, Sections 3-4), resumable.

    python bench/cnn_lottery.py fmnist_conv2_cpu [fmnist_conv4_cpu ...] [--set KEY=VALUE ...] [--tag NAME]

Runs (or resumes: every level is kept, a killed level resumes from its snapshot) ``lth lottery PRESET``
into ``bench/runs/cnn/NAME`` (NAME = the preset, plus ``--tag``), then writes into ``docs/cnn/NAME/``:
``table.txt`` (lth report's table, mean ± std over trials, and the checks below), the report's plots,
``results.json`` (summary, checks, accuracy along training, the resolved config) and a JSON with the
environment in ``bench/results/cnn_NAME.json``.

Checks (issue 11's proof, on Fashion-MNIST padded to 32x32):

- Conv-2/4/6: dense >= 85%; tickets >= dense - 0.3 points at every level down to 20% remaining and
  >= dense + 0.5 at their best; reinit >= 4 points under the ticket at the sparsest level, the gap
  widening with sparsity (its last third larger than its first third).
- ResNet-20: tickets >= reinit + 1.5 points at the sparsest level. Accuracy along training (the paper's
  Figs. 7-8: at 1/3, 2/3 and the end of each level's training) is recorded: validation accuracy at the
  evaluation nearest 1/3 and 2/3 (the test split is evaluated at early stop and at the end only), and
  test accuracy at the end.
"""

import argparse
import json
import shutil
import time

import common
from common import ROOT, record

from lth import lottery
from lth.presets import override, parse_value, preset
from lth.report import read_results, report, summarize


def near(summary, experiment, remaining):
    rows = [r for r in summary if r["experiment"] == experiment]
    return min(rows, key=lambda r: abs(r["remaining"] - remaining)) if rows else None


def pts(x: float) -> float:
    return round(100 * x, 2)


def conv_checks(summary) -> list[dict]:
    tickets = sorted((r for r in summary if r["experiment"] == "ticket"), key=lambda r: -r["remaining"])
    dense, sparse = tickets[0], tickets[-1]
    down20 = [t for t in tickets[1:] if t["remaining"] >= 0.2]
    best = max(tickets[1:], key=lambda r: r["test_acc_mean"])
    gaps = [(t["remaining"], t["test_acc_mean"] - near(summary, "reinit", t["remaining"])["test_acc_mean"])
            for t in tickets[1:]]
    third = max(1, len(gaps) // 3)
    r_sparse = near(summary, "reinit", sparse["remaining"])
    return [
        {"check": "dense test acc >= 85%", "value": pts(dense["test_acc_mean"]), "pass": dense["test_acc_mean"] >= 0.85},
        {"check": "tickets >= dense - 0.3 at every level down to 20% remaining",
         "value": {pts(t["remaining"]): pts(t["test_acc_mean"] - dense["test_acc_mean"]) for t in down20},
         "pass": all(t["test_acc_mean"] >= dense["test_acc_mean"] - 0.003 for t in down20)},
        {"check": "best ticket >= dense + 0.5", "value": f"{pts(best['test_acc_mean'] - dense['test_acc_mean'])} at "
         f"{pts(best['remaining'])}%", "pass": best["test_acc_mean"] >= dense["test_acc_mean"] + 0.005},
        {"check": f"reinit >= 4 points under the ticket at {pts(sparse['remaining'])}%",
         "value": pts(sparse["test_acc_mean"] - r_sparse["test_acc_mean"]),
         "pass": sparse["test_acc_mean"] - r_sparse["test_acc_mean"] >= 0.04},
        {"check": "ticket - reinit gap widens with sparsity (last third > first third)",
         "value": [pts(g) for _, g in gaps],
         "pass": sum(g for _, g in gaps[-third:]) / third > sum(g for _, g in gaps[:third]) / third},
    ]


def resnet_checks(summary) -> list[dict]:
    tickets = sorted((r for r in summary if r["experiment"] == "ticket"), key=lambda r: -r["remaining"])
    sparse = tickets[-1]
    r = near(summary, "reinit", sparse["remaining"])
    return [{"check": f"ticket >= reinit + 1.5 at {pts(sparse['remaining'])}%",
             "value": pts(sparse["test_acc_mean"] - r["test_acc_mean"]),
             "pass": sparse["test_acc_mean"] - r["test_acc_mean"] >= 0.015}]


def along_training(rows, iterations: int) -> list[dict]:
    """Per (experiment, level): mean validation accuracy at the evaluations nearest 1/3 and 2/3 of
    training, and mean test accuracy at the end (the paper's Figs. 7-8)."""
    out = {}
    for r in rows:
        out.setdefault((r["experiment"], r["level"]), []).append(r)
    table = []
    for (experiment, level), group in out.items():
        steps = sorted({r["step"] for r in group})
        entry = {"experiment": experiment, "level": level, "remaining": round(group[0]["remaining"], 4)}
        for name, frac in (("val_acc_third", 1 / 3), ("val_acc_two_thirds", 2 / 3)):
            s = min(steps, key=lambda x: abs(x - frac * iterations))
            vals = [r["val_acc"] for r in group if r["step"] == s]
            entry[name], entry[name + "_step"] = pts(sum(vals) / len(vals)), s
        end = [r["test_acc"] for r in group if r["step"] == steps[-1] and r.get("test_acc") is not None]
        entry["test_acc_end"] = pts(sum(end) / len(end)) if end else None
        table.append(entry)
    return table


def run(name: str, overrides: dict, tag: str) -> dict:
    cfg = override(preset(name), overrides)
    label = name + (f"_{tag}" if tag else "")
    out, docs = ROOT / "bench" / "runs" / "cnn" / label, ROOT / "docs" / "cnn" / label
    t = time.time()
    lottery.run(cfg, out)
    minutes = (time.time() - t) / 60
    text = report(out)
    rows = read_results(out / "results.csv")
    summary = summarize(rows)
    resolved = json.loads((out / "config.json").read_text())
    checks = resnet_checks(summary) if cfg.model == "resnet20" else conv_checks(summary)
    docs.mkdir(parents=True, exist_ok=True)
    for png in out.glob("*.png"):
        shutil.copy(png, docs / png.name)
    lines = [f"{'PASS' if c['pass'] else 'FAIL'}  {c['check']}: {c['value']}" for c in checks]
    command = f"python bench/cnn_lottery.py {name}" + "".join(f" --set {k}={v}" for k, v in overrides.items()) + \
        (f" --tag {tag}" if tag else "")
    (docs / "table.txt").write_text(f"{command}\n\n{text}\n\n" + "\n".join(lines) + "\n")
    payload = {"command": command, "config": resolved, "summary": summary, "checks": checks,
               "along_training": along_training(rows, resolved["iterations"]), "minutes_this_invocation": minutes}
    (docs / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    record(f"cnn_{label}", payload)
    print(text)
    print("\n".join(lines))
    print(f"{label}: this invocation {minutes:.1f} min")
    return payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--tag", default="", help="suffix of the run and docs directory names")
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = parse_value(k, v)
    for name in args.presets:
        run(name, overrides, args.tag)


if __name__ == "__main__":
    common.run_main(main)
