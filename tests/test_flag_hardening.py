"""Bad flags are refused in one line (exit 2) before the run directory is created or changed, and the
``lth`` command chooses its OpenMP threading before torch starts (the user's settings win)."""

import json
import os
import subprocess
import sys

import pytest

from lth import threads
from lth.cli import main

REAL_CHOOSE = threads.choose

BAD = [
    (["--seed", "-1"], "seed must be >= 0"),
    (["--set", "seed=1.5"], "bad value for seed"),
    (["--batch-size", "100000"], "larger than the training split"),
    (["--layer-rates", "fc9.weight=0.1"], "unknown prunable tensors"),
    (["--layer-rates", "fc3.weight=abc"], "must be a number"),
    (["--model-args", "hidden=300"], "hidden must be a non-empty list"),
    (["--model-args", "n_layer=2"], "unknown to lenet_300_100"),
    (["--epochs", "inf"], "epochs must be finite"),
    (["--lr", "inf"], "lr must be finite"),
    (["--lr", "nan"], "lr must be finite"),
    (["--prune-rate", "nan"], "prune_rate must be finite"),
    (["--max-minutes", "inf"], "max_minutes must be finite"),
    (["--group-rates", "fc=inf"], "group_rates must be finite"),
    (["--device", "cuda:x"], "device must be"),
]


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch):
    monkeypatch.setattr(threads, "choose", lambda environ=None: {})  # in-process: leave os.environ alone


def snapshot(d):
    if not d.exists():
        return None
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert message in err, err


@pytest.mark.parametrize("command", ["train", "lottery"])
@pytest.mark.parametrize("flags, message", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_flag_refused_before_the_run_directory_exists(command, flags, message, tmp_path, capsys):
    out = tmp_path / "r"
    refused(capsys, [command, "mnist_quick", "--out", str(out), "--no-progress", *flags], message)
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "inf"], "temperature must be finite"),
    (["--model-args", "bogus=1"], "unknown to lenet_300_100"),
    (["--batch-size", "100000"], "larger than the training split"),
    (["--seed", "-3"], "seed must be >= 0"),
])
def test_supermask_bad_flag_refused_before_the_run_directory_exists(flags, message, tmp_path, capsys):
    out = tmp_path / "r"
    refused(capsys, ["supermask", "mnist_supermask_ste", "--out", str(out), "--no-progress", *flags], message)
    assert not out.exists()


def test_refused_flags_leave_an_existing_run_unchanged_and_resumable(tmp_path, capsys):
    out = tmp_path / "r"
    tiny = ["train", "mnist_quick", "--out", str(out), "--no-progress", "--iterations", "4", "--eval-every", "2"]
    assert main(tiny) == 0
    before = snapshot(out)
    for flags, message in BAD:
        refused(capsys, tiny + flags, message)
        assert snapshot(out) == before, flags
    assert main(tiny) == 0  # the corrected command still resumes the same run


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu"])
def test_eval_device_checked_before_anything(device, tmp_path, capsys):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > int(device[5:] or 0):
        pytest.skip("this machine has that CUDA device")
    refused(capsys, ["eval", str(tmp_path / "no.ticket"), "--device", device], "device")


def test_model_args_checked_against_the_model():
    from lth.errors import ConfigError
    from lth.models import check_args

    check_args("lenet_300_100", {"hidden": [10, 10]})
    check_args("gpt_cpu", {"n_layer": 2, "softcap": None, "seq_len": 64})
    for name, args in [("gpt_cpu", {"hidden": [1]}), ("gpt_cpu", {"n_layer": "two"}),
                       ("gpt_cpu", {"scales": 1}), ("lenet_300_100", {"hidden": [0]})]:
        with pytest.raises(ConfigError):
            check_args(name, args)



def test_real_choose_sets_passive_only_where_unset():
    env = {}
    c = REAL_CHOOSE(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and c["set_by_lth"]["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}
    c = REAL_CHOOSE(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"} and c["set_by_lth"] == {}
    assert c["set_by_user"] == env


@pytest.mark.parametrize("user", [{}, {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}])
def test_cli_records_threading_in_env_json(user, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = tmp_path / "r"
    p = subprocess.run([sys.executable, "-m", "lth.cli", "train", "mnist_quick", "--out", str(out), "--no-progress",
                        "--iterations", "2", "--eval-every", "1"], capture_output=True, text=True, timeout=180,
                       env={**env, **user})
    assert p.returncode == 0, p.stderr
    t = json.loads((out / "env.json").read_text())["invocations"][-1]["threading"]
    assert t["torch_imported_before"] is False
    if user:
        assert t["set_by_user"] == user and t["set_by_lth"] == {}
        assert t["OMP_WAIT_POLICY"] == "ACTIVE" and t["torch_threads"] == 1
    else:
        assert t["set_by_lth"]["OMP_WAIT_POLICY"] == "PASSIVE" and t["OMP_WAIT_POLICY"] == "PASSIVE"


def test_concurrent_runs_bench_smoke():
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(root / "bench" / "concurrent_runs.py"), "--smoke", "--counts", "1,2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "2 at once:" in p.stdout and "load average" in p.stdout and "PASSIVE" in p.stdout


@pytest.mark.parametrize("text", ["hidden=300:100", '{"hidden": [300, 100]}'])
def test_model_args_can_give_a_list(text):
    from lth.presets import parse_value

    assert parse_value("model_args", text) == {"hidden": [300, 100]}


def test_json_list_flag_must_be_a_list():
    from lth.errors import ConfigError
    from lth.presets import parse_value

    with pytest.raises(ConfigError, match="bad value for controls"):
        parse_value("controls", '{"a": 1}')
