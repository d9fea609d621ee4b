"""Metric specs: what a task measures, which metric early-stops, and what reports show.

A task entry (``lth.tasks.TASKS``) carries a :class:`MetricSpec`; a run directory records it as
``metrics.json`` beside ``config.json``, and ``lth report`` reads that file (not the task objects),
so a report never hard-codes a metric name. This module is a leaf: plain data and JSON, no torch.

Specification of a :class:`MetricSpec`:

- ``metrics``: the ``results.csv`` metric columns the task writes, ``<split>_<name>`` (``val_loss``,
  ``test_acc``, ``val_bpb``, ...).
- ``early_stop`` and ``mode``: the column whose best value over a training run picks the early-stop
  row, and which way is best (``"min"`` or ``"max"``); ties pick the earliest step, non-finite values
  never win (Frankle & Carbin 2019: minimum validation loss).
- ``headline``: the column tables and plots lead with (``test_acc`` for images, ``val_bpb`` for
  language models); it is ``columns[0].name``.
- ``columns``: what the table and the plots show, as :class:`Column` entries. Each is shown at the
  early-stop row (``"es"``), and optionally at the run's last step (``"final"``) and as its best
  value over the run (``"best"``, by the column's own ``mode``). A column with ``plot`` set gets a
  figure of its early-stop value against the percent of weights remaining.

- ``notes``: ``(key, value)`` pairs recorded with the spec, e.g. sacrebleu's signatures of BLEU and
  chrF (translation), so the run says how its scores were computed.

Summary keys for a column ``c``: ``c`` (at early stop), ``final_c``, ``best_c``, each as
``*_mean`` / ``*_std`` over trials, and ``step`` (the early-stop iteration).

:func:`legacy_spec` is what a run directory without ``metrics.json`` (written before the file
existed) is read with: early stop at minimum ``val_loss``, test accuracy at early stop and final,
and bits per byte when the rows have ``val_bpb``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LthError

FILE = "metrics.json"
MODES = ("min", "max")


@dataclass(frozen=True)
class Column:
    """One metric as reports show it: ``label`` (+ ``unit``) in headers, values times ``scale`` in
    ``fmt``; ``show`` any of ``es``, ``final``, ``best``; ``plot``: a PNG file name or None."""

    name: str
    label: str
    unit: str = ""
    scale: float = 1.0
    fmt: str = ".3f"
    mode: str = "max"
    show: tuple[str, ...] = ("es", "final")
    plot: str | None = None
    ylabel: str = ""


@dataclass(frozen=True)
class MetricSpec:
    """A task's metrics, its early-stop rule and its report columns (see the module docstring)."""

    metrics: tuple[str, ...]
    columns: tuple[Column, ...]
    early_stop: str = "val_loss"
    mode: str = "min"
    # (key, value) pairs the run records with its metrics, e.g. sacrebleu's signature of BLEU and chrF
    notes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.mode not in MODES or any(c.mode not in MODES for c in self.columns):
            raise ValueError(f"metric modes must be one of {MODES}")
        if not self.columns:
            raise ValueError("a metric spec needs at least one column")

    @property
    def headline(self) -> str:
        return self.columns[0].name

    def to_dict(self) -> dict:
        d = asdict(self)
        d["headline"] = self.headline
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MetricSpec":
        cols = tuple(Column(**{**c, "show": tuple(c.get("show", ("es",)))}) for c in d["columns"])
        return cls(tuple(d["metrics"]), cols, d.get("early_stop", "val_loss"), d.get("mode", "min"),
                   tuple(tuple(n) for n in d.get("notes", ())))


ACC = Column("test_acc", "test acc", " (%)", 100.0, ".2f", "max", ("es", "final"),
             "accuracy_vs_remaining.png", "Test accuracy at early stop (%)")
BPB = Column("val_bpb", "bpb", "", 1.0, ".3f", "min", ("es", "best"),
             "bpb_vs_remaining.png", "Validation bits per byte at early stop")


def legacy_spec(has_bpb: bool = False) -> MetricSpec:
    """The spec of a run directory without ``metrics.json`` (how reports read runs before it)."""
    names = ("val_loss", "val_acc", "test_loss", "test_acc") + (("val_bpb", "test_bpb") if has_bpb else ())
    return MetricSpec(names, (ACC, BPB) if has_bpb else (ACC,))


def write(run_dir, spec: MetricSpec) -> None:
    from .io import atomic_write_json

    atomic_write_json(Path(run_dir) / FILE, spec.to_dict())


def read(run_dir) -> MetricSpec | None:
    """The spec a run directory recorded, or None if it has none (an older run)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        return MetricSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise LthError(f"{path}: not a metric spec ({type(e).__name__}: {e})") from None


__all__ = ["ACC", "BPB", "Column", "FILE", "MetricSpec", "legacy_spec", "read", "write"]
