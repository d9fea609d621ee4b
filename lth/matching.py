"""Matching subnetworks and transfer between tasks (Chen et al. 2020, Tables 2 and 4, Figure 2).

Pure functions over rows of numbers, plus the heat map's figure; no torch.

Matching. Over :func:`lth.report.summarize`'s entries (per experiment and level: ``remaining``,
``<metric>_mean`` and ``<metric>_std`` over trials, the metric at early stop) the dense network is
experiment ``ticket`` at level 0, and ticket level L >= 1 (sparsity ``1 - remaining``) is matching
under rule

- ``std`` (Table 2): its mean is within one standard deviation of the dense mean, or better:
  ``mean_L >= dense_mean - dense_std`` (for a metric where lower is better, mode ``min``:
  ``mean_L <= dense_mean + dense_std``);
- ``mean`` (Table 4): its mean is at least the dense mean (``<=`` under mode ``min``).

The highest matching sparsity is the largest sparsity among matching ticket levels (None when none
matches or there is no dense level). ``lth report`` prints both for a classification task (its metric
spec's note ``task = classification``: :func:`format_matching`).

Transfer (Figure 2). Rows ``{source, target, seed, test_acc}``: one fine-tuning run of the target task
under a ticket found on the source task (``lth.transfer``), and ``dense``: the dense network's mean on
each target. Per (source, target) ``TRANSFER(S, T)`` is the mean over seeds; the map shows
``TRANSFER(S, T) - dense(T)``; a cell S != T is marked when ``TRANSFER(S, T) >= TRANSFER(T, T)`` (the
source's ticket transfers at least as well as the target's own; unmarked when ``TRANSFER(T, T)`` is
missing), and each source counts its marked cells. :func:`write_transfer` writes ``transfer.csv``
(``source, target, n, mean, std, dense, diff, marked, marked_in_row``) and ``transfer.png``;
:func:`runs_to_rows` reads transfer runs (their ``config.json`` ``transfer_source``) and dense runs.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lth.io import atomic_write_bytes

RULES = {"std": "within one std of dense", "mean": "mean >= dense"}
TRANSFER_CSV, TRANSFER_PNG = "transfer.csv", "transfer.png"


# --------------------------------------------------------------------------------------------
# matching


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def dense_entry(summary, experiment: str = "ticket") -> dict | None:
    """The dense network's summary entry (``experiment`` at level 0), or None."""
    return next((e for e in summary if e["experiment"] == experiment and e["level"] == 0), None)


def is_matching(mean: float, dense_mean: float, dense_std: float, rule: str = "std", mode: str = "max") -> bool:
    """Whether a subnetwork's mean matches the dense network under ``rule`` (module docstring)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    slack = (dense_std or 0.0) if rule == "std" else 0.0
    return mean >= dense_mean - slack if mode == "max" else mean <= dense_mean + slack


def matching_levels(summary, metric: str = "test_acc", rule: str = "std", mode: str = "max",
                    experiment: str = "ticket") -> list[dict]:
    """The ticket levels >= 1 that match the dense level under ``rule``, in level order."""
    dense = dense_entry(summary, experiment)
    if dense is None or not _ok(dense.get(f"{metric}_mean")):
        return []
    d_mean, d_std = dense[f"{metric}_mean"], dense.get(f"{metric}_std") or 0.0
    levels = [e for e in summary if e["experiment"] == experiment and e["level"] >= 1 and _ok(e.get(f"{metric}_mean"))]
    return sorted((e for e in levels if is_matching(e[f"{metric}_mean"], d_mean, d_std, rule, mode)),
                  key=lambda e: e["level"])


def highest_matching(summary, metric: str = "test_acc", rule: str = "std", mode: str = "max",
                     experiment: str = "ticket") -> dict | None:
    """The matching level of highest sparsity (its summary entry), or None."""
    found = matching_levels(summary, metric, rule, mode, experiment)
    return max(found, key=lambda e: (1.0 - e["remaining"], -e["level"])) if found else None


def format_matching(summary, metric: str = "test_acc", mode: str = "max", scale: float = 100.0) -> str:
    """Two lines: the highest matching sparsity under each rule, with its level and the dense value."""
    dense = dense_entry(summary)
    if dense is None or not _ok(dense.get(f"{metric}_mean")):
        return f"highest matching sparsity: no dense level (ticket, level 0) with {metric}\n"
    lines = []
    for rule, what in RULES.items():
        ref = f"{scale * dense[f'{metric}_mean']:.2f}" + (f" ± {scale * (dense[f'{metric}_std'] or 0):.2f}"
                                                           if rule == "std" else "")
        best = highest_matching(summary, metric, rule, mode)
        found = "none" if best is None else f"{100 * (1 - best['remaining']):.1f}% (level {best['level']}, " \
            f"{scale * best[f'{metric}_mean']:.2f})"
        lines.append(f"highest matching sparsity ({what}, dense {metric} {ref}): {found}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# transfer


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def transfer_cells(rows, dense: dict) -> list[dict]:
    """One cell per (source, target) in first-appearance order: n, mean, std over seeds, dense(T),
    ``diff`` = mean - dense(T) (None without a dense value), ``marked``, ``marked_in_row``."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if _ok(r.get("test_acc")):
            groups.setdefault((r["source"], r["target"]), []).append(float(r["test_acc"]))
    cells = []
    for (s, t), xs in groups.items():
        mean, std = _mean_std(xs)
        d = dense.get(t)
        cells.append({"source": s, "target": t, "n": len(xs), "mean": mean, "std": std, "dense": d,
                      "diff": None if d is None else mean - d})
    own = {c["target"]: c["mean"] for c in cells if c["source"] == c["target"]}
    for c in cells:
        c["marked"] = c["source"] != c["target"] and c["target"] in own and c["mean"] >= own[c["target"]]
    counts = {}
    for c in cells:
        counts[c["source"]] = counts.get(c["source"], 0) + c["marked"]
    for c in cells:
        c["marked_in_row"] = counts[c["source"]]
    return cells


def transfer_csv(cells) -> str:
    buf = io.StringIO()
    keys = ("source", "target", "n", "mean", "std", "dense", "diff", "marked", "marked_in_row")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for c in cells:
        w.writerow(["" if c[k] is None else round(c[k], 6) if isinstance(c[k], float) else int(c[k])
                    if isinstance(c[k], bool) else c[k] for k in keys])
    return buf.getvalue()


def _names(cells, key: str) -> list[str]:
    return list(dict.fromkeys(c[key] for c in cells))


def transfer_figure(cells, *, title: str | None = None, scale: float = 100.0):
    """The heat map (matplotlib Figure, Agg): rows sources ``S (marked count)``, columns targets, colour
    and text ``scale * (TRANSFER(S, T) - dense(T))``, marked cells boxed."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    sources, targets = _names(cells, "source"), _names(cells, "target")
    grid = [[math.nan] * len(targets) for _ in sources]
    for c in cells:
        if c["diff"] is not None:
            grid[sources.index(c["source"])][targets.index(c["target"])] = scale * c["diff"]
    span = max([abs(v) for row in grid for v in row if math.isfinite(v)] + [1e-9])
    fig = Figure(figsize=(1.2 * len(targets) + 3, 0.8 * len(sources) + 2), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span)
    fig.colorbar(image, ax=ax, label="TRANSFER(S, T) − dense(T)" + (" (points)" if scale == 100.0 else ""))
    counts = {c["source"]: c["marked_in_row"] for c in cells}
    ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), [f"{s} ({counts[s]})" for s in sources])
    ax.set_xlabel("target task T")
    ax.set_ylabel("source ticket S (cells >= TRANSFER(T, T))")
    for c in cells:
        i, j = sources.index(c["source"]), targets.index(c["target"])
        if math.isfinite(grid[i][j]):
            dark = abs(grid[i][j]) > 0.6 * span
            ax.text(j, i, f"{grid[i][j]:+.1f}", ha="center", va="center", fontsize="small",
                    color="white" if dark else "black")
        if c["marked"]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    if title:
        ax.set_title(title)
    return fig


def write_transfer(rows, dense: dict, out_dir, *, title: str | None = None) -> list[Path]:
    """``out_dir/transfer.csv`` and ``out_dir/transfer.png`` (atomically); return their paths."""
    from lth.plots import write_figures

    cells = transfer_cells(rows, dense)
    out = Path(out_dir)
    atomic_write_bytes(out / TRANSFER_CSV, transfer_csv(cells).encode("utf-8"))
    return [out / TRANSFER_CSV, *write_figures({TRANSFER_PNG: transfer_figure(cells, title=title)}, out)]


def runs_to_rows(run_dirs, metric: str = "test_acc") -> tuple[list[dict], dict]:
    """(rows, dense) from run directories: a transfer run (``transfer_source`` in its config) gives a row
    per trial of level 0 at early stop; any other run its dataset's dense mean (ticket, level 0)."""
    import json

    from lth import metrics as M
    from lth.report import early_stop, read_results, summarize

    rows, dense = [], {}
    for d in map(Path, run_dirs):
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        spec = M.read(d)
        results = read_results(d, spec)
        src = cfg.get("transfer_source")
        if src:
            rows += [{"source": src.get("dataset"), "target": cfg["dataset"], "seed": cfg["seed"] + r["trial"],
                      "test_acc": r.get(metric)} for r in early_stop(results, spec)
                     if r["experiment"] == "ticket" and r["level"] == 0]
        else:
            entry = dense_entry(summarize(results, spec))
            if entry is not None and _ok(entry.get(f"{metric}_mean")):
                dense[cfg["dataset"]] = entry[f"{metric}_mean"]
    return rows, dense
