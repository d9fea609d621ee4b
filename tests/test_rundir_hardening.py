"""Run-directory hardening: bad paths, corrupt run files, one writer per directory, NaN losses, empty splits.

Every refused command gives one line (``error: ...``), exits 2 and leaves the run directory as it was
(``.lock`` aside: it records the PID of the last process that held the run). Tests run as root, where a
read-only directory is writable: "read-only" is tested through ``os.access`` (monkeypatched) and through
paths that lie under a regular file, which no user can create.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.cli import main
from lth.errors import NonFiniteLoss, RunDirError

TINY = ["--iterations", "20", "--eval-every", "10", "--no-progress"]


def files(d: Path) -> dict:
    """Every file under ``d`` (but .lock) with its bytes: what 'unchanged' means."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def refused(capsys, argv, *, contains=(), code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for c in contains:
        assert c in err, err
    return err


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished two-level run (mnist_quick, 20 steps a level) made through the CLI."""
    out = tmp_path_factory.mktemp("done") / "r"
    assert main(["lottery", "mnist_quick", "--out", str(out), "--levels", "1", *TINY]) == 0
    return out


@pytest.fixture
def run_copy(done_run, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(done_run, out)
    return out


# --- paths ----------------------------------------------------------------------------------------


def test_out_that_is_a_file_or_under_one_is_one_line(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    refused(capsys, ["train", "mnist_quick", "--out", str(f), *TINY], contains=[str(f), "not a run directory"])
    refused(capsys, ["train", "mnist_quick", "--out", str(f / "r"), *TINY], contains=["cannot write"])
    assert f.read_text() == "mine"


def test_read_only_out_is_one_line(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro / "r" else real(p, mode, **kw))
    refused(capsys, ["train", "mnist_quick", "--out", str(ro / "r"), *TINY], contains=["permission denied"])
    assert not any((ro / "r").iterdir())


def test_pack_export_report_and_encode_outputs_under_a_file_are_one_line(done_run, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    refused(capsys, ["pack", str(done_run), "-o", str(f / "t.lth")], contains=["cannot write"])
    ticket = tmp_path / "t.lth"
    assert main(["pack", str(done_run), "-o", str(ticket)]) == 0
    capsys.readouterr()
    refused(capsys, ["export", str(ticket), "-o", str(f / "x")], contains=["cannot write"])
    refused(capsys, ["report", str(f)])
    refused(capsys, ["report", str(f / "r")])
    text = tmp_path / "c.txt"
    text.write_text("hello world\n" * 200)
    refused(capsys, ["data", "encode", str(text), "-o", str(f / "enc")], contains=["cannot write"])
    assert f.read_text() == "mine"


def test_report_into_a_directory_it_cannot_write_is_one_line(run_copy, capsys, monkeypatch):
    import lth.io

    def no(path, *a, **k):
        if str(path).endswith(".tmp"):  # the temp file every atomic write starts with
            raise PermissionError(13, "Permission denied")
        return real(path, *a, **k)

    real = os.open
    monkeypatch.setattr(lth.io.os, "open", no)
    refused(capsys, ["report", str(run_copy)], contains=["permission denied"])


# --- corrupt run-directory files ------------------------------------------------------------------


@pytest.mark.parametrize("name, data, says", [
    ("config.json", b"{not json", "choose another --out"),
    ("config.json", b"[1, 2]", "not a dict"),
    ("state.json", b"\xff\xfe", "delete it to redo every level"),
    ("state.json", b'{"levels_done": "all"}', "not a list of non-negative integers"),
    ("env.json", b"{", "earlier invocations"),
])
def test_corrupt_json_on_resume_is_one_line_and_changes_nothing(run_copy, capsys, name, data, says):
    (run_copy / name).write_bytes(data)
    before = files(run_copy)
    refused(capsys, ["lottery", "mnist_quick", "--out", str(run_copy), "--levels", "1", *TINY],
            contains=[name, says])
    assert files(run_copy) == before


@pytest.mark.parametrize("name, data", [("config.json", b"{"), ("config.json", b'{"model": 3}'),
                                        ("state.json", b"nope"), ("results.csv", b"a,b\n1,2\n")])
def test_corrupt_files_on_pack_are_one_line(run_copy, tmp_path, capsys, name, data):
    (run_copy / name).write_bytes(data)
    before = files(run_copy)
    refused(capsys, ["pack", str(run_copy), "-o", str(tmp_path / "t.lth")], contains=[name])
    assert files(run_copy) == before and not (tmp_path / "t.lth").exists()


def test_corrupt_results_on_report_is_one_line(run_copy, capsys):
    (run_copy / "results.csv").write_bytes(b"\x00garbage\n,,,\n")
    refused(capsys, ["report", str(run_copy)], contains=["results.csv"])


def test_corrupt_checkpoint_names_the_level_to_redo_and_redoing_it_matches(run_copy, done_run, tmp_path, capsys):
    ckpt = run_copy / "level_01" / "ticket_trial0.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    before = files(run_copy)
    err = refused(capsys, ["pack", str(run_copy), "-o", str(tmp_path / "t.lth")],
                  contains=["ticket_trial0.safetensors", "level_01/ to redo level 1 only"])
    assert files(run_copy) == before
    # a further level prunes level 1's ticket: the same line; only the invocation is recorded (it started)
    assert refused(capsys, ["lottery", "mnist_quick", "--out", str(run_copy), "--levels", "2", *TINY]) == err
    after = files(run_copy)
    assert {k: v for k, v in after.items() if k not in ("config.json", "env.json")} == \
        {k: v for k, v in before.items() if k not in ("config.json", "env.json")}
    shutil.rmtree(run_copy / "level_01")  # what the line says: level 1 alone is trained again
    assert main(["lottery", "mnist_quick", "--out", str(run_copy), "--levels", "1", *TINY]) == 0
    from lth.io import load_tensors

    for p in done_run.rglob("*.safetensors"):  # (a safetensors header's metadata order varies: compare tensors)
        a, b = load_tensors(p), load_tensors(run_copy / p.relative_to(done_run))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), p


def test_stale_temp_files_are_removed_on_the_next_start(run_copy, capsys):
    stale = [run_copy / ".results.csv.4242.deadbeef.tmp", run_copy / "level_00" / ".ticket_trial0.safetensors.7.0a1b2c3d.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = run_copy / ".mine.tmp"
    keep.write_bytes(b"not lth's")
    assert main(["lottery", "mnist_quick", "--out", str(run_copy), "--levels", "1", *TINY]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_a_snapshot_that_fails_half_way_leaves_the_model_as_it_was(tmp_path):
    from lth.ensemble import Ensemble
    from lth.models import build
    from lth.snapshots import Snapshots, training_state

    template = build("lenet_300_100", (1, 28, 28), 10)
    states = [{n: p.detach().clone() for n, p in template.named_parameters()} for _ in range(2)]
    ens = Ensemble(template, states)
    before = {k: v.clone() for k, v in training_state(ens).items()}
    from lth.io import atomic_save_tensors, atomic_write_json

    bad = {f"state.{k}": v + 1 for k, v in before.items()}
    last = sorted(bad)[-1]
    bad[last] = bad[last][:1].contiguous()  # one member's worth: copy_ would broadcast it over both
    atomic_save_tensors(bad, tmp_path / "partial.safetensors")
    atomic_write_json(tmp_path / "partial.json", {"step": 10, "train_seconds": 1.0, "members": 2, "rows": [],
                                                   "captured": [], "optimizer": {"state": {}, "param_groups": []}})
    with pytest.warns(UserWarning, match="discarding an unreadable snapshot"):
        assert Snapshots(tmp_path / "partial").load(ens) is None
    assert all(torch.equal(v, before[k]) for k, v in training_state(ens).items())


# --- one writer ---------------------------------------------------------------------------------


def test_a_held_run_directory_refuses_a_second_writer_naming_its_pid(tmp_path, capsys):
    from lth.run import RunDir

    holder = RunDir(tmp_path / "r")
    holder.lock()
    try:
        refused(capsys, ["train", "mnist_quick", "--out", str(tmp_path / "r"), *TINY],
                contains=[f"pid {os.getpid()}", "in use"])
        assert not (tmp_path / "r" / "config.json").exists()
    finally:
        holder.unlock()
    assert main(["train", "mnist_quick", "--out", str(tmp_path / "r"), *TINY]) == 0


def test_two_runs_started_at_once_into_one_directory_exactly_one_proceeds(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "lth.cli", "train", "mnist_quick", "--out", str(out), "--iterations", "300",
           "--eval-every", "100", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen(cmd + ["--seed", str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for s in (1, 2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in res)
    assert codes == [0, 2], res
    loser = next(e for c, e in res if c == 2).strip()
    assert loser.startswith("error: ") and "\n" not in loser
    assert "in use by another lth process" in loser or "different config" in loser
    import json

    winner = 1 + [c for c, _ in res].index(0)
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    assert len(json.loads((out / "env.json").read_text())["invocations"]) == 1


# --- NaN and empty splits -------------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_naming_step_member_and_experiment(tmp_path, capsys, monkeypatch):
    from lth.tasks.classify import ImageClassification

    real = ImageClassification.loss
    calls = []

    def poisoned(out, y):
        calls.append(1)
        if len(calls) == 7:  # step 6: member 1's outputs turn NaN (through its weights, as a blow-up would)
            scale = torch.ones(out.shape[0], *[1] * (out.dim() - 1))
            scale[1] = float("nan")
            out = out * scale
        return real(out, y)

    monkeypatch.setattr(ImageClassification, "loss", staticmethod(poisoned))
    out = tmp_path / "r"
    err = refused(capsys, ["train", "mnist_quick", "--out", str(out), "--trials", "2", *TINY],
                  contains=["level 0", "ticket trial 1", "member 1", "step 6", "nan"])
    assert "levels_done" not in (out / "state.json").read_text() if (out / "state.json").exists() else True
    assert not (out / "results.csv").exists(), err


def test_non_finite_loss_is_an_lth_error_with_step_and_member():
    from lth.finite import check_loss

    p = torch.zeros(3, 4, requires_grad=True)
    p.grad = torch.zeros(3, 4)
    p.grad[2, 1] = float("inf")
    with pytest.raises(NonFiniteLoss) as e:
        check_loss(torch.tensor(float("inf")), [p], 3, 12)
    assert (e.value.step, e.value.member) == (12, 2) and "member 2, step 12" in str(e.value)
    check_loss(torch.tensor(1.0), [p], 3, 12)  # finite: nothing


def test_an_empty_evaluation_split_is_refused_at_load(monkeypatch):
    from lth.data.mnist import ImageData, Split
    from lth.errors import DataError
    from lth.tasks.classify import ImageClassification

    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    empty = Split(x[:0], y[:0])
    with pytest.raises(DataError, match="test split has 0 images"):
        ImageClassification(ImageData("mnist", Split(x, y), Split(x, y), empty, 10, (1, 28, 28)))


def test_run_dir_errors_are_lth_errors():
    assert issubclass(RunDirError, Exception) and issubclass(NonFiniteLoss, Exception)
    from lth.errors import LthError

    assert issubclass(RunDirError, LthError) and issubclass(NonFiniteLoss, LthError)


def test_supermask_corrupt_checkpoint_names_the_trial_and_a_deleted_one_is_trained_again(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["supermask", "mnist_supermask_ste", "--out", str(out), "--iterations", "12", "--eval-every", "6",
            "--trials", "2", "--no-progress"]
    assert main(argv) == 0
    ckpt = out / "supermask_trial1.safetensors"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:64])
    refused(capsys, ["pack", str(out), "--trial", "1", "-o", str(tmp_path / "t.lth")],
            contains=["supermask_trial1.safetensors", "delete it to redo trial 1 only"])
    ckpt.unlink()
    assert main(argv) == 0
    from lth.io import load_tensors

    a = load_tensors(ckpt)
    ckpt.write_bytes(good)
    b = load_tensors(ckpt)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_tensors_get_the_umask_permissions_and_leave_no_temp_file(tmp_path):
    import os
    import stat

    import torch

    from lth.io import atomic_save_tensors, atomic_write_bytes, load_tensors

    atomic_save_tensors({"w": torch.arange(4.0)}, tmp_path / "t.safetensors")
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "t.safetensors") == mode(tmp_path / "b.bin")  # 0o666 & ~umask, both
    assert torch.equal(load_tensors(tmp_path / "t.safetensors")["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "t.safetensors"]
