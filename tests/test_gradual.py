"""Brix et al.'s methods on the lottery (lth.gradual): target sparsities, MP levels pruned while training,
θk from the previous level's run (SLT), constant tickets (CLT) and their controls, the method column."""

import csv
import dataclasses
import math

import pytest
import torch

from lth import checkpoints, gradual, lottery
from lth.errors import ConfigError
from lth.init import fans
from lth.presets import preset, validate
from lth.sparsity import Cubic


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw):
    base = dict(iterations=20, eval_every=10, train_pairs=400, eval_pairs=4, warmup=4)
    return validate(dataclasses.replace(preset("translation_tiny"), **{**base, **kw}))


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def mp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mp") / "run"
    lottery.run(tiny(sparsities=[0.5, 0.8], gradual_levels=[1, 2], method="mp"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def slt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("slt") / "run"
    cfg = tiny(sparsities=[0.5, 0.8], rewind_step=2, rewind_from="previous", restart_schedule=True, method="slt",
               controls=["constant", "constant_random_sign", "random"])
    lottery.run(cfg, out, progress=False)
    return out


def test_mp_reaches_its_exact_target_per_tensor(mp_run):
    for level, d in ((1, 0.5), (2, 0.2)):
        masks = checkpoints.read(checkpoints.member_path(mp_run, level, "ticket", 0), ("mask",))["mask"]
        for n, m in masks.items():
            assert int(m.sum()) == int(d * m.numel() + 0.5), (level, n)


def test_mp_levels_start_dense_from_theta0(mp_run):
    level0 = checkpoints.read(checkpoints.member_path(mp_run, 0, "ticket", 0), ("init",))["init"]
    level2 = checkpoints.read(checkpoints.member_path(mp_run, 2, "ticket", 0), ("init",))["init"]
    assert all(torch.equal(level0[n], level2[n]) for n in level0)


def test_mp_pruned_weights_end_at_zero(mp_run):
    ck = checkpoints.read(checkpoints.member_path(mp_run, 1, "ticket", 0), ("mask", "final"))
    assert all(bool((ck["final"][n][~m] == 0).all()) for n, m in ck["mask"].items())


def test_the_cubic_schedule_ends_at_80_percent_and_prunes_fifty_times():
    s = gradual.schedule(tiny(sparsities=[0.5], gradual_levels=[1], iterations=1000), 1, 0, 1000)
    assert s.end == 800 and s.density(800) == 0.5 and s.density(0) == 1.0
    assert sum(s.should_prune(t) for t in range(1001)) == 800 // 20 + 1


def test_a_gradual_level_after_imp_levels_starts_from_their_density():
    cfg = tiny(sparsities=[0.5, 0.6, 0.8], gradual_levels=[3])
    assert gradual.source(cfg, 3) == 2 and gradual.schedule(cfg, 3, 0, 100).initial_density == pytest.approx(0.4)


def test_slt_resets_to_theta_k_of_the_previous_levels_run(slt_run):
    level1_k = checkpoints.read_rewind(slt_run / "level_01", 0)
    ck = checkpoints.read(checkpoints.member_path(slt_run, 2, "ticket", 0), ("mask", "init"))
    for n, m in ck["mask"].items():
        assert torch.equal(ck["init"][n][m], level1_k[n][m]), n


def test_slt_levels_keep_their_target_sparsity(slt_run):
    rows = _rows(slt_run)
    assert {round(float(r["remaining"]), 2) for r in rows} == {1.0, 0.5, 0.2}


def test_clt_survivors_are_the_layer_constant_with_theta_k_signs(slt_run):
    ticket = checkpoints.read(checkpoints.member_path(slt_run, 2, "ticket", 0), ("mask", "init"))
    clt = checkpoints.read(checkpoints.member_path(slt_run, 2, "constant", 0), ("init",))["init"]
    for n, m in ticket["mask"].items():
        fi, fo = fans(m.shape)
        want = torch.sign(ticket["init"][n][m]) * math.sqrt(6.0 / (fi + fo))
        assert torch.equal(clt[n][m], want), n


def test_random_sign_keeps_the_constant_magnitudes_and_flips_some_signs(slt_run):
    ticket = checkpoints.read(checkpoints.member_path(slt_run, 1, "ticket", 0), ("mask", "init"))
    rs = checkpoints.read(checkpoints.member_path(slt_run, 1, "constant_random_sign", 0), ("init",))["init"]
    n, m = next((n, m) for n, m in ticket["mask"].items() if m.dim() == 2)
    fi, fo = fans(m.shape)
    assert torch.allclose(rs[n][m].abs(), torch.full_like(rs[n][m], math.sqrt(6.0 / (fi + fo))))
    flipped = (torch.sign(rs[n][m]) != torch.sign(ticket["init"][n][m])).float().mean()
    assert 0.3 < float(flipped) < 0.7


def test_random_keeps_the_per_layer_counts(slt_run):
    ticket = checkpoints.read(checkpoints.member_path(slt_run, 2, "ticket", 0), ("mask",))["mask"]
    rand = checkpoints.read(checkpoints.member_path(slt_run, 2, "random", 0), ("mask",))["mask"]
    assert all(int(rand[n].sum()) == int(m.sum()) and not torch.equal(rand[n], m) for n, m in ticket.items()
               if m.numel() > 100)


def test_rows_carry_the_method_and_the_controls_name(slt_run):
    methods = {(r["experiment"], r["method"]) for r in _rows(slt_run)}
    assert ("ticket", "slt") in methods and ("constant", "constant") in methods


def test_restart_schedule_trains_every_level_from_step_0(slt_run):
    steps = {int(r["step"]) for r in _rows(slt_run) if r["level"] == "2"}
    assert min(steps) == 0


def test_sparsities_must_increase():
    with pytest.raises(ConfigError, match="increase"):
        tiny(sparsities=[0.5, 0.4])


def test_gradual_levels_need_sparsities():
    with pytest.raises(ConfigError, match="need sparsities"):
        tiny(gradual_levels=[1])


def test_cubic_is_exact_at_its_end_from_any_initial_density():
    s = Cubic(0.1, end=80, start=0, frequency=2, initial_density=0.4)
    assert s.density(80) == 0.1 and s.density(0) == 0.4 and 0.1 < s.density(40) < 0.4


def test_a_killed_mp_level_resumes_with_its_masks_like_an_uninterrupted_run(tmp_path, monkeypatch):
    from lth.io import load_tensors
    from lth.presets import Config
    from killing import kill_after_snapshot

    cfg = Config(name="tiny", iterations=150, eval_every=15, trials=2, sparsities=[0.7], gradual_levels=[1],
                 layer_rates={}, method="mp")
    lottery.run(cfg, tmp_path / "whole", progress=False)
    # step 45: mid-way between two of its pruning steps (every 3)
    kill_after_snapshot(monkeypatch, lambda: lottery.run(cfg, tmp_path / "killed", progress=False), 45, "level_01")
    lottery.run(cfg, tmp_path / "killed", progress=False)
    for name in ("ticket_trial0", "ticket_trial1"):
        a = load_tensors(tmp_path / "whole" / "level_01" / f"{name}.safetensors")
        b = load_tensors(tmp_path / "killed" / "level_01" / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_methods_set_the_fields_that_make_them():
    resolved = lambda m: lottery.resolve(tiny(sparsities=[0.5, 0.8, 0.9], method=m, iterations=200), 1000)  # noqa: E731
    slt = resolved("slt")
    assert (slt.rewind_step, slt.rewind_from, slt.restart_schedule) == (10, "previous", True)
    assert resolved("lt").rewind_step == 0 and resolved("mp").gradual_levels == [1, 2, 3]
    hybrid = resolved("slt_mp")
    assert hybrid.sparsities == [0.5, 0.6, 0.8, 0.9] and hybrid.gradual_levels == [3, 4] and hybrid.levels == 4
    mp_slt = resolved("mp_slt")
    assert mp_slt.sparsities == [0.6, 0.8, 0.9] and mp_slt.gradual_levels == [1]


def test_slt_mp_gradual_levels_start_from_the_60_percent_level():
    cfg = lottery.resolve(tiny(sparsities=[0.8, 0.9], method="slt_mp"), 1000)
    assert [gradual.source(cfg, lv) for lv in (3, 4)] == [2, 2]
    assert gradual.schedule(cfg, 4, 0, cfg.iterations).initial_density == pytest.approx(0.4)


def test_a_registered_method_needs_sparsities():
    with pytest.raises(ConfigError, match="needs sparsities"):
        lottery.resolve(tiny(method="slt"), 1000)


def test_slt_mp_prunes_from_the_60_percent_tickets_theta_k_to_its_target(tmp_path):
    out = tmp_path / "run"
    lottery.run(tiny(sparsities=[0.8], method="slt_mp", iterations=12, eval_every=6), out, progress=False)
    k60 = checkpoints.read_rewind(out / "level_02", 0)
    m60 = checkpoints.read(checkpoints.member_path(out, 2, "ticket", 0), ("mask",))["mask"]
    ck = checkpoints.read(checkpoints.member_path(out, 3, "ticket", 0), ("mask", "init"))
    for n, m in ck["mask"].items():
        assert int(m.sum()) == int(0.2 * m.numel() + 0.5) and not bool((m & ~m60[n]).any()), n
        assert torch.equal(ck["init"][n][m60[n]], k60[n][m60[n]]), n


def test_imp_levels_under_sparsities_keep_exactly_their_target_per_tensor(slt_run):
    for level, d in ((1, 0.5), (2, 0.2)):
        masks = checkpoints.read(checkpoints.member_path(slt_run, level, "ticket", 0), ("mask",))["mask"]
        assert all(int(m.sum()) == int(d * m.numel() + 0.5) for m in masks.values())
