"""Summaries, tables and plots of a run's ``results.csv``.

``results.csv`` is long format, one row per evaluation::

    experiment,trial,level,remaining,step,val_loss,val_acc,test_acc[,val_bpb,...]

Which metric early-stops (and in which direction) and which columns the table and plots show come
from the run's metric spec, ``metrics.json`` (:mod:`lth.metrics`, written from the task's registry
entry). A run directory without one is read as before the file existed (:func:`lth.metrics.legacy_spec`):
Frankle & Carbin's (2019) early stop at minimum validation loss, test accuracy at that iteration and
at the end, and bits per byte when the rows have ``val_bpb``. Per (experiment, level) the trials are
averaged (mean and sample standard deviation). Every function below takes that spec as ``spec``;
None means the legacy spec for the rows at hand.

The plots are :mod:`lth.plots` (re-exported here). Every file is written atomically (temp file +
``os.replace``). A run analysed by ``lth instability`` (``instability/level_LL/instability.json``,
:mod:`lth.instability`) also gets :func:`lth.instability_report.instability_report`: per k the error
barrier and the copies' errors, and the suggested ``--rewind-step``. A run whose headline is ``test_bleu`` (translation) also
gets :mod:`lth.translation_report`'s BLEU-vs-sparsity figure and table, per pruning method (the
optional string column ``method``). A classification task's run (metric spec note ``task =
classification``) also gets the highest matching sparsity under Chen et al.'s two definitions
(:mod:`lth.matching`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from lth import metrics as M
from lth.errors import LthError
from lth.io import atomic_write_bytes
from lth.plots import MAX_TICKS, PLOT_ACC, PLOT_BPB, PLOT_STEP, _group, build_figures, percent_label, plot  # noqa: F401

RESULTS = "results.csv"
CONFIG = "config.json"
SUMMARY = "summary.json"
KEYS = ("experiment", "trial", "level", "remaining", "step")
REQUIRED = KEYS + ("val_loss", "val_acc", "test_acc")  # without a metric spec (older runs)
INT_COLUMNS = ("trial", "level", "step")
STR_COLUMNS = ("experiment", "method")  # method: the pruning method (translation runs; optional)
BPB = "val_bpb"


# --------------------------------------------------------------------------------------------
# reading


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # accept "1e3" / "3.0"; raises ValueError for junk
        if not value.is_integer():
            raise ValueError(text) from None
        return int(value)


def _parse_cell(column: str, text: str | None):
    """Convert one CSV cell: ints for trial/level/step, strings for experiment/method, floats for
    numbers, else the string."""
    if text is None:
        return None
    text = text.strip()
    if text == "":
        return None
    if column in STR_COLUMNS:
        return text
    if column in INT_COLUMNS:
        return _parse_int(text)
    try:
        return float(text)
    except ValueError:
        if column in REQUIRED:
            raise
        return text


def _check_row(path: Path, line: int, row: dict, required=REQUIRED) -> None:
    for column in required:
        if row.get(column) is None:
            raise LthError(f"{path} line {line}: empty value in column '{column}'")
    # 0 is legitimate (a supermask evaluation whose mask came out empty); log-x plots leave it out
    if not 0.0 <= row["remaining"] <= 1.0:
        raise LthError(f"{path} line {line}: remaining={row['remaining']} is not in [0, 1]")


def required(spec: M.MetricSpec | None) -> tuple[str, ...]:
    """Columns every row must have: the keys, the early-stop column and the headline."""
    return REQUIRED if spec is None else tuple(dict.fromkeys(KEYS + (spec.early_stop, spec.headline)))


def filled(spec: M.MetricSpec | None) -> tuple[str, ...]:
    """Columns no row may leave empty: the keys and the early-stop column (with ``test_at="best"``
    the test columns are filled at early stop and at the end only, lth.best)."""
    if spec is None:  # older runs: the keys and the validation columns
        return KEYS + ("val_loss", "val_acc")
    return tuple(dict.fromkeys(KEYS + (spec.early_stop,)))


def read_results(path, spec: M.MetricSpec | None = None) -> list[dict]:
    """Parse ``results.csv`` into dicts with numbers converted (empty cells become ``None``).

    ``path`` may be the file or its run directory. A final line without its newline that is
    incomplete (a run still writing) is skipped. Required columns: :func:`required`.
    """
    REQUIRED = required(spec)  # noqa: N806  (shadows the module's tuple on purpose)
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise LthError(f"results file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise LthError(f"no results yet: {path} is empty")
    header = [h.strip() for h in header]
    for column in REQUIRED:
        if column not in header:
            raise LthError(f"{path}: missing required column '{column}'")
    records = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    if records and not text.endswith(("\n", "\r")):
        line, cells = records[-1]
        if len(cells) < len(header) or any(cells[header.index(c)].strip() == "" for c in filled(spec)):
            records.pop()  # partially written last line
    rows = []
    for line, cells in records:
        if len(cells) > len(header):
            raise LthError(f"{path} line {line}: {len(cells)} fields but the header has {len(header)}")
        row = {}
        for column, cell in zip(header, cells + [None] * (len(header) - len(cells))):
            try:
                row[column] = _parse_cell(column, cell)
            except ValueError:
                raise LthError(f"{path} line {line}: column '{column}' is not a number: {cell!r}") from None
        _check_row(path, line, row, filled(spec))
        rows.append(row)
    if not rows:
        raise LthError(f"no results yet: {path} has no rows")
    return rows


# --------------------------------------------------------------------------------------------
# early stopping and summaries


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _has_metric(rows: list[dict], column: str) -> bool:
    return any(_finite(r.get(column)) for r in rows)


def _spec(rows_or_summary, spec: M.MetricSpec | None) -> M.MetricSpec:
    """``spec``, or the legacy one (with bits per byte when the rows or summary entries have it)."""
    if spec is not None:
        return spec
    first = rows_or_summary[0] if rows_or_summary else {}
    return M.legacy_spec(f"{BPB}_mean" in first or _has_metric(rows_or_summary, BPB))


def _sign(mode: str) -> float:
    return 1.0 if mode == "min" else -1.0


def _stop_key(column: str, mode: str):
    """Sort key of a row: the early-stop value (best first, non-finite last), then the step."""
    def key(row: dict) -> tuple[float, int]:
        v = row.get(column)
        return (_sign(mode) * v if _finite(v) else math.inf, row["step"])

    return key


def early_stop(rows, spec: M.MetricSpec | None = None) -> list[dict]:
    """Per (experiment, trial, level): the row of the best early-stop value (ties: earliest step).

    Adds, per spec column ``c`` shown ``final``: ``final_c`` (its value at the group's last step) and
    shown ``best``: ``best_c`` (its best value over the group). Legacy spec: minimum val_loss,
    ``final_test_acc``, and ``best_val_bpb`` when the rows have val_bpb. Sorted by experiment (first
    appearance), level, trial.
    """
    rows = list(rows)
    if not rows:
        raise LthError("no results yet")
    spec = _spec(rows, spec)
    order = {e: i for i, e in enumerate(dict.fromkeys(r["experiment"] for r in rows))}
    out = []
    for group in _group(rows, ("experiment", "trial", "level")).values():
        best = min(group, key=_stop_key(spec.early_stop, spec.mode))  # min keeps the first of equal keys
        last = max(reversed(group), key=lambda r: r["step"])  # last step; latest line if repeated
        picked = dict(best)
        for c in spec.columns:
            if "final" in c.show:
                picked[f"final_{c.name}"] = last.get(c.name)
            if "best" in c.show:
                values = [r[c.name] for r in group if _finite(r.get(c.name))]
                picked[f"best_{c.name}"] = (min if c.mode == "min" else max)(values) if values else None
        out.append(picked)
    out.sort(key=lambda r: (order[r["experiment"]], r["level"], r["trial"]))
    return out


def _mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1; 0.0 for one value) of the finite values; None if none."""
    xs = np.array([v for v in values if _finite(v)], dtype=np.float64)
    if xs.size == 0:
        return None, None
    std = float(np.std(xs, ddof=1)) if xs.size > 1 else 0.0
    return float(np.mean(xs)), std


def _stats(spec: M.MetricSpec) -> list[tuple[str, M.Column | None, str]]:
    """(summary key, column, what) in table order: the headline at ES, the ES step, the headline's
    final/best, then each other column at ES and its final/best."""
    out = []
    for i, c in enumerate(spec.columns):
        out.append((c.name, c, "es"))
        if i == 0:
            out.append(("step", None, "step"))
        out += [(f"{w}_{c.name}", c, w) for w in ("final", "best") if w in c.show]
    return out


def summarize(rows, spec: M.MetricSpec | None = None) -> list[dict]:
    """Per (experiment, level) over trials, from the raw rows (early stopping is applied here).

    Keys: experiment, level, remaining (mean over trials), n (trials), and ``*_mean``/``*_std``
    for each spec column at early stop, its ``final_``/``best_`` values, and step (the early-stop
    iteration). Legacy spec: test_acc, step, final_test_acc; with val_bpb also val_bpb and
    best_val_bpb.
    """
    spec = _spec(list(rows), spec)
    stops = early_stop(rows, spec)
    metrics = [k for k, _, _ in _stats(spec)]
    summary = []
    for (experiment, level), group in _group(stops, ("experiment", "level")).items():
        entry = {
            "experiment": experiment,
            "level": level,
            "remaining": float(np.mean([r["remaining"] for r in group])),
            "n": len(group),
        }
        for m in metrics:
            entry[f"{m}_mean"], entry[f"{m}_std"] = _mean_std([r[m] for r in group])
        summary.append(entry)
    return summary


# --------------------------------------------------------------------------------------------
# table


def _table_percent(fraction: float) -> str:
    """Percent with 1 decimal (``100.0``, ``51.3``); 2 significant digits below 1% (``0.37``)."""
    pct = 100.0 * fraction
    return f"{pct:.2g}" if pct < 0.95 else f"{pct:.1f}"


def _split(mean, std, fmt: str, scale: float = 1.0) -> tuple[str, str]:
    if mean is None:
        return "-", ""
    return format(mean * scale, fmt), format(std * scale, fmt)


def _header(c: M.Column | None, what: str) -> str:
    if c is None:
        return "ES iteration"
    return f"{c.label} @ ES{c.unit}" if what == "es" else f"{what} {c.label}{c.unit}"


def format_table(summary, *, title: str | None = None, spec: M.MetricSpec | None = None) -> str:
    """Aligned text table: one row per level, grouped by experiment, ``98.12 ± 0.05`` cells."""
    if not summary:
        raise LthError("no results yet")
    spec = _spec(summary, spec)
    # (header, key, format, scale) for the "mean ± std" columns
    stats = [(_header(c, w), k, c.fmt if c else ".0f", c.scale if c else 1.0) for k, c, w in _stats(spec)]
    header = ["experiment", "level", "remaining (%)", "trials"] + [s[0] for s in stats]
    body = []
    previous = None
    for e in summary:
        name = e["experiment"] if e["experiment"] != previous else ""
        previous = e["experiment"]
        cells = [name, str(e["level"]), _table_percent(e["remaining"]), str(e["n"])]
        cells += [_split(e[f"{k}_mean"], e[f"{k}_std"], f, s) for _, k, f, s in stats]
        body.append(cells)
    n_plain = 4
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) for i in range(n_plain)]
    pm = []  # (mean width, std width, column width) for each "mean ± std" column
    for j in range(len(stats)):
        wm = max(len(row[n_plain + j][0]) for row in body)
        ws = max(len(row[n_plain + j][1]) for row in body)
        pm.append((wm, ws, max(len(header[n_plain + j]), wm + 3 + ws)))

    def stat_cell(cell, wm, ws, w):
        mean, std = cell
        text = f"{mean.rjust(wm)} ± {std.rjust(ws)}" if std else mean.rjust(wm + 3 + ws)
        return text.rjust(w)

    lines = []
    if title:
        lines.append(title)
    head = [header[0].ljust(widths[0])] + [header[i].rjust(widths[i]) for i in range(1, n_plain)]
    head += [header[n_plain + j].rjust(pm[j][2]) for j in range(len(stats))]
    lines.append("  ".join(head))
    lines.append("-" * len(lines[-1]))
    for row in body:
        if row[0] and len(lines) > 2 + bool(title):
            lines.append("")
        out = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, n_plain)]
        out += [stat_cell(row[n_plain + j], *pm[j]) for j in range(len(stats))]
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# report


def _json_safe(obj):
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _run_name(run_dir: Path) -> str | None:
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LthError(f"{path}: not valid JSON ({e})") from None
    name = config.get("name") if isinstance(config, dict) else None
    return str(name) if name not in (None, "") else None


def report(run_dir, *, write_json=True) -> str:
    """Summarize ``run_dir/results.csv``: write the plots (and summary.json), return the table."""
    run_dir = Path(run_dir)
    name = _run_name(run_dir)
    recorded = M.read(run_dir)  # None: a run from before metrics.json, read the legacy way
    rows = read_results(run_dir / RESULTS, recorded)
    spec = _spec(rows, recorded)
    summary = summarize(rows, spec)
    plot(summary, run_dir, title=name, spec=spec)
    if write_json:
        doc = {"name": name, "summary": summary, "early_stop": early_stop(rows, spec)}
        if recorded is not None:
            doc["metrics"] = recorded.to_dict()
        text = json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(run_dir / SUMMARY, text.encode("utf-8"))
    table = format_table(summary, title=name, spec=spec)
    if dict(spec.notes).get("task") == "classification":  # Chen et al.'s matching sparsities, lth.matching
        from lth.matching import format_matching

        table += "\n" + format_matching(summary, spec.headline, spec.columns[0].mode, spec.columns[0].scale)
    if spec.headline == "test_bleu":  # translation: BLEU per pruning method, lth.translation_report
        from lth.translation_report import write_outputs

        table += "\n" + write_outputs(rows, spec, run_dir, title=name)
    return table
