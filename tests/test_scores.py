import pytest
import torch
from torch import nn

from lth import pruning
from lth.errors import ConfigError
from lth.registry import Registry
from lth.scores import SCORES, ScoreInputs, random_scores


def ones_masks(model):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if p.dim() >= 2}


def inputs(model, **kw):
    return ScoreInputs(dict(model.named_parameters()), kw.pop("masks", None) or ones_masks(model), model, **kw)


def functional_loss(model, x, fn):
    return lambda params: fn(torch.func.functional_call(model, params, (x,)))


# --- the registry --------------------------------------------------------------------------------


def test_registry_unknown_name_is_one_line_config_error_listing_choices():
    reg = Registry("colour")
    reg.register("red")(1)
    reg.register("blue")(2)
    with pytest.raises(ConfigError) as e:
        reg.get("green")
    assert str(e.value) == "unknown colour 'green'; choose from: red, blue"


def test_registry_keeps_registration_order_and_refuses_duplicates():
    reg = Registry("thing")
    reg.register("b")(1)
    reg.register("a")(2)
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError):
        reg.register("a")(3)


def test_scores_registry_has_the_five_scores_with_their_flags():
    assert SCORES.names() == ["magnitude", "random", "snip", "grasp", "synflow"]
    assert [n for n in SCORES if SCORES.get(n).needs_data] == ["snip", "grasp"]
    assert [n for n in SCORES if SCORES.get(n).iterative] == ["synflow"]
    assert SCORES.get("synflow").rounds == 100


# --- magnitude and random ------------------------------------------------------------------------


def test_magnitude_score_is_absolute_weight():
    model = nn.Linear(4, 3)
    s = SCORES.get("magnitude")(inputs(model))
    assert list(s) == ["weight"] and torch.equal(s["weight"], model.weight.detach().abs())


def test_random_score_is_the_seed_derived_hash_bit_for_bit():
    model = nn.Linear(4, 3)
    s = SCORES.get("random")(inputs(model, seed=11))
    assert torch.equal(s["weight"], random_scores(11, "weight", (3, 4)))
    assert not torch.equal(s["weight"], SCORES.get("random")(inputs(model, seed=12))["weight"])


# --- SNIP ----------------------------------------------------------------------------------------


def test_snip_equals_hand_computed_abs_gradient_times_weight():
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    x, t = torch.randn(4, 3), torch.randn(4, 2)
    loss = functional_loss(model, x, lambda out: 0.5 * ((out - t) ** 2).sum())
    g = (x @ model.weight.detach().T - t).T @ x  # dL/dW for L = 0.5 |x W^T - t|^2
    want = (g * model.weight.detach()).abs()
    torch.testing.assert_close(SCORES.get("snip")(inputs(model, loss=loss))["weight"], want)


def test_gradient_scores_see_pruned_weights_as_zero():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    loss = functional_loss(model, x, lambda out: nn.functional.cross_entropy(out, y))
    masks = {n: torch.rand(m.shape) < 0.5 for n, m in ones_masks(model).items()}
    masked = inputs(model, loss=loss, masks=masks)
    zeroed = dict(masked.weights)
    zeroed.update({n: masked.weights[n].detach() * m for n, m in masks.items()})
    for name in ("snip", "grasp"):
        a = SCORES.get(name)(masked)
        b = SCORES.get(name)(ScoreInputs(zeroed, masks, model, loss))
        assert all(torch.equal(a[n], b[n]) for n in masks)


# --- GraSP ---------------------------------------------------------------------------------------


def grasp_case():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    loss = functional_loss(model, x, lambda out: nn.functional.cross_entropy(out, y))
    return model, loss


def test_grasp_equals_weight_times_explicit_hessian_gradient_product():
    model, loss = grasp_case()
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = ["0.weight", "2.weight"]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].flatten() for n in names])

    def flat_loss(th):
        ps = dict(params)
        for n, chunk in zip(names, th.split(sizes)):
            ps[n] = chunk.view_as(params[n])
        return loss(ps)

    H = torch.autograd.functional.hessian(flat_loss, theta)
    g = torch.autograd.functional.jacobian(flat_loss, theta)
    want = (theta * (H @ g)).split(sizes)
    got = SCORES.get("grasp")(inputs(model, loss=loss))
    for n, w in zip(names, want):
        torch.testing.assert_close(got[n], w.view_as(params[n]))


def test_grasp_prunes_the_weights_the_paper_prunes():
    """Wang et al. remove the fraction p of weights with the LARGEST S = -w * Hg; we keep high w * Hg."""
    model, loss = grasp_case()
    s = SCORES.get("grasp")(inputs(model, loss=loss))
    paper = {n: -v for n, v in s.items()}
    flat = torch.cat([v.flatten() for v in paper.values()])
    n_rm = pruning.n_prune(0.5, flat.numel())
    threshold = torch.topk(flat, n_rm).values[-1]  # the reference code's acceptable_score
    want = {n: v < threshold for n, v in paper.items()}
    masks = ones_masks(model)
    got = pruning.ALLOCATIONS.get("global")(s, masks, 0.5)
    assert all(torch.equal(got[n], want[n]) for n in masks)


# --- SynFlow -------------------------------------------------------------------------------------


def test_synflow_conserves_flow_per_layer_in_a_bias_free_relu_mlp():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 6, bias=False), nn.ReLU(),
                          nn.Linear(6, 3, bias=False))
    s = SCORES.get("synflow")(inputs(model, input_shape=(5,)))
    sums = torch.stack([v.sum() for v in s.values()])
    assert s["0.weight"].dtype == torch.float64
    torch.testing.assert_close(sums, sums[0].expand(3), rtol=1e-12, atol=0)


def test_synflow_equals_hand_computed_flow_with_absolute_biases():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    W1, b1, W2 = (model[0].weight.detach().double().abs(), model[0].bias.detach().double().abs(),
                  model[2].weight.detach().double().abs())
    hidden = W1.sum(1) + b1  # |W1| 1 + |b1|
    s = SCORES.get("synflow")(inputs(model, input_shape=(3,)))
    torch.testing.assert_close(s["2.weight"], W2 * hidden[None, :])
    torch.testing.assert_close(s["0.weight"], W1 * W2.sum(0)[:, None])


def test_synflow_needs_model_and_input_shape():
    with pytest.raises(ConfigError, match="input_shape"):
        SCORES.get("synflow")(inputs(nn.Linear(3, 2)))


def test_scores_leave_weights_buffers_and_train_mode_unchanged():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    loss = functional_loss(model, x, lambda out: nn.functional.cross_entropy(out, y))
    for name in SCORES:
        SCORES.get(name)(inputs(model, loss=loss, input_shape=(4,)))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked") and
               "running" not in k)


def test_synflow_does_not_touch_batchnorm_running_statistics():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SCORES.get("synflow")(inputs(model, input_shape=(4,)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
