"""The GPT language model: shapes, causality, GQA, tied head, softcap, RoPE, sizes, vmap over members."""

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from lth.ensemble import Ensemble
from lth.errors import ConfigError
from lth.init import init_from_seed
from lth.masks import prunable_names
from lth.models.gpt import (
    GPT,
    SIZES,
    GPTConfig,
    build,
    flops_per_token,
    matmul_params,
    num_params,
    rope,
    rotary,
)

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap fallback

TINY = dict(vocab_size=64, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=2)


def tiny(**kw) -> GPT:
    return GPT(GPTConfig(**{**TINY, **kw}))


def tokens(*shape, vocab=64, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def test_logits_shape_for_batched_and_extra_leading_dims():
    m = tiny()
    assert m(tokens(3, 16)).shape == (3, 16, 64)
    assert m(tokens(2, 3, 10)).shape == (2, 3, 10, 64)


def test_changing_a_future_token_leaves_past_logits_unchanged():
    m = tiny()
    x = tokens(2, 16)
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % 64
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=0)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_grouped_query_attention_shapes_and_grads(n_kv_head):
    m = tiny(n_kv_head=n_kv_head)
    hd = 32 // 4
    assert m.blocks[0].attn.q.weight.shape == (4 * hd, 32)
    assert m.blocks[0].attn.k.weight.shape == (n_kv_head * hd, 32)
    assert m.blocks[0].attn.v.weight.shape == (n_kv_head * hd, 32)
    m(tokens(2, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_gqa_equals_full_attention_with_repeated_kv_heads():
    gqa, full = tiny(n_kv_head=2), tiny(n_kv_head=4)
    state = dict(gqa.state_dict())
    for i in range(2):
        for w in ("k", "v"):  # kv head j serves query heads 2j and 2j + 1
            kv = state[f"blocks.{i}.attn.{w}.weight"].view(2, 8, 32)
            state[f"blocks.{i}.attn.{w}.weight"] = kv.repeat_interleave(2, dim=0).reshape(32, 32)
    full.load_state_dict(state)
    x = tokens(2, 16)
    torch.testing.assert_close(gqa(x), full(x), rtol=1e-5, atol=1e-5)


def test_tied_embedding_is_the_output_head():
    m = tiny(softcap=None)
    names = [n for n, _ in m.named_parameters()]
    assert [n for n in names if "embed" in n or "head" in n] == ["embed.weight"]  # one tensor, one mask
    x = tokens(1, 16) % 32  # tokens 32..63 never appear in the input
    with torch.no_grad():
        m.embed.weight[40].zero_()
    logits = m(x)
    assert torch.all(logits[..., 40] == 0) and torch.all(logits[..., 41] != 0)
    logits[..., 50].sum().backward()  # the head's gradient lands in the embedding's row 50
    assert m.embed.weight.grad[50].abs().sum() > 0


def test_softcap_bounds_logits():
    m = tiny(softcap=2.0)
    with torch.no_grad():
        m.embed.weight.mul_(100.0)
    logits = m(tokens(2, 16))
    assert logits.abs().max() <= 2.0
    assert logits.abs().max() > 1.9  # the cap is reached, not just respected
    assert tiny(softcap=None)(tokens(1, 4)).shape == (1, 4, 64)


def test_rope_scores_depend_only_on_relative_position():
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary(32, 8, 10000.0)

    def score(m, n):
        return (rope(q.expand(32, 8), cos, sin)[m] * rope(k.expand(32, 8), cos, sin)[n]).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))
    torch.testing.assert_close(score(9, 9), q @ k)  # same position: no rotation left
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_model_sees_token_order_through_rope():
    # causal attention without positions is a function of the prefix's multiset; RoPE breaks that
    m = tiny()
    x = tokens(1, 8)
    x[0, 0], x[0, 1] = 3, 7
    y = x.clone()
    y[0, 0], y[0, 1] = 7, 3
    assert not torch.allclose(m(x)[0, 4], m(y)[0, 4])


def test_lm_golf_parameter_count_matches_formula():
    cfg = GPTConfig(**SIZES["golf"])
    L, d, V, hd, H, Hkv, mult = 9, 512, 1024, 64, 8, 4, 2
    formula = V * d + L * (2 * d * H * hd + 2 * d * Hkv * hd + 2 * mult * d * d)
    m = GPT(cfg)
    assert sum(p.numel() for p in m.parameters()) == formula == matmul_params(cfg) == num_params(cfg) == 17_039_360
    assert flops_per_token(cfg) == 6 * formula + 12 * L * d * 1024


def test_lm_cpu_parameter_count():
    cfg = GPTConfig(**SIZES["cpu"])
    assert sum(p.numel() for p in GPT(cfg).parameters()) == num_params(cfg) == 1_900_544


def test_scales_are_named_one_dimensional_and_start_at_one():
    m = tiny(scales=True)
    params = dict(m.named_parameters())
    scales = {n: p for n, p in params.items() if p.dim() == 1}
    expected = {f"blocks.{i}.{s}" for i in range(2) for s in ("attn.head_scale", "attn.out_scale", "mlp.out_scale")}
    assert set(scales) == expected | {"logit_scale"}
    assert params["blocks.0.attn.head_scale"].shape == (4,) and params["logit_scale"].shape == (32,)
    assert all(torch.all(p == 1) for p in scales.values())
    assert sum(p.numel() for p in m.parameters()) == num_params(m.cfg)
    init_from_seed(m, 0, "golf")  # lth init: 1-D non-bias parameters are ones in every scheme
    assert all(torch.all(p == 1) for n, p in m.named_parameters() if p.dim() == 1)
    # with all scales at one the model computes what the model without scales does
    plain = tiny()
    plain.load_state_dict({n: p for n, p in m.state_dict().items() if n not in scales})
    x = tokens(2, 16)
    torch.testing.assert_close(m(x), plain(x), rtol=0, atol=0)


def test_matrices_have_distinct_prunable_names():
    names = prunable_names(tiny())
    assert names[0] == "embed.weight"
    assert {n for n in names if n.startswith("blocks.0.")} == {
        f"blocks.0.{s}.weight" for s in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj")
    }


def test_vmap_over_stacked_members_equals_each_model():
    models = [tiny(scales=True) for _ in range(2)]
    params, buffers = stack_module_state(models)
    x = tokens(2, 3, 16)

    def one(p, xi):
        return functional_call(models[0], (p, buffers), (xi,))

    out = vmap(one)(params, x)
    ref = torch.stack([m(xi) for m, xi in zip(models, x)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_ensemble_gradients_equal_separate_models():
    models = [tiny() for _ in range(2)]
    ens = Ensemble(models[0], [dict(m.named_parameters()) for m in models])
    x = tokens(2, 3, 16)
    ens(x).square().mean(dim=(1, 2, 3)).sum().backward()
    for i, m in enumerate(models):
        m(x[i]).square().mean().backward()
    for n, g in ens.grads().items():
        ref = torch.stack([dict(m.named_parameters())[n].grad for m in models])
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)


def test_build_takes_shape_and_classes_like_the_registry():
    m = build((128,), 300, size="cpu", n_layer=2)
    assert (m.cfg.vocab_size, m.cfg.seq_len, m.cfg.n_layer, m.cfg.d_model) == (300, 128, 2, 256)
    with pytest.raises(ConfigError, match="unknown GPT size"):
        build((16,), 64, size="huge")
    with pytest.raises(ConfigError, match="unknown GPT config field"):
        build((16,), 64, n_layers=3)


@pytest.mark.parametrize(
    "kw, msg",
    [(dict(d_model=30), "not divisible by n_head"), (dict(n_kv_head=3), "not divisible by n_kv_head"),
     (dict(d_model=12, n_head=4), "must be even"), (dict(n_layer=0), "positive integer")],
)
def test_bad_config_is_a_one_line_config_error(kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        GPTConfig(**{**TINY, **kw})
    assert "\n" not in str(e.value)
