"""The CNN families of Frankle & Carbin 2019 (issue 11): Conv-2/4/6, VGG-19, ResNet-20.

Sizes, the pruning contract (conv kernels and fc matrices only, never BatchNorm), kinds for group
rates, BatchNorm statistics per stacked member, seed-derived init, and a tiny lottery of each model on
an in-memory (3, 32, 32) task registered here."""

import csv

import pytest
import torch
from torch import nn

from lth import lottery, models, pruning
from lth.data import ImageData, Split
from lth.ensemble import Ensemble
from lth.errors import ConfigError
from lth.init import init_from_seed, weights_sha256
from lth.level_masks import LevelPruning
from lth.presets import Config
from lth.tasks import IMAGE_METRICS, TASKS, TaskEntry
from lth.tasks.classify import ImageClassification

CIFAR, GRAY = (3, 32, 32), (1, 32, 32)
# (model, model_args) of every family member this file runs; ResNet at width 4 keeps it quick
ALL = [("conv2", {}), ("conv4", {}), ("conv6", {}), ("vgg19", {}), ("resnet20", {"width": 4})]


def build(name, shape=CIFAR, classes=10, device="cpu", **kw):
    with torch.device(device):
        return models.build(name, shape, classes, **kw)


def prunable_count(model, cfg=None):
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in models.default_prunable(model, cfg or Config()))


def is_norm(model, name):
    owner = model.get_submodule(name.rpartition(".")[0])
    return isinstance(owner, nn.modules.batchnorm._BatchNorm)


# --- sizes and shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape,kw,count", [
    ("conv2", CIFAR, {}, 4_300_992), ("conv4", CIFAR, {}, 2_425_024), ("conv6", CIFAR, {}, 2_261_184),
    ("conv2", GRAY, {}, 4_299_840), ("conv4", GRAY, {}, 2_423_872), ("conv6", GRAY, {}, 2_260_032),
    ("vgg19", CIFAR, {}, 20_024_000),
    ("resnet20", CIFAR, {}, 270_896), ("resnet20", CIFAR, {"width": 16}, 270_896),
    ("resnet20", CIFAR, {"width": 8}, 67_992),
])
def test_prunable_weight_counts_are_the_stated_ones(name, shape, kw, count):
    assert prunable_count(build(name, shape, device="meta", **kw)) == count


def test_conv2_count_is_its_layer_sizes():
    layers = 3 * 64 * 9 + 64 * 64 * 9 + 16 * 16 * 64 * 256 + 256 * 256 + 256 * 10
    assert prunable_count(build("conv2", device="meta")) == layers


@pytest.mark.parametrize("name,kw", ALL)
def test_output_is_logits_per_image(name, kw):
    assert build(name, **kw)(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_conv_fc_input_is_computed_from_the_image_size():
    model = build("conv4", (1, 28, 28), 7)
    assert model.fc1.in_features == 128 * 7 * 7 and model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("name,args", [
    ("conv2", {"width": 8}), ("conv6", {"x": 1}), ("vgg19", {"depth": 19}), ("resnet20", {"depth": 20}),
    ("resnet20", {"width": 0}), ("resnet20", {"width": "8"}), ("resnet20", {"width": 8.0}),
    ("resnet20", {"width": True}),
])
def test_model_args_are_checked_in_one_line(name, args):
    with pytest.raises(ConfigError) as e:
        models.check_args(name, args)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        build(name, **args)


def test_a_config_with_bad_model_args_fails_validation_in_one_line():
    from lth.presets import validate

    validate(Config(model="resnet20", model_args={"width": 8}, layer_rates={}))
    with pytest.raises(ConfigError, match="width must be a positive int") as e:
        validate(Config(model="resnet20", model_args={"width": -1}, layer_rates={}))
    assert "\n" not in str(e.value)


def test_resnet_width_is_the_first_stages_filters():
    model = build("resnet20", device="meta", width=8)
    assert [model.blocks[i].conv2.out_channels for i in (0, 3, 6)] == [8, 16, 32] and model.fc.in_features == 32
    models.check_args("resnet20", {"width": 8})


def test_images_too_small_for_the_pools_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="at least 8"):
        build("conv6", (3, 4, 4))
    with pytest.raises(ConfigError, match="at least 32"):
        build("vgg19", (1, 28, 28))


# --- what pruning acts on ------------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", ALL)
def test_default_prunable_is_conv_kernels_and_fc_matrices(name, kw):
    model = build(name, device="meta", **kw)
    names = models.default_prunable(model, Config())
    assert names == [n for n, p in model.named_parameters() if p.dim() >= 2] == pruning.Pruner(model).names
    assert not any(is_norm(model, n) for n in names)


@pytest.mark.parametrize("name,kw", ALL)
def test_biases_are_pruned_only_when_asked_and_norms_never(name, kw):
    model = build(name, device="meta", **kw)
    with_biases = models.default_prunable(model, Config(prune_biases=True))
    assert not any(is_norm(model, n) for n in with_biases)
    assert {n for n in with_biases if n.endswith("bias")} == {
        n for n, _ in model.named_parameters() if n.endswith("bias") and not is_norm(model, n)}


def test_param_groups_keep_batchnorm_and_biases_out_of_weight_decay():
    model = build("resnet20", device="meta", width=4)
    groups = models.param_groups(model)
    assert groups["decay"] == models.default_prunable(model, Config())
    assert all(is_norm(model, n) or n == "fc.bias" for n in groups["no_decay"])


def test_kind_groups_name_shortcuts_and_the_output_of_a_resnet():
    model = build("resnet20", device="meta")
    kinds = pruning.kind_groups(model, models.default_prunable(model, Config()))
    assert [n for n, k in kinds.items() if k == "shortcut"] == ["blocks.3.shortcut.conv.weight",
                                                                 "blocks.6.shortcut.conv.weight"]
    assert [n for n, k in kinds.items() if k == "output"] == ["fc.weight"] == models.output_layers(model)[:1]
    assert sum(k == "conv" for k in kinds.values()) == 19


def test_kind_groups_name_convs_fcs_and_the_output():
    model = build("conv4", device="meta")
    kinds = pruning.kind_groups(model, models.default_prunable(model, Config()))
    assert kinds == {"conv1.weight": "conv", "conv2.weight": "conv", "conv3.weight": "conv", "conv4.weight": "conv",
                     "fc1.weight": "fc", "fc2.weight": "fc", "fc3.weight": "output"}
    assert models.output_layers(model) == ["fc3.weight", "fc3.bias"]


def level_one_masks(name, cfg, **kw):
    """A LevelPruning's level-1 masks of ``name`` from random weights (what magnitude pruning sees)."""
    template = build(name, **kw)
    names = models.default_prunable(template, cfg)
    g = torch.Generator().manual_seed(1)
    theta = {n: torch.randn(p.shape, generator=g) for n, p in template.named_parameters()}
    ones = {n: torch.ones_like(theta[n], dtype=torch.bool) for n in names}
    return template, theta, LevelPruning(cfg, template, names).prune(theta, ones, 1)


def removed(masks, names):
    return sum(int((~masks[n]).sum()) for n in names)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("name,kw,rates", [
    ("conv4", {}, {"conv": 0.3, "fc": 0.6, "output": 0.1}),
    ("resnet20", {"width": 4}, {"conv": 0.3, "shortcut": 0.05, "output": 0.1}),
])
def test_group_rates_prune_exactly_the_requested_fraction_of_each_kind(scope, name, kw, rates):
    cfg = Config(layer_rates={}, prune_rate=0.5, prune_scope=scope, group_rates=rates)
    template, _, masks = level_one_masks(name, cfg, **kw)
    assert not any(is_norm(template, n) for n in masks)
    kinds = pruning.kind_groups(template, list(masks))
    for kind, rate in rates.items():
        names = [n for n in masks if kinds[n] == kind]
        sizes = [masks[n].numel() for n in names]
        want = (pruning.n_prune(rate, sum(sizes)) if scope == "global"
                else sum(pruning.n_prune(rate, s) for s in sizes))
        assert removed(masks, names) == want, kind


def test_global_allocation_over_convs_is_exact_and_shares_one_threshold():
    cfg = Config(layer_rates={}, prune_rate=0.37, prune_scope="global")
    _, theta, masks = level_one_masks("conv6", cfg)
    assert removed(masks, masks) == pruning.n_prune(0.37, sum(m.numel() for m in masks.values()))
    kept = torch.cat([theta[n][m].abs() for n, m in masks.items()])
    dropped = torch.cat([theta[n][~m].abs() for n, m in masks.items()])
    assert kept.min() >= dropped.max()


# --- init ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", ALL)
def test_init_from_seed_is_bit_exact_and_sets_norms_to_one_and_biases_to_zero(name, kw):
    a = init_from_seed(build(name, **kw), 5, "kaiming_normal")
    regenerated = init_from_seed(build(name, **kw), 5, "kaiming_normal")
    assert weights_sha256(a) == weights_sha256(regenerated)
    for n, p in a.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.zeros_like(p) if n.endswith("bias") else torch.ones_like(p)), n
        else:
            fan_in = p[0].numel()
            assert abs(p.std().item() / (2.0 / fan_in) ** 0.5 - 1) < 0.3, n  # He: std sqrt(2 / fan_in)


# --- stacked members -----------------------------------------------------------------------------


def states(name, n, shape=CIFAR, **kw):
    nets = [init_from_seed(build(name, shape, **kw), s, "kaiming_normal") for s in range(n)]
    return [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in nets]


@pytest.mark.parametrize("name,kw", ALL)
def test_every_model_loops_on_cpu_and_vmaps_on_cuda_with_the_same_outputs(name, kw):
    ss = states(name, 2, **kw)
    template = build(name, **kw)
    x = torch.randn(2, 1, *CIFAR)  # [members, images, C, H, W]
    loop, vmapped = Ensemble(template, ss), Ensemble(template, ss, mode="stacked")  # auto, then stacked
    assert (loop.path("cpu"), loop.path("cuda"), vmapped.path("cpu")) == ("loop", "vmap", "vmap")
    assert not getattr(template, "stackable", False)
    with torch.no_grad():  # training-mode BatchNorm: test_stacked_members_batchnorm_statistics_...
        out = loop.eval()(x)
        torch.testing.assert_close(vmapped.eval()(x), out, rtol=1e-4, atol=1e-5)
        for i, s in enumerate(ss):
            alone = build(name, **kw)
            alone.load_state_dict(s)
            torch.testing.assert_close(out[i], alone.eval()(x[i]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["stacked", "loop"])
def test_stacked_members_batchnorm_statistics_evolve_as_each_member_trained_alone(mode):
    shape, members = (3, 8, 8), 2
    ss = states("resnet20", members, shape, width=4)
    ens = Ensemble(build("resnet20", shape, width=4), ss, mode=mode)
    assert ens.path() == ("vmap" if mode == "stacked" else "loop") and len(ens.buffer_names) == 3 * 21
    alone = [build("resnet20", shape, width=4) for _ in ss]
    for net, s in zip(alone, ss):
        net.load_state_dict(s)
    opt = torch.optim.SGD(list(ens.stacked), lr=0.1)
    opts = [torch.optim.SGD(net.parameters(), lr=0.1) for net in alone]
    g = torch.Generator().manual_seed(2)
    for _ in range(2):
        x, y = torch.randn(members, 4, *shape, generator=g), torch.randint(0, 10, (members, 4), generator=g)
        opt.zero_grad()
        ImageClassification.loss(ens(x), y).backward()
        opt.step()
        for i, (net, o) in enumerate(zip(alone, opts)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            o.step()
    for i, net in enumerate(alone):
        mine = ens.member_state(i)
        for n, b in net.named_buffers():
            torch.testing.assert_close(mine[n], b, rtol=1e-4, atol=1e-5, msg=n)
    stats = ens.buffer_dict()
    assert not torch.equal(stats["blocks.8.bn2.running_mean"][0], stats["blocks.8.bn2.running_mean"][1])
    assert stats["bn.num_batches_tracked"].tolist() == [2, 2]
    ens.eval()
    x = torch.randn(members, 3, *shape, generator=g)
    out = ens(x)
    for i, net in enumerate(alone):
        torch.testing.assert_close(out[i], net.eval()(x[i]), rtol=1e-4, atol=1e-4)
    assert stats["bn.num_batches_tracked"].tolist() == [2, 2]  # evaluation updates nothing


# --- the public API on a tiny (3, 32, 32) task -----------------------------------------------------


def toy_images(cfg, device):
    """48 random images (32 to train, 8 to validate, 8 to test), label: is the top half of the red
    channel bright (10 classes declared)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, *CIFAR, generator=g)
    y = (x[:, 0, :16].mean((1, 2)) > 0).long()
    splits = Split(x[:32], y[:32]), Split(x[32:40], y[32:40]), Split(x[40:48], y[40:48])
    return ImageClassification(ImageData("toy32", *splits, 10, CIFAR)).to(device)


@pytest.fixture(scope="module")
def toy_task():
    TASKS.register("toy32")(TaskEntry("toy32", toy_images, lambda cfg: (CIFAR, 10), IMAGE_METRICS, "image"))
    yield "toy32"
    TASKS.unregister("toy32")


def tiny(model, steps=2, batch=8, **kw):
    """Two levels (dense, then 50% of every layer pruned) of ``steps`` steps at batch ``batch``."""
    return Config(name="tiny", dataset="toy32", model=model, model_args=kw, layer_rates={}, iterations=steps,
                  eval_every=steps, batch_size=batch, levels=1, trials=1, prune_rate=0.5, init="kaiming_normal")


def rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name,kw", ALL)
def test_a_two_level_lottery_trains_and_prunes_every_model(toy_task, name, kw, tmp_path):
    steps, batch = (1, 4) if name == "vgg19" else (2, 8)  # VGG-19: 20M weights, 0.4 GFLOP an image
    lottery.run(tiny(name, steps, batch, **kw), tmp_path / "run", progress=False)
    got = {(r["level"], r["step"]): r for r in rows(tmp_path / "run")}
    assert set(got) == {(level, step) for level in "01" for step in ("0", str(steps))}
    assert float(got["1", str(steps)]["remaining"]) == pytest.approx(0.5, abs=1e-3)
    assert all(torch.isfinite(torch.tensor(float(r["val_loss"]))) for r in got.values())


def test_a_packed_resnet_ticket_carries_its_batchnorm_statistics_and_evaluates_exactly(toy_task, tmp_path):
    from lth import pack
    from lth import ticket as T
    from lth.io import load_tensors

    lottery.run(tiny("resnet20", width=4), tmp_path / "run", progress=False)
    T.save(pack.from_run(tmp_path / "run", level=1, trained=True, dtype="float32"), tmp_path / "r.ticket")
    ticket = T.load(tmp_path / "r.ticket")
    final = {n[len("final."):]: t for n, t in load_tensors(tmp_path / "run" / "level_01" / "ticket_trial0.safetensors")
             .items() if n.startswith("final.")}
    stats = [n for n in final if n.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 21 and all(torch.equal(ticket.floats[f"buffer.{n}"], final[n]) for n in stats)
    rebuilt = dict(T.build_model(ticket).named_buffers())
    assert all(torch.equal(rebuilt[n], final[n]) for n in stats)
    got = pack.evaluate(ticket)
    want = [r for r in rows(tmp_path / "run") if r["level"] == "1" and r["step"] == "2"][0]
    for k in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert round(got[k], 6) == float(want[k]), k


@pytest.mark.parametrize("name,kw", [("conv2", {}), ("resnet20", {"width": 4})])
def test_a_cnn_supermask_trains_packs_evaluates_exactly_and_exports(toy_task, name, kw, tmp_path):
    import dataclasses

    from lth import pack, supermask
    from lth import ticket as T
    from lth.cli import main

    cfg = dataclasses.replace(tiny(name, **kw), rule="topk", density=0.5, levels=0, optimizer="sgd", lr=0.1,
                              momentum=0.9, init="signed_constant")
    supermask.run(cfg, tmp_path / "sm", progress=False)
    T.save(pack.from_run(tmp_path / "sm", trial=0), tmp_path / "sm.ticket")
    got = pack.evaluate(T.load(tmp_path / "sm.ticket"))
    want = max(rows(tmp_path / "sm"), key=lambda r: int(r["step"]))
    assert round(got["test_acc"], 6) == float(want["test_acc"])
    assert main(["export", str(tmp_path / "sm.ticket"), "-o", str(tmp_path / "dense")]) == 0
    from lth.io import load_tensors

    dense = load_tensors(next((tmp_path / "dense").glob("*.safetensors")))
    model = T.build_model(T.load(tmp_path / "sm.ticket"))
    for n, p in model.named_parameters():
        assert torch.equal(dense[n], p.detach()), n
