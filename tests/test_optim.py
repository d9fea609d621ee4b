"""Muon + AdamW (lth.optim): orthogonalized updates, stacked members, parameter routing, resume, masks."""

import copy

import pytest
import torch

from lth.ensemble import Ensemble
from lth.errors import ConfigError
from lth.models.gpt import GPT, GPTConfig
from lth.optim import Muon, make_muon_adamw, newton_schulz

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap fallback

TINY = dict(vocab_size=64, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=2)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tokens(*shape, vocab=64, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def run_steps(params, opt, grads):
    """Set each step's gradients from ``grads[t][i]`` and step."""
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48), (5, 200)])
def test_newton_schulz_singular_values_are_near_one(shape):
    s = torch.linalg.svdvals(newton_schulz(randn(*shape)))
    assert s.min() > 0.6 and s.max() < 1.3, (s.min(), s.max())


def test_newton_schulz_of_a_transpose_is_the_transpose():
    G = randn(24, 40)
    torch.testing.assert_close(newton_schulz(G.T), newton_schulz(G).T, rtol=0, atol=1e-6)


def test_newton_schulz_keeps_the_singular_vectors():
    G = randn(16, 32)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    O = newton_schulz(G)
    D = U.T @ O @ Vh.T  # diagonal (the approximate singular values) if O = U f(S) V^T
    torch.testing.assert_close(D, torch.diag(torch.diagonal(D)), rtol=0, atol=1e-4)


def test_newton_schulz_is_batched_over_leading_dims():
    G = randn(3, 12, 20)
    torch.testing.assert_close(newton_schulz(G), torch.stack([newton_schulz(g) for g in G]), rtol=0, atol=1e-6)


def test_muon_update_is_orthogonalized_and_scaled_by_rows_over_cols():
    p = torch.nn.Parameter(torch.zeros(64, 16))
    opt = Muon([p], lr=1.0, momentum=0.0)
    p.grad = randn(64, 16)
    opt.step()
    s = torch.linalg.svdvals(-p.detach()) / 2.0  # max(1, 64 / 16) ** 0.5 = 2
    assert s.min() > 0.6 and s.max() < 1.3


@pytest.mark.parametrize("transposed", [False, True])
def test_stacked_update_equals_per_member_updates(transposed):
    M, out, inp = 3, 24, 8  # out > in: the scale factor 3**0.5 depends on which dim is "rows"
    init = randn(M, out, inp)
    grads = [randn(M, out, inp, seed=s) for s in range(1, 5)]
    store = (lambda x: x.mT.contiguous()) if transposed else (lambda x: x.clone())
    stacked = torch.nn.Parameter(store(init))
    opt = Muon([stacked], lr=0.1, weight_decay=0.1, transposed=transposed)
    run_steps([stacked], opt, [[store(g)] for g in grads])
    singles = [torch.nn.Parameter(init[m].clone()) for m in range(M)]
    opt1 = Muon(singles, lr=0.1, weight_decay=0.1)
    run_steps(singles, opt1, [list(g) for g in grads])
    got = stacked.detach().mT if transposed else stacked.detach()
    torch.testing.assert_close(got, torch.stack([p.detach() for p in singles]), rtol=0, atol=1e-6)


def test_ensemble_of_gpts_steps_like_each_gpt_alone():
    models = []
    for s in range(2):
        torch.manual_seed(s)
        models.append(GPT(GPTConfig(**TINY, scales=True)))
    ens = Ensemble(models[0], [dict(m.named_parameters()) for m in models])
    x = tokens(2, 4, 16)
    opt = make_muon_adamw(zip(ens.names, ens.stacked), lr_matrix=0.05, lr_other=1e-2, stacked=True,
                          transposed={n for n, t in zip(ens.names, ens.transposed) if t})
    ens(x).square().mean(dim=(1, 2, 3)).sum().backward()
    opt.step()
    for m, model in enumerate(models):
        opt1 = make_muon_adamw(model.named_parameters(), lr_matrix=0.05, lr_other=1e-2)
        model(x[m]).square().mean().backward()
        opt1.step()
        for n, p in model.named_parameters():
            torch.testing.assert_close(ens.params()[n][m], p, rtol=0, atol=1e-5, msg=n)


def test_make_muon_adamw_routes_embeddings_and_vectors_to_adamw():
    model = GPT(GPTConfig(**TINY, scales=True))
    opt = make_muon_adamw(model.named_parameters(), lr_matrix=0.02, lr_other=1e-3)
    by_id = {id(p): n for n, p in model.named_parameters()}
    muon = {by_id[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    other = {by_id[id(p)] for g in opt.param_groups if not g["use_muon"] for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if p.dim() == 2 and n != "embed.weight"}
    assert "embed.weight" in other and "logit_scale" in other and "blocks.0.attn.head_scale" in other
    assert [g["lr"] for g in opt.param_groups] == [0.02, 1e-3]


def test_stacked_vectors_go_to_adamw():
    w, v = torch.nn.Parameter(torch.zeros(2, 4, 3)), torch.nn.Parameter(torch.zeros(2, 4))
    opt = make_muon_adamw([("fc.weight", w), ("fc.scale", v)], stacked=True)
    assert [(g["use_muon"], len(g["params"])) for g in opt.param_groups] == [(True, 1), (False, 1)]
    assert opt.param_groups[0]["params"][0] is w


def test_adamw_groups_match_torch_adamw():
    init = randn(5, 7)
    grads = [[randn(5, 7, seed=s)] for s in range(1, 6)]
    a = torch.nn.Parameter(init.clone())
    run_steps([a], Muon([a], use_muon=False, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), grads)
    b = torch.nn.Parameter(init.clone())
    run_steps([b], torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), grads)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    opt = make_muon_adamw(model.named_parameters(), weight_decay=0.01)

    def train(model, opt, steps, seed):
        for s in range(steps):
            opt.zero_grad()
            model(tokens(2, 16, seed=seed + s)).square().mean().backward()
            opt.step()

    train(model, opt, 3, seed=0)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, 3, seed=10)
    resumed = GPT(GPTConfig(**TINY))
    resumed.load_state_dict(saved_model)
    opt2 = make_muon_adamw(resumed.named_parameters(), weight_decay=0.01)
    opt2.load_state_dict(saved_opt)
    train(resumed, opt2, 3, seed=10)
    for (n, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), n


def test_fitting_a_random_linear_map_decreases_the_loss():
    A, X = randn(16, 32) / 32**0.5, randn(256, 32, seed=1)  # singular values of A ~ 0.3-1.7
    Y = X @ A.T
    model = torch.nn.Linear(32, 16)
    opt = make_muon_adamw(model.named_parameters(), lr_matrix=0.05, lr_other=1e-2)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = (model(X) - Y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_masked_weights_stay_zero_when_gradients_are_masked_and_the_mask_reapplied():
    mask = randn(12, 20) > 0
    p = torch.nn.Parameter(randn(12, 20, seed=1) * mask)
    opt = Muon([p], lr=0.1, weight_decay=0.1)
    for s in range(3):
        p.grad = randn(12, 20, seed=2 + s) * mask
        opt.step()
        assert (p[~mask] != 0).any()  # Muon's update is dense: the mask must be re-applied
        with torch.no_grad():
            p.mul_(mask)
    assert (p[~mask] == 0).all() and (p[mask] != 0).all()
    assert (opt.state[p]["momentum_buffer"][~mask] == 0).all()


def test_an_external_lr_schedule_scales_every_group():
    w, v = torch.nn.Parameter(randn(4, 6)), torch.nn.Parameter(randn(6))
    opt = make_muon_adamw([("w", w), ("v", v)], lr_matrix=0.02, lr_other=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    before = (w.detach().clone(), v.detach().clone())
    w.grad, v.grad = randn(4, 6, seed=1), randn(6, seed=2)
    opt.step()
    sched.step()
    assert torch.equal(w, before[0]) and torch.equal(v, before[1])


def test_muon_rejects_a_vector():
    with pytest.raises(ConfigError, match="matrices"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
