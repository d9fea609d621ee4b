"""How close lth.ticket's mask coding gets to the entropy bound, against packbits, zlib and lzma.

    python bench/ticket_coding.py [RUN_DIR ...] [--reps 3]

For LeNet-300-100 masks at 50/20/10/5/2/1% density (magnitude masks of glorot-normal weights, same
density in every layer), and for every ``level_*/ticket_trial0.safetensors`` (keys ``mask.<param>``) of
each RUN_DIR given, prints: the entropy bound sum_i n_i H(k_i/n_i) / 8, our mask bytes, the gap, raw
packbits, zlib-9 and lzma (preset 9e) of the packbits, and the time to encode / decode the ticket file.
Writes bench/results/ticket_coding.json.
"""

from __future__ import annotations

import argparse
import lzma
import statistics
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import common
from common import record, table

from lth import ticket as T
from lth.init import SCHEMES, generate

ARCH = T.make_arch("lenet_300_100", (1, 28, 28), 10)
SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def magnitude_masks(density: float, seed: int = 0) -> dict:
    """Keep the largest-magnitude ``density`` of each layer's glorot-normal init: what one-shot magnitude
    pruning of an untrained net gives (an i.i.d.-looking mask)."""
    masks = {}
    for name, shape in SHAPES.items():
        w = generate(seed, name, shape, SCHEMES["glorot_normal"](name, torch.empty(shape))).abs().reshape(-1)
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.argsort(w, descending=True, stable=True)[: round(density * w.numel())]] = True
        masks[name] = keep.reshape(shape)
    return masks


def run_masks(run_dir: Path) -> list[tuple[str, dict]]:
    from safetensors.torch import load_file

    out = []
    for path in sorted(run_dir.glob("level_*/ticket_trial0.safetensors")):
        tensors = load_file(str(path))
        masks = {k[len("mask."):]: v.bool() for k, v in tensors.items() if k.startswith("mask.")}
        out.append((f"{run_dir.name}/{path.parent.name}", masks))
    return out


def timed(fn, reps: int) -> tuple[object, float]:
    """Result and median wall time in ms."""
    times, result = [], None
    for _ in range(reps):
        t = time.perf_counter()
        result = fn()
        times.append(1e3 * (time.perf_counter() - t))
    return result, statistics.median(times)


def measure(label: str, masks: dict, reps: int) -> dict:
    ticket = T.Ticket(arch=ARCH, seed=0, init="glorot_normal", masks=masks)
    data, pack_ms = timed(lambda: T.encode(ticket), reps)
    back, unpack_ms = timed(lambda: T.decode(data), reps)
    assert all(torch.equal(back.masks[n], m) for n, m in masks.items())
    info = T.inspect(data)
    packed = b"".join(np.packbits(m.reshape(-1).numpy()).tobytes() for m in masks.values())
    bound = info["entropy_bound_bytes"]
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return {
        "masks": label,
        "density": f"{kept / total:.4f}",
        "bound_B": f"{bound:.1f}",
        "ours_B": info["mask_bytes"],
        "gap_%": f"{100 * (info['mask_bytes'] - bound) / bound:.3f}" if bound else "-",
        "codings": "/".join(t["coding"] for t in info["masks"]),
        "file_B": info["total_bytes"],
        "packbits_B": len(packed),
        "zlib9_B": len(zlib.compress(packed, 9)),
        "lzma_B": len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME)),
        "pack_ms": f"{pack_ms:.1f}",
        "unpack_ms": f"{unpack_ms:.1f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path, help="lottery run dirs with level_*/ticket_trial0.safetensors")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    cases = [(f"magnitude {d:.0%}", magnitude_masks(d)) for d in DENSITIES]
    for run_dir in args.run_dirs:
        cases += run_masks(run_dir)
    rows = [measure(label, masks, args.reps) for label, masks in cases]
    cols = list(rows[0])
    print(table(rows, cols))
    out = record("ticket_coding", {"rows": rows, "note": "bytes are mask payload bytes unless _file_"})
    print(f"wrote {out}")


if __name__ == "__main__":
    common.run_main(main)
