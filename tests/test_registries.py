"""The extension points: task, model, branch and weight-source registries and their contracts."""

import dataclasses

import pytest
import torch

from lth import branches, models, sources, tasks
from lth.errors import ConfigError
from lth.presets import Config, validate


@pytest.mark.parametrize("registry", [tasks.TASKS, models.MODELS, branches.BRANCHES, sources.SOURCES])
def test_registries_reject_unknown_names_in_one_line(registry):
    with pytest.raises(ConfigError) as e:
        registry.get("nope")
    assert "\n" not in str(e.value) and "nope" in str(e.value) and registry.names()[0] in str(e.value)


@pytest.mark.parametrize("field,value", [("dataset", "nope"), ("model", "nope"), ("controls", ["nope"]),
                                         ("criterion", "nope"), ("weights", "nope:x")])
def test_config_with_an_unregistered_name_fails_validation_in_one_line(field, value):
    with pytest.raises(ConfigError) as e:
        validate(dataclasses.replace(Config(), **{field: value}))
    assert "\n" not in str(e.value) and "nope" in str(e.value)


def test_model_that_takes_other_inputs_than_the_task_gives_is_refused():
    with pytest.raises(ConfigError, match="does not fit dataset text"):
        validate(Config(dataset="text", model="lenet_300_100", layer_rates={}))


def test_gpt_entries_default_context_is_their_sizes_seq_len():
    from lth.models.gpt import SIZES

    assert models.entry("gpt_cpu").context == SIZES["cpu"]["seq_len"]
    assert models.entry("gpt_golf").context == SIZES["golf"]["seq_len"]


def test_task_shape_comes_without_loading_data():
    assert tasks.shape(Config()) == ((1, 28, 28), 10)
    assert tasks.shape(Config(dataset="text", model="gpt_cpu", seq_len=32)) == ((32,), 256)


def test_task_entries_name_their_early_stop_and_headline_metric():
    image, text = tasks.TASKS.get("mnist").metrics, tasks.TASKS.get("text").metrics
    assert (image.early_stop, image.mode, image.headline) == ("val_loss", "min", "test_acc")
    assert (text.early_stop, text.mode, text.headline) == ("val_loss", "min", "val_bpb")
    assert set(image.metrics) <= set(text.metrics)


def test_output_layers_are_lenets_last_fc_and_gpts_tied_embedding():
    lenet = models.build("lenet_300_100", (1, 28, 28), 10)
    gpt = models.build("gpt_cpu", (16,), 64, n_layer=1)
    assert models.output_layers(lenet) == ["fc3.weight", "fc3.bias"]
    assert models.output_layers(gpt) == ["embed.weight"]


def test_param_groups_put_biases_and_norms_outside_weight_decay():
    lenet = models.build("lenet_300_100", (1, 28, 28), 10)
    groups = models.param_groups(lenet)
    assert groups["no_decay"] == ["fc1.bias", "fc2.bias", "fc3.bias"]
    assert groups["decay"] == ["fc1.weight", "fc2.weight", "fc3.weight"]


def test_default_prunable_leaves_embeddings_dense_unless_asked():
    gpt = models.build("gpt_cpu", (16,), 64, n_layer=1)
    assert not any("embed" in n for n in models.default_prunable(gpt, Config()))
    assert "embed.weight" in models.default_prunable(gpt, Config(prune_embeddings=True))


def test_evaluate_turns_sums_into_metrics_through_the_tasks_finalize():
    from lth.ensemble import Ensemble
    from lth.train import evaluate

    class Toy:
        splits = ("val",)

        def evaluate(self, forward, members, split, *, rank=0, world=1):
            out = forward(torch.ones(1, 2, 3))  # [1, 2, 4]
            return {"stats": out.sum(1).double(), "n": torch.full((members,), 2.0, dtype=torch.float64)}

        def finalize(self, sums):  # a corpus-level metric: not a mean of per-example values
            return {"score": sums["stats"][:, 0] / sums["stats"][:, 1:].sum(1)}

    model = torch.nn.Linear(3, 4)
    ens = Ensemble(model, [{n: p.detach() for n, p in model.named_parameters()}])
    got = evaluate(ens, Toy())
    y = model(torch.ones(2, 3)).sum(0).double()
    assert set(got) == {"val_score", "test_score"} and torch.allclose(got["val_score"], y[:1] / y[1:].sum())


def test_default_finalize_divides_every_sum_by_n():
    sums = {"loss": torch.tensor([6.0]), "acc": torch.tensor([3.0]), "n": torch.tensor([4.0])}
    assert tasks.mean_of_sums(sums) == {"loss": torch.tensor([1.5]), "acc": torch.tensor([0.75])}


# --- branches ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx():
    from lth.init import init_from_seed
    from lth.pruning import magnitude

    template = models.build("lenet_300_100", (1, 28, 28), 10)
    theta = {n: p.detach().clone() for n, p in init_from_seed(template, 3, "glorot_normal").named_parameters()}
    names = ["fc1.weight", "fc2.weight", "fc3.weight"]
    ones = {n: torch.ones_like(theta[n], dtype=torch.bool) for n in names}
    masks = magnitude(theta, ones, {n: 0.7 for n in names})
    return branches.BranchContext(masks, theta, 3, 2, template, "glorot_normal")


def test_constant_branch_is_sign_times_the_layers_glorot_constant(ctx):
    import math

    masks, w = branches.BRANCHES.get("constant")(ctx)
    for n, m in masks.items():
        fan_out, fan_in = ctx.reset[n].shape
        alpha = torch.tensor(math.sqrt(6.0 / (fan_in + fan_out)), dtype=torch.float32)
        assert torch.equal(w[n][m].abs(), alpha.expand(int(m.sum())))
        assert torch.equal(torch.sign(w[n][m]), torch.sign(ctx.reset[n][m]))
    assert torch.equal(w["fc1.bias"], ctx.reset["fc1.bias"])


def test_random_branch_keeps_the_tickets_per_layer_counts(ctx):
    masks, w = branches.BRANCHES.get("random")(ctx)
    for n, m in masks.items():
        assert int(m.sum()) == int(ctx.masks[n].sum()) and not torch.equal(m, ctx.masks[n])
    assert w is ctx.reset


def test_shuffle_branch_keeps_the_multiset_of_each_layers_surviving_values(ctx):
    masks, w = branches.BRANCHES.get("shuffle")(ctx)
    for n, m in masks.items():
        assert torch.equal(m, ctx.masks[n])
        assert torch.equal(w[n][m].sort().values, ctx.reset[n][m].sort().values)
        assert not torch.equal(w[n][m], ctx.reset[n][m])


def test_random_sign_branch_keeps_magnitudes_and_draws_signs(ctx):
    masks, w = branches.BRANCHES.get("random_sign")(ctx)
    for n, m in masks.items():
        assert torch.equal(w[n].abs(), ctx.reset[n].abs())
        flipped = (torch.sign(w[n][m]) != torch.sign(ctx.reset[n][m])).float().mean()
        assert 0.4 < float(flipped) < 0.6


def test_branches_leave_the_tickets_tensors_alone(ctx):
    before = {n: v.clone() for n, v in ctx.reset.items()}
    for name in branches.BRANCHES:
        branches.BRANCHES.get(name)(ctx)
    assert all(torch.equal(before[n], ctx.reset[n]) for n in before)


def test_reinit_branch_regenerates_from_its_own_seed(ctx):
    from lth.init import init_from_seed

    b = branches.BRANCHES.get("reinit")
    _, w = b(ctx)
    again = dict(init_from_seed(models.build("lenet_300_100", (1, 28, 28), 10), b.seed(ctx), "glorot_normal")
                 .named_parameters())
    assert all(torch.equal(w[n], again[n].detach()) for n in w)


# --- reports read the recorded metric spec -------------------------------------------------------------


def test_report_early_stops_and_leads_with_the_recorded_metric_spec(tmp_path):
    import csv

    from lth import metrics as MS
    from lth import report as R

    bleu = MS.Column("test_bleu", "BLEU", "", 1.0, ".1f", "max", ("es", "final"), "bleu_vs_remaining.png", "BLEU")
    spec = MS.MetricSpec(("val_bleu", "test_bleu"), (bleu,), early_stop="val_bleu", mode="max")
    MS.write(tmp_path, spec)
    with open(tmp_path / "results.csv", "w", newline="") as f:  # no val_loss, val_acc or test_acc at all
        w = csv.writer(f)
        w.writerow(["experiment", "trial", "level", "remaining", "step", "val_bleu", "test_bleu"])
        for step, v in [(0, 1.0), (100, 9.0), (200, 5.0)]:
            w.writerow(["ticket", 0, 0, 1.0, step, v, v + 0.5])
    table = R.report(tmp_path)
    assert "BLEU @ ES" in table and "final BLEU" in table and "test acc" not in table
    (stop,) = R.early_stop(R.read_results(tmp_path, spec), spec)
    assert stop["step"] == 100 and stop["final_test_bleu"] == 5.5  # the maximum of val_bleu
    assert (tmp_path / "bleu_vs_remaining.png").exists() and not (tmp_path / "accuracy_vs_remaining.png").exists()


def test_lottery_run_records_its_tasks_metric_spec(tmp_path):
    from lth import lottery
    from lth import metrics as MS

    lottery.run(Config(iterations=2, eval_every=2, levels=0), tmp_path, progress=False)
    assert MS.read(tmp_path) == tasks.TASKS.get("mnist").metrics


def test_run_without_metric_spec_reports_as_before(tmp_path):
    from lth import metrics as MS
    from lth import report as R

    (tmp_path / "results.csv").write_text("experiment,trial,level,remaining,step,val_loss,val_acc,test_acc,val_bpb\n"
                                          "ticket,0,0,1.0,0,2.0,0.1,0.1,3.0\nticket,0,0,1.0,10,1.0,0.5,0.6,2.0\n")
    assert MS.read(tmp_path) is None
    table = R.report(tmp_path)
    assert "test acc @ ES (%)" in table and "bpb @ ES" in table and "60.00" in table


def test_an_unregistered_entry_is_gone_and_can_be_registered_again():
    from lth.registry import Registry

    reg = Registry("thing")
    reg.register("a")(1)
    assert reg.unregister("a") == 1 and "a" not in reg
    reg.register("a")(2)
    assert reg.get("a") == 2
