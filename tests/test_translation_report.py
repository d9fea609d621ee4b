"""Tests for lth.translation_report: BLEU vs sparsity per pruning method (Brix et al. 2020's Table 1)."""

from __future__ import annotations

import csv

import pytest

from lth import metrics as M
from lth import report as R
from lth import translation_report as TR
from lth.tasks import TASKS

SPEC = TASKS.get("translation").metrics
METRIC_COLUMNS = ["val_loss", "val_bleu", "val_chrf", "test_loss", "test_bleu", "test_chrf"]


def rows_of(experiment="ticket", trial=0, level=1, remaining=0.5, bleu=10.0, method=None):
    """One member's rows: dev BLEU peaks at step 200 (early stop), where the test BLEU is ``bleu``;
    the test cells are filled at early stop and at the end only (``test_at="best"``)."""
    out = []
    for step, val in [(0, 1.0), (100, 5.0), (200, 9.0), (300, 7.0)]:
        test = {200: bleu, 300: bleu - 3.0}.get(step)
        r = dict(experiment=experiment, trial=trial, level=level, remaining=remaining, step=step,
                 val_loss=3.0, val_bleu=val + trial, val_chrf=20.0, test_loss=3.0 if test else None,
                 test_bleu=test, test_chrf=None if test is None else 2 * test)
        if method is not None:
            r["method"] = method
        out.append(r)
    return out


def run_rows(method="mp", trials=1, controls=("reinit",), levels=((1, 0.5), (2, 0.2)), dense=20.0):
    rows = []
    for t in range(trials):
        rows += rows_of(trial=t, level=0, remaining=1.0, bleu=dense, method=method)
        for level, rem in levels:
            rows += rows_of(trial=t, level=level, remaining=rem, bleu=15.0 - level, method=method)
            for c in controls:
                rows += rows_of(c, t, level, rem, bleu=5.0, method=c)
    return rows


def write_run(path, rows, with_method=True):
    path.mkdir(parents=True)
    columns = ["experiment", "trial", "level", "remaining", "step"] + METRIC_COLUMNS
    columns += ["method"] if with_method else []
    with open(path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r[c] for c in columns])
    M.write(path, SPEC)
    return path


def entry(summary, method, level):
    (e,) = [e for e in summary if e["method"] == method and e["level"] == level]
    return e


def test_methods_are_grouped_relabelled_and_in_table_order():
    rows = (run_rows("slt", controls=("constant_random_sign", "reinit"))
            + [dict(r, trial=r["trial"] + 1) for r in run_rows("mp", controls=("constant",)) if r["level"] > 0])
    summary = TR.method_summary(rows, SPEC)
    methods = list(dict.fromkeys(e["method"] for e in summary))
    assert methods == ["dense", "mp", "slt", "clt", "reinit", "random-sign"]
    assert [e["level"] for e in summary if e["method"] == "mp"] == [1, 2]


def test_mean_and_std_over_trials_are_taken_at_each_members_early_stop():
    rows = []
    for t, bleu in enumerate([10.0, 12.0, 14.0]):
        rows += rows_of(trial=t, level=1, bleu=bleu, method="lt")
    e = entry(TR.method_summary(rows, SPEC), "lt", 1)
    assert e["n"] == 3 and e["remaining"] == 0.5
    assert e["test_bleu_mean"] == pytest.approx(12.0) and e["test_bleu_std"] == pytest.approx(2.0)
    assert e["test_chrf_mean"] == pytest.approx(24.0)
    assert e["val_bleu_mean"] == pytest.approx(10.0)  # step 200's dev BLEU, 9 + trial


def test_rows_without_a_method_column_are_read_as_their_experiment(tmp_path):
    run = write_run(tmp_path / "old", run_rows(controls=("reinit", "constant")), with_method=False)
    rows = R.read_results(run, SPEC)
    assert "method" not in rows[0]
    methods = [e["method"] for e in TR.method_summary(rows, SPEC)]
    assert list(dict.fromkeys(methods)) == ["dense", "clt", "imp", "reinit"]


def test_the_method_column_is_read_as_a_string(tmp_path):
    run = write_run(tmp_path / "run", run_rows(method="nan", controls=()))
    assert {r["method"] for r in R.read_results(run, SPEC)} == {"nan"}


def test_merge_keeps_the_first_runs_dense_level_and_pools_each_methods_trials(tmp_path):
    a = write_run(tmp_path / "mp", run_rows("mp", trials=2, dense=20.0))
    b = write_run(tmp_path / "lt", run_rows("lt", trials=1, dense=30.0))
    summary = TR.method_summary(TR.merge([a, b]), SPEC)
    assert entry(summary, "dense", 0)["n"] == 2 and entry(summary, "dense", 0)["test_bleu_mean"] == 20.0
    assert entry(summary, "mp", 1)["n"] == 2 and entry(summary, "lt", 1)["n"] == 1
    assert entry(summary, "reinit", 1)["n"] == 3  # both runs' reinit trials, renumbered apart


def test_merge_of_old_runs_labels_tickets_imp(tmp_path):
    a = write_run(tmp_path / "a", run_rows(controls=()), with_method=False)
    assert {r["method"] for r in TR.merge([a]) if r["level"] > 0} == {"imp"}


def test_sparsity_labels_are_rounded_percents():
    assert [TR.sparsity_label(r) for r in (1.0, 0.5, 0.2, 0.1073741824, 0.004, 0.0001)] == \
        ["0%", "50%", "80%", "89%", "99.6%", "100%"]


def test_table1_has_the_papers_columns_beside_ours():
    table = TR.format_table1(TR.method_summary(run_rows("mp", trials=2), SPEC))
    header, rule, dense, *body = table.splitlines()[1:]
    cols = header.split()
    assert cols[:4] == ["sparsity", "MP", "reinit", "|"] and cols[4:6] == ["paper", "MP"]
    assert set(rule) == {"-"}
    assert dense.split()[:4] == ["dense", "20.00", "±", "0.00"] and dense.rstrip().endswith("26.8")
    rows = {line.split()[0]: line for line in body}
    assert list(rows) == ["50%", "80%", "90%"]  # ours (50%, 80%) and the paper's (50%, 80%, 90%)
    assert rows["50%"].split()[:7] == ["50%", "14.00", "±", "0.00", "5.00", "±", "0.00"]
    assert rows["50%"].split("|")[1].split() == ["26.4", "25.4", "26.6", "26.7", "26.4"]
    assert rows["90%"].split("|")[0].split() == ["90%", "-", "-"]


def test_plot_bleu_writes_the_png(tmp_path):
    path = TR.plot_bleu(TR.method_summary(run_rows("slt", controls=("reinit", "constant")), SPEC),
                        tmp_path / TR.PLOT, title="t")
    assert path == tmp_path / TR.PLOT and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [TR.PLOT]  # no temp file left behind


def test_lth_report_of_a_translation_run_writes_bleu_vs_sparsity(tmp_path):
    import torch

    from lth import lottery
    from lth.presets import override, preset, validate

    cfg = validate(override(preset("translation_tiny"), dict(iterations=4, eval_every=2, levels=1, trials=1,
                                                            train_pairs=600, eval_pairs=8, warmup=1)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lottery.run(cfg, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    table = R.report(tmp_path / "run")
    assert (tmp_path / "run" / TR.PLOT).is_file()
    assert "paper MP" in table and "IMP" in table and "dense" in table
