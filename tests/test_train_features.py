"""The trainer's schedule, accumulation, clipping, time budget and Muon, on tiny models."""

import csv
import dataclasses

import pytest
import torch

from lth import lottery
from lth.ensemble import Ensemble
from lth.models.lenet import LeNet
from lth.presets import Config, preset
from lth.train import TrainSpec, clip_members, lr_factor, train


@pytest.fixture(scope="module")
def task():
    return lottery.load_task(Config(), "cpu")


def lenet_ensemble(seeds=(0, 1)):
    template = LeNet()
    return Ensemble(template, [lottery.init_state(template, s, "glorot_normal") for s in seeds])


def test_lr_factor_warms_up_then_holds_then_warms_down_to_zero():
    spec = TrainSpec(iterations=100, batch_size=1, lr=1.0, warmup=10, warmdown=0.2)
    f = [lr_factor(spec, s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(v == 1.0 for v in f[10:80])
    assert f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f[80:], f[81:]))


def test_lr_factor_under_a_time_budget_warms_down_by_elapsed_time():
    spec = TrainSpec(iterations=10**6, batch_size=1, lr=1.0, warmdown=0.5, max_minutes=1.0)
    assert lr_factor(spec, 10, elapsed=0.0) == 1.0
    assert lr_factor(spec, 10, elapsed=45.0) == pytest.approx(0.5)
    assert lr_factor(spec, 10, elapsed=60.0) == 0.0


def test_grad_accum_takes_the_same_step_as_the_whole_batch(task):
    ends = []
    for accum in (1, 4):
        ens = lenet_ensemble()
        train(ens, {}, task, TrainSpec(iterations=3, batch_size=32, lr=1e-2, optimizer="sgd", grad_accum=accum,
                                       eval_every=10**6), [0, 1])
        ends.append(ens.params())
    for n in ends[0]:
        torch.testing.assert_close(ends[0][n], ends[1][n], rtol=1e-5, atol=1e-6)


def test_clip_members_bounds_each_members_norm_separately():
    g = [torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.tensor([[0.0], [0.0]])]  # member norms 5 and 0.5
    clip_members(g, 1.0)
    torch.testing.assert_close(g[0][0], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(g[0][1], torch.tensor([0.3, 0.4]))  # under the bound: untouched


def test_time_budget_stops_training_and_still_reports_the_last_step(task):
    ens = lenet_ensemble((0,))
    steps = []
    train(ens, {}, task, TrainSpec(iterations=10**6, batch_size=32, lr=1e-3, max_minutes=1e-3, eval_every=10**7),
          [0], on_eval=lambda step, m: steps.append(step))
    assert steps[0] == 0 and 0 < steps[-1] < 10**6 and len(steps) == 2


def test_muon_keeps_pruned_weights_exactly_zero(task):
    ens = lenet_ensemble()
    masks = {n: (torch.rand_like(p) > 0.5) for n, p in ens.params().items() if p.dim() == 3}
    train(ens, masks, task, TrainSpec(iterations=3, batch_size=32, lr=1e-3, optimizer="muon", matrix_lr=0.02,
                                      eval_every=10**6), [0, 1])
    for n, m in masks.items():
        assert torch.all(ens.params()[n][~m] == 0)
        assert torch.any(ens.params()[n][m] != 0)


def tiny_lm(**kw):
    cfg = dataclasses.replace(preset("lm_cpu"), iterations=6, eval_every=3, eval_tokens=512, max_minutes=None,
                              model_args={"n_layer": 1, "d_model": 32, "n_head": 2, "n_kv_head": 1},
                              seq_len=32, batch_size=4, rewind_step=2, warmup=2)
    return dataclasses.replace(cfg, **kw)


def test_language_model_rows_carry_val_bpb(tmp_path):
    lottery.run(tiny_lm(), tmp_path, progress=False, dense_only=True)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert all(float(r["val_bpb"]) > 0 for r in rows)
    assert float(rows[-1]["val_bpb"]) < float(rows[0]["val_bpb"])


def test_language_model_imp_keeps_the_embedding_dense_unless_asked(tmp_path):
    run = lottery.run(tiny_lm(levels=1), tmp_path, progress=False)
    from lth.io import load_tensors

    flat = load_tensors(run.path / "level_01" / "ticket_trial0.safetensors")
    names = {k[5:] for k in flat if k.startswith("mask.")}
    assert "embed.weight" not in names and "blocks.0.mlp.fc.weight" in names
    assert all(flat[f"mask.{n}"].float().mean() < 0.5 for n in names)


def test_time_budget_never_stops_before_the_rewind_capture(task):
    ens = lenet_ensemble((0,))
    captured = train(ens, {}, task, TrainSpec(iterations=10**6, batch_size=32, lr=1e-3, max_minutes=1e-6,
                                              eval_every=10**7), [0], capture=(5,))
    assert 5 in captured


def test_lm_golf_preset_builds_the_baseline_shape_and_takes_a_step(tmp_path):
    from lth.models.gpt import num_params

    cfg = dataclasses.replace(preset("lm_golf"), iterations=1, eval_every=1, batch_size=1, eval_tokens=1024,
                              max_minutes=None, rewind_step=0, warmup=0, levels=0, seq_len=128)
    lot = lottery.Lottery(cfg, tmp_path, progress=False)
    g = lot.template.cfg
    assert (g.n_layer, g.d_model, g.n_head, g.n_kv_head, g.mlp_mult) == (9, 512, 8, 4, 2)
    assert num_params(g) == 9 * (512 * 512 * 2 + 2 * 512 * 256 + 2 * 512 * 1024) + 256 * 512  # bytes: V = 256
    lot.run_levels(0)
    with open(tmp_path / "results.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1"]


def test_compile_failure_falls_back_to_eager(monkeypatch):
    from lth import train as T

    def broken(model):
        def call(*a):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    m = T.CompiledOrEager(torch.nn.Linear(3, 2))
    with pytest.warns(UserWarning, match="training eagerly"):
        y = m(torch.ones(1, 3))
    assert y.shape == (1, 2) and m.compiled is None


def test_compile_true_trains_on_cpu_too(task):
    ens = lenet_ensemble((0,))
    before = {n: p.clone() for n, p in ens.params().items()}
    train(ens, {}, task, TrainSpec(iterations=2, batch_size=32, lr=1e-3, compile=True, eval_every=10**6), [0])
    assert any(not torch.equal(before[n], p) for n, p in ens.params().items())


def test_weight_decay_spares_biases_and_norms(task):
    from lth.optimizers import Optimizers
    from lth.train import optim_groups

    ens = Ensemble(LeNet(), [{k: v.detach().clone() for k, v in LeNet().named_parameters()}])
    groups = Optimizers(optim_groups(ens, TrainSpec(iterations=1, batch_size=1, lr=0.1, optimizer="sgd",
                                                    weight_decay=0.1))).groups
    decayed = {id(p) for g in groups if g.weight_decay > 0 for p in g.params}
    names = {n for n, p in zip(ens.names, ens.stacked) if id(p) in decayed}
    assert names == {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_masks_that_a_hook_changes_mid_training_keep_their_pruned_weights_at_zero(task):
    """Gradual pruning's shape: a hook's end_step returns new masks (the cubic schedule's, here), and
    from that step on the trainer keeps the newly pruned weights exactly zero."""
    from lth.sparsity import Cubic
    from lth.train import Hooks

    ens = Ensemble(LeNet(), [{k: v.detach().clone() for k, v in LeNet().named_parameters()}])
    schedule, seen = Cubic(final_density=0.25, end=6, frequency=2), []

    class Gradual(Hooks):
        masks = {}

        def end_step(self, step):
            seen.append(step)
            if not schedule.should_prune(step + 1):
                return None
            w = ens.params()["fc1.weight"][0].detach().abs()
            keep = max(1, round(schedule.density(step + 1) * w.numel()))
            m = torch.zeros(w.numel(), dtype=torch.bool)
            m[w.flatten().topk(keep).indices] = True
            self.masks = {"fc1.weight": m.view_as(w)[None]}
            return self.masks

    hooks = Gradual()
    train(ens, {}, task, TrainSpec(iterations=8, batch_size=32, lr=1e-2, eval_every=10**6), [0], hooks=hooks)
    assert seen == list(range(8))
    w, m = ens.params()["fc1.weight"], hooks.masks["fc1.weight"]
    assert int(m.sum()) == round(0.25 * m.numel()) and torch.all(w[~m] == 0) and torch.all(w[m] != 0)


def test_random_augmentation_in_a_tasks_batches_is_the_same_in_every_run(task):
    class Noisy:
        """The MNIST task with Gaussian noise added to every training batch (an augmentation)."""

        def __init__(self, inner):
            self.inner, self.train_size = inner, inner.train_size

        def batch(self, idx):
            x, y = self.inner.batch(idx)
            return x + 0.1 * torch.randn_like(x), y

        def __getattr__(self, name):
            return getattr(self.inner, name)

    finals = []
    for _ in range(2):
        ens = lenet_ensemble()
        train(ens, {}, Noisy(task), TrainSpec(iterations=3, batch_size=32, lr=1e-2, eval_every=10**6), [0, 1])
        finals.append(ens.member_state(1))
        torch.randn(7)  # whatever else draws from the generator between runs changes nothing
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_a_rewound_run_starts_at_the_lr_of_step_k_with_no_momentum_carried_over(task):
    """Rewinding to step k (lottery levels > 0) calls train(start=k): a fresh optimizer, so SGD's first
    update is -lr(k) * grad (momentum buffer = that gradient), at the LR schedule's rate for step k."""
    from lth.train import Batches

    spec = TrainSpec(iterations=6, batch_size=16, lr=0.1, optimizer="sgd", momentum=0.9, lr_schedule="step",
                     milestones=[5], eval_every=10**6)
    ens = lenet_ensemble((0,))
    params = list(ens.stacked)
    before = [p.detach().clone() for p in params]
    x, y = task.batch(Batches([0], task.train_size, 16)(5))
    grads = torch.autograd.grad(task.loss(ens(x), y), params)
    train(ens, {}, task, spec, [0], start=5)
    for p, b, g in zip(params, before, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * 0.1 * g, rtol=1e-5, atol=1e-7)
