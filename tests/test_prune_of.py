"""``prune_of``: a level's rate of the ORIGINAL prunable count (density 1 - L*rate, Chen et al. 2020) or of
the survivors (the default); exact counts, one-line errors."""

import pytest
import torch

from lth import models, sparsity
from lth.errors import ConfigError
from lth.level_masks import LevelPruning
from lth.presets import Config, validate

NAMES = ["fc1.weight", "fc2.weight", "fc3.weight"]


def _template():
    return models.build("lenet_300_100", (1, 28, 28), 10)


def _weights(template, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) for n, p in template.named_parameters()}


def _levels(cfg, levels):
    """Each level's masks, pruned as the lottery prunes them (weights fixed: only the counts matter)."""
    template = _template()
    lp = LevelPruning(cfg, template, NAMES)
    weights = _weights(template)
    masks = {0: {n: torch.ones_like(weights[n], dtype=torch.bool) for n in NAMES}}
    for level in range(1, levels + 1):
        src = lp.source(level)
        masks[level] = lp.prune(weights, masks[src], level)
    return masks


@pytest.mark.parametrize("schedule", ["iterative", "oneshot"])
def test_original_levels_have_density_exactly_one_minus_level_times_rate_under_global_scope(schedule):
    cfg = Config(prune_scope="global", prune_rate=0.1, layer_rates={}, levels=9, prune_of="original",
                 schedule=schedule)
    total = sum(_template().get_parameter(n).numel() for n in NAMES)
    masks = _levels(cfg, 9)
    for level in range(1, 10):
        kept = sum(int(m.sum()) for m in masks[level].values())
        assert kept == int((1 - 0.1 * level) * total + 0.5), level
        assert round(1 - kept / total, 6) == round(0.1 * level, 6)  # 10%, 20%, ... 90% sparsity


def test_original_levels_are_nested():
    masks = _levels(Config(prune_scope="global", prune_rate=0.1, layer_rates={}, levels=4, prune_of="original"), 4)
    for level in range(1, 5):
        assert all(not (masks[level][n] & ~masks[level - 1][n]).any() for n in NAMES)


def test_original_under_layer_scope_keeps_each_tensors_own_rate():
    cfg = Config(prune_rate=0.2, layer_rates={"fc3.weight": 0.1}, levels=3, prune_of="original")
    masks = _levels(cfg, 3)
    for n, r in {"fc1.weight": 0.2, "fc3.weight": 0.1}.items():
        assert int(masks[3][n].sum()) == int((1 - 3 * r) * masks[0][n].numel() + 0.5)


@pytest.mark.parametrize("prune_of", [None, "remaining"])
def test_remaining_is_the_default_rate_of_the_survivors(prune_of):
    cfg = Config(prune_scope="global", prune_rate=0.2, layer_rates={}, levels=2, prune_of=prune_of)
    kept = [sum(int(m.sum()) for m in ms.values()) for ms in _levels(cfg, 2).values()]
    assert kept[1] == kept[0] - int(0.2 * kept[0] + 0.5) and kept[2] == kept[1] - int(0.2 * kept[1] + 0.5)


def test_original_schedule_density_and_rate_of_survivors():
    s = sparsity.SPARSITY_SCHEDULES.get("original")(0.1)
    assert [round(s.density(L), 12) for L in range(4)] == [1.0, 0.9, 0.8, 0.7]
    assert s.rate_at(3) == pytest.approx(0.1 / 0.8) and s.prune_from(3) == 2


@pytest.mark.parametrize("kw,match", [
    (dict(prune_of="all"), "prune_of must be original or remaining"),
    (dict(prune_of="original", levels=10, prune_rate=0.1), "need levels \\* rate < 1"),
    (dict(prune_of="original", sparsities=[0.5]), "give one"),
])
def test_bad_prune_of_is_a_one_line_config_error(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate(Config(**{"layer_rates": {}, **kw}))
    assert "\n" not in str(e.value)


def test_a_lottery_with_prune_of_original_records_ten_twenty_thirty_percent_sparsity(tmp_path):
    import csv

    from lth import lottery

    cfg = Config(prune_scope="global", prune_rate=0.1, layer_rates={}, levels=3, prune_of="original",
                 iterations=2, eval_every=2, batch_size=20)
    lottery.run(cfg, tmp_path, progress=False)
    with open(tmp_path / "results.csv") as f:
        remaining = {int(r["level"]): float(r["remaining"]) for r in csv.DictReader(f)}
    assert remaining == {0: 1.0, 1: 0.9, 2: 0.8, 3: 0.7}
