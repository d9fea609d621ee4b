"""Training speed of the translation Transformer in target tokens per second, and the fraction of the
machine's matmul peak it reaches.

    python bench/translation_speed.py [--preset translation_cpu] [--steps 8] [--batch 224] [--threads N]

One member trains through lth's own loop (``lth.train.train``: the task's length-bucketed data order,
label-smoothed loss, Adam) for ``--steps`` steps after 2 warm-up steps; the time per step is the median
of the timed steps. Target tokens are the real (non-pad) target tokens of those batches. FLOPs per
step are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward of a batch
(every matmul, attention included), so GFLOP/s = FLOPs / time, and the fraction of peak divides it by
the fp32 matmul peak measured in the same run (2048^3, best of 3 x 20). Writes
bench/results/translation_speed.json.
"""

import argparse
import statistics

import torch
import common
from common import matmul_peak_gflops, record, table

from lth import lottery
from lth.data.parallel import PAD
from lth.ensemble import Ensemble
from lth.errors import LthError
from lth.presets import override, preset
from lth.train import Batches, call_with


def step_flops(ens, task, idx) -> tuple[int, int]:
    """(FLOPs of one forward + backward on the batch ``idx``, its real target tokens)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = task.batch(idx)
    counter = FlopCounterMode(display=False)
    with counter:
        task.loss(call_with(ens, x), y).backward()
    ens.zero_grad(set_to_none=True)
    return counter.get_total_flops(), int((y != PAD).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="translation_cpu")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=None, help="sentences a batch (default: the preset's)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.steps < 1 or (args.threads is not None and args.threads < 1) or (args.batch is not None and args.batch < 1):
        raise LthError("--steps, --threads and --batch must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    cfg = override(cfg, dict(batch_size=args.batch or cfg.batch_size, iterations=args.steps + 2, eval_every=10**9,
                             sparsities=None, method=None, controls=[]))
    task = lottery.load_task(cfg, "cpu")
    template = lottery.build_template(cfg, task)
    ens = Ensemble(template, [lottery.init_state(template, cfg.seed, cfg.init)])
    order = Batches([cfg.seed], task.train_size, cfg.batch_size, getattr(task, "data_order", None))
    flops, tokens = [], []
    for s in range(2, args.steps + 2):
        f, n = step_flops(ens, task, order(s))
        flops.append(f)
        tokens.append(n)
    step_s = common.loop_step_seconds(ens, task, cfg)
    peak = matmul_peak_gflops()
    gflops = statistics.mean(flops) / step_s / 1e9
    row = {"preset": args.preset, "batch": cfg.batch_size, "threads": torch.get_num_threads(),
           "ms_per_step": round(1000 * step_s, 1), "target_tokens_per_step": round(statistics.mean(tokens)),
           "target_tokens_per_s": round(statistics.mean(tokens) / step_s),
           "gflop_per_step": round(statistics.mean(flops) / 1e9, 1), "gflops": round(gflops, 1),
           "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(gflops / peak, 3)}
    print(table([row], list(row)))
    record("translation_speed", {"rows": [row], "steps": args.steps})


if __name__ == "__main__":
    common.run_main(main)
