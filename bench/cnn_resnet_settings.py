"""ResNet-20's three settings side by side, shaped like Frankle & Carbin 2019's Figs. 7-8 (issue 11).

    python bench/cnn_resnet_settings.py [NAME ...]

Reads ``docs/cnn/NAME/results.json`` written by ``bench/cnn_lottery.py`` (default: lr 0.1 with k = 0,
lr 0.1 rewound to k = 100, lr 0.03 with warmup) and writes ``docs/cnn/resnet20_settings.png``: three
panels (accuracy at 1/3 and 2/3 of each level's training, on validation, and test accuracy at the end)
against the percent of weights remaining, a color per setting, tickets solid and reinit dashed, means
over trials; prints a table and writes ``bench/results/cnn_resnet20_settings.json``. Trains nothing.
"""

from __future__ import annotations

import argparse
import json

import common
from common import ROOT, record

NAMES = {"fmnist_resnet20_cpu": "lr 0.1, k = 0", "fmnist_resnet20_cpu_rewind100": "lr 0.1, k = 100",
         "fmnist_resnet20_cpu_warmup": "lr 0.03, warmup"}
PANELS = [("val_acc_third", "validation accuracy at 1/3 of training (%)"),
          ("val_acc_two_thirds", "validation accuracy at 2/3 (%)"), ("test_acc_end", "test accuracy at the end (%)")]


def rows_of(name: str) -> list[dict]:
    doc = json.loads((ROOT / "docs" / "cnn" / name / "results.json").read_text())
    return [dict(r, setting=NAMES.get(name, name)) for r in doc["along_training"]]


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=False)
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    for ax, (key, label) in zip(axes, PANELS):
        for i, s in enumerate(settings):
            for experiment, style in (("ticket", "-o"), ("reinit", "--x")):
                pts = sorted(((100 * r["remaining"], r[key]) for r in rows
                              if r["setting"] == s and (r["experiment"] == experiment or r["level"] == 0)
                              and r.get(key) is not None), reverse=True)
                if experiment == "reinit":
                    pts = pts[1:]  # level 0 is the dense network, drawn with the tickets
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=f"C{i}",
                        label=f"{s}, {experiment}", ms=4)
        ax.set_xscale("log")
        ticks = sorted({round(100 * r["remaining"], 1) for r in rows}, reverse=True)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("ResNet-20 width 8 on Fashion-MNIST (2 trials each): tickets (solid) and reinit (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=list(NAMES))
    args = ap.parse_args()
    rows = [r for name in args.names for r in rows_of(name)]
    plot(rows, ROOT / "docs" / "cnn" / "resnet20_settings.png")
    cols = ["setting", "experiment", "level", "remaining", "val_acc_third", "val_acc_two_thirds", "test_acc_end"]
    print(common.table(rows, cols))
    record("cnn_resnet20_settings", {"command": "python bench/cnn_resnet_settings.py " + " ".join(args.names),
                                     "rows": rows})


if __name__ == "__main__":
    common.run_main(main)
