import pytest
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


# --- pinned results: the registry refactor changes no mask by a single bit ------------------------


def _digest(masks):
    import hashlib

    h = hashlib.sha256()
    for n in sorted(masks):
        h.update(n.encode())
        h.update(masks[n].numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    "crit,scope,want",
    [
        ("magnitude", "layer", "46cbfe5d42f4cdc0"),
        ("magnitude", "global", "b96518ee1aaccdb5"),
        ("random", "layer", "2efcaabf17481947"),
        ("random", "global", "a269b7d5e05cc5ad"),
    ],
)
def test_pruner_masks_are_bit_identical_to_pre_registry_pruner(crit, scope, want):
    from lth.init import init_from_seed

    p = pruning.Pruner(
        init_from_seed(LeNet(), 7), 0.4, scope=scope, criterion=crit, seed=3,
        layer_rates_=None if scope == "global" else {"fc3.weight": 0.2},
    )
    for _ in range(3):
        p.step()
    assert _digest(p.masks) == want


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_criterion_equals_magnitude_score_under_allocation(scope):
    from lth.scores import SCORES, ScoreInputs

    g = torch.Generator().manual_seed(1)
    w = {"a": torch.randn(9, 8, generator=g), "b": torch.randn(5, 4, generator=g)}
    m = {n: torch.rand(v.shape, generator=g) < 0.8 for n, v in w.items()}
    rates = {"a": 0.3, "b": 0.3}
    want = pruning.magnitude(w, m, rates, scope)
    got = pruning.allocation(scope)(SCORES.get("magnitude")(ScoreInputs(w, m)), m, rates)
    assert all(torch.equal(want[n], got[n]) for n in m)


# --- allocation algebra ---------------------------------------------------------------------------

shapes = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=4)


def _case(shape_list, seed, density=0.6):
    g = torch.Generator().manual_seed(seed)
    names = [f"t{i}" for i in range(len(shape_list))]
    scores = {n: torch.randn(s, generator=g) for n, s in zip(names, shape_list)}
    old = {n: torch.rand(s, generator=g) < density for n, s in zip(names, shape_list)}
    return names, scores, old


def _spec(kind, names, rate):
    if kind == "layerwise":
        return {n: rate / (1 + i) for i, n in enumerate(names)}
    if kind == "global":
        return rate
    of = {n: "even" if i % 2 == 0 else "odd" for i, n in enumerate(names[:-1])}  # the last: no group
    return pruning.GroupRates({"even": rate, "odd": rate / 2}, of, default=rate / 3)


@given(shape_list=shapes, seed=st.integers(0, 2**31 - 1), rate=st.floats(0.0, 1.0),
       kind=st.sampled_from(["layerwise", "global", "groups"]), min_keep=st.integers(0, 2))
@settings(max_examples=60, deadline=None)
def test_every_allocation_returns_a_subset_of_the_old_masks(shape_list, seed, rate, kind, min_keep):
    names, scores, old = _case(shape_list, seed)
    new = pruning.ALLOCATIONS.get(kind)(scores, old, _spec(kind, names, rate), min_keep=min_keep)
    assert set(new) == set(old)
    assert all(not (new[n] & ~old[n]).any() for n in names)


@given(shape_list=shapes, seed=st.integers(0, 2**31 - 1), rate=st.floats(0.0, 1.0),
       kind=st.sampled_from(["layerwise", "global", "groups"]))
@settings(max_examples=60, deadline=None)
def test_every_pool_loses_exactly_round_half_up_of_its_survivors(shape_list, seed, rate, kind):
    names, scores, old = _case(shape_list, seed)
    alloc = pruning.ALLOCATIONS.get(kind)
    spec = _spec(kind, names, rate)
    new = alloc(scores, old, spec)
    for pool, r in alloc.pools(names, spec):
        alive = sum(int(old[n].sum()) for n in pool)
        assert sum(int(new[n].sum()) for n in pool) == alive - pruning.n_prune(r, alive)


@given(shape_list=shapes, seed=st.integers(0, 2**31 - 1), rate=st.floats(0.0, 0.99),
       kind=st.sampled_from(["layerwise", "global", "groups"]))
@settings(max_examples=40, deadline=None)
def test_pruned_entries_stay_pruned_even_with_the_highest_scores(shape_list, seed, rate, kind):
    names, scores, old = _case(shape_list, seed)
    scores = {n: torch.where(old[n], s, torch.full_like(s, 1e30)) for n, s in scores.items()}
    new = pruning.ALLOCATIONS.get(kind)(scores, old, _spec(kind, names, rate))
    assert all(not new[n][~old[n]].any() for n in names)


@given(shape_list=shapes, seed=st.integers(0, 2**31 - 1), rate=st.floats(0.0, 1.0), min_keep=st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_guard_keeps_min_keep_per_tensor_and_the_exact_total_when_the_budget_allows(shape_list, seed, rate, min_keep):
    names, scores, old = _case(shape_list, seed)
    new = pruning.ALLOCATIONS.get("global")(scores, old, rate, min_keep=min_keep)
    for n in names:
        assert int(new[n].sum()) >= min(min_keep, int(old[n].sum()))
    alive = sum(int(m.sum()) for m in old.values())
    reserved = sum(min(min_keep, int(m.sum())) for m in old.values())
    want = max(alive - pruning.n_prune(rate, alive), reserved)
    assert sum(int(m.sum()) for m in new.values()) == want


def test_groups_pooled_share_one_threshold_and_unpooled_prune_each_tensor():
    scores = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[10.0, 20.0]]), "c": torch.tensor([[3.0, 4.0]])}
    old = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    spec = pruning.GroupRates({"hidden": 0.5}, {"a": "hidden", "b": "hidden"}, default=0.5)
    pooled = pruning.ALLOCATIONS.get("groups")(scores, old, spec)
    assert pooled["a"].sum() == 0 and pooled["b"].all() and pooled["c"].tolist() == [[False, True]]
    each = pruning.ALLOCATIONS.get("groups")(scores, old, pruning.GroupRates(spec.rates, spec.of, 0.5, pooled=False))
    assert each["a"].tolist() == [[False, True]] and each["b"].tolist() == [[False, True]]


def test_group_without_a_rate_is_config_error():
    with pytest.raises(ConfigError, match="no rate"):
        pruning.group_pools(["a"], pruning.GroupRates({}, {"a": "conv"}))


def test_kind_groups_labels_output_conv_fc_and_shortcut():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.shortcut = nn.Conv2d(1, 2, 1)
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

    net = Net()
    names = M.prunable_names(net)
    assert pruning.kind_groups(net, names) == {
        "conv.weight": "conv", "shortcut.weight": "shortcut", "fc.weight": "fc", "out.weight": "output"}
    assert pruning.kind_groups(lenet(), ["fc1.weight", "fc3.weight"])["fc3.weight"] == "output"


def test_unknown_scope_and_unknown_score_are_one_line_config_errors_listing_choices():
    with pytest.raises(ConfigError, match="choose from: layerwise, global, groups"):
        pruning.Pruner(lenet(), 0.2, scope="diagonal")
    with pytest.raises(ConfigError, match="unknown score 'nope'; choose from: magnitude, random, snip"):
        pruning.Pruner(lenet(), 0.2, criterion="nope")


def test_pruner_groups_scope_uses_group_rates_and_default_rate_elsewhere():
    p = pruning.Pruner(lenet(), 0.5, scope="groups", groups={"fc1.weight": "h", "fc2.weight": "h"},
                       group_rates={"h": 0.1})
    p.step()
    d = M.density(p.masks)
    assert sum(int(p.masks[n].sum()) for n in ("fc1.weight", "fc2.weight")) == round(0.9 * (784 * 300 + 300 * 100))
    assert d["fc3.weight"] == 0.5


# --- scores x allocation in the Pruner ------------------------------------------------------------


def mlp(*sizes, bias=True, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def batch_loss(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, model[0].in_features, generator=g)
    y = torch.randint(0, model[-1].out_features, (16,), generator=g)
    return lambda params: nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)


def test_pruner_step_with_snip_prunes_global_lowest_snip_scores():
    from lth.scores import SCORES, ScoreInputs

    model = mlp(6, 8, 3)
    loss = batch_loss(model)
    p = pruning.Pruner(model, 0.6, scope="global", criterion="snip")
    inp = ScoreInputs(dict(model.named_parameters()), dict(p.masks), loss=loss)
    want = pruning.ALLOCATIONS.get("global")(SCORES.get("snip")(inp), p.masks, 0.6)
    p.step(ScoreInputs(loss=loss))
    assert all(torch.equal(p.masks[n], want[n]) for n in want)


def test_data_driven_score_without_loss_is_config_error():
    with pytest.raises(ConfigError, match="needs data"):
        pruning.Pruner(mlp(4, 3), 0.5, criterion="grasp").step()


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_step_to_reaches_the_exact_density_of_every_pool(scope):
    model = mlp(10, 20, 5)
    p = pruning.Pruner(model, 0.0, scope=scope)
    p.step_to(0.37)
    sizes = {n: p.masks[n].numel() for n in p.masks}
    if scope == "global":
        assert sum(M.count(p.masks).values()) == int(0.37 * sum(sizes.values()) + 0.5)
    else:
        assert M.count(p.masks) == {n: int(0.37 * k + 0.5) for n, k in sizes.items()}


def test_step_to_never_regrows():
    p = pruning.Pruner(mlp(10, 20, 5), 0.0, scope="global")
    p.step_to(0.2)
    before = {n: m.clone() for n, m in p.masks.items()}
    p.step_to(0.5)
    assert all(torch.equal(before[n], p.masks[n]) for n in before)


def test_iterative_rounds_follow_the_exponential_density_schedule():
    from lth.scores import Score, SCORES

    seen = []

    def recording(inp):
        seen.append(sum(int(m.sum()) for m in inp.masks.values()))
        return SCORES.get("magnitude").fn(inp)

    p = pruning.Pruner(mlp(20, 30, 10), 0.0, scope="global", criterion=Score("rec", recording), rounds=4)
    total = sum(m.numel() for m in p.masks.values())
    p.step_to(0.01)
    after = seen[1:] + [sum(M.count(p.masks).values())]
    assert after == [int(total * 0.01 ** (k / 4) + 0.5) for k in (1, 2, 3)] + [int(0.01 * total + 0.5)]


def tiny_layer_net():
    """A wide layer, a 2x2 bottleneck layer with small weights, a wide output layer."""
    model = mlp(30, 2, 2, 30, bias=False)
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
    return model


@pytest.mark.parametrize("score", ["magnitude", "snip"])
def test_global_pruning_at_extreme_sparsity_keeps_every_layer_when_the_guard_is_on(score):
    from lth.scores import ScoreInputs

    def run(min_keep):
        model = tiny_layer_net()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(8, 30, generator=g), torch.randint(0, 30, (8,), generator=g)
        loss = lambda ps: nn.functional.cross_entropy(torch.func.functional_call(model, ps, (x,)), y)  # noqa: E731
        p = pruning.Pruner(model, 0.0, scope="global", criterion=score, min_keep=min_keep)
        return M.count(p.step_to(0.02, ScoreInputs(loss=loss)))

    assert min(run(0).values()) == 0  # without the guard the bottleneck collapses
    assert min(run(1).values()) >= 1


@pytest.mark.parametrize("density", [0.03, 0.1, 0.2])
def test_iterative_synflow_never_collapses_a_layer(density):
    masks = pruning.prune_at_init(tiny_layer_net(), density, "synflow", input_shape=(30,), min_keep=0)
    assert min(M.count(masks).values()) >= 1
    dense = pruning.Pruner(tiny_layer_net(), 0.0, scope="global")
    assert min(M.count(dense.step_to(density)).values()) == 0  # where global magnitude does collapse


def test_prune_at_init_zeroes_pruned_weights_and_reaches_density():
    model = mlp(20, 30, 10, seed=3)
    masks = pruning.prune_at_init(model, 0.1, "synflow", input_shape=(20,), rounds=10)
    total = sum(m.numel() for m in masks.values())
    assert sum(M.count(masks).values()) == int(0.1 * total + 0.5)
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in masks.items())
