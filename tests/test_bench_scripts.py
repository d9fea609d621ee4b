"""The GPU benchmark script runs end to end (tiny, on the CPU), so it is ready when a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT.parent / "shared" / "data" / "text" / "linux-doc-6.1.txt.gz"


@pytest.mark.skipif(not TEXT.exists(), reason="needs ../shared/data/text/linux-doc-6.1.txt.gz")
def test_lm_golf_bench_smoke_writes_dense_and_supermask_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lm_golf.py"), "--smoke", "--text", str(TEXT),
         "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert set(res["results"]) == {"lm_golf", "lm_golf_supermask"} and res["smoke"]
    for r in res["results"].values():
        assert r["steps"] > 0 and r["tokens_per_second"] > 0 and 0 < r["mfu"] < 1
        assert r["best_bpb"] <= r["final_bpb"] and r["best_step"] <= r["final_step"]
    assert "SMOKE TEST" in (tmp_path / "docs" / "table.txt").read_text()


def test_prune_at_init_bench_smoke_prints_every_method_and_its_shuffled_control(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "prune_at_init.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for method in ("imp", "snip", "grasp", "synflow", "random"):
        assert f"| {method} | its own |" in proc.stdout and f"| {method} | shuffled in each layer |" in proc.stdout


def test_fuzz_ticket_smoke_counts_every_mutation_kind_and_finds_no_bad_load(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_ticket.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT / "bench")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    kinds = {r["mutation"] for r in res["rows"]}
    assert {"field type swapped+sum", "unknown field+sum", "key removed+sum", "huge counts+sum",
            "huge architecture+sum", "byte flip"} <= kinds
    total = res["rows"][-1]
    assert total["mutation"] == "TOTAL" and total["n"] == res["n"] > 0
    assert total["other"] == total["slow"] == total["memory"] == 0 and res["bad"] == []


def test_bench_script_reports_a_missing_run_in_one_line_with_status_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cnn_ticket_instability.py"), "--run",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such run directory"]


def test_copy_outputs_copies_only_the_named_suffixes(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import common

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.json", "c.safetensors", "d.txt"):
        (src / name).write_text(name)
    common.copy_outputs(src, tmp_path / "out" / "deep")
    assert sorted(p.name for p in (tmp_path / "out" / "deep").iterdir()) == ["a.png", "b.json"]
    assert (tmp_path / "out" / "deep" / "b.json").read_text() == "b.json"
