import dataclasses
import json

import pytest
import torch

from lth import lottery
from lth.errors import ConfigError
from lth.io import load_tensors


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny lottery run (2 trials, 2 levels, both controls) shared by the tests below."""
    from lth.presets import Config

    cfg = Config(name="tiny", iterations=30, eval_every=10, levels=2, trials=2, controls=["reinit", "random"],
                 prune_rate=0.5, layer_rates={"fc3.weight": 0.25})
    out = tmp_path_factory.mktemp("run")
    lottery.run(cfg, out, progress=False)
    return cfg, out


def rows(out):
    import csv

    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_results_have_required_columns(finished):
    _, out = finished
    cols = set(rows(out)[0])
    assert {"experiment", "trial", "level", "remaining", "step", "val_loss", "val_acc", "test_acc"} <= cols


def test_every_branch_trial_and_level_is_recorded(finished):
    _, out = finished
    seen = {(r["experiment"], r["trial"], r["level"]) for r in rows(out)}
    want = {("ticket", str(t), "0") for t in range(2)}
    want |= {(e, str(t), str(l)) for e in ("ticket", "reinit", "random") for t in range(2) for l in (1, 2)}
    assert seen == want


def test_controls_share_the_tickets_per_layer_sparsity(finished):
    _, out = finished
    t = load_tensors(out / "level_02" / "ticket_trial0.safetensors")
    r = load_tensors(out / "level_02" / "random_trial0.safetensors")
    for n in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert int(t[f"mask.{n}"].sum()) == int(r[f"mask.{n}"].sum())
        assert not torch.equal(t[f"mask.{n}"], r[f"mask.{n}"])


def test_ticket_resets_to_init_and_reinit_does_not(finished):
    _, out = finished
    lvl0 = load_tensors(out / "level_00" / "ticket_trial0.safetensors")
    t = load_tensors(out / "level_02" / "ticket_trial0.safetensors")
    r = load_tensors(out / "level_02" / "reinit_trial0.safetensors")
    assert torch.equal(t["init.fc1.weight"], lvl0["init.fc1.weight"])
    assert torch.equal(r["mask.fc1.weight"], t["mask.fc1.weight"])
    assert not torch.equal(r["init.fc1.weight"], t["init.fc1.weight"])


def test_pruned_weights_are_zero_after_training(finished):
    _, out = finished
    t = load_tensors(out / "level_02" / "ticket_trial1.safetensors")
    for n in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert (t[f"final.{n}"][t[f"mask.{n}"] == 0] == 0).all()


def test_remaining_follows_per_layer_rates(finished):
    _, out = finished
    rem = {r["level"]: float(r["remaining"]) for r in rows(out) if r["experiment"] == "ticket"}
    n = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    hidden = n["fc1"] + n["fc2"]
    want2 = (round(round(n["fc1"] * 0.5) * 0.5) + round(round(n["fc2"] * 0.5) * 0.5) + round(round(1000 * 0.75) * 0.75)) / (hidden + 1000)
    assert abs(rem["2"] - want2) < 1e-5


def test_run_records_config_and_environment(finished):
    cfg, out = finished
    saved = json.loads((out / "config.json").read_text())
    assert saved["iterations"] == 30 and saved["trials"] == 2
    env = json.loads((out / "env.json").read_text())["invocations"][-1]
    assert {"torch", "python", "git_commit", "command", "device"} <= set(env)


def test_resume_skips_finished_levels(finished, monkeypatch):
    cfg, out = finished
    trained = []
    monkeypatch.setattr(lottery.Lottery, "train_level", lambda self, level: trained.append(level))
    lottery.run(cfg, out, progress=False)
    assert trained == []


def test_resume_continues_after_last_finished_level(finished, tmp_path, monkeypatch):
    import shutil

    cfg, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "state.json").write_text(json.dumps({"levels_done": [0, 1]}))  # as if killed in level 2
    trained = []
    monkeypatch.setattr(lottery.Lottery, "train_level", lambda self, level: trained.append(level))
    lottery.run(cfg, copy, progress=False)
    assert trained == [2]


def test_more_levels_extend_an_existing_run(finished, tmp_path, monkeypatch):
    import shutil

    cfg, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    trained = []
    monkeypatch.setattr(lottery.Lottery, "train_level", lambda self, level: trained.append(level))
    lottery.run(dataclasses.replace(cfg, levels=4), copy, progress=False)
    assert trained == [3, 4]


def test_different_config_in_existing_dir_is_refused(finished):
    cfg, out = finished
    with pytest.raises(ConfigError, match="different config"):
        lottery.run(dataclasses.replace(cfg, lr=0.5), out, progress=False)


def _without_field(out, field):
    path = out / "config.json"
    stored = json.loads(path.read_text())
    del stored[field]  # as written by a version of lth that predates the field
    path.write_text(json.dumps(stored))


def test_run_made_before_a_field_existed_resumes_under_its_default(finished, tmp_path, monkeypatch):
    import shutil

    cfg, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    _without_field(copy, "restart_schedule")
    trained = []
    monkeypatch.setattr(lottery.Lottery, "train_level", lambda self, level: trained.append(level))
    lottery.run(dataclasses.replace(cfg, levels=3), copy, progress=False)
    assert trained == [3]


def test_run_made_before_a_field_existed_refuses_a_non_default_value(finished, tmp_path):
    import shutil

    cfg, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    _without_field(copy, "restart_schedule")
    with pytest.raises(ConfigError, match="restart_schedule: False there, True now"):
        lottery.run(dataclasses.replace(cfg, restart_schedule=True), copy, progress=False)


def test_rewind_step_beyond_training_is_config_error(tmp_path):
    from lth.presets import Config

    with pytest.raises(ConfigError, match="rewind_step"):
        lottery.run(Config(iterations=10, rewind_step=10), tmp_path, progress=False)


def test_batched_and_sequential_training_agree(tmp_path):
    from lth.presets import Config

    cfg = Config(iterations=20, eval_every=10, levels=1, trials=2, controls=["random"])
    a = lottery.run(cfg, tmp_path / "a", progress=False)
    b = lottery.run(dataclasses.replace(cfg, batched=False), tmp_path / "b", progress=False)
    ra = sorted(rows(a.path), key=lambda r: (r["experiment"], r["trial"], r["level"], int(r["step"])))
    rb = sorted(rows(b.path), key=lambda r: (r["experiment"], r["trial"], r["level"], int(r["step"])))
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert abs(float(x["val_loss"]) - float(y["val_loss"])) < 1e-3


def test_rewinding_resets_to_the_weights_at_step_k(tmp_path):
    from lth.presets import Config

    cfg = Config(iterations=20, eval_every=10, levels=1, trials=1, rewind_step=5)
    run = lottery.run(cfg, tmp_path, progress=False)
    rewind = load_tensors(run.path / "rewind.safetensors")
    lvl1 = load_tensors(run.path / "level_01" / "ticket_trial0.safetensors")
    assert torch.equal(lvl1["init.fc2.weight"], rewind["trial0.fc2.weight"])
    init0 = load_tensors(run.path / "level_00" / "ticket_trial0.safetensors")["init.fc2.weight"]
    assert not torch.equal(rewind["trial0.fc2.weight"], init0)
    steps = sorted({int(r["step"]) for r in rows(run.path) if r["level"] == "1"})
    assert steps[0] >= 5


def test_oneshot_prunes_dense_net_to_each_levels_sparsity(tmp_path):
    from lth.presets import Config

    cfg = Config(iterations=10, eval_every=10, levels=2, trials=1, schedule="oneshot", prune_rate=0.5,
                 layer_rates={})
    run = lottery.run(cfg, tmp_path, progress=False)
    dense = load_tensors(run.path / "level_00" / "ticket_trial0.safetensors")
    lvl2 = load_tensors(run.path / "level_02" / "ticket_trial0.safetensors")
    w = dense["final.fc2.weight"].abs()
    keep = lvl2["mask.fc2.weight"].bool()
    assert int(keep.sum()) == 30000 - round(0.75 * 30000)
    assert w[keep].min() >= w[~keep].max()  # straight from the dense weights, not nested via level 1


def assert_same_level_1(whole, killed, names) -> None:
    """A killed-and-resumed run equals the uninterrupted one: rows (but their clock) and level 1's members."""
    timeless = lambda out: sorted(  # noqa: E731
        (tuple((k, v) for k, v in r.items() if k != "train_seconds") for r in rows(out)))
    assert timeless(killed) == timeless(whole)
    for name in names:
        a = load_tensors(whole / "level_01" / f"{name}.safetensors")
        b = load_tensors(killed / "level_01" / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_level_resumes_from_its_snapshot_like_an_uninterrupted_run(tmp_path, monkeypatch):
    from killing import kill_after_snapshot

    from lth.presets import Config

    cfg = Config(name="tiny", iterations=40, eval_every=10, levels=1, trials=2, controls=["random"], prune_rate=0.5)
    lottery.run(cfg, tmp_path / "whole", progress=False)
    kill_after_snapshot(monkeypatch, lambda: lottery.run(cfg, tmp_path / "killed", progress=False), 20, "level_01")
    assert (tmp_path / "killed" / "level_01" / "partial.json").exists()
    lottery.run(cfg, tmp_path / "killed", progress=False)
    assert_same_level_1(tmp_path / "whole", tmp_path / "killed", ("ticket_trial0", "random_trial1"))
    assert not (tmp_path / "killed" / "level_01" / "partial.json").exists()


def test_run_killed_between_evaluations_resumes_from_a_time_based_snapshot_like_an_uninterrupted_run(
        tmp_path, monkeypatch):
    from killing import kill_after_snapshot

    from lth.presets import Config

    # one evaluation a level (step 0 and the end): only the between-evaluations snapshot can save step 13
    cfg = Config(name="tiny", iterations=30, eval_every=30, levels=1, trials=1, controls=["random"], prune_rate=0.5)
    lottery.run(cfg, tmp_path / "whole", progress=False)
    monkeypatch.setattr(lottery, "BETWEEN_EVALS_SECONDS", 0.0)
    kill_after_snapshot(monkeypatch, lambda: lottery.run(cfg, tmp_path / "killed", progress=False), 13, "level_01")
    assert json.loads((tmp_path / "killed" / "level_01" / "partial.json").read_text())["step"] == 13
    lottery.run(cfg, tmp_path / "killed", progress=False)
    assert_same_level_1(tmp_path / "whole", tmp_path / "killed", ("ticket_trial0", "random_trial0"))


def test_train_levels_trains_only_the_named_levels_of_a_criterion_at_init(tmp_path):
    from lth.presets import Config

    cfg = Config(name="tiny", iterations=6, eval_every=3, levels=3, train_levels=[2], criterion="snip",
                 prune_scope="global", layer_rates={}, prune_rate=0.5)
    lottery.run(cfg, tmp_path / "r", progress=False)
    assert sorted({int(r["level"]) for r in rows(tmp_path / "r")}) == [0, 2]


def test_train_levels_with_an_iterative_magnitude_schedule_is_a_one_line_error():
    from lth.errors import ConfigError
    from lth.presets import Config, validate

    with pytest.raises(ConfigError, match="train_levels needs a criterion at init"):
        validate(Config(levels=3, train_levels=[2]))


def test_control_levels_train_a_control_at_its_levels_only(tmp_path):
    from lth.presets import Config

    cfg = Config(name="tiny", iterations=4, eval_every=2, levels=2, controls=["random", "reinit"],
                 control_levels={"reinit": [2]}, prune_rate=0.5)
    lottery.run(cfg, tmp_path / "r", progress=False)
    seen = {(r["experiment"], r["level"]) for r in rows(tmp_path / "r")}
    assert ("random", "1") in seen and ("random", "2") in seen
    assert ("reinit", "2") in seen and ("reinit", "1") not in seen


def test_control_levels_must_name_a_control():
    from lth.errors import ConfigError
    from lth.presets import Config, validate

    with pytest.raises(ConfigError, match="not one of the controls"):
        validate(Config(controls=["random"], control_levels={"reinit": [1]}))
