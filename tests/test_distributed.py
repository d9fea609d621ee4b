import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def torchrun(script: str, *args: str) -> None:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "--standalone", "--nproc_per_node=2", str(HERE / script), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    torchrun("dist_worker.py", str(tmp / "run"), str(tmp))
    return tmp


def test_both_ranks_compute_identical_masks(two_ranks):
    r0 = json.loads((two_ranks / "rank0.json").read_text())
    r1 = json.loads((two_ranks / "rank1.json").read_text())
    assert len(r0["masks"]) == 4  # 2 trials x levels 1 and 2
    assert r0["masks"] == r1["masks"]


def test_both_ranks_end_with_identical_weights(two_ranks):
    r0 = json.loads((two_ranks / "rank0.json").read_text())
    r1 = json.loads((two_ranks / "rank1.json").read_text())
    assert r0["weights"] == r1["weights"]


def test_only_rank_zero_writes_results(two_ranks):
    import csv

    with open(two_ranks / "run" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["experiment"], r["trial"], r["level"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) > 0


LM = {"dataset": "text", "model": "gpt_cpu", "init": "golf", "optimizer": "adamw", "lr": 3e-3,
      "model_args": {"n_layer": 1, "d_model": 32, "n_head": 2, "n_kv_head": 1}, "seq_len": 32,
      "batch_size": 8, "grad_accum": 2, "iterations": 4, "eval_every": 2, "eval_tokens": 1024,
      "warmup": 2, "warmdown": 0.5, "grad_clip": 1.0, "layer_rates": {}, "levels": 0}


def test_lm_loss_with_two_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    import csv

    from lth import lottery
    from lth.presets import Config

    torchrun("dist_lm_worker.py", str(tmp_path / "ddp"), json.dumps(LM))
    lottery.run(Config(**{**Config().to_dict(), **LM}), tmp_path / "one", progress=False, dense_only=True)
    runs = []
    for name in ("ddp", "one"):
        with open(tmp_path / name / "results.csv") as f:
            runs.append([(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f)])
    assert [s for s, _ in runs[0]] == [s for s, _ in runs[1]] == [0, 2, 4]
    assert runs[0][0] == runs[1][0]  # same init
    for (_, a), (_, b) in zip(*runs):
        assert abs(a - b) < 1e-4 * abs(b), (a, b)
    assert runs[1][-1][1] < runs[1][0][1]  # and it did train


def test_supermask_with_two_processes_matches_one_process(tmp_path):
    import csv

    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun not found")
    args = ["supermask", "mnist_supermask", "--iterations", "20", "--eval-every", "10", "--trials", "2",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "--standalone", "--nproc_per_node=2", "-m", "lth.cli", *args, "--out",
                           str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from lth.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    runs = []
    for name in ("ddp", "one"):
        with open(tmp_path / name / "results.csv") as f:
            runs.append([(r["trial"], int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f)])
    assert [r[:2] for r in runs[0]] == [r[:2] for r in runs[1]] and len(runs[0]) == 6
    for (_, _, a), (_, _, b) in zip(*runs):
        assert abs(a - b) < 1e-4 * abs(b), (a, b)


def test_a_nan_on_one_process_stops_every_process_at_the_same_step_with_one_line(tmp_path):
    torchrun("dist_nan_worker.py", str(tmp_path / "run"), str(tmp_path))
    errors = [json.loads((tmp_path / f"rank{r}.json").read_text())["error"] for r in (0, 1)]
    assert errors[0] is not None and errors[0] == errors[1]  # same step, same line, nobody left waiting
    assert "step 3" in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "run" / "state.json").exists()  # the level is not marked done
