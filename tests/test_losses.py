"""lth.losses.smoothed_nll: torch's label-smoothed cross-entropy, fused (values and gradients)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.losses import smoothed_nll


def _both(n, v, eps, seed, ignore=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=g) * 4
    y = torch.randint(0, v, (n,), generator=g)
    up = torch.rand(n, generator=g)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    la = F.cross_entropy(a, y, ignore_index=ignore, label_smoothing=eps, reduction="none")
    lb = smoothed_nll(b, y, eps, ignore)
    (la * up).sum().backward()
    (lb * up).sum().backward()
    return la, lb, a.grad, b.grad, y


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), v=st.integers(2, 300), eps=st.sampled_from([0.0, 0.1, 0.3, 0.9]), seed=st.integers(0, 10**6))
def test_smoothed_nll_equals_torch_label_smoothed_cross_entropy_in_value_and_gradient(n, v, eps, seed):
    la, lb, ga, gb, _ = _both(n, v, eps, seed)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)


def test_ignored_rows_have_zero_loss_and_zero_gradient():
    la, lb, ga, gb, y = _both(64, 10, 0.1, 3, ignore=0)
    ignored = y == 0
    assert ignored.any()
    assert (lb[ignored] == 0).all() and (gb[ignored] == 0).all()


def test_smoothing_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="label smoothing"):
        smoothed_nll(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0)
