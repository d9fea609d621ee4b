"""Transfer (lth.transfer; Chen et al. 2020's TRANSFER(S, T)): a ticket found on one task fine-tuned on
another from the same pre-trained θ0, under the source's encoder masks with the target's own head.
Tiny random BERTs and texts from tests/test_bert.py."""

import json
import random

import pytest
import torch

from test_bert import _texts, _tiny_dir, _vocab  # noqa: E402  (skips without transformers)

from lth import checkpoints, lottery, pack, sources  # noqa: E402
from lth import ticket as T  # noqa: E402
from lth.errors import ConfigError  # noqa: E402
from lth.presets import Config  # noqa: E402
from lth.transfer import masks_for  # noqa: E402


def _fortunes(root, per_class: int = 12):
    from lth.data.bert_text import FORTUNE_FILES

    root.mkdir(parents=True)
    rng, words = random.Random(2), _vocab()[5:]
    for name in FORTUNE_FILES:
        quotes = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(per_class)]
        (root / name).write_text("\n%\n".join(quotes) + "\n%\n")
    return root


def _cfg(ckdir, **kw):
    ck = ckdir / "model.safetensors"
    base = dict(model="bert", model_args={"pretrained": str(ckdir)}, init="bert", seq_len=16, iterations=2,
                eval_every=2, batch_size=8, levels=1, prune_rate=0.5, layer_rates={}, prune_scope="global",
                optimizer="adamw", lr=1e-3, weights=f"checkpoint:{ck}", weights_sha256=sources.sha256_file(ck))
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A level-1 ticket found on a 3-class text task (dataset bert_bbc), packed at θ0."""
    root = tmp_path_factory.mktemp("transfer")
    ckdir, _ = _tiny_dir(root / "pretrained", seed=1)
    cfg = _cfg(ckdir, dataset="bert_bbc", data_dir=str(_texts(root / "bbc")))
    lottery.run(cfg, root / "source", progress=False)
    T.save(pack.from_run(root / "source", level=1), root / "s.ticket")
    return root, ckdir


def _target(root, ckdir, **kw):
    return _cfg(ckdir, dataset="bert_fortunes", data_dir=str(root / "fortunes"), seed=3, **kw)


@pytest.fixture(scope="module")
def transferred(source):
    root, ckdir = source
    _fortunes(root / "fortunes")
    ticket = T.load(root / "s.ticket")
    lottery.run(_target(root, ckdir), root / "target", progress=False, dense_only=True, ticket=ticket,
                ticket_path=root / "s.ticket")
    member = checkpoints.read(checkpoints.member_path(root / "target", 0, "ticket", 0), ("mask", "init"))
    return root, ckdir, ticket, member


def test_the_source_tickets_masks_land_on_the_target_by_name_exactly(transferred):
    _, _, ticket, member = transferred
    assert set(member["mask"]) == set(ticket.masks)
    assert all(torch.equal(member["mask"][n], ticket.masks[n]) for n in ticket.masks)


def test_the_target_starts_from_the_checkpoint_with_its_own_seeded_head(transferred):
    from safetensors.torch import load_file

    root, ckdir, _, member = transferred
    pre = load_file(str(ckdir / "model.safetensors"))
    init = member["init"]
    assert all(torch.equal(init[n], pre[n]) for n in init if n in pre)  # θ0: the checkpoint, bit for bit
    assert init["classifier.weight"].shape == (8, 32)  # the target's 8 classes, not the source's 3
    cfg = Config(**json.loads((root / "target" / "config.json").read_text()))
    src, arg = sources.of(cfg)
    theta0 = src.theta0(cfg, arg, lottery.build_template(cfg, lottery.load_task(cfg, "cpu")), cfg.seed, 0)
    assert torch.equal(init["classifier.weight"], theta0["classifier.weight"])  # drawn from the run's seed 3


def test_the_run_records_the_source_tickets_file_task_and_sparsity(transferred):
    root, _, ticket, _ = transferred
    cfg = json.loads((root / "target" / "config.json").read_text())
    record = cfg["transfer_source"]
    assert cfg["dataset"] == "bert_fortunes" and cfg["controls"] == []
    assert record["sha256"] == sources.sha256_file(root / "s.ticket") and record["ticket"].endswith("s.ticket")
    assert record["dataset"] == "bert_bbc" and record["level"] == 1 and abs(record["sparsity"] - 0.5) < 1e-3
    rows = (root / "target" / "results.csv").read_text().splitlines()
    assert abs(float(rows[1].split(",")[3]) - 0.5) < 1e-3  # remaining: the ticket's density


def test_a_ticket_from_another_checkpoint_is_refused_in_one_line(source, tmp_path):
    root, _ = source
    other, _ = _tiny_dir(tmp_path / "other", seed=2)
    if not (root / "fortunes").is_dir():
        _fortunes(root / "fortunes")
    cfg = _target(root, other)
    with pytest.raises(ConfigError, match="different checkpoint") as e:
        lottery.run(cfg, tmp_path / "run", progress=False, dense_only=True, ticket=T.load(root / "s.ticket"))
    assert "\n" not in str(e.value) and cfg.weights_sha256 in str(e.value)
    assert T.load(root / "s.ticket").meta["weights_source"]["sha256"] in str(e.value)
    assert not (tmp_path / "run").exists()


def test_masks_of_another_shape_or_unknown_names_are_left_out_and_the_rest_stays_dense():
    from torch import nn

    template = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    names = ["0.weight", "1.weight"]
    ticket = {"0.weight": torch.rand(3, 4) < 0.5, "1.weight": torch.rand(5, 3) < 0.5, "2.weight": torch.ones(2, 2)}
    masks = masks_for({k: v.bool() for k, v in ticket.items()}, template, names)
    assert list(masks) == names and torch.equal(masks["0.weight"], ticket["0.weight"])
    assert masks["1.weight"].all() and masks["1.weight"].shape == (2, 3)
    with pytest.raises(ConfigError, match="none of the ticket's 1 masks"):
        masks_for({"x": torch.ones(2, dtype=torch.bool)}, template, names)


def test_a_ticket_is_a_transfer_on_another_dataset_or_with_the_flag():
    from types import SimpleNamespace

    from lth.transfer import is_transfer

    ticket = SimpleNamespace(meta={"dataset": "bert_bbc"})
    assert is_transfer(Config(dataset="bert_fortunes"), ticket)
    assert not is_transfer(Config(dataset="bert_bbc"), ticket) and is_transfer(Config(dataset="bert_bbc"), ticket, True)
    assert not is_transfer(Config(dataset="bert_fortunes"), None, True)
    from lth.cli import parser

    args = parser().parse_args(["train", "p", "--out", "o", "--ticket", "s.ticket", "--transfer"])
    assert args.transfer and args.ticket == "s.ticket"
