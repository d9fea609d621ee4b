"""Constant tickets (Brix et al.'s CLT) in the ticket file: ``weights="constant"`` ships one sign bit per
survivor, rebuilt as ±α_l, and packs from a lottery run's ``constant`` member exactly."""

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lth.ticket as T
from lth import checkpoints, lottery, pack
from lth.init import fans
from lth.presets import Config
from lth.ticket import Ticket, TicketError

ARCH = T.make_arch("lenet_300_100", (1, 28, 28), 10)
SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


def constant_ticket(density: float, seed: int) -> Ticket:
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(s, generator=g) < density for n, s in SHAPES.items()}
    signs = {n: torch.rand(int(m.sum()), generator=g) < 0.5 for n, m in masks.items()}
    return Ticket(ARCH, seed, "glorot_normal", masks, weights="constant", signs=signs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_signs_round_trip_through_the_file(density, seed):
    t = constant_ticket(density, seed)
    back = T.decode(T.encode(t))
    assert back.weights == "constant" and set(back.signs) == set(t.signs)
    assert all(torch.equal(back.signs[n], t.signs[n]) for n in t.signs)


def test_survivors_rebuild_as_plus_minus_alpha_by_their_bits():
    t = constant_ticket(0.1, 3)
    params = dict(T.build_model(t).named_parameters())
    for n, m in t.masks.items():
        fi, fo = fans(m.shape)
        a = torch.tensor(math.sqrt(6.0 / (fi + fo)), dtype=torch.float32)
        want = torch.where(t.signs[n], a, -a)
        assert torch.equal(params[n].detach()[m], want) and bool((params[n].detach()[~m] == 0).all())


def test_a_sign_bit_costs_about_one_bit():
    t = constant_ticket(0.2, 1)
    survivors = sum(int(m.sum()) for m in t.masks.values())
    without = len(T.encode(dataclasses.replace(t, weights="seed", signs={})))
    assert len(T.encode(t)) - without <= survivors / 8 * 1.02 + 64


def test_signs_of_the_wrong_length_are_refused():
    t = constant_ticket(0.1, 2)
    t.signs["fc2.weight"] = t.signs["fc2.weight"][:-1]
    with pytest.raises(TicketError, match="survivors"):
        T.encode(t)


def test_a_constant_ticket_without_signs_is_refused():
    with pytest.raises(TicketError, match="signs must name"):
        T.encode(dataclasses.replace(constant_ticket(0.1, 2), signs={}))


def test_signs_on_another_kind_are_refused():
    with pytest.raises(TicketError, match="signs must name"):
        T.encode(dataclasses.replace(constant_ticket(0.1, 2), weights="seed"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clt") / "run"
    cfg = Config(name="tiny", iterations=12, eval_every=6, levels=1, prune_rate=0.5, rewind_step=3,
                 controls=["constant", "constant_random_sign"])
    lottery.run(cfg, out, progress=False)
    return out


@pytest.mark.parametrize("branch", ["constant", "constant_random_sign"])
def test_a_constant_member_packs_as_sign_bits_and_rebuilds_its_start_exactly(run_dir, branch):
    t = pack.from_lottery_run(run_dir, level=1, experiment=branch)
    assert t.weights == "constant" and not set(t.floats) & set(t.masks)
    init = checkpoints.read(checkpoints.member_path(run_dir, 1, branch, 0), ("init", "mask"))
    params = dict(T.build_model(T.decode(T.encode(t))).named_parameters())
    for n, m in init["mask"].items():
        assert torch.equal(params[n].detach()[m], init["init"][n][m]), n
    for n, v in init["init"].items():
        if n not in init["mask"]:
            assert torch.equal(params[n].detach(), v.to(torch.float16).float()), n  # float16 as stored


def test_a_constant_ticket_is_smaller_than_its_stored_floats(run_dir):
    t = pack.from_lottery_run(run_dir, level=1, experiment="constant")
    stored = pack.from_lottery_run(run_dir, level=1, experiment="ticket")  # θk survivors as float16
    assert len(T.encode(t)) * 4 < len(T.encode(stored))


def test_inspect_accounts_for_every_byte_of_a_constant_ticket():
    data = T.encode(constant_ticket(0.1, 1))
    i = T.inspect(data)
    assert i["sign_bytes"] > 0
    assert i["header_bytes"] + i["mask_bytes"] + i["sign_bytes"] + i["float_bytes"] + i["checksum_bytes"] == len(data)
