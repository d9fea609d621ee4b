"""lth.member_passes: on the loop path a step's forward and backward run a member at a time, with the
same result as the all-members pass."""

import dataclasses

import pytest
import torch

from lth import lottery, member_passes
from lth.dist import Context
from lth.ensemble import Ensemble
from lth.presets import override, preset
from lth.train import Hooks, TrainSpec, train


def _trained(name: str, by_member: bool, members: int = 3, steps: int = 3, **kw):
    cfg = override(preset(name), dict(iterations=steps, eval_every=10**6, sparsities=None, method=None,
                                      controls=[], **kw))
    task = lottery.load_task(cfg, "cpu")
    template = lottery.build_template(cfg, task)
    seeds = [cfg.seed + i for i in range(members)]
    ens = Ensemble(template, [lottery.init_state(template, s, cfg.init) for s in seeds])
    spec = dataclasses.replace(TrainSpec.from_config(cfg), member_passes=by_member)
    train(ens, {}, task, spec, seeds)
    return ens


@pytest.mark.parametrize("accum", [1, 2])
def test_member_by_member_training_equals_the_all_members_pass_bit_for_bit(accum):
    a = _trained("translation_tiny", True, batch_size=16, grad_accum=accum)
    b = _trained("translation_tiny", False, batch_size=16, grad_accum=accum)
    assert a.path() == "loop"
    for (n, p), q in zip(a.params().items(), b.params().values()):
        assert torch.equal(p, q), n


def test_it_applies_only_on_the_loop_path_with_the_default_hooks_in_one_process():
    ens = _trained("translation_tiny", True, steps=1, batch_size=16)
    assert member_passes.applies(ens, ens, Hooks(), Context())

    class Forming(Hooks):
        def forward(self, model, x):
            return super().forward(model, x)

    assert not member_passes.applies(ens, ens, Forming(), Context())
    assert not member_passes.applies(object(), ens, Hooks(), Context())  # a DDP or compile wrapper
    lenet = _trained("mnist_quick", True, steps=1)
    assert lenet.path() != "loop" and not member_passes.applies(lenet, lenet, Hooks(), Context())
