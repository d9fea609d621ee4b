import csv
import dataclasses
import json
import math

import pytest
import torch

from lth import lottery
from lth import supermask as S
from lth.cli import main
from lth.init import init_from_seed
from lth.io import load_tensors
from lth.models.lenet import LeNet
from lth.presets import Config

NAMES = ["fc1.weight", "fc2.weight", "fc3.weight"]


@pytest.fixture(scope="module")
def task():
    """The embedded MNIST, loaded once for this file (every run below reuses it)."""
    return lottery.load_task(Config(), "cpu")


@pytest.fixture(autouse=True)
def _cached_task(task, monkeypatch):
    monkeypatch.setattr(lottery, "load_task", lambda cfg, device: task)
    torch.set_num_threads(1)


def cfg_for(rule, **kw):
    base = dict(rule=rule, iterations=4, eval_every=2, batch_size=32, optimizer="adam", lr=0.05)
    base.update(kw)
    return S.resolve_config(dataclasses.replace(Config(init="signed_constant"), **base))


def build(cfg, seeds=(0, 1)):
    template = LeNet()
    weights = [lottery.init_state(template, s, cfg.init) for s in seeds]
    scores = [S.init_scores(template, NAMES, s, cfg) for s in seeds]
    return S.Supermask(template, weights, scores, rule=cfg.rule, density=cfg.density,
                       scale_init=S.scale_init(cfg), threshold=cfg.threshold or 0.3,
                       temperature=cfg.temperature or 1.0, seeds=list(seeds))


@pytest.mark.parametrize("rule", S.RULES)
def test_weights_stay_bit_identical_to_the_seed_init(rule, task):
    cfg = cfg_for(rule, density_penalty=1.0 if rule != "topk" else None)
    sm = build(cfg)
    before = {n: t.clone() for n, t in sm.frozen().items()}
    scores0 = [s.detach().clone() for s in sm.scores]
    S.train_supermask(sm, task, cfg, [0, 1])
    for i, seed in enumerate((0, 1)):
        fresh = dict(init_from_seed(LeNet(), seed, cfg.init).named_parameters())
        for n, t in sm.frozen().items():
            assert torch.equal(t, before[n]) and torch.equal(t[i], fresh[n].detach())
    assert any(not torch.equal(a, b) for a, b in zip(scores0, sm.scores))  # the scores did train


@pytest.mark.parametrize("rule", S.RULES)
def test_only_scores_and_scales_receive_gradients(rule):
    sm = build(cfg_for(rule))
    x, y = torch.randn(2, 8, 1, 28, 28), torch.randint(0, 10, (2, 8))
    torch.nn.functional.cross_entropy(sm(x).flatten(0, 1), y.flatten()).backward()
    trainable = {id(p) for p in sm.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in [*sm.scores, *sm.scales]}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*sm.scores, *sm.scales])
    assert all(not t.requires_grad and t.grad is None for t in sm.frozen().values())
    assert all(not p.requires_grad for p in sm.base.parameters())


def test_topk_keeps_exactly_the_requested_count_per_layer():
    sm = build(cfg_for("topk", density=0.37))
    with torch.no_grad():  # many ties: the count must still be exact
        for s in sm.scores:
            s.copy_(torch.randint(-3, 4, s.shape).float())
    for n, m in sm.masks().items():
        want = round(0.37 * m[0].numel())
        assert [int(m[i].sum()) for i in range(2)] == [want, want], n


def test_ste_forward_mask_changes_with_temperature_at_fixed_scores():
    sm = build(cfg_for("ste", threshold=0.3))
    masks = {}
    for t in (1.0, 0.5, 0.1):
        sm.temperature = t
        masks[t] = sm.masks()
        theta = t * math.log(0.3 / 0.7)  # the score threshold is T * logit(tau)
        for n, s in sm.score_dict().items():
            assert torch.equal(masks[t][n], s.detach() >= theta) or torch.equal(
                masks[t][n], torch.sigmoid(s.detach() / t) >= 0.3)
    d = {t: sum(int(m.sum()) for m in masks[t].values()) for t in masks}
    assert d[1.0] > d[0.5] > d[0.1]  # tau < 0.5: the threshold rises towards 0 as T falls


def test_ste_density_penalty_moves_density_toward_the_target():
    cfg = cfg_for("ste", density=0.6)
    sm = build(cfg)  # scores initialized at density 0.6
    sm.density = 0.2  # now ask for 0.2
    start = S.remaining(sm)[0]
    opt = torch.optim.Adam(sm.scores, lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        sm.density_loss(1.0).backward()
        opt.step()
    end = S.remaining(sm)[0]
    assert abs(start - 0.6) < 0.01 and abs(end - 0.2) < abs(start - 0.2) / 2


def test_bernoulli_eval_is_deterministic_and_training_samples():
    sm = build(cfg_for("bernoulli"))
    x = torch.randn(2, 16, 1, 28, 28)
    sm.eval()
    a, b = sm(x), sm(x)
    assert torch.equal(a, b)
    for n, m in sm.masks().items():
        assert torch.equal(m, sm.score_dict()[n].detach() > 0)
    sm.train()
    assert not torch.equal(sm(x), sm(x))


def test_trained_float_count_for_lenet_is_three_scales():
    counts = S.trained_floats(LeNet(), NAMES)
    assert counts == {"mask_bits": 266_200, "scores": 266_200, "scales": 3, "trained_floats_shipped": 3,
                      "frozen": 266_610}
    sm = build(cfg_for("topk"), seeds=(0,))
    assert S.trained_floats(sm) == counts
    assert sum(p.numel() for p in sm.parameters() if p.requires_grad) == 266_200 + 3


def test_scale_groups_split_outputs():
    class Grouped(LeNet):
        supermask_scale_groups = {"fc2.weight": 4}

    assert S.trained_floats(Grouped(), NAMES)["scales"] == 6


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, task):
    out = tmp_path_factory.mktemp("sm") / "run"
    mp = pytest.MonkeyPatch()
    mp.setattr(lottery, "load_task", lambda cfg, device: task)
    try:
        rc = main(["supermask", "mnist_supermask", "--out", str(out), "--iterations", "12", "--eval-every", "6",
                   "--trials", "2", "--no-progress"])
    finally:
        mp.undo()
    return rc, out


def read_rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_cli_runs_end_to_end_and_writes_results_and_checkpoints(cli_run):
    rc, out = cli_run
    assert rc == 0
    rows = read_rows(out)
    assert {"experiment", "trial", "level", "remaining", "step", "val_loss", "val_acc", "test_loss", "test_acc",
            "density"} <= set(rows[0])
    assert {(r["experiment"], r["trial"], r["level"], r["step"]) for r in rows} == {
        ("topk", t, "0", s) for t in ("0", "1") for s in ("0", "6", "12")}
    assert all(abs(float(r["remaining"]) - 0.5) < 1e-5 for r in rows)
    for t in (0, 1):
        ck = load_tensors(out / f"supermask_trial{t}.safetensors")
        assert set(ck) == {f"{k}.{n}" for k in ("mask", "score", "scale") for n in NAMES}
        assert ck["mask.fc1.weight"].dtype == torch.uint8
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rule"] == "topk" and cfg["init"] == "signed_constant" and cfg["seed"] == 0
    assert json.loads((out / "state.json").read_text())["trials_done"] == [0, 1]
    assert (out / "accuracy_vs_remaining.png").exists()


def test_checkpoint_rebuilds_the_evaluated_network(cli_run, task):
    _, out = cli_run
    cfg = Config(**json.loads((out / "config.json").read_text()))
    ck = S.load_checkpoint(out / "supermask_trial1.safetensors")
    model = S.materialize(LeNet(), cfg.seed + 1, cfg.init, ck)
    with torch.no_grad():
        x, y = task.data.test.x, task.data.test.y
        acc = float((model(x).argmax(-1) == y).float().mean())
    last = [r for r in read_rows(out) if r["trial"] == "1" and r["step"] == "12"][0]
    assert abs(acc - float(last["test_acc"])) < 1e-4


def test_resume_skips_a_finished_trial_and_redoes_an_unfinished_one(cli_run, task, capsys):
    _, out = cli_run
    t0 = out / "supermask_trial0.safetensors"
    t0_bytes, t0_mtime = t0.read_bytes(), t0.stat().st_mtime_ns
    rows_before = read_rows(out)
    # as if the run had been killed while training trial 1
    (out / "state.json").write_text(json.dumps({"trials_done": [0]}))
    (out / "supermask_trial1.safetensors").unlink()
    rc = main(["supermask", "mnist_supermask", "--out", str(out), "--iterations", "12", "--eval-every", "6",
               "--trials", "2", "--no-progress"])
    assert rc == 0
    assert t0.stat().st_mtime_ns == t0_mtime and t0.read_bytes() == t0_bytes
    assert (out / "supermask_trial1.safetensors").exists()
    key = lambda r: (r["trial"], r["step"])  # noqa: E731
    timeless = lambda rows: sorted(({k: v for k, v in r.items() if k != "train_seconds"} for r in rows), key=key)  # noqa: E731
    assert timeless(read_rows(out)) == timeless(rows_before)  # same seed: same results (wall-clock aside)
    assert "trials_done" in (out / "state.json").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rule", "magic"], "rule must be one of ste, topk, bernoulli"),
        (["--density", "1.5"], "density must be in (0, 1]"),
        (["--density", "0"], "density must be in (0, 1]"),
        (["--density", "half"], "bad value for density"),
        (["--temperature", "0.5"], "temperature applies to rule ste only"),
        (["--rule", "ste", "--threshold", "0.5"], "threshold must be in (0, 1) and not 0.5"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    assert main(["supermask", "mnist_supermask", "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and message in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("preset", ["mnist_supermask", "mnist_supermask_bernoulli"])
def test_killed_supermask_run_resumes_from_its_snapshot_like_an_uninterrupted_run(tmp_path, monkeypatch, preset):
    from killing import kill_after_snapshot

    from lth.io import load_tensors
    from lth.presets import override, preset as get

    cfg = override(get(preset), {"iterations": 30, "epochs": None, "eval_every": 10, "trials": 2})
    S.run(cfg, tmp_path / "whole", progress=False)
    kill_after_snapshot(monkeypatch, lambda: S.run(cfg, tmp_path / "killed", progress=False), 20)
    assert (tmp_path / "killed" / "partial_trials0-1.json").exists()
    S.run(cfg, tmp_path / "killed", progress=False)

    def rows(d):
        import csv

        with open(d / "results.csv") as f:
            return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "train_seconds")) for r in csv.DictReader(f))

    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")
    for t in (0, 1):
        a = load_tensors(tmp_path / "whole" / f"supermask_trial{t}.safetensors")
        b = load_tensors(tmp_path / "killed" / f"supermask_trial{t}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "killed" / "partial_trials0-1.json").exists()


def test_a_supermask_run_records_its_tasks_metric_spec(tmp_path):
    from lth.presets import override, preset as get

    S.run(override(get("mnist_supermask"), {"iterations": 4, "epochs": None, "eval_every": 2}), tmp_path / "r",
          progress=False)
    spec = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "test_acc" in json.dumps(spec)
