import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lth import masks as M
from lth import pruning
from lth.errors import ConfigError
from lth.models.lenet import LeNet


def lenet():
    torch.manual_seed(0)
    return LeNet()


@given(rate=st.floats(0.0, 0.99), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_layer_magnitude_prunes_exact_count_per_layer(rate, seed):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(20, 30, generator=g), "b": torch.randn(7, 5, generator=g)}
    old = {"a": torch.rand(20, 30, generator=g) < 0.7, "b": torch.ones(7, 5, dtype=torch.bool)}
    new = pruning.magnitude(w, old, {"a": rate, "b": rate / 2}, "layer")
    for n, r in (("a", rate), ("b", rate / 2)):
        alive = int(old[n].sum())
        assert int(new[n].sum()) == alive - pruning.n_prune(r, alive)


@given(rate=st.floats(0.0, 0.99), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_global_magnitude_prunes_exact_total_count(rate, seed):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(20, 30, generator=g), "b": 3 * torch.randn(7, 5, generator=g)}
    old = {"a": torch.rand(20, 30, generator=g) < 0.7, "b": torch.ones(7, 5, dtype=torch.bool)}
    new = pruning.magnitude(w, old, {"a": rate, "b": rate}, "global")
    alive = sum(int(m.sum()) for m in old.values())
    assert sum(int(m.sum()) for m in new.values()) == alive - pruning.n_prune(rate, alive)


@given(seed=st.integers(0, 2**31 - 1), scope=st.sampled_from(["layer", "global"]))
@settings(max_examples=20, deadline=None)
def test_new_mask_is_subset_of_old(seed, scope):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(10, 10, generator=g), "b": torch.randn(4, 9, generator=g)}
    old = {n: torch.rand(v.shape, generator=g) < 0.5 for n, v in w.items()}
    new = pruning.magnitude(w, old, {"a": 0.3, "b": 0.3}, scope)
    for n in w:
        assert not (new[n] & ~old[n]).any()


def test_magnitude_removes_smallest_survivors():
    w = {"a": torch.tensor([[0.1, -5.0, 0.3, 2.0, -0.2]])}
    old = {"a": torch.tensor([[True, True, True, True, False]])}
    new = pruning.magnitude(w, old, {"a": 0.5}, "layer")  # 4 alive -> prune 2: 0.1 and 0.3
    assert new["a"].tolist() == [[False, True, False, True, False]]


def test_global_threshold_is_shared_across_layers():
    w = {"a": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([[10.0, 20.0, 30.0]])}
    old = {n: torch.ones_like(v, dtype=torch.bool) for n, v in w.items()}
    new = pruning.magnitude(w, old, {"a": 0.5, "b": 0.5}, "global")
    assert new["a"].sum() == 0 and new["b"].all()


def test_random_like_keeps_per_layer_counts():
    m = {"a": torch.rand(30, 40) < 0.1, "b": torch.rand(5, 5) < 0.9}
    r = pruning.random_like(m, seed=3)
    assert M.count(r) == M.count(m)


def test_random_like_is_seed_deterministic():
    m = {"a": torch.rand(30, 40) < 0.3}
    assert torch.equal(pruning.random_like(m, 5)["a"], pruning.random_like(m, 5)["a"])
    assert not torch.equal(pruning.random_like(m, 5)["a"], pruning.random_like(m, 6)["a"])


def test_weights_stay_zero_after_optimizer_steps():
    model = lenet()
    pruner = pruning.Pruner(model, 0.5)
    pruner.step()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.mask_grads()
        opt.step()
        pruner.apply()
    for n, m in pruner.masks.items():
        p = dict(model.named_parameters())[n]
        assert (p[~m] == 0).all()
        assert (opt.state[p]["exp_avg"][~m] == 0).all() and (opt.state[p]["exp_avg_sq"][~m] == 0).all()


def test_reset_restores_init_exactly():
    model = lenet()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner = pruning.Pruner(model, 0.2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    pruner.step()
    pruner.reset(init)
    for n, p in model.named_parameters():
        m = pruner.masks.get(n, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p[m], init[n][m])
        assert (p[~m] == 0).all()


def test_pruner_state_dict_round_trip():
    a, b = lenet(), lenet()
    pa = pruning.Pruner(a, 0.3)
    pa.step()
    pb = pruning.Pruner(b, 0.3)
    pb.load_state_dict(pa.state_dict())
    assert all(torch.equal(pa.masks[n], pb.masks[n]) for n in pa.masks)
    assert pb.level == 1


def test_pruner_prunes_weights_not_biases():
    pruner = pruning.Pruner(lenet(), 0.2)
    assert sorted(pruner.masks) == ["fc1.weight", "fc2.weight", "fc3.weight"]


def test_torch_prune_round_trip():
    model = lenet()
    pruner = pruning.Pruner(model, 0.4)
    pruner.step()
    pruning.to_torch_prune(model, pruner.masks)
    assert hasattr(model.fc1, "weight_orig") and hasattr(model.fc1, "weight_mask")
    back = pruning.from_torch_prune(model)
    assert all(torch.equal(back[n], pruner.masks[n]) for n in pruner.masks)


def test_torch_prune_forward_matches_masked_model():
    model = lenet()
    pruner = pruning.Pruner(model, 0.4)
    pruner.step()
    x = torch.randn(4, 1, 28, 28)
    want = model(x)
    pruning.to_torch_prune(model, pruner.masks)
    torch.testing.assert_close(model(x), want)


def test_bad_rate_is_config_error():
    import pytest

    with pytest.raises(ConfigError, match="prune rate"):
        pruning.Pruner(lenet(), 1.5)


def test_unknown_layer_rate_name_is_config_error():
    import pytest

    with pytest.raises(ConfigError, match="unknown prunable"):
        pruning.Pruner(lenet(), 0.2, layer_rates_={"nope.weight": 0.1})
