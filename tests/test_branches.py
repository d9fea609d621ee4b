"""Every branch of the registry trains in the lottery, packs, and evaluates to its recorded metrics."""

import csv

import pytest
import torch

from lth import branches, lottery, pack
from lth import ticket as T
from lth.io import load_tensors
from lth.presets import Config

CONTROLS = [b for b in branches.BRANCHES if b != "ticket"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = Config(iterations=20, eval_every=10, levels=1, trials=1, controls=CONTROLS, prune_rate=0.5)
    out = tmp_path_factory.mktemp("branches")
    lottery.run(cfg, out, progress=False)
    return out


def last_row(run_dir, experiment):
    with open(run_dir / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] == experiment and r["level"] == "1"]
    return max(rows, key=lambda r: int(r["step"]))


@pytest.mark.exact
@pytest.mark.parametrize("experiment", list(branches.BRANCHES))
def test_every_branch_packs_and_eval_reproduces_its_recorded_test_acc(run_dir, tmp_path, experiment):
    t = pack.from_lottery_run(run_dir, experiment=experiment, trained=True, dtype="float32")
    T.save(t, tmp_path / "t.ticket")
    got = pack.evaluate(T.load(tmp_path / "t.ticket"))
    want = last_row(run_dir, experiment)
    assert round(got["test_acc"], 6) == float(want["test_acc"])
    assert round(got["val_loss"], 6) == float(want["val_loss"])


@pytest.mark.parametrize("experiment", list(branches.BRANCHES))
def test_every_branch_packs_its_starting_weights_back_exactly(run_dir, experiment):
    t = pack.from_lottery_run(run_dir, experiment=experiment, dtype="float32")
    ck = load_tensors(run_dir / "level_01" / f"{experiment}_trial0.safetensors")
    model = dict(pack.build(t).named_parameters())
    for n, m in t.masks.items():
        assert torch.equal(m, ck[f"mask.{n}"].bool())
        assert torch.equal(model[n].detach()[m], ck[f"init.{n}"][m])
    want = "constant" if experiment in pack.CONSTANT_BRANCHES else "stored"  # ±α_l: sign bits
    assert t.weights == ("seed" if branches.BRANCHES.get(experiment).keeps_reset or experiment == "reinit" else want)


def test_checkpoints_record_how_their_weights_come_back(run_dir):
    from safetensors import safe_open

    with safe_open(str(run_dir / "level_01" / "reinit_trial0.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["branch"] == "reinit" and meta["weights"] == "seed"
    assert int(meta["seed"]) == branches.derive_seed(0, "reinit", 1)


def test_pack_of_an_unknown_branch_is_one_line_error(run_dir):
    from lth.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown branch 'nope'"):
        pack.from_lottery_run(run_dir, experiment="nope")
