"""The CNN track's presets (lth.cnn_presets): the paper's settings, their _cpu versions, warmup and
rewinding schedules, and the rate groups they prune with."""

import math

import pytest
import torch

from lth import models
from lth.cli import main
from lth.cnn_presets import presets as cnn_presets
from lth.cnn_presets import twice
from lth.level_masks import LevelPruning
from lth.optimizers import lr_factor
from lth.presets import override, preset, validate
from lth.tasks import TASKS
from lth.train import TrainSpec

NAMES = sorted(cnn_presets())


@pytest.mark.parametrize("name", NAMES)
def test_every_cnn_preset_validates_and_its_model_fits_its_task(name, tmp_path):
    cfg = preset(name)
    if cfg.dataset == "cifar10":  # small files in the real format
        from test_cnn_data import write_cifar

        cfg = override(cfg, {"data_dir": str(write_cifar(tmp_path))})
    validate(cfg)
    shape, classes = TASKS.get(cfg.dataset).shape(cfg)
    with torch.device("meta"):
        net = models.build(cfg.model, shape, classes, **cfg.model_args)
    assert set(cfg.group_rates or {}) <= {"conv", "fc", "output", "shortcut"}
    assert net(torch.zeros(2, *shape, device="meta")).shape == (2, classes)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_cpu_conv_presets_take_two_paper_levels_per_level(n):
    paper, cpu = preset(f"fmnist_conv{n}"), preset(f"fmnist_conv{n}_cpu")
    for group, p in paper.group_rates.items():
        assert math.isclose(cpu.group_rates[group], 1 - (1 - p) ** 2, abs_tol=1e-6)
    assert (cpu.model, cpu.optimizer, cpu.lr, cpu.batch_size) == (paper.model, paper.optimizer, paper.lr, paper.batch_size)
    assert cpu.train_images == 10_000 and cpu.trials == 2 and cpu.controls == ["reinit"]


def test_twice_is_two_levels_of_pruning():
    assert twice(0.2) == pytest.approx(0.36) and twice(0.1) == pytest.approx(0.19)


def test_resnet_preset_prunes_20_percent_of_convs_globally_and_leaves_shortcuts_and_output():
    from lth import pruning

    cfg = preset("fmnist_resnet20")
    net = models.build(cfg.model, (1, 32, 32), 10, **cfg.model_args)
    names = models.default_prunable(net, cfg)
    kinds = pruning.kind_groups(net, names)
    weights = {n: p.detach() for n, p in net.named_parameters()}
    masks = LevelPruning(cfg, net, names).prune(weights, {n: torch.ones_like(weights[n], dtype=torch.bool)
                                                          for n in names}, level=1)
    convs = [n for n in names if kinds[n] == "conv"]
    total = sum(masks[n].numel() for n in convs)
    assert total - sum(int(masks[n].sum()) for n in convs) == round(0.2 * total)
    assert {kinds[n] for n in names} == {"conv", "shortcut", "output"}
    assert all(bool(masks[n].all()) for n in names if kinds[n] in ("shortcut", "output"))
    assert not any("bn" in n for n in names)
    layer = [1 - float(masks[n].float().mean()) for n in convs]
    assert max(layer) - min(layer) > 0.05  # one global threshold, not 20% in every layer


def test_warmup_then_step_schedule():
    spec = TrainSpec.from_config(override(preset("fmnist_resnet20_warmup"), {}))
    w = spec.warmup
    assert w == 20_000 and spec.milestones == [20_000, 25_000]
    assert lr_factor(spec, 0) == pytest.approx(1 / w)
    assert lr_factor(spec, w // 2 - 1) == pytest.approx(0.5)
    assert lr_factor(spec, 19_999) == pytest.approx(1.0)
    assert lr_factor(spec, 20_000) == pytest.approx(0.1)
    assert lr_factor(spec, 29_999) == pytest.approx(0.01)


def test_warmup_steps_flag_sets_warmup(tmp_path, capsys):
    assert main(["lottery", "fmnist_conv2_cpu", "--warmup-steps", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "warmup must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
