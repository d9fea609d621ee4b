"""Brix et al. 2020 on 2 CPU cores (issue 12's proof): stabilized, constant and magnitude-pruned tickets of
the translation Transformer, in BLEU, resumable.

    python bench/translation_lottery.py [--preset translation_cpu] [--iterations 600] [--trials 1]
                                        [--methods slt,lt,mp,slt_mp] [--tag NAME]

One lottery run per method in ``bench/runs/translation/<tag>/<method>`` (``lth.gradual.METHODS``), at
50 / 80 / 90% sparsity (SLT-MP adds its 60% stop): ``slt`` with the ``constant`` (CLT),
``constant_random_sign`` (random-sign), ``reinit`` and ``random`` controls batched beside the ticket;
``lt``, ``mp`` and ``slt_mp`` alone. The dense level 0 is trained once, by the first method's run (its
θk capture included), and copied into the others: they share the seed and the dense configuration, so
it is the same training. A killed invocation resumes: finished levels are kept, an unfinished one
resumes from its snapshot. A finished method run is kept (its results, config, metric spec and memory
column; ``bench/common.py`` ``keep``) in ``docs/translation/<tag>/runs/<method>/``, tracked, so a later
session reuses it even when ``bench/runs/`` is gone: the benchmark spans sessions a method at a time.

Writes ``docs/translation/<tag>/``: ``table.txt`` (the command, Brix et al.'s Table 1 shape beside ours,
per method and level the ticket's bytes in compressed sparse columns and its largest trained |w|, the
checks), ``bleu_vs_sparsity.png``, ``results.json``; and ``bench/results/translation_<tag>.json``.

Checks (issue 12), on test BLEU at each member's early-stop (best dev BLEU) state, means over trials:
(a) SLT >= reinit + 3 and >= random + 3 at 80% and 90%; (b) |CLT - SLT| <= 1.5 at every level, and
random-sign <= CLT - 2 at 50%; (c) SLT > LT at 80% and 90%; (d) if MP at 50% is within 1 BLEU of dense:
SLT within 1 of MP at 50% and 80%, MP ahead at 90%, SLT-MP >= both at 80% and 90% (else reported as
not applicable, with MP's curve in the table). ``--preset translation_tiny`` is the smoke test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import common
from common import ROOT, record

from lth import lottery, metrics
from lth import translation_report as TR
from lth.presets import override, preset

CONTROLS = ["constant", "constant_random_sign", "reinit", "random"]
TARGETS = [0.5, 0.8, 0.9]


def method_config(name: str, method: str, iterations: int, trials: int):
    return override(preset(name), dict(method=method, sparsities=TARGETS, iterations=iterations, trials=trials,
                                       controls=CONTROLS if method == "slt" else []))


def share_level0(src, dst, cfg) -> None:
    """Give run ``dst`` the finished level 0 of run ``src`` (same seed and dense config)."""
    lot = lottery.Lottery(cfg, dst, progress=False)  # opens (and locks) dst with cfg recorded
    try:
        if 0 in lot.run.done_levels():
            return
        shutil.copytree(src / "level_00", dst / "level_00", dirs_exist_ok=True)
        if (src / "rewind.safetensors").exists():
            shutil.copy(src / "rewind.safetensors", dst / "rewind.safetensors")
        rows = [dict(r, method=cfg.method) for r in lottery.RunDir(src, writer=False).read_rows()
                if int(r["level"]) == 0]
        lot.run.replace_level_rows(0, rows)
        lot.run.mark_done(0)
    finally:
        lot.run.unlock()


def csc_bytes(masks: dict) -> int:
    """Bytes of the prunable matrices in compressed sparse columns (Brix et al.'s memory column): float32
    values and int32 row indices per survivor, int32 column pointers (columns + 1) per matrix."""
    return sum(8 * int(m.sum()) + 4 * (m.reshape(m.shape[0], -1).shape[1] + 1) for m in masks.values())


def memory(dirs: dict) -> list[dict]:
    """Per method and level: the ticket's CSC bytes and the largest |w| of its trained weights (trial 0)."""
    from lth import checkpoints

    out = []
    for method, d in dirs.items():
        for level in sorted(lottery.RunDir(d, writer=False).done_levels()):
            ck = checkpoints.read(checkpoints.member_path(d, level, "ticket", 0), ("mask", "final"))
            masks = ck["mask"]
            n = sum(m.numel() for m in masks.values())
            out.append({"method": "dense" if level == 0 else method, "level": level,
                        "sparsity": round(1 - sum(int(m.sum()) for m in masks.values()) / n, 4),
                        "csc_bytes": csc_bytes(masks), "dense_fp32_bytes": 4 * n,
                        "max_abs_w": round(max(float(ck["final"][k].abs().max()) for k in masks), 3)})
    return [r for i, r in enumerate(out) if r["method"] != "dense" or i == 0]


def at(summary, method: str, sparsity: float):
    hit = [e for e in summary if e["method"] == method and abs(1 - e["remaining"] - sparsity) < 0.005]
    return hit[0]["test_bleu_mean"] if hit and hit[0]["test_bleu_mean"] is not None else None


def checks(summary) -> list[dict]:
    b = lambda m, s: at(summary, m, s)  # noqa: E731
    dense = next((e["test_bleu_mean"] for e in summary if e["method"] == "dense"), None)
    out = []

    def add(text, values, ok):
        have = all(v is not None for v in values.values())
        out.append({"check": text, "value": values, "pass": bool(ok()) if have else None})

    for s in (0.8, 0.9):
        v = {"slt": b("slt", s), "reinit": b("reinit", s), "random": b("random", s)}
        add(f"(a) SLT >= reinit + 3 and >= random + 3 at {s:.0%}", v,
            lambda v=v: v["slt"] >= v["reinit"] + 3 and v["slt"] >= v["random"] + 3)
    for s in TARGETS:
        v = {"clt": b("clt", s), "slt": b("slt", s)}
        add(f"(b) |CLT - SLT| <= 1.5 at {s:.0%}", v, lambda v=v: abs(v["clt"] - v["slt"]) <= 1.5)
    v = {"random-sign": b("random-sign", 0.5), "clt": b("clt", 0.5)}
    add("(b) random-sign <= CLT - 2 at 50%", v, lambda: v["random-sign"] <= v["clt"] - 2)
    for s in (0.8, 0.9):
        v = {"slt": b("slt", s), "lt": b("lt", s)}
        add(f"(c) SLT > LT at {s:.0%}", v, lambda v=v: v["slt"] > v["lt"])
    mp50 = b("mp", 0.5)
    if mp50 is not None and dense is not None and mp50 >= dense - 1:
        for s in (0.5, 0.8):
            v = {"slt": b("slt", s), "mp": b("mp", s)}
            add(f"(d) SLT within 1 of MP at {s:.0%}", v, lambda v=v: abs(v["slt"] - v["mp"]) <= 1)
        v = {"mp": b("mp", 0.9), "slt": b("slt", 0.9)}
        add("(d) MP ahead of SLT at 90%", v, lambda: v["mp"] > v["slt"])
        for s in (0.8, 0.9):
            v = {"slt_mp": b("slt_mp", s), "slt": b("slt", s), "mp": b("mp", s)}
            add(f"(d) SLT-MP >= SLT and MP at {s:.0%}", v, lambda v=v: v["slt_mp"] >= max(v["slt"], v["mp"]))
    else:
        out.append({"check": "(d) MP at 50% within 1 BLEU of dense: not at this budget (MP's curve in the table)",
                    "value": {"mp50": mp50, "dense": dense}, "pass": None})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="translation_cpu")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--methods", default="slt,lt,mp,slt_mp")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    methods = args.methods.split(",")
    tag = args.tag or args.preset
    runs, docs = ROOT / "bench" / "runs" / "translation" / tag, ROOT / "docs" / "translation" / tag
    t = time.time()
    dirs, mem = [], []
    for method in methods:
        cfg = method_config(args.preset, method, args.iterations, args.trials)
        out, kept_dir = runs / method, docs / "runs" / method
        done = common.kept(kept_dir, cfg.to_dict())
        if done is None:
            dense = next((runs / m for m in methods if (runs / m / "state.json").is_file()
                          and 0 in lottery.RunDir(runs / m, writer=False).done_levels()), None)
            if dense is not None and dense != out:
                share_level0(dense, out, cfg)
            print(f"== {method} -> {out}", flush=True)
            lottery.run(cfg, out)
            done = {"memory": memory({method: out})}
            common.keep(out, kept_dir, cfg.to_dict(), **done)
        else:
            print(f"== {method}: kept from an earlier invocation in {kept_dir}", flush=True)
        dirs.append(kept_dir)
        mem += [r for r in done["memory"] if r["method"] != "dense" or not mem]
    minutes = (time.time() - t) / 60
    rows = TR.merge(dirs)
    summary = TR.method_summary(rows, metrics.read(dirs[0]))
    table = TR.format_table1(summary, title=f"{args.preset}, {args.iterations} steps a run, {args.trials} trial(s)")
    docs.mkdir(parents=True, exist_ok=True)
    TR.plot_bleu(summary, docs / TR.PLOT, title=f"{args.preset}: test BLEU at early stop")
    found = checks(summary)
    word = {True: "PASS", False: "FAIL", None: "n/a "}
    lines = [f"{word[c['pass']]}  {c['check']}: {c['value']}" for c in found]
    command = (f"python bench/translation_lottery.py --preset {args.preset} --iterations {args.iterations} "
               f"--trials {args.trials} --methods {args.methods}" + (f" --tag {args.tag}" if args.tag else ""))
    mem_text = common.table(mem, ["method", "level", "sparsity", "csc_bytes", "dense_fp32_bytes", "max_abs_w"])
    (docs / "table.txt").write_text(f"{command}\n\n{table}\n\n{mem_text}\n\n" + "\n".join(lines) + "\n")
    configs = {m: json.loads((d / "config.json").read_text()) for m, d in zip(methods, dirs)}
    payload = {"command": command, "summary": summary, "checks": found, "configs": configs, "memory": mem,
               "minutes_this_invocation": minutes}
    (docs / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    record(f"translation_{tag}", payload)
    print(table)
    print(mem_text)
    print("\n".join(lines))
    print(f"this invocation: {minutes:.1f} min")


if __name__ == "__main__":
    common.run_main(main)
