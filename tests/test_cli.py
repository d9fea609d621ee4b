import subprocess
import sys

import pytest

from lth.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lth.cli", *args], capture_output=True, text=True, timeout=120)


def test_presets_lists_paper_and_quick_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "mnist_lenet_300_100" in out and "mnist_quick" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prune-rate", "1.5"], "prune_rate must be in [0, 1)"),
        (["--prune-scope", "diagonal"], "prune_scope must be layer or global"),
        (["--controls", "reinit,bogus"], "unknown control"),
        (["--levels", "many"], "bad value for levels"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--data-dir", "/nonexistent/dir"], "is not a directory"),
        (["--set", "nonsense=1"], "unknown config field"),
        (["--device", "tpu"], "device must be"),
    ],
)
def test_bad_flag_is_one_line_error_before_any_work(flags, message, tmp_path):
    p = run_cli("lottery", "mnist_quick", "--out", str(tmp_path / "r"), *flags)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0, p.stderr
    assert message in p.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_preset_is_one_line_error(tmp_path):
    p = run_cli("lottery", "nope", "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "unknown preset" in p.stderr and p.stderr.strip().count("\n") == 0


def test_bad_data_file_is_one_line_error(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (d / name).write_bytes(b"\x00\x00\x08\x03garbage")
    p = run_cli("train", "mnist_quick", "--out", str(tmp_path / "r"), "--data-dir", str(d))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.strip().count("\n") == 0


def test_train_writes_level_zero_results_and_report(tmp_path):
    out = tmp_path / "r"
    p = run_cli("train", "mnist_quick", "--out", str(out), "--iterations", "20", "--eval-every", "10", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert (out / "results.csv").exists() and (out / "level_00" / "ticket_trial0.safetensors").exists()
    assert (out / "accuracy_vs_remaining.png").exists()
    assert "ticket" in p.stdout


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_ticket")
    p = run_cli("lottery", "mnist_quick", "--out", str(tmp / "r"), "--iterations", "20", "--eval-every", "10",
                "--levels", "1", "--no-progress")
    assert p.returncode == 0, p.stderr
    p = run_cli("pack", str(tmp / "r"), "-o", str(tmp / "m.ticket"))
    assert p.returncode == 0, p.stderr
    return tmp


def test_inspect_json_has_sizes_bound_and_weights_digest(packed):
    import json

    p = run_cli("inspect", str(packed / "m.ticket"), "--json")
    info = json.loads(p.stdout)
    assert {"total_bytes", "mask_bytes", "entropy_bound_bytes", "weights_sha256"} <= set(info)
    assert info["total_bytes"] == (packed / "m.ticket").stat().st_size


def test_corrupted_ticket_is_one_line_error(packed):
    data = bytearray((packed / "m.ticket").read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = packed / "bad.ticket"
    bad.write_bytes(bytes(data))
    for cmd in ("inspect", "eval"):
        p = run_cli(cmd, str(bad))
        assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "checksum" in p.stderr


def test_train_from_ticket_without_preset_uses_recorded_config(packed):
    p = run_cli("train", "--ticket", str(packed / "m.ticket"), "--out", str(packed / "re"), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert (packed / "re" / "results.csv").exists()


def test_inspect_counts_code_plus_ticket_against_the_budget(packed):
    import json

    size = (packed / "m.ticket").stat().st_size
    info = json.loads(run_cli("inspect", str(packed / "m.ticket"), "--json", "--code-bytes", "1000",
                              "--budget", str(size + 1000)).stdout)
    assert info["code_plus_ticket_bytes"] == size + 1000 and info["fits_budget"] and info["budget_left_bytes"] == 0
    info = json.loads(run_cli("inspect", str(packed / "m.ticket"), "--json", "--code-bytes", "1001",
                              "--budget", str(size + 1000)).stdout)
    assert not info["fits_budget"]


def test_inspect_default_code_is_the_lth_sources(packed):
    import json
    from pathlib import Path

    import lth

    info = json.loads(run_cli("inspect", str(packed / "m.ticket"), "--json").stdout)
    src = sum(p.stat().st_size for p in Path(lth.__file__).parent.rglob("*.py"))
    assert info["code_bytes"] == src and info["budget_bytes"] == 16_000_000

@pytest.fixture(scope="module")
def sm_packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_sm")
    p = run_cli("supermask", "mnist_supermask_ste", "--out", str(tmp / "r"), "--iterations", "12", "--eval-every", "6",
                "--trials", "2", "--no-progress")
    assert p.returncode == 0, p.stderr
    p = run_cli("pack", str(tmp / "r"), "--trial", "1", "-o", str(tmp / "sm.ticket"))
    assert p.returncode == 0, p.stderr
    assert "supermask ste" in p.stdout
    return tmp


@pytest.mark.exact
def test_eval_of_a_supermask_ticket_prints_the_recorded_metrics(sm_packed):
    import csv

    p = run_cli("eval", str(sm_packed / "sm.ticket"))
    assert p.returncode == 0, p.stderr
    got = dict(line.split()[:2] for line in p.stdout.splitlines())
    lines = {line.split()[0]: line for line in p.stdout.splitlines()}
    with open(sm_packed / "r" / "results.csv") as f:
        want = [r for r in csv.DictReader(f) if r["trial"] == "1" and r["step"] == "12"][0]
    for k in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert float(got[k]) == float(want[k]), k
        assert lines[k].endswith("recorded: exact"), lines[k]


def test_inspect_json_of_a_supermask_ticket_digests_the_scaled_network(sm_packed):
    import json

    from lth import pack
    from lth import ticket as T
    from lth.init import weights_sha256

    p = run_cli("inspect", str(sm_packed / "sm.ticket"), "--json")
    info = json.loads(p.stdout)
    assert info["weights"] == "seed" and info["float_bytes"] == 3 * 4  # three float32 scales
    assert [(f["name"], f["shape"], f["dtype"]) for f in info["floats"]] == [
        (f"scale.fc{i}.weight", [1], "float32") for i in (1, 2, 3)]
    assert "scale.fc1.weight" in run_cli("inspect", str(sm_packed / "sm.ticket")).stdout
    t = T.load(sm_packed / "sm.ticket")
    assert info["weights_sha256"] == weights_sha256(pack.build(t)) != T.weights_sha256(
        T.Ticket(t.arch, t.seed, t.init, t.masks))  # the scales are part of what the digest pins


def test_export_of_a_supermask_ticket_writes_dense_and_prune_forms(sm_packed):
    p = run_cli("export", str(sm_packed / "sm.ticket"), "-o", str(sm_packed / "x"), "--torch-prune")
    assert p.returncode == 0, p.stderr
    assert (sm_packed / "x" / "model.safetensors").exists() and (sm_packed / "x" / "model_torch_prune.safetensors").exists()


def test_pack_of_a_supermask_run_with_a_level_is_one_line_error(sm_packed):
    p = run_cli("pack", str(sm_packed / "r"), "--level", "2", "-o", str(sm_packed / "bad.ticket"))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.strip().count("\n") == 0


def test_eval_states_the_difference_from_a_recorded_value_that_differs():
    from lth.ticket_cmds import format_eval

    text = format_eval({"test_acc": 0.9801, "test_loss": 0.064266}, {"test_acc": 0.9801, "test_loss": 0.064265})
    acc, loss = text.splitlines()
    assert acc.endswith("recorded: exact")
    assert loss.endswith("recorded 0.064265, differs by +0.000001")
