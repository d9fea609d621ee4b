"""The extension points are real: this file adds, without touching lth/, a task with two inputs, a
model with BatchNorm and dropout, a score, a branch and an LR schedule, and runs lottery, supermask,
pack, eval and report through the public API, resume included."""

import csv

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth import lottery, pack, supermask
from lth import ticket as T
from lth.branches import BRANCHES, Branch
from lth.metrics import ACC, MetricSpec
from lth.models import MODELS, ModelEntry
from lth.optimizers import LR_SCHEDULES
from lth.presets import Config
from lth.report import report
from lth.scores import SCORES, Score
from lth.tasks import TASKS, TaskEntry

N, D, K = 600, 8, 3  # examples, features per input, classes


class Pairs:
    """y = argmax of A (a - b) for a fixed A: a task whose examples are two inputs."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
        y = ((a - b) @ torch.randn(D, K, generator=g)).argmax(1)
        self.split = {"train": (a[:400], b[:400], y[:400]), "val": (a[400:500], b[400:500], y[400:500]),
                      "test": (a[500:], b[500:], y[500:])}
        self.shape, self.num_classes, self.train_size = (D,), K, 400

    def to(self, device):
        return self

    def batch(self, idx):
        a, b, y = self.split["train"]
        return (a[idx], b[idx]), y[idx]  # inputs [M, B, D] twice, labels [M, B]

    @staticmethod
    def loss(out, y):
        m, b = y.shape
        return F.cross_entropy(out.reshape(m * b, -1), y.reshape(-1)) * m

    @torch.no_grad()
    def evaluate(self, forward, members, split, *, rank=0, world=1):
        a, b, y = (t[rank::world] for t in self.split[split])
        out = forward(a.expand(members, *a.shape), b.expand(members, *b.shape))
        loss = F.cross_entropy(out.transpose(1, 2), y.expand(members, -1), reduction="none").sum(1).double()
        return {"loss": loss, "acc": (out.argmax(-1) == y).sum(1).double(), "n": torch.full_like(loss, len(y))}


class PairNet(nn.Module):
    """Two inputs, BatchNorm (running statistics per member) and dropout."""

    def __init__(self, d=D, hidden=32, classes=K):
        super().__init__()
        self.fa, self.fb = nn.Linear(d, hidden), nn.Linear(d, hidden)
        self.bn, self.drop, self.out = nn.BatchNorm1d(hidden), nn.Dropout(0.1), nn.Linear(hidden, classes)
        self.output_layer = "out"

    def forward(self, a, b):  # a, b: [B, D] -> [B, K]
        return self.out(self.drop(self.bn(self.fa(a) - self.fb(b)).relu()))


ADDED = ((TASKS, "toy_pairs"), (MODELS, "toy_pairnet"), (SCORES, "row_magnitude"), (BRANCHES, "sign_flip"),
         (LR_SCHEDULES, "halve"))


def _register():
    if "toy_pairs" in TASKS:
        return
    metrics = MetricSpec(("val_loss", "val_acc", "test_loss", "test_acc"), (ACC,))
    TASKS.register("toy_pairs")(TaskEntry("toy_pairs", lambda cfg, dev: Pairs(), lambda cfg: ((D,), K),
                                          metrics, "pairs"))
    MODELS.register("toy_pairnet")(ModelEntry("toy_pairnet", lambda shape, k, **kw: PairNet(shape[0], **kw), "pairs"))
    # a score: magnitude times the L1 norm of the weight's row (favours strong units)
    SCORES.register("row_magnitude")(Score("row_magnitude", lambda inp: {
        n: inp.weights[n].detach().abs() * inp.weights[n].detach().abs().sum(-1, keepdim=True) for n in inp.masks},
        needs_data=False, iterative=False))
    # a branch: the ticket's masks on its reset weights with every sign flipped (stored as floats)
    BRANCHES.register("sign_flip")(Branch("sign_flip", lambda ctx: (
        {n: m.clone() for n, m in ctx.masks.items()},
        {n: (-v if n in ctx.masks else v.clone()) for n, v in ctx.reset.items()}), lambda ctx: None, False))
    # an LR schedule: full rate for the first half, a tenth after
    LR_SCHEDULES.register("halve")(lambda spec, p: 1.0 if p.step < spec.iterations // 2 else 0.1)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The new entries exist for this file's tests only (the registries are shared by the whole suite)."""
    _register()
    yield
    for registry, name in ADDED:
        registry.unregister(name)


@pytest.fixture(scope="module")
def cfg(registered):
    return Config(name="toy", dataset="toy_pairs", model="toy_pairnet", layer_rates={}, iterations=30,
                  eval_every=10, batch_size=20, levels=2, trials=2, prune_rate=0.3, criterion="row_magnitude",
                  controls=["reinit", "sign_flip"], lr_schedule="halve", lr=1e-2, init="kaiming_normal")


@pytest.fixture(scope="module")
def run_dir(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "lottery"
    lottery.run(cfg, out, progress=False)
    return out


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_a_lottery_over_the_new_task_model_score_branch_and_schedule_trains_every_member(run_dir):
    rows = _rows(run_dir)
    assert {r["experiment"] for r in rows} == {"ticket", "reinit", "sign_flip"}
    last = [r for r in rows if r["level"] == "0" and r["step"] == "30"]
    assert all(float(r["val_acc"]) > 1 / K + 0.1 for r in last)  # it learned (chance is 1/3)


def test_members_keep_their_own_batchnorm_statistics(run_dir):
    from lth.io import load_tensors

    a = load_tensors(run_dir / "level_01" / "ticket_trial0.safetensors")
    b = load_tensors(run_dir / "level_01" / "ticket_trial1.safetensors")
    assert "final.bn.running_mean" in a and not torch.equal(a["final.bn.running_mean"], b["final.bn.running_mean"])


def test_every_branch_packs_and_eval_reproduces_its_recorded_accuracy(run_dir, tmp_path):
    for experiment in ("ticket", "reinit", "sign_flip"):
        t = pack.from_run(run_dir, level=2, experiment=experiment, trial=1, trained=True, dtype="float32")
        T.save(t, tmp_path / f"{experiment}.ticket")
        got = pack.evaluate(T.load(tmp_path / f"{experiment}.ticket"))
        want = [r for r in _rows(run_dir) if r["experiment"] == experiment and r["trial"] == "1"
                and r["level"] == "2" and r["step"] == "30"][0]
        for k in ("val_acc", "test_acc", "test_loss"):
            assert round(got[k], 6) == float(want[k]), (experiment, k)


def test_a_killed_lottery_over_the_new_task_resumes_to_the_same_results(cfg, run_dir, tmp_path):
    import dataclasses

    lottery.run(dataclasses.replace(cfg, levels=1), tmp_path / "r", progress=False)  # "killed" after level 1
    lottery.run(cfg, tmp_path / "r", progress=False)
    timeless = lambda out: sorted(tuple(sorted((k, v) for k, v in r.items() if k != "train_seconds"))  # noqa: E731
                                  for r in _rows(out))
    assert timeless(tmp_path / "r") == timeless(run_dir)


def test_report_of_the_new_task_reads_its_metric_spec(run_dir):
    text = report(run_dir)
    assert "sign_flip" in text and "test acc" in text.lower()


def test_a_supermask_over_the_new_task_trains_packs_and_evaluates_exactly(cfg, tmp_path):
    import dataclasses

    sm_cfg = dataclasses.replace(cfg, rule="topk", density=0.5, criterion=None, controls=[], lr=0.1,
                                 optimizer="sgd", momentum=0.9, lr_schedule="halve", init="signed_constant")
    supermask.run(sm_cfg, tmp_path / "sm", progress=False)
    T.save(pack.from_run(tmp_path / "sm", trial=1), tmp_path / "sm.ticket")
    got = pack.evaluate(T.load(tmp_path / "sm.ticket"))
    want = max((r for r in _rows(tmp_path / "sm") if r["trial"] == "1"), key=lambda r: int(r["step"]))
    assert round(got["test_acc"], 6) == float(want["test_acc"])
