"""test_at="best": the test split only at each member's early-stop state and at the end (lth.best), with
the same numbers a run evaluating it every time reports there, resumable mid-level."""

import csv

import pytest
import torch

from lth import lottery
from lth.best import BestStates
from lth.presets import Config
from lth.report import summarize

CFG = dict(name="tiny", iterations=40, eval_every=5, levels=1, trials=2, controls=["random"], prune_rate=0.5,
           lr=1e-2)


def rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def key(r):
    return (r["experiment"], r["trial"], r["level"], r["step"])


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("best")
    lottery.run(Config(**CFG), tmp / "every", progress=False)
    lottery.run(Config(**CFG, test_at="best"), tmp / "best", progress=False)
    return tmp


def test_test_columns_are_filled_only_at_early_stop_and_the_last_step(both):
    got = rows(both / "best")
    stops = {(s["experiment"], str(s["trial"]), str(s["level"])): str(s["step"])
             for s in lottery_stops(got)}
    for r in got:
        filled = r["test_acc"] != ""
        assert filled == (r["step"] == "40" or r["step"] == stops[key(r)[:3]]), r


def lottery_stops(got):
    from lth.report import early_stop

    return early_stop([{**r, "trial": int(r["trial"]), "level": int(r["level"]), "step": int(r["step"]),
                        "remaining": float(r["remaining"]), "val_loss": float(r["val_loss"]),
                        "test_acc": float(r["test_acc"]) if r["test_acc"] else None} for r in got])


def test_test_metrics_at_early_stop_and_end_equal_evaluating_every_time(both):
    every = {key(r): r for r in rows(both / "every")}
    for r in rows(both / "best"):
        assert r["val_loss"] == every[key(r)]["val_loss"]
        if r["test_acc"]:
            assert (r["test_acc"], r["test_loss"]) == (every[key(r)]["test_acc"], every[key(r)]["test_loss"])


def test_report_of_a_best_run_equals_the_report_of_an_every_run(both):
    from lth.report import read_results

    def table(d):
        return [{k: v for k, v in e.items() if "seconds" not in k} for e in summarize(read_results(d))]

    assert table(both / "best") == table(both / "every")


def test_a_killed_level_resumes_with_its_best_states(tmp_path, monkeypatch, both):
    from killing import kill_after_snapshot

    kill_after_snapshot(monkeypatch, lambda: lottery.run(Config(**CFG, test_at="best"), tmp_path / "killed",
                                                         progress=False), 30, "level_01")
    # some member's early stop comes before the kill: its state must come back from the snapshot
    assert any(s["level"] == 1 and s["step"] < 30 for s in lottery_stops(rows(both / "best")))
    lottery.run(Config(**CFG, test_at="best"), tmp_path / "killed", progress=False)
    strip = lambda rs: sorted(tuple((k, v) for k, v in r.items() if k != "train_seconds") for r in rs)  # noqa: E731
    assert strip(rows(tmp_path / "killed")) == strip(rows(both / "best"))


def test_best_ties_keep_the_earliest_step_and_nan_never_wins():
    class Ens:
        def member_state(self, i):
            return {"w": torch.tensor([float(i)])}

    b = BestStates(2, "val_loss", "min")
    b.update(0, {"val_loss": torch.tensor([1.0, float("nan")])}, Ens())
    b.update(10, {"val_loss": torch.tensor([1.0, 2.0])}, Ens())
    assert b.steps == [0, 10]
