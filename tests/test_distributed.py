import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    tmp = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(HERE / "dist_worker.py"), str(tmp / "run"), str(tmp)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
