import csv
import json

import pytest
import torch

from lth import lottery, pack
from lth.io import load_tensors
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
    ck = load_tensors(run_dir / "level_02" / "reinit_trial0.safetensors")
    model = pack.build(t)
    m = t.masks["fc1.weight"]
    assert torch.equal(model.fc1.weight[m], ck["init.fc1.weight"][m])


def test_packed_masks_equal_run_masks(run_dir, tmp_path):
    t = pack.from_lottery_run(run_dir, level=1)
    T.save(t, tmp_path / "a.ticket")
    back = T.load(tmp_path / "a.ticket")
    ck = load_tensors(run_dir / "level_01" / "ticket_trial0.safetensors")
    for n, m in back.masks.items():
        assert torch.equal(m, ck[f"mask.{n}"].bool())


@pytest.mark.exact
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
    dense = load_tensors(tmp_path / "x" / "model.safetensors")
    assert (dense["fc1.weight"][~t.masks["fc1.weight"]] == 0).all()
    tp = load_tensors(tmp_path / "x" / "model_torch_prune.safetensors")
    assert torch.equal(tp["fc1.weight_mask"].bool(), t.masks["fc1.weight"])
    assert "fc1.weight_orig" in tp


def test_torch_prune_export_loads_into_a_pruned_model(run_dir, tmp_path):
    from torch.nn.utils import prune

    from lth.models.lenet import LeNet

    t = pack.from_lottery_run(run_dir)
    pack.export(t, tmp_path / "y", torch_prune=True)
    state = load_tensors(tmp_path / "y" / "model_torch_prune.safetensors")
    m = LeNet()
    for name in ("fc1", "fc2", "fc3"):
        prune.identity(getattr(m, name), "weight")
    m.load_state_dict(state)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(m(x), pack.build(t)(x))


# --- supermask runs ------------------------------------------------------------------------------

SM_PRESETS = {"topk": "mnist_supermask", "ste": "mnist_supermask_ste", "bernoulli": "mnist_supermask_bernoulli"}


@pytest.fixture(scope="module", params=sorted(SM_PRESETS))
def sm_run(request, tmp_path_factory):
    """A tiny supermask run of each rule, two trials trained batched (so trial 1 is not member 0)."""
    from lth import supermask as S
    from lth.presets import override, preset

    cfg = override(preset(SM_PRESETS[request.param]), {"epochs": None, "iterations": 12, "eval_every": 6,
                                                       "trials": 2})
    out = tmp_path_factory.mktemp(f"sm_{request.param}")
    S.run(cfg, out, progress=False)
    return out


def last_sm_row(path, trial):
    with open(path / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["trial"] == str(trial)]
    return max(rows, key=lambda r: int(r["step"]))


def test_supermask_run_packs_into_seed_masks_and_float32_scales(sm_run):
    from lth import supermask as S

    t = pack.from_run(sm_run, trial=1)
    assert t.weights == "seed" and t.seed == 1 and t.init == "signed_constant"
    ck = S.load_checkpoint(sm_run / "supermask_trial1.safetensors")
    assert set(t.floats) == {f"scale.{n}" for n in ck["mask"]}
    for n, m in ck["mask"].items():
        assert torch.equal(t.masks[n], m)
        assert t.floats[f"scale.{n}"].dtype == torch.float32 and torch.equal(t.floats[f"scale.{n}"], ck["scale"][n])
    assert t.meta["kind"] == "supermask" and t.meta["rule"] in SM_PRESETS and t.meta["density"] == 0.5
    assert t.meta["results"]["test_acc"] == float(last_sm_row(sm_run, 1)["test_acc"])
    assert t.meta["trained_floats"]["trained_floats_shipped"] == 3


@pytest.mark.exact
def test_supermask_ticket_reproduces_recorded_accuracy_exactly(sm_run, tmp_path):
    T.save(pack.from_run(sm_run, trial=1), tmp_path / "sm.ticket")
    got = pack.evaluate(T.load(tmp_path / "sm.ticket"))
    want = last_sm_row(sm_run, 1)
    for k in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert round(got[k], 6) == float(want[k]), k


@pytest.mark.exact
def test_packed_supermask_logits_are_bit_identical_to_the_trained_supermask(sm_run):
    """The packed network (W regenerated, masks and scales applied) against the trained supermask's
    evaluation of the same member (lth.train.member_forwards: each member alone, as a stack of one),
    with two members trained side by side."""
    from lth import supermask as S
    from lth.ensemble import Ensemble
    from lth.presets import Config
    from lth.train import member_forwards

    cfg = Config(**json.loads((sm_run / "config.json").read_text()))
    run = S.SupermaskRun(cfg, sm_run, progress=False)
    sm = run.build([0, 1]).eval()
    cks = [S.load_checkpoint(run.checkpoint_path(t)) for t in (0, 1)]
    sm.temperature = float(pack._checkpoint_meta(run.checkpoint_path(0))["temperature"])  # ste's final T
    with torch.no_grad():
        for n, score in sm.score_dict().items():
            score.copy_(torch.stack([c["score"][n] for c in cks]))
        for n, scale in sm.scale_dict().items():
            scale.copy_(torch.stack([c["scale"][n] for c in cks]))
        x = run.task.data.test.x[:2000]
        trained = member_forwards(sm)
        for t in (0, 1):
            assert all(torch.equal(sm.masks()[n][t], cks[t]["mask"][n]) for n in sm.masked)
            model = pack.build(pack.from_run(sm_run, trial=t))
            packed = member_forwards(Ensemble(model, [dict(model.named_parameters())]))[0]
            assert torch.equal(packed(x[None]), trained[t](x[None]))


def test_supermask_export_is_scale_times_weight_times_mask(sm_run, tmp_path):
    from lth import supermask as S
    from lth.models.lenet import LeNet

    t = pack.from_run(sm_run, trial=0)
    pack.export(t, tmp_path / "x", torch_prune=True)
    dense = load_tensors(tmp_path / "x" / "model.safetensors")
    want = dict(S.materialize(LeNet(), 0, t.init, S.load_checkpoint(sm_run / "supermask_trial0.safetensors"))
                .named_parameters())
    for n, p in want.items():
        assert torch.equal(dense[n], p.detach())
    tp = load_tensors(tmp_path / "x" / "model_torch_prune.safetensors")
    assert torch.equal(tp["fc2.weight_mask"].bool(), t.masks["fc2.weight"])


def test_lottery_flags_on_a_supermask_run_are_clear_errors(sm_run):
    with pytest.raises(LthError, match="supermask run"):
        pack.from_run(sm_run, level=1)
    with pytest.raises(LthError, match="supermask run"):
        pack.from_run(sm_run, trained=True)
    with pytest.raises(LthError, match="trial 5 is not finished"):
        pack.from_run(sm_run, trial=5)


def test_scale_that_does_not_divide_the_outputs_is_a_ticket_error(sm_run):
    t = pack.from_run(sm_run)
    t.floats["scale.fc1.weight"] = torch.ones(7)
    with pytest.raises(T.TicketError, match="scale.fc1.weight"):
        pack.build(T.decode(T.encode(t)))
