"""Ensemble paths: milliseconds per training step per model, vmap against a loop over members.

    python bench/ensemble_mode.py [--smoke] [--out bench/results/ensemble_mode.json]

For each model and M in {1, 2, 4} members, one :class:`lth.ensemble.Ensemble` per path trains a few
Adam steps (forward, summed member-mean cross-entropy, backward, step) on random data; the table
shows the best of ``--reps`` timings of ``--steps`` steps (the paths taking turns), divided by steps
and by M, so a falling column means stacking members saves time per model (defaults: 5 x 2 steps).
Paths: ``vmap`` (``mode="stacked"`` on a model that is not stackable), ``loop`` (``mode="loop"``), and
for LeNet ``direct`` (its stackable forward).

Models (batch per member):

* ``lenet``: LeNet-300-100, 28x28 inputs, batch 60 (stackable: direct path; vmap by turning that off);
* ``conv2`` / ``conv2_bn``: Conv-2 of Frankle & Carbin (2019) on 32x32x3, conv64-conv64-pool,
  fc256-fc256-fc10, batch 60; ``_bn``: BatchNorm after each convolution;
* ``gpt_tiny``: ``lth.models.gpt`` with 2 layers, d 64, 4 heads, 64 tokens, vocabulary 256, batch 16;
* ``seq2seq_tiny``: ``nn.Transformer`` encoder-decoder (2 + 2 layers, d 64, 4 heads, dropout 0.1) with
  a source padding mask, 32 tokens each side, vocabulary 256, batch 16.

``--smoke`` runs one step of tiny batches and narrow convolutions for M in {1, 2} (seconds; numbers
mean nothing). The last column is the
faster path at M = 4, which is what ``lth.ensemble_modes``' rules for "auto" record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
from common import table  # noqa: E402

from lth.ensemble import Ensemble  # noqa: E402
from lth.models.gpt import GPT, GPTConfig  # noqa: E402
from lth.models.lenet import LeNet  # noqa: E402


class Conv2(nn.Module):
    """Conv-2: [B, 3, 32, 32] -> conv64 -> conv64 -> maxpool -> fc256 -> fc256 -> fc10 (ReLUs)."""

    def __init__(self, bn: bool = False, width: int = 64, hidden: int = 256):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(width)) if bn else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), norm(), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), norm(), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 16 * 16, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):  # [B, 3, 32, 32] -> [B, 10]
        return self.head(self.features(x))


class Seq2Seq(nn.Module):
    """Token embeddings + ``nn.Transformer`` + output head: (src [B, S], tgt [B, T], src_pad [B, S]) -> [B, T, V]."""

    def __init__(self, vocab: int = 256, d: int = 64, heads: int = 4, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.core = nn.Transformer(d, heads, layers, layers, 2 * d, dropout, batch_first=True)
        self.core.encoder.use_nested_tensor = False  # its eval fast path has no vmap batching rule
        self.head = nn.Linear(d, vocab)

    def forward(self, src, tgt, src_pad):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[-1], device=tgt.device)
        h = self.core(self.embed(src), self.embed(tgt), tgt_mask=causal, src_key_padding_mask=src_pad,
                      memory_key_padding_mask=src_pad)
        return self.head(h)


def make_lenet_unstacked():
    model = LeNet()
    model.stackable = False  # the same network through vmap / the loop
    return model


def workloads(smoke: bool):
    """name -> (model constructor, paths, inputs(M) -> (args, targets [M, ...]))."""
    b = 4 if smoke else 60
    bt, s = (2, 8) if smoke else (16, 64)

    def images(shape):
        return lambda m: ((torch.randn(m, b, *shape),), torch.randint(0, 10, (m, b)))

    def tokens(m):
        x = torch.randint(0, 256, (m, bt, s))
        return (x,), torch.randint(0, 256, (m, bt, s))

    def pairs(m):
        src, tgt = torch.randint(0, 256, (m, bt, s // 2)), torch.randint(0, 256, (m, bt, s // 2))
        pad = torch.zeros(m, bt, s // 2, dtype=torch.bool)
        pad[..., -3:] = True  # the last source positions are padding
        return (src, tgt, pad), torch.randint(0, 256, (m, bt, s // 2))

    conv = dict(width=8, hidden=16) if smoke else {}
    tiny_gpt = dict(vocab_size=256, seq_len=s, n_layer=2, d_model=64, n_head=4, n_kv_head=2)
    return {
        "lenet": (LeNet, ("direct", "vmap", "loop"), images((1, 28, 28))),
        "conv2": (lambda: Conv2(bn=False, **conv), ("vmap", "loop"), images((3, 32, 32))),
        "conv2_bn": (lambda: Conv2(bn=True, **conv), ("vmap", "loop"), images((3, 32, 32))),
        "gpt_tiny": (lambda: GPT(GPTConfig(**tiny_gpt)), ("vmap", "loop"), tokens),
        "seq2seq_tiny": (Seq2Seq, ("vmap", "loop"), pairs),
    }


def ensemble(make, path: str, members: int) -> Ensemble:
    states = []
    for i in range(members):
        torch.manual_seed(i)
        states.append({n: p.detach().clone() for n, p in make().named_parameters()})
    model = make() if path == "direct" else (make_lenet_unstacked() if make is LeNet else make())
    ens = Ensemble(model, states, mode="loop" if path == "loop" else "stacked")
    assert ens.path() == path, (ens.path(), path)
    return ens


def stepper(ens: Ensemble, inputs):
    """One training step of ``ens`` on ``inputs``: forward, summed member-mean loss, backward, Adam."""
    opt = torch.optim.Adam(list(ens.stacked), lr=1e-3)
    args, y = inputs

    def step():
        opt.zero_grad(set_to_none=True)
        out = ens(*args)  # [M, B, ..., classes]
        loss = F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none").view(len(y), -1).mean(1).sum()
        loss.backward()
        opt.step()

    return step


def ms_per_step(steppers: dict, steps: int, reps: int) -> dict[str, float]:
    """path -> best of ``reps`` timings of ``steps`` steps, ms per step (all members). The paths take
    turns within each repetition, so a load that comes and goes on a shared machine hits them alike."""
    for step in steppers.values():
        step()  # warm-up
    best = {p: float("inf") for p in steppers}
    for _ in range(reps):
        for p, step in steppers.items():
            t = time.perf_counter()
            for _ in range(steps):
                step()
            best[p] = min(best[p], 1000 * (time.perf_counter() - t) / steps)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="one step of tiny batches: seconds, numbers mean nothing")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--members", type=int, nargs="+", default=None, help="default 1 2 4 (smoke: 1 2)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ensemble_mode.json; "
                    "with --smoke nothing is written unless given)")
    args = ap.parse_args()
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops: thread wake-ups on a shared machine would dominate
    steps = args.steps or (1 if args.smoke else 2)
    reps = args.reps or (1 if args.smoke else 5)
    args.members = args.members or ([1, 2] if args.smoke else [1, 2, 4])
    t0 = time.perf_counter()
    rows, results = [], {}
    for name, (make, paths, inputs) in workloads(args.smoke).items():
        for m in args.members:
            torch.manual_seed(0)
            data = inputs(m)
            ms = ms_per_step({p: stepper(ensemble(make, p, m), data) for p in paths}, steps, reps)
            ms = {p: v / m for p, v in ms.items()}
            results.setdefault(name, {})[str(m)] = ms
            row = {"model": name, "M": m, **{f"{p} ms": f"{v:.2f}" for p, v in ms.items()},
                   "loop / vmap": f"{ms['loop'] / ms['vmap']:.2f}"}
            rows.append(row)
            print(f"  {name} M={m}: " + ", ".join(f"{p} {v:.2f} ms" for p, v in ms.items()), flush=True)
    top = max(args.members)
    faster = {name: min(("vmap", "loop"), key=lambda p: r[str(top)][p]) for name, r in results.items()}
    for row in rows:
        row[f"faster at M={top}"] = faster[row["model"]]
    cols = ["model", "M", "direct ms", "vmap ms", "loop ms", "loop / vmap", f"faster at M={top}"]
    print(f"ms per training step per model; {torch.get_num_threads()} threads; device cpu"
          + ("; SMOKE TEST: numbers mean nothing" if args.smoke else ""))
    print(table(rows, cols))
    wall = time.perf_counter() - t0
    load = os.getloadavg()
    print(f"wall {wall:.1f} s; load average (1, 5, 15 min) at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores (other processes distort the timings)")
    out = args.out or (None if args.smoke else str(ROOT / "bench" / "results" / "ensemble_mode.json"))
    if out:
        from lth.io import atomic_write_json
        from lth.run import environment

        atomic_write_json(Path(out), {"environment": environment(), "smoke": args.smoke, "steps": steps,
                                      "reps": reps, "ms_per_step_per_model": results,
                                      f"faster_at_M{top}": faster, "rows": rows, "wall_seconds": wall,
                                      "load_average_at_end": load})
        print(f"wrote {out}")


if __name__ == "__main__":
    common.run_main(main)
