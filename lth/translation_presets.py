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
model lost it whole). ``translation_cpu`` and ``translation_base`` run Brix et al.'s stabilized tickets
(``method="slt"``, ``lth.gradual``) at target sparsities, with the constant ticket (CLT, the ``constant``
control) and the controls beside them; ``--method lt|mp|slt_mp|mp_slt`` runs the other methods.

* ``translation_tiny``: tests and smoke runs (seconds): ``seq2seq_tiny`` (d 32, 1+1 layers, 37,504
  parameters), vocabulary 500 fitted on the first 2,000 training pairs, 16 dev and test pairs.
* ``translation_cpu``: two CPU cores: ``seq2seq_cpu`` (d 128, 3+3 layers, 4 heads, FFN 512, vocabulary
  4,000: 1,901,056 parameters), 224 sentences a batch (~8k target tokens), 2,000 steps a level (1,200
  reached 11.1 test BLEU in 31 minutes on 2 cores, short of the issue's 12; docs/translation.md).
* ``translation_base``: for a GPU: ``seq2seq_base`` (d 256, 3+3 layers, 4 heads, FFN 1024, vocabulary
  8,000: 7,578,624 parameters), 224 sentences a batch, 20,000 iterations.
"""

from __future__ import annotations

COMMON = dict(dataset="translation", init="xavier_uniform", optimizer="adam", betas=[0.9, 0.98],
              label_smoothing=0.1, lr_schedule="linear", layer_rates={}, prune_scope="layer", test_at="best")


PAPER_SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]  # Brix et al.'s levels


def presets() -> dict[str, dict]:
    return {
        "translation_tiny": dict(
            description="Tiny EN->ES Transformer for tests (seconds): seq2seq_tiny, unigram500 on the first 2,000 "
            "training pairs, 16 dev/test pairs, 40 iterations, 2 levels at 50%",
            **COMMON, model="seq2seq_tiny", tokenizer="unigram500", train_pairs=2000, eval_pairs=16,
            batch_size=16, iterations=40, eval_every=20, lr=3e-3, warmup=10, levels=2, prune_rate=0.5),
        "translation_cpu": dict(
            description="EN->ES Bible Transformer for 2 CPU cores: seq2seq_cpu (1.9M parameters), unigram4000, "
            "Adam (0.9, 0.98) 2e-3, warmup 200 + linear decay over 2,000 steps, label smoothing 0.1, batch 224 "
            "sentences (~8k target tokens), stabilized tickets (SLT, k = 5%) at 50/80/90% sparsity with CLT, "
            "random-sign, reinit and random beside them",
            **COMMON, model="seq2seq_cpu", tokenizer="unigram4000", batch_size=224, iterations=2000,
            eval_every=250, lr=2e-3, warmup=200, sparsities=[0.5, 0.8, 0.9], method="slt",
            controls=["constant", "constant_random_sign", "reinit", "random"]),
        "translation_base": dict(
            description="EN->ES Bible Transformer for a GPU: seq2seq_base (7.6M parameters), unigram8000, "
            "Adam (0.9, 0.98) 7e-4, warmup 4,000 + linear decay, label smoothing 0.1, batch 224 sentences, "
            "20,000 iterations, SLT at the paper's sparsities with CLT and the controls",
            **COMMON, model="seq2seq_base", tokenizer="unigram8000", batch_size=224, iterations=20000,
            eval_every=1000, lr=7e-4, warmup=4000, sparsities=PAPER_SPARSITIES, method="slt",
            controls=["constant", "constant_random_sign", "reinit", "random"]),
    }
