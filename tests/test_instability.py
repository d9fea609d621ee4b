"""`lth instability` (lth.instability): linear mode connectivity of a run's network at step k, one
property per test. LeNet on the embedded MNIST with 30 iterations, and a small BatchNorm + dropout MLP
registered here (as tests/test_extension_points.py registers its model)."""

import json
import shutil

import pytest
import torch
from torch import nn

from lth import checkpoints, cli, lottery
from lth import instability as I
from lth.errors import ConfigError
from lth.models import MODELS, ModelEntry
from lth.presets import Config
from lth.train import Batches


class BNNet(nn.Module):
    """784 -> 16 -> BatchNorm -> ReLU -> dropout -> 10: running statistics per member, dropout per step."""

    def __init__(self, d=784, hidden=16, classes=10):
        super().__init__()
        self.fc1, self.bn, self.drop, self.fc2 = nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.Dropout(0.1), \
            nn.Linear(hidden, classes)
        self.output_layer = "fc2"

    def forward(self, x):
        return self.fc2(self.drop(self.bn(self.fc1(x.flatten(-3))).relu()))


@pytest.fixture(scope="module", autouse=True)
def registered():
    MODELS.register("inst_bnnet")(ModelEntry("inst_bnnet", lambda shape, k, **kw: BNNet(shape[0] * shape[1] * shape[2],
                                                                                            classes=k, **kw)))
    yield
    MODELS.unregister("inst_bnnet")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """LeNet: level 0 (dense) and level 1 (rewound to step 10), two trials trained as one batch."""
    out = tmp_path_factory.mktemp("inst") / "run"
    cfg = Config(name="inst", iterations=30, batch_size=32, eval_every=30, levels=1, rewind_step=10, trials=2)
    lottery.run(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def analysed(run_dir, tmp_path_factory):
    """A copy of the run with steps 0 and 20 of level 0 analysed for trial 0 (5 points)."""
    out = tmp_path_factory.mktemp("inst") / "analysed"
    shutil.copytree(run_dir, out)
    return out, I.run(out, 0, "0,20", points=5, trials=[0], progress=False)


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inst") / "bn"
    cfg = Config(name="bn", model="inst_bnnet", layer_rates={}, iterations=30, batch_size=32, eval_every=30, levels=0,
                 init="kaiming_normal")
    lottery.run(cfg, out, progress=False)
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "instability", ignore_errors=True)
    return dst


def _trained_copies(run, k):
    s = I.setup(run, 0)
    theta = I.replay(s, [0], [k])[0][k]
    return s, I.train_copies(s, theta, I.checkpoint(s, "ticket", 0)["mask"], k, I.copy_seeds(s.cfg.seed))


# --- pure parts -----------------------------------------------------------------------------------------

def test_interpolation_endpoints_are_the_two_states_exactly_weights_and_buffers():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 3, generator=g), "bn.running_mean": torch.randn(3, generator=g),
         "bn.num_batches_tracked": torch.tensor(7)}
    b = {"w": torch.randn(5, 3, generator=g), "bn.running_mean": torch.randn(3, generator=g),
         "bn.num_batches_tracked": torch.tensor(9)}
    for alpha, want in ((0.0, a), (1.0, b)):
        got = I.interpolate(a, b, alpha)
        assert all(torch.equal(got[n], want[n]) and got[n].dtype == want[n].dtype for n in a)
    mid = I.interpolate(a, b, 0.3)
    assert torch.allclose(mid["w"], 0.7 * a["w"] + 0.3 * b["w"]) and int(mid["bn.num_batches_tracked"]) == 7


def test_barrier_is_the_highest_error_minus_the_mean_of_the_ends():
    assert I.barrier([0.10, 0.30, 0.20]) == pytest.approx(0.15)
    assert I.barrier([0.10, 0.05, 0.30]) == pytest.approx(0.10)  # the highest point is an end
    assert I.barrier([0.2, 0.2, 0.2]) == 0.0
    assert I.alphas(11)[0] == 0.0 and I.alphas(11)[-1] == 1.0 and I.alphas(11)[3] == pytest.approx(0.3)


def test_error_is_one_minus_accuracy_and_a_lower_is_better_metric_itself():
    from lth.metrics import ACC, BPB

    assert I.error(0.98, ACC) == pytest.approx(0.02) and I.error(1.25, BPB) == 1.25


# --- θk and the copies ----------------------------------------------------------------------------------

@pytest.mark.exact
def test_the_replay_is_the_runs_training(run_dir):
    """θk comes from replaying the level as the run trained it: to the end it gives the recorded weights."""
    for level in (0, 1):
        s = I.setup(run_dir, level)
        ends = I.replay(s, [0, 1], [s.cfg.iterations])
        for t in (0, 1):
            final = checkpoints.read(checkpoints.member_path(run_dir, level, "ticket", t), ("final",))["final"]
            assert all(torch.equal(ends[t][s.cfg.iterations][n], v) for n, v in final.items())


def test_two_copies_with_different_data_orders_differ(run_dir):
    s, copies = _trained_copies(run_dir, 20)
    seeds = I.copy_seeds(s.cfg.seed)
    orders = [Batches([seed], s.task.train_size, 32)(20) for seed in seeds]
    assert seeds[0] != seeds[1] and not torch.equal(*orders)
    a, b = copies.member_state(0), copies.member_state(1)
    assert not torch.equal(a["fc1.weight"], b["fc1.weight"])


# --- the analysis ---------------------------------------------------------------------------------------

def test_path_ends_evaluate_to_the_recorded_endpoint_accuracies(analysed):
    out, doc = analysed
    for entry in doc["trials"]["0"]["steps"].values():
        assert len(entry["metrics"]) == 5
        assert entry["metrics"][0] == entry["endpoints"][0] and entry["metrics"][-1] == entry["endpoints"][1]
        assert entry["errors"][0] == pytest.approx(1 - entry["endpoints"][0]["test_acc"])
        assert entry["barrier"] == pytest.approx(I.barrier(entry["errors"]))
    assert json.loads((out / "instability" / "level_00" / I.FILE).read_text()) == doc
    assert (out / "instability" / "level_00" / "error_vs_interpolation.png").stat().st_size > 0
    assert (out / "instability" / "level_00" / "barrier_vs_k.png").stat().st_size > 0


def test_the_same_command_twice_gives_identical_results(run_dir, analysed, tmp_path):
    again = _copy(run_dir, tmp_path / "again")
    assert I.run(again, 0, "0,20", points=5, trials=[0], progress=False) == analysed[1]


def test_a_killed_analysis_redoes_only_the_unfinished_steps(run_dir, analysed, tmp_path, monkeypatch):
    out = _copy(run_dir, tmp_path / "killed")
    real, done = I.analyse, []

    def killed_at_second(*args, **kwargs):
        if done:
            raise KeyboardInterrupt
        done.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(I, "analyse", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        I.run(out, 0, "0,20", points=5, trials=[0], progress=False)
    saved = json.loads((out / "instability" / "level_00" / I.FILE).read_text())
    assert list(saved["trials"]["0"]["steps"]) == ["0"]

    redone = []
    monkeypatch.setattr(I, "analyse", lambda *a, **kw: redone.append(a[3]) or real(*a, **kw))
    assert I.run(out, 0, "0,20", points=5, trials=[0], progress=False) == analysed[1]
    assert redone == [20]


def test_a_resumed_analysis_with_other_settings_than_the_files_is_refused(analysed):
    out, doc = analysed
    with pytest.raises(ConfigError, match="holds results made with points 5"):
        I.run(out, 0, "10", points=3, trials=[0], progress=False)
    assert json.loads((out / "instability" / "level_00" / I.FILE).read_text()) == doc


def test_batchnorm_statistics_are_recomputed_at_interior_points(bn_run):
    s, copies = _trained_copies(bn_run, 10)
    a, b = copies.member_state(0), copies.member_state(1)
    from lth.ensemble import Ensemble

    mid = I.interpolate(a, b, 0.5)
    path = Ensemble(s.template, [mid])
    indices = I.bn_indices(0, s.task.train_size, 32, 4)
    I.recompute_bn(path, s.task, indices)
    got = path.member_state(0)["bn.running_mean"]
    assert not torch.allclose(got, mid["bn.running_mean"], atol=1e-3)  # not the interpolated statistics

    direct = BNNet()  # torch's own cumulative average over the same batches
    direct.load_state_dict({n: v for n, v in mid.items()})
    direct.bn.reset_running_stats()
    direct.bn.momentum = None
    direct.train()
    with torch.no_grad():
        for idx in indices:
            direct(s.task.batch(idx[None])[0][0])
    assert torch.allclose(got, direct.bn.running_mean, atol=1e-5)
    assert torch.allclose(path.member_state(0)["bn.running_var"], direct.bn.running_var, rtol=1e-4)


def test_a_batchnorm_model_keeps_its_copies_at_the_ends_and_records_the_recomputed_ends(bn_run):
    doc = I.run(bn_run, 0, "10", points=3, bn_batches=4, progress=False)
    entry = doc["trials"]["0"]["steps"]["10"]
    assert doc["bn_batches"] == 4 and len(entry["bn_recomputed_end_errors"]) == 2
    assert entry["metrics"][0] == entry["endpoints"][0] and entry["metrics"][-1] == entry["endpoints"][1]


# --- the command line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["{missing}", "--steps", "0"], "no such run directory"),
    (["{empty}", "--steps", "0"], "not a run directory"),
    (["{run}", "--level", "5", "--steps", "0"], "level 5 is not a finished level"),
    (["{run}", "--steps", "30"], "step 30 is outside level 0's training"),
    (["{run}", "--level", "1", "--steps", "5"], "steps run from 10"),
    (["{run}", "--steps", "1.5"], "comma-separated integers"),
    (["{run}", "--steps", "0,x"], "comma-separated integers"),
    (["{run}", "--steps", "0", "--points", "2"], "--points must be >= 3"),
    (["{run}", "--steps", "0", "--trial", "2"], "trial 2 is not in the run"),
])
def test_bad_inputs_give_one_line_errors(run_dir, tmp_path, capsys, args, says):
    (tmp_path / "empty").mkdir()
    paths = {"run": run_dir, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    code = cli.main(["instability", "--no-progress"] + [a.format(**paths) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_all_trials_are_analysed_and_the_report_averages_them(run_dir, tmp_path, capsys):
    out = _copy(run_dir, tmp_path / "all")
    assert cli.main(["instability", str(out), "--steps", "20", "--points", "3", "--all-trials", "--no-progress"]) == 0
    assert "results in" in capsys.readouterr().out
    doc = json.loads((out / "instability" / "level_00" / I.FILE).read_text())
    barriers = torch.tensor([doc["trials"][t]["steps"]["20"]["barrier"] for t in ("0", "1")], dtype=torch.float64)
    assert cli.main(["report", str(out), "--all-trials"]) == 0
    assert f"{100 * barriers.mean():.2f} ± {100 * barriers.std():.2f}" in capsys.readouterr().out


def _with_barriers(run_dir, tmp_path, barriers: dict):
    """A copy of the run with instability results holding these barriers (trial -> {k: barrier})."""
    out = _copy(run_dir, tmp_path / "report")
    doc = {"level": 0, "error": "1 - test_acc", "error_scale": 100.0, "error_unit": "percentage points",
           "points": 3, "alphas": [0.0, 0.5, 1.0], "threshold": I.THRESHOLD, "trials": {
               t: {"steps": {str(k): {"barrier": b, "errors": [0.1, 0.1 + b, 0.1], "endpoint_errors": [0.1, 0.1]}
                             for k, b in mine.items()}} for t, mine in barriers.items()}}
    (out / "instability" / "level_00").mkdir(parents=True)
    (out / "instability" / "level_00" / I.FILE).write_text(json.dumps(doc))
    return out


def test_report_prints_the_suggested_rewind_step(run_dir, tmp_path, capsys):
    out = _with_barriers(run_dir, tmp_path, {"0": {0: 0.08, 50: 0.021, 200: 0.015, 300: 0.001},
                                             "1": {0: 0.06, 50: 0.009, 200: 0.02, 300: 0.0}})
    assert cli.main(["report", str(out)]) == 0
    assert "suggested --rewind-step: 200" in capsys.readouterr().out
    assert cli.main(["report", str(out), "--trial", "1"]) == 0
    assert "suggested --rewind-step: 50" in capsys.readouterr().out
    assert cli.main(["report", str(out), "--all-trials"]) == 0  # means 7.0, 1.5, 1.75, 0.05 points
    text = capsys.readouterr().out
    assert "suggested --rewind-step: 50" in text and "7.00 ± 1.41" in text


def test_report_says_none_when_no_step_is_stable(run_dir, tmp_path, capsys):
    out = _with_barriers(run_dir, tmp_path, {"0": {0: 0.08, 50: 0.05}})
    assert cli.main(["report", str(out)]) == 0
    assert "suggested --rewind-step: none" in capsys.readouterr().out
