"""The instability analysis's tables (``lth instability``, ``lth report``): per k the error barrier and
the two copies' errors, for one trial or as mean ± std over trials, and the suggested ``--rewind-step``
(the smallest k whose barrier is at most the document's threshold, 2 percentage points). Reads
``RUN_DIR/instability/level_LL/instability.json`` (:mod:`lth.instability`)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LthError
from .report import _mean_std

INSTABILITY = "instability"


def format_instability(doc: dict, *, trial: int = 0, all_trials: bool = False) -> str:
    """Per k: the error barrier and the copies' errors, for one trial or as mean ± std over every
    trial; then the suggested rewind step, the smallest k whose barrier is at most the document's
    threshold (2 percentage points)."""
    from lth.plots import instability_steps

    level, have = doc.get("level"), sorted(doc.get("trials", {}), key=int)
    steps = instability_steps(doc, None if all_trials else [str(trial)])
    if not steps:
        return (f"Instability, level {level}: no results for trial {trial} (trials with results: "
                f"{', '.join(have) or 'none'}; see --trial, --all-trials)\n")
    scale, unit = doc.get("error_scale", 1.0), doc.get("error_unit", "")
    fmt = ".2f" if scale == 100.0 else ".4f"
    who = f"{len(have)} trial(s), mean ± std" if all_trials else f"trial {trial}"
    lines = [f"Instability, level {level} ({who}; error = {doc.get('error')}, in {unit}; "
             f"{doc.get('points')} points from copy A to copy B):"]
    header = ["k"] + (["trials"] if all_trials else []) + ["barrier", "error A", "error B"]
    body, means = [], {}
    for k, entries in steps.items():
        cols = [[e["barrier"] for e in entries]] + [[e["endpoint_errors"][c] for e in entries] for c in (0, 1)]
        cells = [str(k)] + ([str(len(entries))] if all_trials else [])
        for values in cols:
            mean, std = _mean_std(values)
            cells.append(format(mean * scale, fmt) + (f" ± {format(std * scale, fmt)}" if all_trials else ""))
        means[k] = _mean_std(cols[0])[0]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    for row in [header] + body:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    threshold = doc.get("threshold", 0.02)
    limit = f"barrier <= {format(threshold * scale, 'g')} {unit}"
    stable = [k for k, b in means.items() if b is not None and b <= threshold + 1e-12]
    lines.append(f"suggested --rewind-step: {stable[0]} (the smallest k with {limit})" if stable
                 else f"suggested --rewind-step: none (no k has {limit}; try later steps)")
    return "\n".join(lines) + "\n"


def instability_report(run_dir, *, trial: int = 0, all_trials: bool = False) -> str:
    """The instability tables of every analysed level of ``run_dir`` ("" when it has none)."""
    sections = []
    for path in sorted((Path(run_dir) / INSTABILITY).glob("level_*/instability.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            sections.append(format_instability(doc, trial=trial, all_trials=all_trials))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise LthError(f"{path}: unreadable instability results ({type(e).__name__}: {str(e)[:120]}); "
                           "delete it to redo that analysis") from None
    return "\n".join(sections)
