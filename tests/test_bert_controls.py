"""The lottery's controls on a BERT member (Chen et al. 2020; BERT-Tickets): random_global, omp, reinit
with BERT's init, shuffle. Tiny random BERT (2 layers, hidden 32), no checkpoint, no training."""

import pytest
import torch

from lth import branches, models
from lth.branches import BranchContext
from lth.presets import Config

TINY = dict(pretrained=None, vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def ctx():
    template = models.build("bert", (16,), 3, **TINY)
    names = models.default_prunable(template, Config())
    g = torch.Generator().manual_seed(0)
    reset = {n: torch.rand(p.shape, generator=g) * 2 - 1 for n, p in template.named_parameters()}  # "θ0"
    density = {n: 0.2 + 0.6 * i / (len(names) - 1) for i, n in enumerate(names)}  # 20% .. 80% per layer
    masks = {n: torch.rand(reset[n].shape, generator=g) < density[n] for n in names}
    return BranchContext(masks, reset, seed=7, level=2, template=template, init="bert")


def _kept(masks) -> int:
    return sum(int(m.sum()) for m in masks.values())


def test_random_global_keeps_the_tickets_total_count_spread_over_all_layers(ctx):
    masks, reset = branches.BRANCHES.get("random_global")(ctx)
    assert set(masks) == set(ctx.masks) and _kept(masks) == _kept(ctx.masks)
    fractions = [float(m.float().mean()) for m in masks.values()]
    overall = _kept(ctx.masks) / sum(m.numel() for m in masks.values())
    assert all(abs(f - overall) < 0.08 for f in fractions)  # uniform over the layers, not the ticket's 20..80%
    assert reset is ctx.reset and branches.BRANCHES.get("random_global").keeps_reset


def test_random_global_is_deterministic_and_differs_from_the_per_layer_random_control(ctx):
    a, _ = branches.BRANCHES.get("random_global")(ctx)
    b, _ = branches.BRANCHES.get("random_global")(ctx)
    per_layer, _ = branches.BRANCHES.get("random")(ctx)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert [int(m.sum()) for m in per_layer.values()] == [int(m.sum()) for m in ctx.masks.values()]
    assert [int(m.sum()) for m in a.values()] != [int(m.sum()) for m in ctx.masks.values()]


def test_omp_keeps_the_largest_reset_magnitudes_globally_at_the_tickets_count(ctx):
    masks, reset = branches.BRANCHES.get("omp")(ctx)
    assert _kept(masks) == _kept(ctx.masks) and reset is ctx.reset
    kept = torch.cat([ctx.reset[n][m].abs() for n, m in masks.items()])
    pruned = torch.cat([ctx.reset[n][~m].abs() for n, m in masks.items()])
    assert float(kept.min()) >= float(pruned.max())


def test_reinit_under_init_bert_draws_every_matrix_from_normal_0_02(ctx):
    masks, fresh = branches.BRANCHES.get("reinit")(ctx)
    assert masks is ctx.masks
    for n, v in fresh.items():
        if v.dim() >= 2:  # encoder matrices, embeddings, pooler, classifier
            assert abs(float(v.mean())) < 0.01 and 0.017 < float(v.std()) < 0.023, n
            assert not torch.equal(v, ctx.reset[n])
        elif n.endswith("bias"):
            assert not v.any(), n
        else:  # LayerNorm gains
            assert (v == 1).all(), n
    again = branches.BRANCHES.get("reinit")(ctx)[1]
    assert all(torch.equal(fresh[n], again[n]) for n in fresh)


def test_shuffle_permutes_each_bert_matrix_survivors_among_their_positions(ctx):
    masks, out = branches.BRANCHES.get("shuffle")(ctx)
    assert masks is ctx.masks
    for n, v in out.items():
        if n not in masks:
            assert torch.equal(v, ctx.reset[n]), n  # embeddings, LayerNorms, biases, head: untouched
            continue
        m = masks[n]
        assert torch.equal(v[m].sort().values, ctx.reset[n][m].sort().values), n
        assert not torch.equal(v[m], ctx.reset[n][m]), n
        assert torch.equal(v[~m], ctx.reset[n][~m]), n


def test_the_cli_names_every_control():
    from lth.cli import DOC

    for name in branches.BRANCHES:
        assert name == "ticket" or name in DOC["controls"], name
