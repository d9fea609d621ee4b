"""A new MLM head fit alone on the frozen pre-trained θ0 before level 0, every level rewound to that fit
(lth.head_fit). A tiny random BertModel checkpoint (no MLM head) from tests/test_bert.py."""

import random

import pytest
import torch

from test_bert import _tiny_dir, _vocab  # noqa: E402  (skips without transformers)

from lth import checkpoints, head_fit, lottery, pack, sources  # noqa: E402
from lth import ticket as T  # noqa: E402
from lth.errors import ConfigError  # noqa: E402
from lth.presets import Config, validate  # noqa: E402


def _cfg(root, ckdir, **kw):
    text = root / "text"
    if not text.is_dir():
        text.mkdir()
        rng = random.Random(1)
        lines = (" ".join(rng.choice(_vocab()[5:]) for _ in range(10)) for _ in range(200))
        (text / "a.txt").write_text("\n".join(lines))
    ck = ckdir / "model.safetensors"
    return Config(**{**dict(dataset="bert_mlm", data_dir=str(text), model="bert", init="bert", seq_len=12,
                            model_args={"pretrained": str(ckdir), "head": "mlm"}, iterations=2, eval_every=2,
                            batch_size=8, levels=1, prune_rate=0.5, layer_rates={}, prune_scope="global",
                            optimizer="adamw", lr=1e-2, weights=f"checkpoint:{ck}",
                            weights_sha256=sources.sha256_file(ck), head_fit_steps=4), **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("head_fit")
    ckdir, _ = _tiny_dir(root / "pretrained", seed=1)  # a BertModel: no cls.* tensors
    lottery.run(_cfg(root, ckdir), root / "run", progress=False)
    return root / "run", ckdir


def _init(run_dir, level):
    return checkpoints.read(checkpoints.member_path(run_dir, level, "ticket", 0), ("init",))["init"]


def test_the_fit_changes_only_the_new_head(run):
    run_dir, _ = run
    fitted = head_fit.read(run_dir, 0)
    assert fitted and all(n.startswith("cls.") for n in fitted)
    assert "embeddings.word_embeddings.weight" not in fitted  # the tied decoder stays the checkpoint's


def test_every_level_starts_from_the_checkpoint_with_the_fitted_head(run):
    from safetensors.torch import load_file

    run_dir, ckdir = run
    pre, fitted = load_file(str(ckdir / "model.safetensors")), head_fit.read(run_dir, 0)
    for level in (0, 1):
        init = _init(run_dir, level)
        assert all(torch.equal(init[n], pre[n]) for n in init if n in pre), level
        assert all(torch.equal(init[n], fitted[n]) for n in fitted), level


def test_the_fitted_head_differs_from_the_seeded_draw(run):
    run_dir, ckdir = run
    cfg = _cfg(run_dir.parent, ckdir)
    src, arg = sources.of(cfg)
    template = lottery.build_template(cfg, lottery.load_task(cfg, "cpu"))
    seeded = src.theta0(cfg, arg, template, cfg.seed, 0)
    fitted = head_fit.read(run_dir, 0)
    assert not torch.equal(fitted["cls.predictions.transform.dense.weight"],
                           seeded["cls.predictions.transform.dense.weight"])


def test_head_fit_lr_sets_the_fits_rate_and_not_the_levels(run, tmp_path, monkeypatch):
    import lth.train

    run_dir, ckdir = run
    rates = []
    real = lth.train.train

    def spy(ens, masks, task, spec, *a, **kw):
        rates.append(spec.lr)
        return real(ens, masks, task, spec, *a, **kw)

    monkeypatch.setattr(lth.train, "train", spy)  # the head fit's
    monkeypatch.setattr(lottery, "train", spy)  # the levels'
    lottery.run(_cfg(run_dir.parent, ckdir, head_fit_lr=0.5, levels=0), tmp_path / "r", progress=False)
    assert rates == [0.5, 1e-2]  # the fit, then level 0 at lr


def test_a_ticket_at_theta0_regenerates_the_encoder_and_carries_the_fitted_head(run, tmp_path):
    run_dir, _ = run
    t = pack.from_run(run_dir, level=1)
    assert t.weights == "source" and set(t.floats) == {f"param.{n}" for n in head_fit.read(run_dir, 0)}
    T.save(t, tmp_path / "h.ticket")
    built = dict(T.build_model(T.load(tmp_path / "h.ticket")).named_parameters())
    init, masks = _init(run_dir, 1), t.masks
    for n, v in init.items():
        assert torch.equal(built[n].detach(), v * masks[n] if n in masks else v), n


def test_head_fit_needs_a_checkpoint_in_one_line():
    with pytest.raises(ConfigError, match="needs weights checkpoint") as e:
        validate(Config(head_fit_steps=3))
    assert "\n" not in str(e.value)
