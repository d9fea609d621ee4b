"""bench/common.py's kept runs: what lets a long benchmark span sessions whose run directories are lost."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import common  # noqa: E402


def finished_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"lr": 0.1}))
    (path / "results.csv").write_text("level,trial\n0,0\n")
    (path / "state.json").write_text(json.dumps({"levels_done": [0]}))
    (path / "level_00").mkdir()
    (path / "level_00" / "big.safetensors").write_bytes(b"x" * 1000)
    return path


def test_kept_run_holds_the_small_files_and_not_the_checkpoints(tmp_path):
    run = finished_run(tmp_path / "run")
    out = common.keep(run, tmp_path / "kept", {"lr": 0.1}, memory=[{"level": 0}])
    assert (out / "results.csv").read_text() == (run / "results.csv").read_text()
    assert not (out / "level_00").exists()


def test_kept_run_is_found_for_the_same_requested_config(tmp_path):
    common.keep(finished_run(tmp_path / "run"), tmp_path / "kept", {"lr": 0.1}, memory=[{"level": 0}])
    assert common.kept(tmp_path / "kept", {"lr": 0.1})["memory"] == [{"level": 0}]


def test_kept_run_of_another_config_is_not_used(tmp_path):
    common.keep(finished_run(tmp_path / "run"), tmp_path / "kept", {"lr": 0.1})
    assert common.kept(tmp_path / "kept", {"lr": 0.2}) is None


def test_kept_run_that_predates_a_config_field_counts_it_at_its_default(tmp_path):
    common.keep(finished_run(tmp_path / "run"), tmp_path / "kept", {"lr": 0.1})
    assert common.kept(tmp_path / "kept", {"lr": 0.1, "head_fit_lr": None}) is not None
    assert common.kept(tmp_path / "kept", {"lr": 0.1, "head_fit_lr": 1e-3}) is None


def test_copy_interrupted_before_its_marker_is_not_used(tmp_path):
    common.keep(finished_run(tmp_path / "run"), tmp_path / "kept", {"lr": 0.1})
    (tmp_path / "kept" / common.DONE).unlink()  # killed before the marker was written
    assert common.kept(tmp_path / "kept", {"lr": 0.1}) is None


def test_unreadable_kept_marker_is_refused_in_one_line_naming_it(tmp_path):
    import pytest

    from lth.run import RunDirError

    common.keep(finished_run(tmp_path / "run"), tmp_path / "kept", {"lr": 0.1})
    (tmp_path / "kept" / common.DONE).write_text("{not json")
    with pytest.raises(RunDirError, match="kept.json: unreadable"):
        common.kept(tmp_path / "kept", {"lr": 0.1})


def test_bert_bench_reuses_a_kept_run_instead_of_running_it_again(tmp_path, monkeypatch):
    import pytest

    bl = pytest.importorskip("bert_lottery")
    from lth.presets import Config

    calls = []

    def fake_run(cfg, out, **kw):
        calls.append(out)
        if not out.exists():
            finished_run(out)

    monkeypatch.setattr(bl.lottery, "run", fake_run)
    packed = []
    after = lambda out: packed.append(out) or (out / "packed").write_text("")  # noqa: E731
    cfg = Config(lr=0.1)
    for _ in range(2):  # the second invocation finds it kept
        got = bl.run_kept(cfg, tmp_path / "run", tmp_path / "kept", after=after)
    assert (calls, packed, got) == ([tmp_path / "run"], [tmp_path / "run"], tmp_path / "kept")


def test_bert_transfer_runs_the_sources_whose_ticket_exists_and_names_the_others(tmp_path, monkeypatch):
    import pytest

    bl = pytest.importorskip("bert_lottery")
    (tmp_path / "docs" / "tickets").mkdir(parents=True)
    (tmp_path / "docs" / "tickets" / "bbc_40.ticket").write_bytes(b"t")
    ran = []
    monkeypatch.setattr(bl.T, "load", lambda path: path.name)
    monkeypatch.setattr(bl, "run_kept", lambda cfg, out, kept, **kw: ran.append((out.name, kw["ticket"])) or kept)
    lrs = {task: {"lr": 1e-4} for task in bl.TASKS}
    dirs, missing = bl.phase_transfer(tmp_path / "runs", tmp_path / "docs", True, lrs)
    assert ran == [("bbc_to_bbc", "bbc_40.ticket"), ("bbc_to_fortunes", "bbc_40.ticket")]
    assert [d[:2] for d in dirs] == [("bbc", "bbc"), ("bbc", "fortunes")]
    assert missing == ["fortunes", "mlm", "omp"]


def test_kept_runs_under_docs_are_not_git_ignored():
    import shutil
    import subprocess

    import pytest

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = lambda p: subprocess.run(["git", "check-ignore", "-q", p], cwd=root).returncode == 0  # noqa: E731
    assert not ignored("docs/bert/runs/lottery/bbc/results.csv")
    assert not ignored("docs/translation/translation_cpu/runs/slt/results.csv")
    assert ignored("bench/runs/bert/lottery/bbc/results.csv")  # the full runs (checkpoints) stay out
