"""Language-model tickets on 2 CPU cores, in bits per byte, beside xz.

    python bench/lm_cpu.py [--minutes 10] [--out bench/runs/lm_cpu] [--docs docs/lm_cpu]

Runs (or resumes), each with a wall-clock budget of ``--minutes`` of training per run, on the embedded
World English Bible in the preset's 1024-token BPE (validation = its last 10% of lines, ``eval_tokens``
of it):

1. ``lth lottery lm_cpu``: the dense model (level 0), then IMP with rewinding to step 100 at 55% per
   level, so level 2 is a ticket at 20.25% of the prunable matrices (embedding kept dense);
2. ``lth supermask lm_cpu_supermask``: weights frozen at the seed-derived init, STE masks and scales;
3. equal bytes: a dense model small enough that its int8 + zlib artifact is about the size of the
   supermask's ticket file, trained for the same time and evaluated after the int8 round trip.

and reports, for each, the best and final val_bpb (best = the lowest over the periodic validations;
final = at the end of the budget), next to xz -9e's conditional rate on the same validation text (bits
to add it to an xz stream of the training text). Training validates on the first ``eval_tokens``
(65,536) tokens of the split, so those columns sit beside xz on the text those tokens cover; "full val bpb" evaluates
each final model on the whole split, beside xz on the whole split. Also: tokens per second of the dense run and its
fraction of the float32 matmul peak measured in this process (6N + 12 L d T FLOPs per token).
Writes a table and JSON into ``--docs`` and bench/results/lm_cpu.json.
"""

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import torch

import common
from common import ROOT, matmul_peak_gflops, record, table

from lth import lottery, supermask
from lth.data.text import embedded_tokenizer, load_text, split_text
from lth.models.gpt import GPTConfig, flops_per_token
from lth.presets import preset
from lth.xz_rate import conditional_bpb


def rows(path: Path, experiment=None, level=None) -> list[dict]:
    with open(path / "results.csv") as f:
        out = [r for r in csv.DictReader(f)]
    return [r for r in out if (experiment is None or r["experiment"] == experiment)
            and (level is None or int(r["level"]) == level)]


def best_final(rs: list[dict]) -> dict:
    last = max(rs, key=lambda r: int(r["step"]))
    best = min(rs, key=lambda r: float(r["val_bpb"]))
    return {"best_bpb": float(best["val_bpb"]), "best_step": int(best["step"]), "final_bpb": float(last["val_bpb"]),
            "final_step": int(last["step"]), "remaining": float(last["remaining"]),
            "train_seconds": float(last.get("train_seconds") or 0.0)}


def full_val_bpb(cfg, state: dict) -> float:
    """val_bpb of a model's weights on the WHOLE validation split (training validated on a prefix)."""
    from lth.ensemble import Ensemble
    from lth.train import evaluate

    full = dataclasses.replace(cfg, eval_tokens=None)
    task = lottery.load_task(full, "cpu")
    ens = Ensemble(lottery.build_template(full, task), [state])
    return float(evaluate(ens, task)["val_bpb"][0])


def final_state(run_dir: Path, level: int) -> dict:
    from lth import checkpoints

    return checkpoints.read(checkpoints.member_path(run_dir, level, "ticket", 0), ("final",))["final"]


def gpt_cfg(cfg) -> GPTConfig:
    from lth.models.gpt import SIZES

    size = SIZES[cfg.model.removeprefix("gpt_")]
    fields = {**size, **{k: v for k, v in cfg.model_args.items() if k != "scales"}}
    fields["seq_len"] = cfg.seq_len or fields["seq_len"]
    fields["vocab_size"] = lottery.task_shape(cfg)[1]  # the data's vocabulary, not the size's default
    return GPTConfig(**fields)


def small_shape(vocab: int, target_bytes: int, n_layer: int = 2, bytes_per_param: float = 0.96) -> dict:
    """The widest 2-layer gpt (d a multiple of 8, 4 heads / 2 KV heads) whose int8 + zlib artifact should
    not exceed ``target_bytes``: V d + 7 d^2 per layer parameters (attention 3 d^2 with GQA 4/2, MLP 4 d^2),
    at about 0.96 bytes each after zlib (measured: 262,144 parameters -> 251,116 bytes)."""
    d = 8
    while vocab * (d + 8) + n_layer * 7 * (d + 8) ** 2 <= target_bytes / bytes_per_param:
        d += 8
    return {"n_layer": n_layer, "d_model": d, "n_head": 4, "n_kv_head": 2}


def equal_bytes_dense(minutes: float, target_bytes: int, out: Path) -> dict:
    """Train a small dense GPT whose int8+zlib artifact is near ``target_bytes``; evaluate it dequantized."""
    from lth.quant import int8_zlib
    from lth.train import evaluate

    base = preset("lm_cpu")
    shape = small_shape(lottery.task_shape(base)[1], target_bytes)
    cfg = dataclasses.replace(base, max_minutes=minutes, levels=0, model_args=shape)
    run = lottery.run(cfg, out, dense_only=True)
    flat = final_state(run.path, 0)
    nbytes, deq = int8_zlib(flat)
    full = full_val_bpb(cfg, deq)
    lot = lottery.Lottery(cfg, out, progress=False)
    from lth.ensemble import Ensemble

    ens = Ensemble(lot.template, [deq])
    metrics = evaluate(ens, lot.task)
    res = best_final(rows(run.path, "ticket", 0))
    res.update({"int8_zlib_bytes": nbytes, "int8_val_bpb": float(metrics["val_bpb"][0]),
                "params": sum(v.numel() for v in flat.values()), "target_bytes": target_bytes,
                "full_val_bpb": full})
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "runs" / "lm_cpu"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "lm_cpu"))
    args = ap.parse_args()
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    train_text, val_text = split_text(load_text(None))
    xz = conditional_bpb(train_text, val_text)
    print(f"xz -9e conditional rate: {xz['bpb']:.4f} bpb (whole validation split); float32 matmul peak "
          f"{peak:.1f} GFLOP/s")

    def xz_on_prefix(cfg) -> dict:
        """Training validates on the first eval_tokens tokens: xz on exactly the text those windows cover."""
        task = lottery.load_task(cfg, "cpu")
        n_eval = task.eval_windows * task.seq_len
        prefix = embedded_tokenizer(cfg.tokenizer).decode(task.data.val[: n_eval + 1].numpy())
        assert val_text.startswith(prefix)
        res = {**conditional_bpb(train_text, prefix), "tokens": n_eval, "bytes": len(prefix.encode())}
        print(f"xz on the first {n_eval:,} {cfg.tokenizer or 'bytes'} tokens ({res['bytes']:,} bytes): {res['bpb']:.4f}")
        return res

    t0 = time.time()
    cfg = dataclasses.replace(preset("lm_cpu"), max_minutes=args.minutes)
    lottery.run(cfg, out / "lottery")
    dense = best_final(rows(out / "lottery", "ticket", 0))
    imp = best_final(rows(out / "lottery", "ticket", cfg.levels))
    g = gpt_cfg(cfg)
    tokens = dense["final_step"] * cfg.batch_size * g.seq_len
    tok_s = tokens / dense["train_seconds"]
    mfu = tok_s * flops_per_token(g) / (peak * 1e9)

    scfg = dataclasses.replace(preset("lm_cpu_supermask"), max_minutes=args.minutes)
    supermask.run(scfg, out / "supermask")
    sm = best_final(rows(out / "supermask"))
    from lth import pack
    from lth import ticket as T

    sm_ticket = pack.from_run(out / "supermask")
    sm_bytes = len(T.encode(sm_ticket))
    imp_bytes = len(T.encode(pack.from_run(out / "lottery", level=cfg.levels)))
    small = equal_bytes_dense(args.minutes, sm_bytes, out / "dense_small")
    dense["full_val_bpb"] = full_val_bpb(cfg, final_state(out / "lottery", 0))
    imp["full_val_bpb"] = full_val_bpb(cfg, final_state(out / "lottery", cfg.levels))
    sm_model = pack.build(sm_ticket)
    sm["full_val_bpb"] = full_val_bpb(scfg, {n: p.detach() for n, p in sm_model.named_parameters()})

    xz_prefix = xz_on_prefix(cfg)
    xz_prefix_sm = xz_on_prefix(scfg)

    def row(model, tok, best, final, pre, full, nbytes, kept, steps):
        return {"model": model, "tokens": tok, "val_bpb best": best, "val_bpb final": final,
                "eval prefix (B)": f"{pre['bytes']:,}", "xz on prefix": f"{pre['bpb']:.4f}", "full val bpb": full,
                "bytes": nbytes, "weights kept": kept, "steps": steps}

    tok, stok = cfg.tokenizer or "bytes", scfg.tokenizer or "bytes"
    table_rows = [
        {"model": "xz -9e (conditional)", "full val bpb": f"{xz['bpb']:.4f}"},
        row("dense lm_cpu (fp32)", tok, f"{dense['best_bpb']:.4f}", f"{dense['final_bpb']:.4f}", xz_prefix,
            f"{dense['full_val_bpb']:.4f}", "", "100%", dense["final_step"]),
        row(f"IMP ticket, level {cfg.levels} (rewind 100)", tok, f"{imp['best_bpb']:.4f}", f"{imp['final_bpb']:.4f}",
            xz_prefix, f"{imp['full_val_bpb']:.4f}", f"{imp_bytes:,}", f"{imp['remaining']:.1%}", imp["final_step"]),
        row("supermask lm_cpu_supermask (frozen weights)", stok, f"{sm['best_bpb']:.4f}", f"{sm['final_bpb']:.4f}",
            xz_prefix_sm, f"{sm['full_val_bpb']:.4f}", f"{sm_bytes:,}", f"{sm['remaining']:.1%}", sm["final_step"]),
        row(f"dense small ({small['params']:,} params), int8+zlib", tok, f"{small['best_bpb']:.4f}",
            f"{small['int8_val_bpb']:.4f} (int8)", xz_prefix, f"{small['full_val_bpb']:.4f} (int8)",
            f"{small['int8_zlib_bytes']:,}", "100%", small["final_step"]),
    ]
    cols = list(table_rows[1])
    text = table(table_rows, cols)
    speed = (f"dense lm_cpu: {tok_s:,.0f} tokens/s over {dense['train_seconds']:.0f} s of training, "
             f"{flops_per_token(g) / 1e6:.2f} MFLOP/token -> {tok_s * flops_per_token(g) / 1e9:.1f} GFLOP/s = "
             f"{100 * mfu:.1f}% of the {peak:.1f} GFLOP/s float32 matmul peak")
    print(text)
    print(speed)
    minutes = (time.time() - t0) / 60
    (docs / "table.txt").write_text(text + "\n\n" + speed + "\n")
    payload = {"xz": xz, "xz_eval_prefix": xz_prefix, "xz_eval_prefix_supermask": xz_prefix_sm, "dense": dense, "imp": imp, "imp_bytes": imp_bytes, "supermask": sm,
               "supermask_bytes": sm_bytes, "dense_small": small, "tokens_per_second": tok_s, "mfu": mfu,
               "peak_gflops": peak, "minutes_per_run": args.minutes, "wall_minutes": minutes,
               "config": cfg.to_dict(), "supermask_config": scfg.to_dict()}
    path = record("lm_cpu", payload)
    import json

    (docs / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path} and {docs}/")


if __name__ == "__main__":
    common.run_main(main)
