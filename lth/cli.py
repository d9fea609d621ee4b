"""The ``lth`` command: parses, validates, calls the library. No experiment logic lives here."""

from __future__ import annotations

import argparse
import sys

from .errors import LthError
from .ticket_cmds import cmd_eval, cmd_export, cmd_generate, cmd_inspect  # the commands that read a ticket

# Flags that get a short, documented spelling; every other Config field is --field-name too.
DOC = {
    "levels": "pruning levels after the dense level 0",
    "epochs": "epochs per level (overrides iterations)",
    "iterations": "training iterations per level",
    "trials": "independent trials (seeds), trained together",
    "prune_rate": "fraction of surviving weights pruned per level",
    "prune_of": "what prune_rate is a fraction of: remaining (default: each level's survivors) or original "
                "(the dense count: level L at 1 - L*rate density, Chen et al. 2020)",
    "prune_scope": "layer: per-layer rates; global: one magnitude threshold over all layers",
    "controls": "comma-separated control branches (lth.branches): reinit,random,random_global,omp,constant,"
                "random_sign,constant_random_sign,shuffle",
    "criterion": "pruning score (lth.scores): magnitude (default), random; snip, grasp, synflow prune at init",
    "output_rate": "the output layer's rate per level (default: prune_rate, or layer_rates)",
    "group_rates": "rates per layer kind, e.g. conv=0.1,fc=0.2,output=0.1",
    "weights": "where θ0 comes from: seed (default), checkpoint:PATH (+ --weights-sha256), run:DIR[@LEVEL]",
    "layer_rates": "per-layer rate overrides, e.g. fc3.weight=0.1",
    "warmup": "steps of linear learning-rate warmup from 0 (also --warmup-steps)",
    "rewind_step": "rewind survivors to their weights at step K (and resume the LR schedule there, with a "
                   "fresh optimizer: no momentum carried over)",
    "head_fit_steps": "steps fitting a new head (bert's MLM head) alone on the frozen checkpoint before level 0; "
                      "every level rewinds to that fit (lth.head_fit)",
    "head_fit_lr": "the head fit's learning rate (default: --lr)",
    "transfer_source": "recorded by a transfer (lth train PRESET --ticket FILE): the source ticket",
    "train_images": "image tasks: train on the first N training images only",
    "sparsities": "target sparsity per level, e.g. 0.5,0.8,0.9 (levels = their count; every tensor alike)",
    "method": "lt, slt, mp, slt_mp, mp_slt (Brix et al. 2020, lth.gradual; needs --sparsities), or any label",
    "gradual_levels": "levels pruned while they train (magnitude, cubic schedule) instead of at their start",
    "rewind_from": "dense: θk of the level-0 run (Frankle et al.); previous: of the level before's run (Brix et al.)",
    "control_levels": "train a control at these levels only, e.g. JSON {\"omp\": [3], \"reinit\": [2, 3]}",
    "restart_schedule": "every level runs the whole schedule from step 0, warmup included (true/false)",
    "test_at": "every (default): test split at each evaluation; best: at early stop and at the end only",
    "model_args": "model constructor arguments, e.g. hidden=300:100 (a list) or n_layer=2, or JSON",
    "schedule": "iterative, or oneshot (prune the dense net straight to each level's sparsity)",
    "device": "auto (CUDA when present), cpu or cuda:N",
    "batched": "train trials and branches together as one batched model (true/false)",
    "data_dir": "directory with MNIST-format IDX files (default: the embedded MNIST)",
    "rule": "supermask: ste, topk or bernoulli",
    "density": "supermask: target fraction of weights kept",
    "temperature": "supermask ste: temperature at step 0",
    "temperature_final": "supermask ste: temperature at the last step",
    "threshold": "supermask ste: tau; mask = sigmoid(score / T) >= tau",
    "density_penalty": "supermask ste/bernoulli: pull of each layer's density towards the target",
}


ALIASES = {"warmup": ("--warmup-steps",)}  # the CNN track's name (Frankle et al.: "warmup over W iterations")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    from .presets import field_types

    for name in field_types():
        if name in ("name", "description"):
            continue
        p.add_argument("--" + name.replace("_", "-"), *ALIASES.get(name, ()), dest="cfg_" + name, metavar="V",
                       help=DOC.get(name))
    p.add_argument("--no-batched", action="store_true", help="train members one after another")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args, base: dict | None = None):
    """The preset (or ``base``, a recorded config) with the command line's overrides applied."""
    from .presets import Config, override, parse_value, preset, validate

    cfg = Config(**base) if base is not None else preset(args.preset)
    values = {}
    for k, v in vars(args).items():
        if k.startswith("cfg_") and v is not None:
            values[k[4:]] = parse_value(k[4:], v)
    for item in args.set:
        k, eq, v = item.partition("=")
        if not eq:
            raise LthError(f"--set takes KEY=VALUE, got {item!r}")
        values[k] = parse_value(k, v)
    if args.no_batched:
        values["batched"] = False
    if "iterations" in values and "epochs" not in values:
        values["epochs"] = None  # an explicit --iterations wins over a preset's epochs
    return validate(override(cfg, values))


def cmd_presets(args) -> int:
    from .presets import PRESETS

    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p['description']}")
    return 0


def _run(args, dense_only: bool) -> int:
    from . import lottery
    from .report import report

    ticket = None
    if getattr(args, "ticket", None):
        from . import ticket as T

        ticket = T.load(args.ticket, max_params=args.max_params)
    base = None
    if args.preset is None:
        if ticket is None or "config" not in ticket.meta:
            raise LthError("give a PRESET (or --ticket FILE packed from a run, which records its config)")
        base = ticket.meta["config"]
    cfg = config_from_args(args, base=base)
    run = lottery.run(cfg, args.out, progress=not args.no_progress, dense_only=dense_only, ticket=ticket,
                      transfer=getattr(args, "transfer", False), ticket_path=getattr(args, "ticket", None))
    if run.writer:
        print(report(run.path))
        print(f"results in {run.path}/ (results.csv, accuracy_vs_remaining.png, early_stop_vs_remaining.png)")
    return 0


def cmd_lottery(args) -> int:
    return _run(args, dense_only=False)


def cmd_train(args) -> int:
    return _run(args, dense_only=True)


def cmd_supermask(args) -> int:
    from . import supermask
    from .report import report

    cfg = config_from_args(args)
    sm = supermask.SupermaskRun(cfg, args.out, progress=not args.no_progress)
    run = sm.run_trials()
    counts = supermask.trained_floats(sm.template, sm.names)
    print(report(run.path))
    print(f"trained: {counts['scores']:,} scores (shipped as {counts['mask_bits']:,} mask bits) and "
          f"{counts['scales']} scales; trained floats shipped: {counts['trained_floats_shipped']}; "
          f"weights never trained ({counts['frozen']:,} floats regenerated from the seed)")
    print(f"results in {run.path}/ (results.csv, supermask_trial*.safetensors, accuracy_vs_remaining.png)")
    return 0


def cmd_report(args) -> int:
    from .instability_report import instability_report
    from .report import report

    print(report(args.dir))
    extra = instability_report(args.dir, trial=args.trial, all_trials=args.all_trials)
    if extra:
        print(extra)
    return 0


def cmd_pack(args) -> int:
    from . import pack
    from . import ticket as T

    t = pack.from_run(args.run_dir, level=args.level, experiment=args.experiment, trial=args.trial,
                      trained=args.trained, dtype=args.dtype)
    n = T.save(t, args.output)
    what = (f"supermask {t.meta['rule']}, trial {t.meta['trial']}, {len(t.floats)} scale tensors"
            if t.meta.get("kind") == "supermask" else f"level {t.meta.get('level')}")
    print(f"wrote {args.output}: {n:,} bytes ({t.weights} weights, {what})")
    return 0


def cmd_download(args) -> int:
    from .data import download_dataset

    download_dataset(args.dataset, args.data_dir, base_url=args.base_url)
    print(f"{args.dataset} in {args.data_dir}")
    return 0


def cmd_tokenizer(args) -> int:
    from pathlib import Path

    from .data.text import train_tokenizer

    # a str would be taken as the training text itself: a path must be a Path
    path = train_tokenizer(None if args.text is None else Path(args.text), args.out, args.vocab_size)
    print(f"SentencePiece BPE, {args.vocab_size} tokens, trained on the training split: {path}")
    return 0


def cmd_encode(args) -> int:
    from .data.text import encode_corpus

    meta = encode_corpus(args.text, args.tokenizer, args.out)
    print(f"{args.out}: train {meta['train_tokens']:,} tokens ({meta['train_bytes']:,} bytes), "
          f"val {meta['val_tokens']:,} tokens ({meta['val_bytes']:,} bytes), vocab {meta['vocab_size']}")
    return 0


def add_max_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-params", type=_positive_int, default=None, metavar="N",
                   help="refuse a ticket whose architecture has more parameters, checked before anything is "
                   "allocated (default 50,000,000: lth.ticket.MAX_PARAMS)")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lth", description="Lottery tickets: find, train, compress, ship.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list presets")
    p.set_defaults(fn=cmd_presets)

    for name, fn, help_ in (
        ("lottery", cmd_lottery, "iterative magnitude pruning with resets, controls and trials"),
        ("train", cmd_train, "train the dense network alone (level 0 of a lottery run)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("preset", nargs="?" if name == "train" else None)
        p.add_argument("--out", required=True, help="run directory (resumes if it exists)")
        if name == "train":
            p.add_argument("--ticket", help="retrain the subnetwork of this ticket file (its masks, seed, data order); "
                           "with a PRESET of another dataset: transfer its masks to that task (lth.transfer)")
            p.add_argument("--transfer", action="store_true", help="with --ticket: a transfer even on the same dataset")
            add_max_params(p)
        add_config_flags(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("supermask", help="train masks (and a few scales) over frozen seed-derived weights")
    p.add_argument("preset")
    p.add_argument("--out", required=True, help="run directory (resumes if it exists)")
    add_config_flags(p)
    p.set_defaults(fn=cmd_supermask)

    p = sub.add_parser("report", help="table (mean ± std) and plots of a run directory")
    p.add_argument("dir")
    p.add_argument("--trial", type=int, default=0, help="instability results: the trial shown (default 0)")
    p.add_argument("--all-trials", action="store_true", help="instability results: mean ± std over trials")
    p.set_defaults(fn=cmd_report)

    from .instability import add_parser as add_instability

    add_instability(sub)

    from .tasks.translate import add_parser as add_translate

    add_translate(sub)

    p = sub.add_parser("pack", help="pack a lottery or supermask run's ticket into a ticket file")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--level", type=int, default=None, help="level to pack (default: the last finished)")
    p.add_argument("--experiment", default=None,
                   help="lottery branch, a lth.branches.BRANCHES name: ticket (default), reinit, random, ...")
    p.add_argument("--trial", type=int, default=0)
    p.add_argument("--trained", action="store_true", help="ship the trained weights (stored floats)")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="precision of stored weights")
    p.set_defaults(fn=cmd_pack)

    p = sub.add_parser("inspect", help="parts of a ticket file, their bytes and the entropy bound")
    p.add_argument("ticket")
    p.add_argument("--json", action="store_true")
    p.add_argument("--budget", type=int, default=16_000_000, help="byte budget for code + ticket")
    p.add_argument("--code", action="append", default=None, metavar="FILE",
                   help="a file counted as code (repeatable; default: the lth package's .py files)")
    p.add_argument("--code-bytes", type=int, default=None, help="count this many code bytes instead")
    add_max_params(p)
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("eval", help="regenerate a ticket's network and evaluate it")
    p.add_argument("ticket")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    add_max_params(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("export", help="dense safetensors (and torch.nn.utils.prune form) from a ticket or a run; "
                       "--hf: a Hugging Face directory (bert)")
    p.add_argument("ticket", help="a ticket file, or a lottery run directory (packed at --level)")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--hf", default=None, metavar="DIR", help="a save_pretrained-style directory (model bert)")
    p.add_argument("--level", type=int, default=None, help="with a run directory: the level (default: the last)")
    p.add_argument("--trained", action="store_true", help="with a run directory: the trained weights")
    p.add_argument("--torch-prune", action="store_true", help="also write weight_orig/weight_mask form")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("generate", help="sample text from a language-model ticket")
    p.add_argument("ticket")
    p.add_argument("--prompt", required=True)
    p.add_argument("--tokens", type=int, default=200, help="new tokens to sample")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default=None, help="'bytes' or a .model (default: the run's)")
    p.add_argument("--device", default="cpu")
    add_max_params(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("download", help="download MNIST, Fashion-MNIST or CIFAR-10 (SHA-256 verified)")
    d.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    d.add_argument("--data-dir", required=True)
    d.add_argument("--base-url", default=None)
    d.set_defaults(fn=cmd_download)
    text_help = "UTF-8 text file, optionally .gz (default: the embedded World English Bible)"
    d = dsub.add_parser("tokenizer", help="train a SentencePiece BPE tokenizer on a text's training split")
    d.add_argument("text", nargs="?", default=None, help=text_help)
    d.add_argument("--vocab-size", type=int, default=1024)
    d.add_argument("-o", "--out", required=True, help="model prefix: writes PREFIX.model")
    d.set_defaults(fn=cmd_tokenizer)
    d = dsub.add_parser("encode", help="split a text (last 10%% of lines = validation) and write token shards")
    d.add_argument("text", nargs="?", default=None, help=text_help)
    d.add_argument("--tokenizer", default="bytes", help="'bytes' or a SentencePiece .model file")
    d.add_argument("-o", "--out", required=True, help="directory for train.bin, val.bin, meta.json, val.json")
    d.set_defaults(fn=cmd_encode)
    return ap


def main(argv=None) -> int:
    from . import threads

    threads.choose()  # before anything imports torch: it reads OMP_* once, at its first import
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        what = {"supermask": "trial", "instability": "step k"}.get(args.command, "level")
        print(f"\ninterrupted: run the same command again to resume after the last finished {what}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
