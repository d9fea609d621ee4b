"""The lottery's masks through the Pruner: criteria at init, output and group rates, unchanged IMP masks."""

import dataclasses

import pytest
import torch

from lth import lottery, models, pruning
from lth.io import load_tensors
from lth.level_masks import LevelPruning
from lth.presets import Config

LENET = ["fc1.weight", "fc2.weight", "fc3.weight"]
SIZES = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}


def template():
    return models.build("lenet_300_100", (1, 28, 28), 10)


def ckpt(out, level, experiment="ticket", trial=0):
    flat = load_tensors(out / f"level_{level:02d}" / f"{experiment}_trial{trial}.safetensors")
    return ({k[5:]: v.bool() for k, v in flat.items() if k.startswith("mask.")},
            {k[6:]: v for k, v in flat.items() if k.startswith("final.")},
            {k[5:]: v for k, v in flat.items() if k.startswith("init.")})


@pytest.mark.parametrize("schedule,scope", [("iterative", "layer"), ("oneshot", "global")])
def test_lottery_masks_equal_magnitude_pruning_of_the_source_level(tmp_path, schedule, scope):
    """What the lottery computed with pruning.magnitude before it used the Pruner, to the bit."""
    cfg = Config(iterations=20, eval_every=20, levels=2, trials=1, prune_rate=0.5, layer_rates={"fc3.weight": 0.25},
                 schedule=schedule, prune_scope=scope)
    lottery.run(cfg, tmp_path, progress=False)
    rates = {n: (0.5 if scope == "global" else 0.25 if n == "fc3.weight" else 0.5) for n in LENET}
    for level in (1, 2):
        src = 0 if schedule == "oneshot" else level - 1
        masks, final, _ = ckpt(tmp_path, src)
        r = {n: 1.0 - (1.0 - v) ** level for n, v in rates.items()} if schedule == "oneshot" else rates
        want = pruning.magnitude(final, masks, r, scope)
        got, _, _ = ckpt(tmp_path, level)
        assert all(torch.equal(got[n], want[n]) for n in LENET)


@pytest.mark.parametrize("criterion", ["snip", "grasp", "synflow"])
def test_criterion_at_init_prunes_theta0_one_shot_to_each_levels_density(tmp_path, criterion):
    cfg = Config(iterations=10, eval_every=10, levels=2, trials=1, prune_rate=0.5, layer_rates={},
                 controls=["reinit", "random"], criterion=criterion)
    lottery.run(cfg, tmp_path, progress=False)
    _, _, theta0 = ckpt(tmp_path, 0)
    lvl = LevelPruning(cfg, template(), LENET)
    for level in (1, 2):
        masks, _, init = ckpt(tmp_path, level)
        assert {n: int(m.sum()) for n, m in masks.items()} == {n: round(s * 0.5 ** level) for n, s in SIZES.items()}
        assert all(torch.equal(init[n], theta0[n]) for n in theta0)  # reset to θ0
        task = lottery.load_task(cfg, "cpu")
        again = lvl.at_init_masks(theta0, level, 0, task)  # the same masks from θ0 (deterministic)
        assert all(torch.equal(masks[n], again[n]) for n in LENET)
        imp = pruning.magnitude(theta0, {n: torch.ones_like(m) for n, m in masks.items()},
                                {n: 1 - 0.5 ** level for n in LENET})
        assert not torch.equal(masks["fc1.weight"], imp["fc1.weight"])  # not magnitude at init
    lines = (tmp_path / "results.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in lines if line.split(",")[2] == "2"} == {"ticket", "reinit", "random"}


def test_lottery_with_criterion_snip_runs_from_the_command_line(tmp_path):
    from lth.cli import main

    assert main(["lottery", "mnist_quick", "--criterion", "snip", "--out", str(tmp_path), "--iterations", "6",
                 "--eval-every", "6", "--levels", "1", "--no-progress"]) == 0
    assert {p.name for p in (tmp_path / "level_01").glob("*.safetensors")} == {
        "ticket_trial0.safetensors", "reinit_trial0.safetensors", "random_trial0.safetensors"}


def test_output_rate_prunes_the_output_layer_at_its_rate(tmp_path):
    cfg = Config(iterations=10, eval_every=10, levels=1, trials=1, prune_rate=0.5, layer_rates={}, output_rate=0.1)
    lottery.run(cfg, tmp_path, progress=False)
    masks, _, _ = ckpt(tmp_path, 1)
    assert {n: int(m.sum()) for n, m in masks.items()} == {"fc1.weight": 117600, "fc2.weight": 15000,
                                                         "fc3.weight": 900}


def test_output_rate_wins_over_layer_rates_on_the_output_layer():
    cfg = Config(prune_rate=0.5, output_rate=0.3)  # the default layer_rates say fc3.weight: 0.1
    assert LevelPruning(cfg, template(), LENET).rates == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.3}


def test_output_rate_under_global_scope_keeps_the_output_out_of_the_global_pool():
    cfg = Config(prune_rate=0.5, layer_rates={}, output_rate=0.0, prune_scope="global")
    lvl = LevelPruning(cfg, template(), LENET)
    theta = {n: torch.randn(p.shape) for n, p in template().named_parameters()}
    masks = lvl.prune(theta, {n: torch.ones_like(theta[n], dtype=torch.bool) for n in LENET}, 1)
    assert int(masks["fc3.weight"].sum()) == 1000
    assert int(masks["fc1.weight"].sum()) + int(masks["fc2.weight"].sum()) == (SIZES["fc1.weight"] + SIZES["fc2.weight"]) // 2


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_group_rates_prune_each_kind_at_its_rate(scope):
    cfg = Config(prune_rate=0.5, layer_rates={}, group_rates={"fc": 0.2, "output": 0.1}, prune_scope=scope)
    lvl = LevelPruning(cfg, template(), LENET)
    theta = {n: torch.randn(p.shape) for n, p in template().named_parameters()}
    masks = lvl.prune(theta, {n: torch.ones_like(theta[n], dtype=torch.bool) for n in LENET}, 1)
    assert int(masks["fc3.weight"].sum()) == 900
    fc = int(masks["fc1.weight"].sum()) + int(masks["fc2.weight"].sum())
    assert fc == round(0.8 * (SIZES["fc1.weight"] + SIZES["fc2.weight"]))
    if scope == "layer":
        assert int(masks["fc2.weight"].sum()) == 24000


def test_unknown_group_is_one_line_config_error():
    from lth.errors import ConfigError
    from lth.presets import validate

    with pytest.raises(ConfigError, match="unknown groups"):
        validate(dataclasses.replace(Config(), group_rates={"attention": 0.1}))
