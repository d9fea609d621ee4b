"""The report's plots: one figure per plotted metric column, against the percent of weights remaining.

Plots follow the paper's figures: x is the percent of weights remaining on a log scale, running
from 100% on the left down to the sparsest level on the right. Which columns get a figure comes from
the run's metric spec (:mod:`lth.metrics`): the headline's, the early-stop iteration's, then every
other column with a ``plot`` file name. Matplotlib is imported lazily and only through
:class:`matplotlib.figure.Figure` (no pyplot, no global state), so importing this module has no side
effects. Every file is written atomically (temp file + ``os.replace``). ``lth instability``'s two
figures (:func:`instability_figures`) are drawn from its results document the same way.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from lth import metrics as M
from lth.errors import LthError
from lth.io import atomic_write_bytes

PLOT_ACC = M.ACC.plot
PLOT_STEP = "early_stop_vs_remaining.png"
PLOT_BPB = M.BPB.plot
MAX_TICKS = 12


def _group(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Group rows by ``keys``, groups in order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def percent_label(fraction: float) -> str:
    """Percent of weights remaining as a label: ``100``, ``51.3``, ``7.0``, ``0.37``."""
    pct = 100.0 * fraction
    if round(pct, 1) >= 100.0:
        return "100"
    if pct < 0.95:
        return f"{pct:.2g}"
    return f"{pct:.1f}"


# --------------------------------------------------------------------------------------------
# plots


def _x_ticks(summary, span: float) -> list[float]:
    """Percent-remaining tick positions: the distinct levels, thinned so that no two are closer
    than ``span / MAX_TICKS`` decades (``span``: the axis' width in decades); the first (densest)
    and last (sparsest) level are always kept."""
    by_label = {}
    for e in sorted(summary, key=lambda e: -e["remaining"]):
        by_label.setdefault(percent_label(e["remaining"]), 100.0 * e["remaining"])
    values = list(by_label.values())
    gap = span / MAX_TICKS
    ticks = [values[0]]
    for v in values[1:]:
        if math.log10(ticks[-1] / v) >= gap:
            ticks.append(v)
    if ticks[-1] != values[-1]:
        if len(ticks) > 1 and math.log10(ticks[-1] / values[-1]) < gap:
            ticks.pop()
        ticks.append(values[-1])
    return ticks


def _setup_x(ax, summary) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    pcts = [100.0 * e["remaining"] for e in summary]
    ax.set_xscale("log")
    hi, lo = max(pcts), min(pcts)
    if hi / lo < 1.5:  # a single level (or nearly): give the log axis some room
        hi, lo = hi * 1.5, lo / 1.5
    hi, lo = hi * 1.12, lo / 1.12
    ax.set_xlim(hi, lo)  # reversed: 100% on the left, the sparsest level on the right
    ticks = _x_ticks(summary, math.log10(hi / lo))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([percent_label(t / 100.0) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("Percent of weights remaining")


def _series_figure(summary, key: str, scale: float, ylabel: str, title: str | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    groups = _group(summary, ("experiment",))
    colors = [f"C{i % 10}" for i in range(len(groups))]
    for color, ((experiment,), group) in zip(colors, groups.items()):
        group = [e for e in group if e[f"{key}_mean"] is not None]
        if not group:
            continue
        group.sort(key=lambda e: -e["remaining"])
        x = [100.0 * e["remaining"] for e in group]
        y = [scale * e[f"{key}_mean"] for e in group]
        err = [scale * e[f"{key}_std"] for e in group]
        ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=3, linewidth=1.5,
                    color=color, label=experiment)
        if len(group) == 1:  # e.g. the dense baseline: a reference line across the plot
            ax.axhline(y[0], color=color, linestyle="--", linewidth=1, alpha=0.6)
    _setup_x(ax, summary)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper", fontsize="small")  # never over the data
    if title:
        ax.set_title(title)
    return fig


def build_figures(summary, *, title: str | None = None, spec: M.MetricSpec | None = None) -> dict[str, object]:
    """The report's figures (matplotlib ``Figure`` objects), keyed by file name: the headline's, the
    early-stop iteration's, then each other plotted column's."""
    spec = spec or M.legacy_spec(bool(summary) and "val_bpb_mean" in summary[0])
    summary = [e for e in summary if e["remaining"] > 0]  # a log axis has no place for 0
    if not summary:
        raise LthError("no results yet")
    figures = {}
    for i, c in enumerate(spec.columns):
        if c.plot:
            figures[c.plot] = _series_figure(summary, c.name, c.scale, c.ylabel or c.label, title)
        if i == 0:
            figures[PLOT_STEP] = _series_figure(summary, "step", 1.0, "Early-stop iteration", title)
    return figures


def plot(summary, out_dir, *, title: str | None = None, spec: M.MetricSpec | None = None) -> list[Path]:
    """Write the report's PNGs into ``out_dir`` (atomically); return their paths."""
    return write_figures(build_figures(summary, title=title, spec=spec), out_dir)


def write_figures(figures: dict[str, object], out_dir) -> list[Path]:
    """Each figure as ``out_dir/<its name>`` (PNG, atomically); return the paths."""
    paths = []
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        path = Path(out_dir) / name
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# instability (lth.instability's results document)

PLOT_INTERPOLATION = "error_vs_interpolation.png"
PLOT_BARRIER = "barrier_vs_k.png"


def instability_steps(doc: dict, trials: list[str] | None = None) -> dict[int, list[dict]]:
    """k -> the entries of ``trials`` (default: every trial) that have it, in k order."""
    out: dict[int, list[dict]] = {}
    for t, trial in doc.get("trials", {}).items():
        if trials is None or t in trials:
            for k, entry in trial.get("steps", {}).items():
                out.setdefault(int(k), []).append(entry)
    return dict(sorted(out.items()))


def instability_figures(doc: dict) -> dict[str, object]:
    """Error along the path (one line per k, mean over trials) and the barrier against k (mean ± std)."""
    import numpy as np
    from matplotlib.figure import Figure

    steps = instability_steps(doc)
    scale, unit = doc.get("error_scale", 1.0), doc.get("error_unit", "")
    what = f"Error ({doc.get('error', 'error')})" + (" (%)" if scale == 100.0 else "")
    title = f"Level {doc.get('level', 0)}: instability ({len(doc.get('trials', {}))} trial(s))"
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (k, entries) in enumerate(steps.items()):
        errors = scale * np.mean([e["errors"] for e in entries], axis=0)
        ax.plot(doc["alphas"], errors, marker="o", markersize=3, color=f"C{i % 10}", label=f"k = {k}")
    ax.set_xlabel("Interpolation α (0: copy A, 1: copy B)")
    ax.set_ylabel(what)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if steps:
        fig.legend(loc="outside right upper", fontsize="small")
    figures = {PLOT_INTERPOLATION: fig}
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if steps:
        barriers = [[scale * e["barrier"] for e in entries] for entries in steps.values()]
        ax.errorbar(list(steps), [np.mean(b) for b in barriers], yerr=[np.std(b, ddof=1) if len(b) > 1 else 0.0
                    for b in barriers], marker="o", markersize=4, capsize=3, linewidth=1.5, color="C0")
    threshold = scale * doc.get("threshold", 0.02)
    ax.axhline(threshold, color="C3", linestyle="--", linewidth=1, alpha=0.6, label=f"stable: <= {threshold:g}")
    ax.legend(fontsize="small")
    ax.set_xlabel("Step k the copies start from")
    ax.set_ylabel(f"Error barrier ({unit})" if unit else "Error barrier")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    figures[PLOT_BARRIER] = fig
    return figures
