"""lth.dropout.dropout: F.dropout's contract with a cheaper CPU mask."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.dropout import dropout, threshold


def test_eval_mode_and_zero_rate_are_the_identity():
    x = torch.randn(5, 7)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x


@settings(max_examples=10, deadline=None)
@given(p=st.sampled_from([0.05, 0.1, 0.3, 0.5, 0.9]), seed=st.integers(0, 10**6))
def test_each_of_the_four_lanes_drops_at_the_quantized_rate(p, seed):
    torch.manual_seed(seed)
    n = 1 << 20
    kept = dropout(torch.ones(n), p) != 0
    rate = threshold(p) / 65536
    sd = (rate * (1 - rate) / (n // 4)) ** 0.5
    for lane in range(4):  # the four 16-bit pieces of each 64-bit draw
        assert abs((~kept[lane::4]).float().mean().item() - rate) < 6 * sd


def test_survivors_are_scaled_so_the_expectation_is_kept_exactly():
    torch.manual_seed(0)
    y = dropout(torch.ones(10_000), 0.1)
    t = threshold(0.1)
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0
    assert values[1].item() == pytest.approx(65536 / (65536 - t), rel=1e-7)


def test_the_mask_is_a_function_of_the_global_generator_state():
    x = torch.randn(3, 100)
    torch.manual_seed(7)
    a = dropout(x, 0.2)
    torch.manual_seed(7)
    b = dropout(x, 0.2)
    c = dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(4, 50, requires_grad=True)
    y = dropout(x, 0.25)
    y.sum().backward()
    expected = torch.where(y != 0, 65536 / (65536 - threshold(0.25)), 0.0)
    torch.testing.assert_close(x.grad, expected)


def test_under_vmap_it_is_f_dropout_and_members_differ():
    torch.manual_seed(2)
    x = torch.ones(3, 1000)
    y = torch.func.vmap(lambda r: dropout(r, 0.5), randomness="different")(x)
    assert not torch.equal(y[0], y[1]) and set(torch.unique(y).tolist()) <= {0.0, 2.0}
    torch.manual_seed(2)
    ref = torch.func.vmap(lambda r: F.dropout(r, 0.5), randomness="different")(x)
    assert torch.equal(y, ref)
