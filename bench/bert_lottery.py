"""Chen et al. 2020 on 2 CPU cores (issue 13's proof): lottery tickets in pre-trained BERT (all-MiniLM-L6-v2),
their controls, and tickets that transfer between tasks; resumable.

    python bench/bert_lottery.py [--phases lr,lottery,mlm,transfer] [--smoke]

Every phase is lth runs in ``bench/runs/bert[_smoke]/``; a killed invocation resumes (finished levels are
kept, an unfinished one resumes from its snapshot; a finished run is not redone).

1. ``lr``: dense fine-tuning of ``bert_bbc_cpu`` and ``bert_fortunes_cpu`` at each rate of ``LRS``, one
   trial; the rate with the best validation accuracy at early stop is the task's (recorded).
2. ``lottery``: per classification task, IMP rewinding to θ0 at 20 / 40 / 60% sparsity (global magnitude
   over the 36 encoder matrices), 3 trials, at the picked rate; controls ``random`` and ``reinit`` at 40
   and 60%, ``omp`` at 40 and 60% (40%: a transfer source), ``shuffle`` at 60%.
3. ``mlm``: ``bert_mlm_cpu`` (head fit alone first) at 20 / 40 / 60%, one trial, ``MLM_STEPS`` a level.
4. ``transfer``: the 40% tickets (trial 0) of BBC, fortunes, MLM and BBC's ``omp`` mask, each fine-tuned
   on BBC and fortunes from θ0 (``lth train TARGET --ticket``), 3 seeds: ``transfer.csv`` and the heat
   map of TRANSFER(S, T) - dense(T) (``lth.matching``).

Writes ``docs/bert/``: per task the report's table (matching sparsity under both rules), plots, the
transfer map, ``results.json``, and ``bench/results/bert_lottery.json``. ``--smoke``: the same on tiny
budgets (a few steps, 16 tokens), to check the script end to end in minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from common import ROOT, record

from lth import lottery, matching, pack
from lth import ticket as T
from lth.presets import override, preset
from lth.report import read_results, report, summarize

TASKS = {"bbc": "bert_bbc_cpu", "fortunes": "bert_fortunes_cpu"}
LRS = [1e-5, 2e-5, 5e-5]
SPARSITIES = [0.2, 0.4, 0.6]
CONTROLS = ["random", "reinit", "omp", "shuffle"]
CONTROL_LEVELS = {"random": [2, 3], "reinit": [2, 3], "omp": [2, 3], "shuffle": [3]}
MLM_STEPS, MLM_HEAD_STEPS = 150, 100
SMOKE = dict(iterations=3, epochs=None, eval_every=3, seq_len=16, batch_size=8)


def cfg_for(name: str, smoke: bool, **kw):
    return override(preset(name), {**(SMOKE if smoke else {}), **kw})


def best_val(run_dir) -> float:
    rows = [r for r in read_results(run_dir / "results.csv") if r["level"] == 0]
    return max(r["val_acc"] for r in rows)


def phase_lr(base, smoke: bool) -> dict:
    picked = {}
    for task, name in TASKS.items():
        scores = {}
        for lr in LRS[:1] if smoke else LRS:
            out = base / "lr" / f"{task}_{lr:g}"
            lottery.run(cfg_for(name, smoke, lr=lr, trials=1, controls=[]), out, dense_only=True)
            scores[lr] = best_val(out)
        picked[task] = {"lr": max(scores, key=scores.get), "val_acc": scores}
    return picked


def phase_lottery(base, smoke: bool, lrs: dict) -> dict:
    out = {}
    for task, name in TASKS.items():
        cfg = cfg_for(name, smoke, lr=lrs[task]["lr"], sparsities=SPARSITIES, trials=2 if smoke else 3,
                      controls=CONTROLS, control_levels=CONTROL_LEVELS, rewind_step=0)
        run_dir = base / "lottery" / task
        lottery.run(cfg, run_dir)
        out[task] = run_dir
    return out


def phase_mlm(base, smoke: bool):
    kw = dict(iterations=3, eval_every=3, seq_len=16, batch_size=8, head_fit_steps=2) if smoke else \
        dict(iterations=MLM_STEPS, eval_every=50, head_fit_steps=MLM_HEAD_STEPS)
    cfg = override(preset("bert_mlm_cpu"), dict(kw, sparsities=SPARSITIES, trials=1, controls=[], rewind_step=0))
    run_dir = base / "lottery" / "mlm"
    lottery.run(cfg, run_dir)
    return run_dir


def phase_transfer(base, smoke: bool, runs: dict, lrs: dict) -> list:
    tickets = base / "tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    sources = {"bbc": (runs["bbc"], "ticket"), "fortunes": (runs["fortunes"], "ticket"), "mlm": (runs["mlm"], "ticket"),
               "omp": (runs["bbc"], "omp")}
    dirs = []
    for src, (run_dir, experiment) in sources.items():
        path = tickets / f"{src}_40.ticket"
        if not path.exists():
            T.save(pack.from_lottery_run(run_dir, level=2, experiment=experiment), path)
        t = T.load(path)
        for target, name in TASKS.items():
            out = base / "transfer" / f"{src}_to_{target}"
            cfg = cfg_for(name, smoke, lr=lrs[target]["lr"], trials=2 if smoke else 3, controls=[])
            lottery.run(cfg, out, dense_only=True, ticket=t, transfer=True, ticket_path=str(path))
            dirs.append((src, target, out))
    return dirs


def transfer_rows(dirs, runs: dict) -> tuple[list[dict], dict]:
    """Rows per (source label, target, seed) at early stop, and each target's dense mean (its lottery level 0)."""
    from lth import metrics as M
    from lth.report import early_stop

    rows = []
    for src, target, d in dirs:
        spec = M.read(d)
        for r in early_stop(read_results(d / "results.csv", spec), spec):
            if r["experiment"] == "ticket" and r["level"] == 0:
                rows.append({"source": src, "target": target, "seed": r["trial"], "test_acc": r["test_acc"]})
    dense = {}
    for task in TASKS:
        spec = M.read(runs[task])
        dense[task] = matching.dense_entry(summarize(read_results(runs[task] / "results.csv", spec), spec))["test_acc_mean"]
    return rows, dense


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phases", default="lr,lottery,mlm,transfer")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    phases = args.phases.split(",")
    name = "bert_smoke" if args.smoke else "bert"
    base, docs = ROOT / "bench" / "runs" / name, ROOT / "docs" / name
    docs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    state_path = base / "lr.json"
    if "lr" in phases or not state_path.exists():
        lrs = phase_lr(base, args.smoke)
        state_path.write_text(json.dumps(lrs))
    lrs = json.loads(state_path.read_text())
    lrs = {k: {**v, "lr": float(v["lr"])} for k, v in lrs.items()}
    payload = {"lr": lrs, "smoke": args.smoke}
    runs = {task: base / "lottery" / task for task in (*TASKS, "mlm")}
    if "lottery" in phases:
        phase_lottery(base, args.smoke, lrs)
    if "mlm" in phases:
        phase_mlm(base, args.smoke)
    texts = []
    for task, run_dir in runs.items():
        if (run_dir / "results.csv").exists():
            texts.append(f"## {task}\n\n{report(run_dir)}")
            for png in run_dir.glob("*.png"):
                shutil.copy(png, docs / f"{task}_{png.name}")
            spec_rows = read_results(run_dir / "results.csv")
            payload[task] = {"summary": summarize(spec_rows) if task == "mlm" else None,
                             "config": json.loads((run_dir / "config.json").read_text())}
    if "transfer" in phases:
        dirs = phase_transfer(base, args.smoke, runs, lrs)
        rows, dense = transfer_rows(dirs, runs)
        matching.write_transfer(rows, dense, docs, title="TRANSFER(S, T) - dense(T), test accuracy, 40% sparsity")
        cells = matching.transfer_cells(rows, dense)
        texts.append("## transfer (40%)\n\n" + matching.transfer_csv(cells))
        payload["transfer"] = cells
    minutes = (time.time() - t0) / 60
    command = f"python bench/bert_lottery.py --phases {args.phases}" + (" --smoke" if args.smoke else "")
    lr_text = ", ".join(f"{k}: lr {v['lr']:g} (val acc {v['val_acc']})" for k, v in lrs.items())
    (docs / "table.txt").write_text(f"{command}\n\nlearning rates picked on validation: {lr_text}\n\n" +
                                    "\n\n".join(texts) + "\n")
    payload.update(command=command, minutes_this_invocation=minutes)
    (docs / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    record(name + "_lottery", payload)
    print((docs / "table.txt").read_text())
    print(f"this invocation: {minutes:.1f} min")


if __name__ == "__main__":
    main()
