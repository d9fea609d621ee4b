"""LeNet-300-100 training throughput on this machine: trials batched vs one after another.

    python bench/throughput.py [--trials 5] [--epochs 1]

Prints a table and writes bench/results/throughput.json: images/s for T trials trained together as
one batched model vs T runs one after another (lth's trainer with batching on and off), seconds per
epoch of one model at batch 60, and the fraction of the float32 matmul peak (measured in the same
run) that each reaches. One LeNet-300-100 epoch (55,000 images) is counted as 6 * 266,610 * 55,000
= 88.0 GFLOP (forward + backward).
"""

import argparse
import time

import torch

import common
from common import matmul_peak_gflops, record, table

from lth import lottery, models
from lth.ensemble import Ensemble
from lth.train import TrainSpec, train


def run(task, template, n_models: int, steps: int) -> float:
    states = [lottery.init_state(template, s, "glorot_normal") for s in range(n_models)]
    ens = Ensemble(template, states)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in ens.params().items() if p.dim() == 3}
    spec = TrainSpec(iterations=steps, batch_size=60, lr=1.2e-3, eval_every=10**9)
    t = time.perf_counter()
    train(ens, masks, task, spec, list(range(n_models)))
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    from lth.data import load_mnist
    from lth.tasks.classify import ImageClassification

    task = ImageClassification(load_mnist())
    template = models.build("lenet_300_100", task.shape, task.num_classes)
    n_params = sum(p.numel() for p in template.parameters())
    per_epoch = task.train_size // 60
    steps = int(args.epochs * per_epoch)
    flop_per_image = 6 * n_params
    peak = matmul_peak_gflops()
    run(task, template, 1, 50)  # warm up
    one = run(task, template, 1, steps)
    seq = one + sum(run(task, template, 1, steps) for _ in range(args.trials - 1))
    bat = run(task, template, args.trials, steps)
    images = steps * 60
    rows = []
    for name, secs, n in (("1 model", one, 1), (f"{args.trials} sequential", seq, args.trials),
                          (f"{args.trials} batched", bat, args.trials)):
        ips = n * images / secs
        gflops = ips * flop_per_image / 1e9
        rows.append({"setup": name, "seconds": f"{secs:.2f}", "images/s": f"{ips:,.0f}",
                     "model-epochs/s": f"{ips / (per_epoch * 60):.3f}", "GFLOP/s": f"{gflops:.1f}",
                     "% of peak": f"{100 * gflops / peak:.1f}"})
    speedup = seq / bat
    print(f"float32 matmul peak (2048^3, same run): {peak:.1f} GFLOP/s; {torch.get_num_threads()} threads")
    print(table(rows, list(rows[0])))
    print(f"one LeNet-300-100 epoch at batch 60: {one / args.epochs:.2f} s")
    print(f"batched speedup over sequential: {speedup:.2f}x")
    path = record("throughput", {"peak_gflops": peak, "rows": rows, "speedup": speedup,
                                 "seconds_per_epoch_one_model": one / args.epochs, "steps": steps,
                                 "trials": args.trials, "flop_per_image": flop_per_image})
    print(f"wrote {path}")


if __name__ == "__main__":
    common.run_main(main)
