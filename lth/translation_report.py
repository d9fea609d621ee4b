"""The translation track's report: test BLEU against sparsity, per pruning method (Brix et al. 2020).

Input: the rows of one or more translation runs' ``results.csv`` (:func:`lth.report.read_results`),
whose metric spec (``metrics.json``, :mod:`lth.metrics`) early-stops on ``val_bleu``.

Specification:

- A row's *method* (:func:`method_of`) is its ``method`` column: the run's pruning method on ticket
  rows (``mp``, ``lt``, ``slt``, ``slt_mp``, ``mp_slt``, ``imp``, ...), the control's branch name on
  control rows. A row without one (a run from before the column) uses its experiment, ``ticket``
  being ``imp``. Level 0 rows are the dense network: method ``dense`` whatever they say. Names are
  then relabelled by :data:`LABELS` (``constant`` is Brix et al.'s CLT, ``constant_random_sign``
  ``random-sign``); any other name stays as it is.
- :func:`method_summary`: per (method, level), over trials, each member at its early-stop row
  (:func:`lth.report.summarize`, the spec's rule): ``remaining`` (mean), ``n`` (trials) and
  ``*_mean`` / ``*_std`` (sample std, 0 for one trial) of :data:`METRICS`. Sorted by :data:`ORDER`
  (names not in it after, in order of first appearance), then level.
- :func:`merge`: the rows of several run directories (one per method, as a benchmark runs them) as one
  list. Trials are renumbered so that every (run, trial) stays a trial of its own: a method or control
  found in several runs pools their trials. The dense level is the *first* run's level 0 only: the
  runs of a benchmark share the seed and the dense configuration, so their level 0s are one training
  repeated, and pooling them would overstate the number of trials. The runs must early-stop alike.
- :func:`format_table1`: Brix et al.'s Table 1 shape: one row per sparsity (``1 - remaining`` as a
  rounded percent; a dense row first), one column per method present (order :data:`ORDER`), cells
  ``mean ± std`` test BLEU ("-": not measured). Beside them, after ``|``, the paper's EN->DE columns
  (:data:`PAPER`, newstest2014 BLEU of a WMT Transformer; not comparable in level, only in shape), on
  the same rows: the table's rows are the union of both sparsities. Dense values sit in the first
  column of each side.
- :func:`plot_bleu`: ``bleu_vs_sparsity.png``: test BLEU at early stop against the percent of weights
  remaining (log axis, 100% on the left, as :mod:`lth.plots`), one line per method with ± std error
  bars, the dense model as a dashed horizontal line. Written atomically.
- :func:`write_outputs`: what ``lth report`` adds for a run whose headline is ``test_bleu``: the
  figure in the run directory and the table's text.
"""

from __future__ import annotations

from pathlib import Path

from lth import metrics as M
from lth import report as R
from lth.errors import LthError
from lth.plots import _group, _setup_x, write_figures

LABELS = {"constant": "clt", "constant_random_sign": "random-sign"}
ORDER = ("dense", "mp", "lt", "slt", "clt", "slt_mp", "mp_slt", "imp", "reinit", "random", "random-sign")
HEADERS = {"dense": "dense", "mp": "MP", "lt": "LT", "slt": "SLT", "clt": "CLT", "slt_mp": "SLT-MP",
           "mp_slt": "MP-SLT", "imp": "IMP"}
METRICS = ("test_bleu", "test_chrf", "val_bleu")
PLOT = "bleu_vs_sparsity.png"
# Brix et al. 2020, Table 1: EN->DE newstest2014 BLEU by sparsity (%) and method; the dense model: 26.8
PAPER = {50: dict(mp=26.4, lt=25.4, slt=26.6, clt=26.7, slt_mp=26.4),
         80: dict(mp=24.8, lt=23.2, slt=24.8, clt=24.1, slt_mp=25.6),
         90: dict(mp=22.9, lt=20.9, slt=21.7, clt=21.6, slt_mp=23.5)}
PAPER_DENSE = 26.8


def method_of(row: dict) -> str:
    """The row's method label (module docstring): ``dense`` at level 0, else its ``method`` column (its
    experiment when it has none, ``ticket`` meaning ``imp``), relabelled by :data:`LABELS`."""
    if row["level"] == 0:
        return "dense"
    name = row.get("method") or ("imp" if row["experiment"] == "ticket" else row["experiment"])
    return LABELS.get(name, name)


def _ordered(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), names.index(m)))


def method_summary(rows, spec: M.MetricSpec | None = None) -> list[dict]:
    """Per (method, level): method, level, remaining, n and ``*_mean``/``*_std`` of :data:`METRICS` at
    each member's early stop, sorted by :data:`ORDER` then level."""
    relabelled = [{**r, "experiment": method_of(r)} for r in rows]
    summary = R.summarize(relabelled, spec)
    out = []
    for e in summary:
        entry = {"method": e["experiment"], "level": e["level"], "remaining": e["remaining"], "n": e["n"]}
        for m in METRICS:
            entry[f"{m}_mean"], entry[f"{m}_std"] = e.get(f"{m}_mean"), e.get(f"{m}_std")
        out.append(entry)
    order = _ordered(e["method"] for e in out)
    return sorted(out, key=lambda e: (order.index(e["method"]), e["level"]))


def merge(run_dirs) -> list[dict]:
    """The rows of ``run_dirs`` as one list, with ``method`` filled and trials renumbered (module
    docstring); level 0 from the first run only."""
    rows, offset, rule = [], 0, None
    for i, run_dir in enumerate(run_dirs):
        spec = M.read(run_dir)
        here = (spec.early_stop, spec.mode) if spec else ("val_loss", "min")
        if rule is not None and here != rule:
            raise LthError(f"{run_dir}: early-stops on {here}, the first run on {rule}; not merged")
        rule = here
        part = R.read_results(run_dir, spec)
        for r in part:
            if i == 0 or r["level"] != 0:
                rows.append({**r, "method": method_of({**r, "level": 1}), "trial": offset + r["trial"]})
        offset += 1 + max(r["trial"] for r in part)
    if not rows:
        raise LthError("no runs to merge")
    return rows


# --------------------------------------------------------------------------------------------
# table


def sparsity_label(remaining: float) -> str:
    """``1 - remaining`` as a percent: whole percents (``50%``), one decimal from 99.5% (``99.6%``)."""
    pct = 100.0 * (1.0 - remaining)
    return f"{pct:.1f}%" if 99.5 <= pct < 99.95 else f"{round(pct):d}%"


def _cell(entry: dict | None, key: str = "test_bleu") -> str:
    if entry is None or entry.get(f"{key}_mean") is None:
        return "-"
    return f"{entry[f'{key}_mean']:.2f} ± {entry[f'{key}_std']:.2f}"


def format_table1(summary, paper=PAPER, *, paper_dense: float | None = PAPER_DENSE, title: str | None = None) -> str:
    """Test BLEU per sparsity (rows) and method (columns), the paper's numbers beside (module docstring)."""
    if not summary:
        raise LthError("no results yet")
    methods = _ordered(e["method"] for e in summary if e["method"] != "dense") or ["dense"]
    theirs = _ordered(m for row in paper.values() for m in row)
    dense = next((e for e in summary if e["method"] == "dense"), None)
    cells: dict[str, dict[str, str]] = {}  # sparsity label -> column -> text
    sort_key: dict[str, float] = {}
    for e in summary:
        if e["method"] != "dense":
            label = sparsity_label(e["remaining"])  # two levels with one label: the sparser one is shown
            sort_key[label] = 1.0 - e["remaining"]
            cells.setdefault(label, {})[e["method"]] = _cell(e)
    for pct, row in paper.items():
        label = f"{pct}%"
        sort_key.setdefault(label, pct / 100.0)
        cells.setdefault(label, {}).update({f"paper {m}": f"{v:.1f}" for m, v in row.items()})
    first = {methods[0]: _cell(dense)} if methods else {}
    if theirs and paper_dense is not None:
        first[f"paper {theirs[0]}"] = f"{paper_dense:.1f}"
    body = [["dense", *(first.get(m, "-") for m in methods), "|", *(first.get(f"paper {m}", "") for m in theirs)]]
    for label in sorted(cells, key=sort_key.get):
        row = cells[label]
        body.append([label, *(row.get(m, "-") for m in methods), "|", *(row.get(f"paper {m}", "") for m in theirs)])
    header = ["sparsity", *(HEADERS.get(m, m) for m in methods), "|", *(f"paper {HEADERS.get(m, m)}" for m in theirs)]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = [title or "Test BLEU at early stop (mean ± std over trials) by sparsity and method; beside it "
             "Brix et al. 2020, Table 1 (EN->DE newstest2014, their WMT Transformer)"]
    for i, row in enumerate([header] + body):
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip())
        if i == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# figure


def bleu_figure(summary, *, title: str | None = None):
    """The :data:`PLOT` figure (a matplotlib ``Figure``)."""
    from matplotlib.figure import Figure

    shown = [e for e in summary if e["remaining"] > 0]  # a log axis has no place for 0
    if not shown:
        raise LthError("no results yet")
    sparse = [e for e in shown if e["method"] != "dense" and e["test_bleu_mean"] is not None]
    dense = [e for e in shown if e["method"] == "dense" and e["test_bleu_mean"] is not None]
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, ((method,), group) in enumerate(_group(sparse, ("method",)).items()):
        group = sorted(group, key=lambda e: -e["remaining"])
        ax.errorbar([100.0 * e["remaining"] for e in group], [e["test_bleu_mean"] for e in group],
                    yerr=[e["test_bleu_std"] for e in group], marker="o", markersize=4, capsize=3,
                    linewidth=1.5, color=f"C{i % 10}", label=HEADERS.get(method, method))
    for e in dense:
        ax.axhline(e["test_bleu_mean"], color="0.3", linestyle="--", linewidth=1, label="dense")
    _setup_x(ax, shown)
    ax.set_ylabel("Test BLEU at early stop (sacrebleu)")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run still at level 0 has no test BLEU yet
        fig.legend(loc="outside right upper", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_bleu(summary, path, *, title: str | None = None) -> Path:
    """Write :func:`bleu_figure` to ``path`` (PNG, atomically); return the path."""
    path = Path(path)
    return write_figures({path.name: bleu_figure(summary, title=title)}, path.parent)[0]


def write_outputs(rows, spec: M.MetricSpec | None, out_dir, *, title: str | None = None) -> str:
    """``lth report``'s translation part: ``out_dir/``:data:`PLOT` and the Table 1 text."""
    summary = method_summary(rows, spec)
    plot_bleu(summary, Path(out_dir) / PLOT, title=title)
    return format_table1(summary)


__all__ = ["LABELS", "METRICS", "ORDER", "PAPER", "PAPER_DENSE", "PLOT", "bleu_figure", "format_table1", "merge",
           "method_of", "method_summary", "plot_bleu", "sparsity_label", "write_outputs"]
