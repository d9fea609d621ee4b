"""What is exact where (docs/architecture.md, "Exactness"):

* seed-derived weights are bit-exact on every machine (tests/test_init.py pins their digests);
* a member's evaluation does not depend on how many members are stacked beside it, so on one machine a
  packed ticket reproduces the metrics its run recorded to the last digit;
* across CPU kinds the metrics may differ in their last digits, and `lth eval` says by how much.

The tests marked ``exact`` run twice in CI: as the machine runs them, and with MKL pushed to another
instruction set (.ci/run), where a stacked matmul rounds differently for 2 members than for 1.
"""

import pytest
import torch

from lth.ensemble import Ensemble
from lth.models.lenet import LeNet
from lth.train import evaluate, member_forwards

pytestmark = pytest.mark.exact


class _Task:
    """Random images and labels; evaluation as the image task does it (sums per member)."""

    splits = ("val",)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(700, 1, 28, 28, generator=g), torch.randint(0, 10, (700,), generator=g)

    def evaluate(self, forward, members, split, *, rank=0, world=1):
        from lth.tasks.classify import ImageClassification

        t = ImageClassification.__new__(ImageClassification)
        t.data = type("D", (), {split: type("S", (), {"x": self.x, "y": self.y})()})()
        return ImageClassification.evaluate(t, forward, members, split, chunk=300, rank=rank, world=world)


def _states(n):
    out = []
    for i in range(n):
        torch.manual_seed(i)
        out.append({k: v.detach().clone() for k, v in LeNet().named_parameters()})
    return out


def test_a_members_metrics_do_not_depend_on_how_many_members_are_stacked():
    states, task = _states(3), _Task()
    together = evaluate(Ensemble(LeNet(), states), task)
    for i, s in enumerate(states):
        alone = evaluate(Ensemble(LeNet(), [s]), task)
        for k, v in alone.items():
            assert torch.equal(v[0], together[k][i]), (k, i)


def test_a_members_logits_do_not_depend_on_its_position_in_the_stack():
    states = _states(3)
    x = torch.randn(1, 50, 1, 28, 28)
    forwards = member_forwards(Ensemble(LeNet(), states[::-1]))
    alone = member_forwards(Ensemble(LeNet(), [states[0]]))[0]
    assert torch.equal(forwards[2](x), alone(x))
