"""Chen et al. 2020's matching subnetworks (Tables 2 and 4) and the transfer heat map (Figure 2), on
synthetic rows (lth.matching), and the report's lines for a classification task."""

import csv
import json

import pytest

from lth import matching, metrics
from lth.report import report
from lth.tasks.bert_tasks import CLS_METRICS, MLM_METRICS


def _entry(level, remaining, mean, std=0.005, experiment="ticket"):
    return {"experiment": experiment, "level": level, "remaining": remaining, "n": 3,
            "test_acc_mean": mean, "test_acc_std": std}


# dense 85.0 ± 1.0; levels at 20%, 36%, 48.8%, 59%, 67.2% sparsity
SUMMARY = [_entry(0, 1.0, 0.85, 0.01), _entry(1, 0.8, 0.86), _entry(2, 0.64, 0.845), _entry(3, 0.512, 0.838),
           _entry(4, 0.4096, 0.80), _entry(5, 0.32768, 0.85), _entry(5, 0.32768, 0.99, experiment="random")]


def test_within_one_std_matches_levels_at_least_dense_mean_minus_dense_std():
    assert [e["level"] for e in matching.matching_levels(SUMMARY, rule="std")] == [1, 2, 5]


def test_mean_rule_matches_levels_at_least_the_dense_mean():
    assert [e["level"] for e in matching.matching_levels(SUMMARY, rule="mean")] == [1, 5]


def test_highest_matching_sparsity_is_the_sparsest_matching_level_even_after_a_miss():
    assert matching.highest_matching(SUMMARY, rule="std")["level"] == 5
    no_five = [e for e in SUMMARY if e["level"] != 5]
    assert matching.highest_matching(no_five, rule="std")["level"] == 2
    assert matching.highest_matching(no_five, rule="mean")["level"] == 1


def test_lower_is_better_metrics_match_below_dense_plus_std():
    assert matching.is_matching(1.05, 1.0, 0.1, "std", "min")
    assert not matching.is_matching(1.05, 1.0, 0.1, "mean", "min")


def test_no_dense_level_means_no_matching_level():
    assert matching.highest_matching(SUMMARY[1:]) is None
    assert "no dense level" in matching.format_matching(SUMMARY[1:])


def test_format_matching_prints_both_definitions_with_sparsity_and_level():
    text = matching.format_matching(SUMMARY)
    assert "within one std of dense, dense test_acc 85.00 ± 1.00): 67.2% (level 5, 85.00)" in text
    assert "mean >= dense, dense test_acc 85.00): 67.2% (level 5" in text


def _run_dir(path, spec, means):
    path.mkdir()
    metrics.write(path, spec)
    (path / "config.json").write_text(json.dumps({"name": "syn", "dataset": "bert_bbc", "seed": 0}))
    with open(path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["experiment", "trial", "level", "remaining", "step", "val_loss", "val_acc", "test_loss",
                    "test_acc"])
        for level, (remaining, accs) in enumerate(means):
            for trial, acc in enumerate(accs):
                w.writerow(["ticket", trial, level, remaining, 10, 0.5, acc, 0.5, acc])
    return path


@pytest.mark.parametrize("spec,shown", [(CLS_METRICS, True), (MLM_METRICS, False)])
def test_report_prints_matching_sparsity_for_classification_runs_only(tmp_path, spec, shown):
    run = _run_dir(tmp_path / "r", spec, [(1.0, [0.84, 0.86]), (0.8, [0.85, 0.85]), (0.64, [0.70, 0.72])])
    text = report(run)
    assert ("highest matching sparsity (within one std of dense" in text) == shown
    if shown:
        assert "20.0% (level 1, 85.00)" in text


# --- transfer ----------------------------------------------------------------------------------------

ROWS = [{"source": s, "target": t, "seed": k, "test_acc": acc}
        for s, t, accs in [("bbc", "bbc", [0.90, 0.92]), ("bbc", "fort", [0.60, 0.62]),
                           ("fort", "fort", [0.63, 0.65]), ("fort", "bbc", [0.91, 0.91]), ("mlm", "bbc", [0.80])]
        for k, acc in enumerate(accs)]
DENSE = {"bbc": 0.93, "fort": 0.66}


def test_transfer_cells_are_seed_means_minus_the_targets_dense_mean():
    cells = {(c["source"], c["target"]): c for c in matching.transfer_cells(ROWS, DENSE)}
    assert cells[("bbc", "fort")]["n"] == 2 and cells[("bbc", "fort")]["diff"] == pytest.approx(0.61 - 0.66)
    assert cells[("mlm", "bbc")]["std"] == 0.0 and cells[("fort", "bbc")]["diff"] == pytest.approx(-0.02)


def test_a_cell_is_marked_where_the_source_ticket_transfers_at_least_as_well_as_the_targets_own():
    cells = {(c["source"], c["target"]): c for c in matching.transfer_cells(ROWS, DENSE)}
    assert cells[("fort", "bbc")]["marked"] and not cells[("bbc", "fort")]["marked"]  # 0.91 >= 0.91; 0.61 < 0.64
    assert not cells[("mlm", "bbc")]["marked"] and not cells[("bbc", "bbc")]["marked"]  # 0.80 < 0.91; diagonal
    assert {s: c["marked_in_row"] for (s, _), c in cells.items()} == {"bbc": 0, "fort": 1, "mlm": 0}


def test_write_transfer_writes_the_csv_and_a_png_heat_map(tmp_path):
    paths = matching.write_transfer(ROWS, DENSE, tmp_path, title="transfer")
    assert [p.name for p in paths] == ["transfer.csv", "transfer.png"]
    rows = list(csv.DictReader(open(tmp_path / "transfer.csv")))
    assert len(rows) == 5 and rows[3] == {"source": "fort", "target": "bbc", "n": "2", "mean": "0.91", "std": "0.0",
                                          "dense": "0.93", "diff": "-0.02", "marked": "1", "marked_in_row": "1"}
    assert (tmp_path / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_to_rows_reads_transfer_runs_and_dense_runs(tmp_path):
    dense = _run_dir(tmp_path / "dense", CLS_METRICS, [(1.0, [0.92, 0.94])])
    moved = _run_dir(tmp_path / "moved", CLS_METRICS, [(0.5, [0.90, 0.88])])
    cfg = json.loads((moved / "config.json").read_text())
    cfg.update(dataset="bert_fortunes", seed=3, transfer_source={"dataset": "bert_bbc", "sparsity": 0.5})
    (moved / "config.json").write_text(json.dumps(cfg))
    rows, means = matching.runs_to_rows([dense, moved])
    assert means == {"bert_bbc": pytest.approx(0.93)}
    assert rows == [{"source": "bert_bbc", "target": "bert_fortunes", "seed": 3, "test_acc": 0.90},
                    {"source": "bert_bbc", "target": "bert_fortunes", "seed": 4, "test_acc": 0.88}]
