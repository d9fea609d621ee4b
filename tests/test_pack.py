import csv

import pytest
import torch

from lth import lottery, pack
from lth import ticket as T
from lth.errors import LthError
from lth.presets import Config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = Config(iterations=30, eval_every=10, levels=2, trials=1, controls=["reinit"], prune_rate=0.5)
    out = tmp_path_factory.mktemp("run")
    lottery.run(cfg, out, progress=False)
    return out


def last_row(path, experiment="ticket", level=2):
    with open(path / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] == experiment and r["level"] == str(level)]
    return max(rows, key=lambda r: int(r["step"]))


def test_lottery_ticket_at_init_packs_into_seed_and_masks(run_dir):
    t = pack.from_lottery_run(run_dir)
    assert t.weights == "seed" and t.floats == {}
    assert t.seed == 0 and t.meta["level"] == 2


def test_reinit_ticket_packs_with_its_own_seed(run_dir):
    t = pack.from_lottery_run(run_dir, experiment="reinit")
    assert t.weights == "seed" and t.seed != 0
    ck = lottery.load_tensors(run_dir / "level_02" / "reinit_trial0.safetensors")
    model = pack.build(t)
    m = t.masks["fc1.weight"]
    assert torch.equal(model.fc1.weight[m], ck["init.fc1.weight"][m])


def test_packed_masks_equal_run_masks(run_dir, tmp_path):
    t = pack.from_lottery_run(run_dir, level=1)
    T.save(t, tmp_path / "a.ticket")
    back = T.load(tmp_path / "a.ticket")
    ck = lottery.load_tensors(run_dir / "level_01" / "ticket_trial0.safetensors")
    for n, m in back.masks.items():
        assert torch.equal(m, ck[f"mask.{n}"].bool())


def test_trained_float32_ticket_reproduces_recorded_accuracy_exactly(run_dir, tmp_path):
    t = pack.from_lottery_run(run_dir, trained=True, dtype="float32")
    T.save(t, tmp_path / "b.ticket")
    got = pack.evaluate(T.load(tmp_path / "b.ticket"))
    want = last_row(run_dir)
    assert round(got["test_acc"], 6) == float(want["test_acc"])
    assert round(got["val_loss"], 6) == float(want["val_loss"])


def test_retraining_from_ticket_reproduces_the_accuracy_curve(run_dir, tmp_path):
    t = pack.from_lottery_run(run_dir)
    cfg = Config(**{k: v for k, v in t.meta["config"].items()})
    again = lottery.run(cfg, tmp_path / "re", progress=False, dense_only=True, ticket=t)
    with open(again.path / "results.csv") as f:
        got = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(f)}
    with open(run_dir / "results.csv") as f:
        want = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(f)
                if r["experiment"] == "ticket" and r["level"] == "2"}
    assert got.keys() == want.keys()
    for s in want:
        assert abs(got[s] - want[s]) < 1e-4


def test_unfinished_level_is_clear_error(run_dir):
    with pytest.raises(LthError, match="not finished"):
        pack.from_lottery_run(run_dir, level=7)


def test_not_a_run_dir_is_clear_error(tmp_path):
    with pytest.raises(LthError, match="not a run directory"):
        pack.from_lottery_run(tmp_path)


def test_export_dense_has_zeros_where_pruned(run_dir, tmp_path):
    t = pack.from_lottery_run(run_dir)
    pack.export(t, tmp_path / "x", torch_prune=True)
    dense = lottery.load_tensors(tmp_path / "x" / "model.safetensors")
    assert (dense["fc1.weight"][~t.masks["fc1.weight"]] == 0).all()
    tp = lottery.load_tensors(tmp_path / "x" / "model_torch_prune.safetensors")
    assert torch.equal(tp["fc1.weight_mask"].bool(), t.masks["fc1.weight"])
    assert "fc1.weight_orig" in tp


def test_torch_prune_export_loads_into_a_pruned_model(run_dir, tmp_path):
    from torch.nn.utils import prune

    from lth.models.lenet import LeNet

    t = pack.from_lottery_run(run_dir)
    pack.export(t, tmp_path / "y", torch_prune=True)
    state = lottery.load_tensors(tmp_path / "y" / "model_torch_prune.safetensors")
    m = LeNet()
    for name in ("fc1", "fc2", "fc3"):
        prune.identity(getattr(m, name), "weight")
    m.load_state_dict(state)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(m(x), pack.build(t)(x))
