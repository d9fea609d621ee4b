"""The language-model track's presets (``lm_*``): a GPT on the embedded Bible or on token shards.

Dataset ``text`` reads an ``lth data encode`` directory (``--data-dir``), or without one the embedded
World English Bible in ``tokenizer`` (last 10% of its lines = validation). See docs/lm.md.
"""

from __future__ import annotations

# What every language-model preset shares: AdamW, warmup and warmdown, clipping, the parameter-golf init
# (He uniform into ReLUs, Xavier uniform elsewhere), IMP on the matrices with rewinding to step 100.
_LM = dict(
    dataset="text",
    init="golf",
    optimizer="adamw",
    weight_decay=0.0,
    warmup=100,
    warmdown=0.3,
    grad_clip=1.0,
    layer_rates={},
    rewind_step=100,
    levels=2,
    prune_rate=0.55,
)

# The CPU language models: the embedded Bible in a 1024-token BPE (2.9 bytes a token: at equal compute it
# beat bytes by 0.2 bpb in 3-minute trials, docs/lm.md), batch 16 x 256 tokens, a 10-minute budget,
# validation on 65,536 tokens.
_LM_CPU = dict(model="gpt_cpu", tokenizer="bpe1024", batch_size=16, iterations=100000, max_minutes=10.0,
               eval_every=250, eval_tokens=65536)

# The language-model supermask recipe: Adam on scores and scales (no warmup, no clipping), STE masks at
# a 50% target, mask lr 0.1 with warmdown, the model's own learned scales.
_LM_SUPERMASK = dict(
    **{**_LM, "warmup": 0, "optimizer": "adam", "grad_clip": None, "rewind_step": 0},
    model_args={"scales": True},
    rule="ste",
    density=0.5,
    lr=0.1,
    lr_schedule="warmdown",
    scale_lr=1e-2,
)

# The GPU language models: the parameter-golf shape, batch 64 x 1024 tokens, a 10-minute budget.
_LM_GOLF = dict(model="gpt_golf", batch_size=64, iterations=20000, max_minutes=10.0, eval_every=500)


def presets() -> dict[str, dict]:
    """Every language-model preset by name (see the module docstring)."""
    return {
        "lm_cpu": dict(
            description="GPT (4 layers, 256 wide, GQA 4/2 heads, context 256) on the embedded Bible in a 1024-token "
            "BPE: AdamW 3e-3, warmup 100, warmdown 30%, 10 minutes on 2 CPU cores",
            **_LM,
            **_LM_CPU,
            lr=3e-3,
        ),
        "lm_cpu_supermask": dict(
            description="Supermask on lm_cpu: weights frozen at the seed-derived init, masks learned by "
            "temperature-annealed STE (50% target) on the matrices and the embedding, learned scales per "
            "head/branch/logits, mask lr 0.1, warmdown",
            **_LM_SUPERMASK,
            **_LM_CPU,
            # the (tied) embedding gets a mask too: left frozen at its random init, its 1024 rows held the
            # supermask at 2.35 bpb on the evaluated prefix after 10 minutes; masked, 2.02 (docs/lm.md)
            prune_embeddings=True,
        ),
        "lm_golf": dict(
            description="The parameter-golf baseline shape (9 layers, 512 wide, 8/4 heads, vocab 1024, context "
            "1024): AdamW, 10 minutes (for a GPU; give --data-dir a 1024-token SentencePiece encoding)",
            **_LM,
            **_LM_GOLF,
            lr=6e-4,
        ),
        "lm_golf_supermask": dict(
            description="Supermask on lm_golf: weights frozen at the seed-derived init, STE masks (50% target) "
            "and learned scales, mask lr 0.1, warmdown (for a GPU, like lm_golf)",
            **_LM_SUPERMASK,
            **_LM_GOLF,
        ),
    }
