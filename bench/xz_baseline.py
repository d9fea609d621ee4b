"""xz -9e's bits per byte on a corpus's validation split given its training split: the baseline to beat.

    python bench/xz_baseline.py [--text PATH ...] [--val-fraction 0.1]

Always measures the embedded corpus (World English Bible); each ``--text`` (plain or gzipped UTF-8,
e.g. /work/shared/data/text/linux-doc-6.1.txt.gz) adds a row. The split is lth's own
(lth.data.text.split_text: the last 10% of lines are validation), so the numbers compare directly with a
model's val bpb. ``conditional bpb`` is the cost of val appended to train's xz stream; ``alone bpb`` is
val compressed by itself, for reference. Prints a table and writes bench/results/xz_baseline.json.
"""

from __future__ import annotations

import argparse
import time

import common
from common import record, table

from lth.data.text import VAL_FRACTION, load_text, split_text
from lth.xz_rate import conditional_bpb, xz_size


def measure(name: str, path, val_fraction: float) -> dict:
    t0 = time.perf_counter()
    train, val = split_text(load_text(path), val_fraction)
    r = conditional_bpb(train, val)
    alone = xz_size(val.encode("utf-8"))
    return {
        "corpus": name,
        **r,
        "bpb": round(r["bpb"], 4),
        "xz_val_alone_bytes": alone,
        "alone_bpb": round(alone * 8 / r["val_bytes"], 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", action="append", default=[], help="a UTF-8 text file (gzip ok); repeatable")
    ap.add_argument("--val-fraction", type=float, default=VAL_FRACTION)
    args = ap.parse_args()

    rows = [measure("embedded:bible-web-en", None, args.val_fraction)]
    for path in args.text:
        rows.append(measure(path, path, args.val_fraction))
    print(table(rows, ["corpus", "train_bytes", "val_bytes", "xz_train_bytes", "xz_all_bytes", "bpb", "alone_bpb",
                       "seconds"]))
    out = record("xz_baseline", {
        "method": "bpb = (len(xz(train+val)) - len(xz(train))) * 8 / val_bytes; lzma FORMAT_XZ, preset 9|EXTREME, "
                  "CHECK_NONE",
        "val_fraction": args.val_fraction,
        "rows": rows,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    common.run_main(main)
