"""Tests for lth.report: early stopping, summaries, the table, the plots and the errors."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth import report as R
from lth.errors import LthError

COLUMNS = ["experiment", "trial", "level", "remaining", "step", "val_loss", "val_acc", "test_acc"]
FRANKLE = [1.0, 0.513, 0.211, 0.07, 0.036, 0.019]  # the remaining fractions in the paper's figures


def row(experiment="ticket", trial=0, level=0, remaining=1.0, step=0, val_loss=1.0, test_acc=0.5, **extra):
    return dict(experiment=experiment, trial=trial, level=level, remaining=remaining, step=step,
                val_loss=val_loss, val_acc=test_acc, test_acc=test_acc, **extra)


def write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] for c in columns])
    return path


def synthetic_run(experiments=("ticket", "reinit"), trials=2, remaining=FRANKLE[:4], bpb=False):
    """Rows of a small run: the loss is minimal at step 200, so that is where early stopping picks."""
    rows = []
    for e, experiment in enumerate(experiments):
        for t in range(trials):
            for level, rem in enumerate(remaining):
                for step, loss in [(0, 2.0), (100, 0.5), (200, 0.3), (300, 0.4)]:
                    acc = 0.9 + 0.01 * level - 0.02 * e + 0.001 * t + (0.05 if step == 200 else 0.0)
                    extra = {"val_bpb": 1.0 + loss + 0.01 * t} if bpb else {}
                    rows.append(row(experiment, t, level, rem, step, loss + 0.001 * t, acc, **extra))
    return rows


# ---------------------------------------------------------------------------------------------
# reading


def test_read_results_converts_numbers(tmp_path):
    path = write_csv(tmp_path / "results.csv", [row(remaining=0.513, step=300, val_bpb=1.25, note="x")])
    (r,) = R.read_results(path)
    assert r["experiment"] == "ticket" and isinstance(r["experiment"], str)
    assert isinstance(r["trial"], int) and isinstance(r["level"], int) and isinstance(r["step"], int)
    assert r["step"] == 300 and r["remaining"] == 0.513 and r["val_bpb"] == 1.25
    assert r["note"] == "x"  # a non-numeric extra column is kept as text


def test_missing_results_file_is_clear_error(tmp_path):
    with pytest.raises(LthError, match="results file not found.*results.csv"):
        R.report(tmp_path)


def test_missing_column_is_clear_error(tmp_path):
    rows = [row()]
    path = write_csv(tmp_path / "results.csv", rows, [c for c in COLUMNS if c != "val_loss"])
    with pytest.raises(LthError) as info:
        R.read_results(path)
    message = str(info.value)
    assert "val_loss" in message and "results.csv" in message and "\n" not in message


def test_empty_results_is_no_results_yet(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(LthError, match="no results yet"):
        R.read_results(path)
    path.write_text("")
    with pytest.raises(LthError, match="no results yet"):
        R.report(tmp_path)
    with pytest.raises(LthError, match="no results yet"):
        R.summarize([])


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(",".join(COLUMNS) + "\nticket,0,0,1.0,0,oops,0.5,0.5\n")
    with pytest.raises(LthError, match="line 2.*val_loss"):
        R.read_results(path)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_remaining_outside_unit_interval_is_error(tmp_path, bad):
    path = write_csv(tmp_path / "results.csv", [row(remaining=bad)])
    with pytest.raises(LthError, match="remaining"):
        R.read_results(path)


def test_an_empty_mask_row_is_read_and_left_out_of_the_plots(tmp_path):
    write_csv(tmp_path / "results.csv", [row(remaining=0.0, step=0, val_loss=2.0), row(remaining=0.3, step=10)])
    assert R.read_results(tmp_path / "results.csv")[0]["remaining"] == 0.0
    assert "ticket" in R.report(tmp_path)


def test_partially_written_last_line_is_skipped(tmp_path):
    path = write_csv(tmp_path / "results.csv", [row(step=0), row(step=100)])
    with open(path, "a") as f:
        f.write("ticket,0,0,1.0,200,0.")  # a run still writing: no newline yet
    assert [r["step"] for r in R.read_results(path)] == [0, 100]


# ---------------------------------------------------------------------------------------------
# early stopping


def test_early_stop_picks_minimum_val_loss():
    rows = [row(step=s, val_loss=v, test_acc=a) for s, v, a in [(0, 2.0, 0.1), (100, 0.2, 0.9), (200, 0.5, 0.7)]]
    (es,) = R.early_stop(rows)
    assert es["step"] == 100 and es["test_acc"] == 0.9


def test_early_stop_ties_pick_earliest_step():
    rows = [row(step=s, val_loss=0.3, test_acc=a) for s, a in [(300, 0.7), (100, 0.8), (200, 0.9)]]
    assert R.early_stop(rows)[0]["step"] == 100


def test_early_stop_ignores_nan_loss():
    rows = [row(step=0, val_loss=1.0, test_acc=0.5), row(step=100, val_loss=math.nan, test_acc=0.1)]
    assert R.early_stop(rows)[0]["step"] == 0


def test_final_test_acc_is_at_last_step():
    rows = [row(step=s, val_loss=v, test_acc=a) for s, v, a in [(200, 0.9, 0.66), (0, 0.1, 0.5), (100, 0.5, 0.6)]]
    (es,) = R.early_stop(rows)
    assert es["step"] == 0 and es["final_test_acc"] == 0.66


def test_early_stop_one_row_per_experiment_trial_level():
    stops = R.early_stop(synthetic_run(trials=3))
    keys = [(r["experiment"], r["trial"], r["level"]) for r in stops]
    assert len(keys) == len(set(keys)) == 2 * 3 * 4
    assert all(r["step"] == 200 for r in stops)


# ---------------------------------------------------------------------------------------------
# summaries


def test_summary_mean_matches_numpy():
    rows = synthetic_run(trials=3)
    summary = R.summarize(rows)
    assert len(summary) == 2 * 4
    for e in summary:
        accs = [r["test_acc"] for r in rows if r["experiment"] == e["experiment"] and r["level"] == e["level"]
                and r["step"] == 200]
        assert e["n"] == 3
        assert e["test_acc_mean"] == pytest.approx(np.mean(accs))
        assert e["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
        assert e["step_mean"] == 200 and e["step_std"] == 0.0


def test_std_is_zero_for_single_trial():
    summary = R.summarize(synthetic_run(trials=1))
    assert all(e["n"] == 1 for e in summary)
    assert all(e[k] == 0.0 for e in summary for k in ("test_acc_std", "step_std", "final_test_acc_std"))


def test_summary_groups_by_experiment_then_level():
    summary = R.summarize(list(reversed(synthetic_run(experiments=("reinit", "ticket")))))
    assert [(e["experiment"], e["level"]) for e in summary] == [
        (x, level) for x in ("ticket", "reinit") for level in range(4)]  # first appearance, then level
    assert [e["remaining"] for e in summary[:4]] == FRANKLE[:4]


def test_val_bpb_summarized_when_present():
    rows = synthetic_run(trials=2, bpb=True)
    rows.append(row("ticket", 0, 0, 1.0, 400, val_loss=5.0, test_acc=0.1, val_bpb=0.5))  # best bpb, not ES
    summary = R.summarize(rows)
    first = summary[0]
    assert first["val_bpb_mean"] == pytest.approx(np.mean([1.3, 1.31]))  # bpb at early stop (step 200)
    assert first["val_bpb_std"] == pytest.approx(np.std([1.3, 1.31], ddof=1))
    assert first["best_val_bpb_mean"] == pytest.approx(np.mean([0.5, 1.31]))
    assert "bpb @ ES" in R.format_table(summary) and "best bpb" in R.format_table(summary)
    assert "val_bpb_mean" not in R.summarize(synthetic_run())[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.tuples(st.sampled_from(["ticket", "reinit", "random"]), st.integers(0, 3)),  # (experiment, level)
    st.lists(st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 1.0)), min_size=1, max_size=4),
             min_size=1, max_size=5),  # trials, each a list of (val_loss, test_acc) per eval
    min_size=1, max_size=6))
def test_summarize_matches_numpy_on_random_data(data):
    rows, expected = [], {}
    for (experiment, level), trials in data.items():
        accs, steps = [], []
        for trial, evals in enumerate(trials):
            for i, (loss, acc) in enumerate(evals):
                rows.append(row(experiment, trial, level, 0.8 ** level, 100 * i, loss, acc))
            best = min(range(len(evals)), key=lambda i: (evals[i][0], i))
            accs.append(evals[best][1])
            steps.append(100 * best)
        expected[experiment, level] = (accs, steps)
    summary = R.summarize(rows)
    assert {(e["experiment"], e["level"]) for e in summary} == set(expected)
    for e in summary:
        accs, steps = expected[e["experiment"], e["level"]]
        assert e["n"] == len(accs)
        assert e["test_acc_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
        assert e["step_mean"] == pytest.approx(np.mean(steps))
        if len(accs) > 1:
            assert e["test_acc_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
            assert e["step_std"] == pytest.approx(np.std(steps, ddof=1))
        else:
            assert e["test_acc_std"] == e["step_std"] == 0.0


# ---------------------------------------------------------------------------------------------
# table


def test_table_formats_percentages_with_std():
    table = R.format_table(R.summarize(synthetic_run(trials=2)))
    first = table.splitlines()[2]
    assert first.split()[:4] == ["ticket", "0", "100.0", "2"]
    assert "95.05 ± 0.07" in first  # (0.9500 + 0.9510) / 2 as a percent ± its sample std
    assert "51.3" in table and "21.1" in table and "7.0" in table


def test_table_is_aligned_and_grouped_by_experiment():
    lines = R.format_table(R.summarize(synthetic_run())).splitlines()
    body = [line for line in lines[2:] if line]
    assert len({len(line) for line in body}) == 1  # every row the same width
    assert [line.split()[0] for line in body if not line.startswith(" ")] == ["ticket", "reinit"]
    assert "" in lines  # a blank line between the groups
    plus_minus = {line.index("±") for line in body}
    assert len(plus_minus) == 1  # the first "±" column lines up


def test_table_percent_keeps_tiny_remaining_readable():
    summary = R.summarize([row(remaining=1.0), row(level=1, remaining=0.0037)])
    assert "0.37" in R.format_table(summary)


# ---------------------------------------------------------------------------------------------
# plots


def test_x_axis_is_log_and_reversed():
    figures = R.build_figures(R.summarize(synthetic_run(remaining=FRANKLE)))
    for fig in figures.values():
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        left, right = ax.get_xlim()
        assert left > right and left >= 100 and right <= 1.9  # 100% on the left, sparsest on the right
        assert ax.get_xlabel() == "Percent of weights remaining"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["100", "51.3", "21.1", "7.0", "3.6", "1.9"]


def test_plot_has_one_errorbar_line_per_experiment():
    fig = R.build_figures(R.summarize(synthetic_run(experiments=("ticket", "reinit", "random"))))[R.PLOT_ACC]
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Test accuracy at early stop (%)"
    assert len(ax.containers) == 3  # ErrorbarContainers
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["ticket", "reinit", "random"]
    ticket = ax.containers[0].lines[0]
    assert list(ticket.get_xdata()) == pytest.approx([100 * r for r in FRANKLE[:4]])
    assert ticket.get_marker() == "o"
    assert fig.axes[0].get_ylim()[1] > 90  # accuracy plotted as a percent


def test_many_levels_get_thinned_ticks():
    summary = R.summarize(synthetic_run(experiments=("ticket",), trials=1, remaining=[0.8 ** i for i in range(30)]))
    ax = R.build_figures(summary)[R.PLOT_STEP].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "100" and labels[-1] == R.percent_label(0.8 ** 29) and len(labels) <= R.MAX_TICKS + 1
    assert ax.get_ylabel() == "Early-stop iteration"


def test_plots_are_written(tmp_path):
    paths = R.plot(R.summarize(synthetic_run()), tmp_path, title="lenet")
    assert [p.name for p in paths] == [R.PLOT_ACC, R.PLOT_STEP]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == sorted([R.PLOT_ACC, R.PLOT_STEP])  # no temp files left


def test_bpb_plot_written_when_present(tmp_path):
    paths = R.plot(R.summarize(synthetic_run(bpb=True)), tmp_path)
    assert R.PLOT_BPB in [p.name for p in paths] and (tmp_path / R.PLOT_BPB).stat().st_size > 0


def test_single_level_plot_has_finite_log_limits():
    fig = R.build_figures(R.summarize([row("dense", remaining=1.0)]))[R.PLOT_ACC]
    left, right = fig.axes[0].get_xlim()
    assert left > 100 > right > 0


# ---------------------------------------------------------------------------------------------
# report


def test_report_writes_table_plots_and_summary_json(tmp_path):
    write_csv(tmp_path / "results.csv", synthetic_run(bpb=True))
    (tmp_path / "config.json").write_text(json.dumps({"name": "lenet300-mnist", "seed": 0}))
    table = R.report(tmp_path)
    assert table.splitlines()[0] == "lenet300-mnist" and "ticket" in table
    for name in (R.PLOT_ACC, R.PLOT_STEP, R.PLOT_BPB, R.SUMMARY):
        assert (tmp_path / name).is_file()
    doc = json.loads((tmp_path / R.SUMMARY).read_text())
    assert doc["name"] == "lenet300-mnist"
    assert doc["summary"] == R.summarize(R.read_results(tmp_path / "results.csv"))
    assert fig_title(tmp_path) == "lenet300-mnist"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def fig_title(run_dir):
    summary = R.summarize(R.read_results(run_dir / "results.csv"))
    return R.build_figures(summary, title=R._run_name(run_dir))[R.PLOT_ACC].axes[0].get_title()


def test_report_without_json(tmp_path):
    write_csv(tmp_path / "results.csv", synthetic_run())
    R.report(tmp_path, write_json=False)
    assert not (tmp_path / R.SUMMARY).exists() and (tmp_path / R.PLOT_ACC).exists()


def test_summary_json_is_strict_json_with_nan(tmp_path):
    write_csv(tmp_path / "results.csv", [row(val_loss=math.nan, test_acc=math.nan)])
    R.report(tmp_path)
    text = (tmp_path / R.SUMMARY).read_text()
    assert "NaN" not in text and json.loads(text)["summary"][0]["test_acc_mean"] is None


def test_bad_config_json_is_clear_error(tmp_path):
    write_csv(tmp_path / "results.csv", synthetic_run())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LthError, match="config.json"):
        R.report(tmp_path)


def test_import_has_no_matplotlib_side_effects():
    code = "import sys, lth.report; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
