import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lth import masks as M
from lth import pruning
from lth.errors import ConfigError
from lth.sparsity import SPARSITY_SCHEDULES, Cubic, Levels, OneShot, Scheduler


def test_registry_names_the_four_schedules():
    assert SPARSITY_SCHEDULES.names() == ["levels", "oneshot", "original", "cubic"]
    assert SPARSITY_SCHEDULES.get("cubic") is Cubic


@given(rate=st.floats(0.0, 0.99), level=st.integers(0, 30))
@settings(max_examples=50, deadline=None)
def test_oneshot_rate_is_the_lotterys_formula_bit_for_bit(rate, level):
    assert OneShot(rate).rate_at(level) == 1 - (1 - rate) ** level
    assert OneShot(rate).prune_from(level) == 0


@given(rate=st.floats(0.0, 0.99), level=st.integers(0, 30))
@settings(max_examples=50, deadline=None)
def test_levels_density_is_the_product_of_per_level_survival(rate, level):
    assert Levels(rate).density(level) == pytest.approx(math.prod([1 - rate] * level), rel=1e-12, abs=1e-300)
    assert Levels(rate).rate_at(level) == rate and Levels(rate).prune_from(level) == level - 1


def test_levels_and_oneshot_reach_the_same_density_per_tensor():
    rates = {"fc1.weight": 0.2, "fc3.weight": 0.1}
    assert Levels(rates).density(3) == OneShot(rates).density(3) == {"fc1.weight": 0.8**3, "fc3.weight": 0.9**3}
    assert OneShot(rates).rate_at(2) == {"fc1.weight": 1 - 0.8**2, "fc3.weight": 1 - 0.9**2}


def test_level_schedules_prune_from_level_one_on():
    assert [Levels(0.2).should_prune(t) for t in range(3)] == [False, True, True]


cubics = st.builds(
    lambda final, extra, start, span, freq: Cubic(final, end=start + span, start=start, frequency=freq,
                                                  initial_density=min(1.0, final + extra)),
    st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 50), st.integers(1, 500), st.integers(1, 50),
)


@given(sched=cubics)
@settings(max_examples=50, deadline=None)
def test_cubic_reaches_exactly_its_target_at_t_end_and_stays(sched):
    assert sched.density(sched.end) == sched.final_density
    assert sched.density(sched.end + 1000) == sched.final_density
    assert sched.should_prune(sched.end)


@given(sched=cubics)
@settings(max_examples=50, deadline=None)
def test_cubic_is_monotone_non_increasing(sched):
    ds = [sched.density(t) for t in range(sched.end + 3)]
    assert all(a >= b for a, b in zip(ds, ds[1:]))
    assert ds[0] == sched.initial_density


def test_cubic_matches_torch_ao_cubic_sl_in_sparsity():
    from torch.ao.pruning import CubicSL

    sched = Cubic(0.1, end=800, start=100, frequency=70, initial_density=0.9)
    for t in range(100, 801):
        want = CubicSL.sparsity_compute_fn(0.1, 0.9, t, 100, 1, 700)
        assert 1 - sched.density(t) == pytest.approx(want, abs=1e-12)


def test_cubic_prunes_every_frequency_steps_from_start_and_at_end():
    sched = Cubic(0.2, end=25, start=5, frequency=10)
    assert [t for t in range(40) if sched.should_prune(t)] == [5, 15, 25]


@pytest.mark.parametrize("kw", [dict(final_density=1.5, end=10), dict(final_density=0.5, end=0),
                                dict(final_density=0.5, end=10, frequency=0),
                                dict(final_density=0.5, end=10, initial_density=0.4)])
def test_bad_cubic_parameters_are_config_errors(kw):
    with pytest.raises(ConfigError, match="cubic"):
        Cubic(**kw)


def test_bad_level_rate_is_config_error():
    with pytest.raises(ConfigError, match="prune rate"):
        Levels(1.0)


def test_scheduler_drives_a_pruner_to_the_cubic_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    pruner = pruning.Pruner(model, 0.0, scope="global")
    sched = Scheduler(pruner, Cubic(0.1, end=40, frequency=10))
    pruned_at, densities = [], []
    for t in range(1, 51):
        if sched.step():
            pruned_at.append(t)
            densities.append(pruner.remaining())
    total = sum(m.numel() for m in pruner.masks.values())
    assert pruned_at == [10, 20, 30, 40]
    assert densities == sorted(densities, reverse=True)
    assert sum(M.count(pruner.masks).values()) == int(0.1 * total + 0.5)
    assert sched.state_dict() == {"t": 50}
