"""The translation track's presets (issue 12; Brix et al. 2020, "Successfully applying the stabilized
lottery ticket hypothesis to the Transformer architecture").

Every preset: dataset ``translation`` (the embedded English -> Spanish Bible pairs, ``lth.data.parallel``),
a joint unigram vocabulary fitted on the training split, the pre-LN encoder-decoder Transformer
(``lth.models.seq2seq``, dropout 0.1, one shared embedding), Xavier-uniform init, Adam (0.9, 0.98),
label smoothing 0.1, linear warmup then linear decay (``lr_schedule="linear"``), early stopping on dev BLEU
(greedy), test BLEU/chrF with beam 4 at early stop and at the end (``test_at="best"``). Batches count
sentences, length-bucketed (``lth.tasks.translate``). Pruning: lth's magnitude IMP over every matrix and
the embedding (the model's ``default_prunable``), each layer at the same rate (global magnitude pruning
prunes the Xavier-initialized embedding, whose entries are smallest, first: at 25% remaining the tiny
model lost it whole); Brix et al.'s MP / SLT / CLT are not here yet.

* ``translation_tiny``: tests and smoke runs (seconds): ``seq2seq_tiny`` (d 32, 1+1 layers, 37,504
  parameters), vocabulary 500 fitted on the first 2,000 training pairs, 16 dev and test pairs.
* ``translation_cpu``: two CPU cores: ``seq2seq_cpu`` (d 128, 3+3 layers, 4 heads, FFN 512, vocabulary
  4,000: 1,901,056 parameters), 64 sentences a batch, a 20-minute budget per level.
* ``translation_base``: for a GPU: ``seq2seq_base`` (d 256, 3+3 layers, 4 heads, FFN 1024, vocabulary
  8,000: 7,578,624 parameters), 128 sentences a batch, 20,000 iterations.
"""

from __future__ import annotations

COMMON = dict(dataset="translation", init="xavier_uniform", optimizer="adam", betas=[0.9, 0.98],
              label_smoothing=0.1, lr_schedule="linear", layer_rates={}, prune_scope="layer", test_at="best")


def presets() -> dict[str, dict]:
    return {
        "translation_tiny": dict(
            description="Tiny EN->ES Transformer for tests (seconds): seq2seq_tiny, unigram500 on the first 2,000 "
            "training pairs, 16 dev/test pairs, 40 iterations, 2 levels at 50%",
            **COMMON, model="seq2seq_tiny", tokenizer="unigram500", train_pairs=2000, eval_pairs=16,
            batch_size=16, iterations=40, eval_every=20, lr=3e-3, warmup=10, levels=2, prune_rate=0.5),
        "translation_cpu": dict(
            description="EN->ES Bible Transformer for 2 CPU cores: seq2seq_cpu (1.9M parameters), unigram4000, "
            "Adam (0.9, 0.98) 1e-3, warmup 400 + linear decay, label smoothing 0.1, batch 64 sentences, "
            "20 minutes a level, IMP 20%/level per layer",
            **COMMON, model="seq2seq_cpu", tokenizer="unigram4000", batch_size=64, iterations=6000,
            max_minutes=20.0, eval_every=500, lr=1e-3, warmup=400, levels=5, prune_rate=0.2),
        "translation_base": dict(
            description="EN->ES Bible Transformer for a GPU: seq2seq_base (7.6M parameters), unigram8000, "
            "Adam (0.9, 0.98) 7e-4, warmup 4,000 + linear decay, label smoothing 0.1, batch 128 sentences, "
            "20,000 iterations, IMP 20%/level per layer",
            **COMMON, model="seq2seq_base", tokenizer="unigram8000", batch_size=128, iterations=20000,
            eval_every=1000, lr=7e-4, warmup=4000, levels=5, prune_rate=0.2),
    }
