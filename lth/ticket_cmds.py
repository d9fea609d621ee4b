"""The ``lth`` commands that read a ticket file: ``inspect``, ``eval``, ``export``, ``generate``.

A ticket is untrusted input: each command loads it through :func:`lth.ticket.load` (schema-checked,
``--max-params``), so a bad file is one line. Output formatting lives here too.
"""

from __future__ import annotations

from .errors import LthError

def format_inspect(info: dict) -> str:
    lines = [
        f"total            {info['total_bytes']:>10,} bytes  ({info['bits_per_prunable_weight']:.4f} bits per prunable weight)",
        f"  header         {info['header_bytes']:>10,}",
        f"  masks          {info['mask_bytes']:>10,}  (entropy bound {info['entropy_bound_bytes']:,.1f}, "
        f"gap {100 * info['gap_to_bound']:+.3f}%)",
        *([f"  signs          {info['sign_bytes']:>10,}  (a bit per survivor: ±α_l)"] if info.get("sign_bytes") else []),
        f"  floats         {info['float_bytes']:>10,}  (weights: {info['weights']})",
        f"  checksum       {info['checksum_bytes']:>10,}",
        f"weights sha256   {info['weights_sha256'] or 'not computed: ' + str(info.get('build_error'))}",
        "",
    ]
    w = max([24] + [len(e["name"]) + 2 for e in info["masks"] + info.get("floats", [])])  # the name column
    lines.append(f"{'tensor':<{w}}{'shape':<16}{'density':>9}{'coding':>12}{'bytes':>10}{'bound':>11}")
    for m in info["masks"]:
        lines.append(f"{m['name']:<{w}}{'x'.join(map(str, m['shape'])):<16}{100 * m['density']:>8.2f}%"
                     f"{m['coding']:>12}{m['bytes']:>10,}{m['bound_bytes']:>11,.1f}")
    if info.get("floats"):  # supermask scales or stored weights
        lines += ["", f"{'float entry':<{w}}{'shape':<16}{'dtype':>9}{'bytes':>22}"]
        lines += [f"{f['name']:<{w}}{'x'.join(map(str, f['shape'])):<16}{f['dtype']:>9}{f['bytes']:>22,}"
                  for f in info["floats"]]
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    import json
    from pathlib import Path

    from . import ticket as T

    path = Path(args.ticket)
    if not path.exists():
        raise LthError(f"{path}: no such ticket file")
    info = T.inspect(T.read_file(path), source=str(path), max_params=args.max_params)
    info.update(budget(info["total_bytes"], args.code, args.code_bytes, args.budget))
    print(json.dumps(info, indent=2) if args.json else format_inspect(info) + "\n" + format_budget(info))
    return 0


def code_files(paths: list[str] | None) -> list:
    """The files whose bytes count as code: the given ones, or every .py file of the lth package."""
    from pathlib import Path

    if paths:
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise LthError(f"{missing[0]}: no such code file")
        return [Path(p) for p in paths]
    return sorted(Path(__file__).resolve().parent.rglob("*.py"))


def budget(ticket_bytes: int, code: list[str] | None, code_bytes: int | None, limit: int) -> dict:
    """The parameter-golf accounting: code bytes + artifact bytes against a byte budget."""
    if code_bytes is None:
        code_bytes = sum(p.stat().st_size for p in code_files(code))
    if code_bytes < 0 or limit <= 0:
        raise LthError(f"code bytes must be >= 0 and the budget > 0, got {code_bytes} and {limit}")
    total = code_bytes + ticket_bytes
    return {"code_bytes": code_bytes, "budget_bytes": limit, "code_plus_ticket_bytes": total,
            "fits_budget": total <= limit, "budget_left_bytes": limit - total}


def format_budget(info: dict) -> str:
    verdict = "fits" if info["fits_budget"] else "does NOT fit"
    return (f"budget: code {info['code_bytes']:,} + ticket {info['total_bytes']:,} = "
            f"{info['code_plus_ticket_bytes']:,} bytes: {verdict} in {info['budget_bytes']:,} "
            f"({info['budget_left_bytes']:+,} left)")


def check_device(name: str) -> None:
    from .presets import check_device as check

    check(name, allow_auto=False)


def cmd_eval(args) -> int:
    from . import pack
    from . import ticket as T

    check_device(args.device)
    t = T.load(args.ticket, max_params=args.max_params)
    metrics = pack.evaluate(t, data_dir=args.data_dir, device=args.device)
    print(format_eval(metrics, t.meta.get("results") or {}))
    return 0


def format_eval(metrics: dict[str, float], recorded: dict[str, float]) -> str:
    """One line per metric, beside the value the run recorded (as results.csv rounds it, 6 decimals):
    'exact' where they agree, else the difference. Same machine: they agree (evaluation does not depend
    on how many members trained together); another CPU kind may differ in the last digits."""
    lines = []
    for k, v in metrics.items():
        line = f"{k:<10} {v:.6f}"
        if k in recorded:
            diff = round(v, 6) - float(recorded[k])
            line += "  recorded: exact" if diff == 0 else f"  recorded {float(recorded[k]):.6f}, differs by {diff:+.6f}"
        lines.append(line)
    return "\n".join(lines)


def cmd_export(args) -> int:
    from . import pack
    from . import ticket as T

    from pathlib import Path

    if args.output is None and args.hf is None:
        raise LthError("give -o/--output, --hf DIR or both")
    src = Path(args.ticket)  # a ticket file, or a run directory packed here (--level, --trained)
    t = (pack.from_run(src, level=args.level, trained=args.trained, dtype="float32") if src.is_dir()
         else T.load(src))
    written = pack.export(t, args.output, torch_prune=args.torch_prune) if args.output else []
    written += pack.export_hf(t, args.hf) if args.hf else []
    for p in written:
        print(f"wrote {p}")
    return 0


def cmd_generate(args) -> int:
    from . import pack
    from . import ticket as T
    from .sample import generate, tokenizer_for

    check_device(args.device)
    t = T.load(args.ticket, max_params=args.max_params)
    from . import models

    if models.entry(t.arch["model"]).inputs != "tokens":
        raise LthError(f"{args.ticket} holds a {t.arch['model']}, not a language model")
    model = pack.build(t).to(args.device)
    tok = tokenizer_for(t.meta.get("config", {}), args.tokenizer)
    print(generate(model, tok, args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                   seed=args.seed, device=args.device))
    return 0
