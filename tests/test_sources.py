"""Weight sources: θ0 from a seed, a checkpoint verified by SHA-256, or another run."""

import pytest
import torch

from lth import lottery, models, pack, sources
from lth import ticket as T
from lth.errors import ConfigError
from lth.init import init_from_seed
from lth.io import atomic_save_tensors, load_tensors
from lth.presets import Config, validate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    model = init_from_seed(models.build("lenet_300_100", (1, 28, 28), 10), 7, "kaiming_normal")
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    atomic_save_tensors({**state, "extra.unused": torch.zeros(3)}, tmp / "pre.safetensors")
    return tmp / "pre.safetensors", sources.sha256_file(tmp / "pre.safetensors"), state


@pytest.fixture(scope="module")
def ckpt_run(checkpoint, tmp_path_factory):
    path, sha, _ = checkpoint
    out = tmp_path_factory.mktemp("ckrun")
    cfg = Config(iterations=10, eval_every=10, levels=1, trials=1, prune_rate=0.5, controls=["reinit"],
                 weights=f"checkpoint:{path}", weights_sha256=sha)
    lottery.run(cfg, out, progress=False)
    return out


def test_checkpoint_source_starts_every_level_from_the_files_weights(ckpt_run, checkpoint):
    _, _, state = checkpoint
    for level in (0, 1):
        ck = load_tensors(ckpt_run / f"level_{level:02d}" / "ticket_trial0.safetensors")
        assert all(torch.equal(ck[f"init.{n}"], v) for n, v in state.items())


def test_checkpoint_ticket_stores_no_floats_and_rebuilds_the_verified_weights(ckpt_run, checkpoint, tmp_path):
    path, sha, state = checkpoint
    t = pack.from_lottery_run(ckpt_run)
    assert t.weights == "source" and t.floats == {}
    assert t.meta["weights_source"] == {"kind": "checkpoint", "path": str(path), "sha256": sha,
                                        "name": f"{path.parent.name}/{path.name}"}
    T.save(t, tmp_path / "c.ticket")
    model = dict(pack.build(T.load(tmp_path / "c.ticket")).named_parameters())
    for n, m in t.masks.items():
        assert torch.equal(model[n].detach()[m], state[n][m]) and (model[n].detach()[~m] == 0).all()


def test_checkpoint_ticket_refuses_a_changed_file_in_one_line(ckpt_run, checkpoint, tmp_path):
    import shutil

    path, _, _ = checkpoint
    t = pack.from_lottery_run(ckpt_run)
    moved = tmp_path / "pre.safetensors"
    shutil.copy(path, moved)
    atomic_save_tensors({"other": torch.ones(2)}, moved)
    t.meta["weights_source"] = {**t.meta["weights_source"], "path": str(moved)}
    with pytest.raises(T.TicketError) as e:
        pack.build(t)
    assert "SHA-256" in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_with_another_sha256_is_one_line_config_error(checkpoint):
    path, _, _ = checkpoint
    with pytest.raises(ConfigError) as e:
        validate(Config(weights=f"checkpoint:{path}", weights_sha256="0" * 64))
    assert "SHA-256" in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_without_sha256_names_the_files_digest(checkpoint):
    path, sha, _ = checkpoint
    with pytest.raises(ConfigError, match=sha):
        validate(Config(weights=f"checkpoint:{path}"))


def test_checkpoint_missing_a_parameter_is_one_line_error(tmp_path):
    atomic_save_tensors({"fc1.weight": torch.zeros(300, 784)}, tmp_path / "part.safetensors")
    template = models.build("lenet_300_100", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="no tensor 'fc1.bias'"):
        sources.load_checkpoint(template, tmp_path / "part.safetensors", sources.sha256_file(tmp_path / "part.safetensors"))


def test_run_source_takes_the_runs_rewind_point_and_packs_stored_floats(tmp_path):
    first = Config(iterations=10, eval_every=10, levels=0, trials=1, rewind_step=4)
    lottery.run(first, tmp_path / "a", progress=False)
    rewind = load_tensors(tmp_path / "a" / "rewind.safetensors")
    cfg = Config(iterations=10, eval_every=10, levels=1, trials=1, prune_rate=0.5, weights=f"run:{tmp_path / 'a'}")
    lottery.run(cfg, tmp_path / "b", progress=False)
    ck = load_tensors(tmp_path / "b" / "level_01" / "ticket_trial0.safetensors")
    assert all(torch.equal(ck[f"init.{n[len('trial0.'):]}"], v) for n, v in rewind.items())
    t = pack.from_lottery_run(tmp_path / "b", dtype="float32")
    assert t.weights == "stored" and t.meta["weights_source"]["kind"] == "run"


def test_seed_tickets_record_their_weight_source(tmp_path):
    lottery.run(Config(iterations=4, eval_every=4, levels=1, trials=1, prune_rate=0.5), tmp_path, progress=False)
    t = pack.from_lottery_run(tmp_path)
    assert t.weights == "seed" and t.meta["weights_source"] == {"kind": "seed"}
