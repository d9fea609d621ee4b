"""The parameter-golf shape on a GPU: dense and supermask `lm_golf`, tokens/s, MFU and bits per byte.

    python bench/lm_golf.py --text ../shared/data/text/linux-doc-6.1.txt.gz [--minutes 4] [--vocab bytes]

1. encodes TEXT (its last 10% of lines = validation) at the byte level (``--vocab bytes``, the
   reference's vocabulary) or in a SentencePiece BPE (``--vocab 1024``) into ``--out``/tokens, once;
2. measures the matmul peak in this process (bf16 8192^3 on CUDA, float32 2048^3 on a CPU);
3. trains ``lm_golf`` dense and ``lm_golf_supermask``, ``--minutes`` of training each (bf16 autocast and
   ``torch.compile`` switch on by themselves on CUDA), validating every ``eval_every`` steps;
4. reports for each: steps, tokens/s over the training seconds (evaluation excluded), MFU = tokens/s x
   (6N + 12 L d T) / peak, and the best val_bpb (the lowest of the periodic validations, with its step:
   a small corpus overfits within minutes on a GPU) beside the final one. The table's headline is the
   best; both are in the JSON.

Writes ``--docs``/table.txt and results.json, and bench/results/lm_golf.json. Every run resumes.
``--smoke`` shrinks the model and batch so the whole script runs in a minute on a CPU (the test of
this script; its numbers mean nothing).
"""

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import torch

import common
from common import ROOT, matmul_peak_gflops, record, table

from lth import lottery, supermask
from lth.data import text as T
from lth.models.gpt import GPTConfig, SIZES, flops_per_token
from lth.presets import preset

SMOKE = dict(model_args={"n_layer": 1, "d_model": 64, "n_head": 2, "n_kv_head": 1}, seq_len=64, batch_size=4,
             eval_every=5, eval_tokens=2048, max_minutes=0.05)


def encode(text: Path, vocab: str, out: Path, max_bytes: int | None) -> Path:
    """The token directory of ``text`` (cut to its first ``max_bytes`` bytes' lines if given), once."""
    d = out / f"tokens_{vocab}"
    if (d / "meta.json").exists():
        return d
    if max_bytes is not None:  # the smoke test: a slice of the corpus, whole lines
        body = T.load_text(text).encode()[:max_bytes].decode("utf-8", "ignore")
        text = out / "slice.txt"
        out.mkdir(parents=True, exist_ok=True)
        text.write_text(body[: body.rindex("\n") + 1], encoding="utf-8")
    tokenizer = "bytes"
    if vocab != "bytes":
        tokenizer = str(T.train_tokenizer(Path(text), out / f"bpe{vocab}", int(vocab)))
    meta = T.encode_corpus(Path(text), tokenizer, d)
    print(f"{text}: train {meta['train_tokens']:,} tokens ({meta['train_bytes']:,} bytes), "
          f"val {meta['val_tokens']:,} tokens ({meta['val_bytes']:,} bytes), vocab {meta['vocab_size']}")
    return d


def summary(run_dir: Path, cfg, peak_gflops: float) -> dict:
    with open(run_dir / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("experiment", "ticket") in ("ticket", cfg.rule or "ticket")]
    last = max(rows, key=lambda r: int(r["step"]))
    best = min(rows, key=lambda r: float(r["val_bpb"]))
    size = {**SIZES[cfg.model.removeprefix("gpt_")], **{k: v for k, v in cfg.model_args.items() if k != "scales"}}
    size["seq_len"] = cfg.seq_len or size["seq_len"]
    size["vocab_size"] = lottery.task_shape(cfg)[1]
    g = GPTConfig(**size)
    seconds = float(last["train_seconds"])
    tok_s = int(last["step"]) * cfg.batch_size * g.seq_len / seconds
    return {"steps": int(last["step"]), "train_seconds": seconds, "tokens_per_second": tok_s,
            "flops_per_token": flops_per_token(g), "mfu": tok_s * flops_per_token(g) / (peak_gflops * 1e9),
            "best_bpb": float(best["val_bpb"]), "best_step": int(best["step"]),
            "final_bpb": float(last["val_bpb"]), "final_step": int(last["step"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default=str(ROOT.parent / "shared" / "data" / "text" / "linux-doc-6.1.txt.gz"))
    ap.add_argument("--vocab", default="bytes", help="bytes, or a SentencePiece BPE size such as 1024")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "runs" / "lm_golf"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "lm_golf"))
    ap.add_argument("--smoke", action="store_true", help="a tiny model on a slice of the text (CPU test)")
    args = ap.parse_args()
    out, docs = Path(args.out), Path(args.docs)
    cuda = torch.cuda.is_available()
    data = encode(Path(args.text), args.vocab, out, 200_000 if args.smoke else None)
    if cuda:
        peak = matmul_peak_gflops(8192, reps=20, dtype=torch.bfloat16, device="cuda")
        peak_kind = f"bf16 8192^3 matmul on {torch.cuda.get_device_name()}"
    else:
        peak = matmul_peak_gflops()
        peak_kind = "float32 2048^3 matmul on the CPU"
    print(f"peak: {peak:,.0f} GFLOP/s ({peak_kind})")

    t0 = time.time()
    results, configs = {}, {}
    for name, runner in (("lm_golf", lottery.run), ("lm_golf_supermask", supermask.run)):
        cfg = dataclasses.replace(preset(name), data_dir=str(data), max_minutes=args.minutes, levels=0)
        if args.smoke:
            args_ = {**SMOKE["model_args"], **({"scales": True} if cfg.rule else {})}
            cfg = dataclasses.replace(cfg, **{**SMOKE, "model_args": args_})
        run_dir = out / name
        if runner is lottery.run:
            lottery.run(cfg, run_dir, dense_only=True)
        else:
            supermask.run(cfg, run_dir)
        results[name], configs[name] = summary(run_dir, cfg, peak), cfg.to_dict()

    rows = [{"run": name, "steps": f"{r['steps']:,}", "tokens/s": f"{r['tokens_per_second']:,.0f}",
             "MFU": f"{100 * r['mfu']:.1f}%", "best val_bpb (step)": f"{r['best_bpb']:.4f} ({r['best_step']:,})",
             "final val_bpb": f"{r['final_bpb']:.4f}"} for name, r in results.items()]
    text = table(rows, list(rows[0]))
    note = (f"{args.minutes:g} min of training each on {Path(args.text).name} ({args.vocab}); MFU against "
            f"{peak:,.0f} GFLOP/s ({peak_kind}), counting 6N + 12 L d T FLOPs per token"
            + ("; SMOKE TEST: tiny model, numbers mean nothing" if args.smoke else ""))
    print(text)
    print(note)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "table.txt").write_text(text + "\n\n" + note + "\n")
    payload = {"results": results, "peak_gflops": peak, "peak_kind": peak_kind, "minutes_per_run": args.minutes,
               "text": args.text, "vocab": args.vocab, "smoke": args.smoke, "wall_minutes": (time.time() - t0) / 60,
               "configs": configs}
    (docs / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    if not args.smoke:
        print(f"wrote {record('lm_golf', payload)}")


if __name__ == "__main__":
    common.run_main(main)
