"""The CNN track's presets (Frankle & Carbin 2019, Sections 3-4; Frankle et al. 2020 for rewinding).

``fmnist_<model>`` runs the paper's settings on Fashion-MNIST zero-padded to 32x32 (the embedded
default), ``cifar10_<model>`` the same on CIFAR-10 (``--data-dir``). Every model keeps the paper's
shapes; only the input channels differ.

* Conv-2/4/6: layerwise magnitude pruning, conv 10% / 10% / 15%, fc 20%, output 10% per level; Adam
  2e-4 / 3e-4 / 3e-4, batch 60, 20K / 25K / 30K iterations, validation every 100; Glorot normal; no
  augmentation.
* VGG-19: global magnitude pruning over the convs, 20% per level, the output layer unpruned; SGD
  momentum 0.9, weight decay 1e-4, batch 64, 160 epochs, lr x0.1 at epochs 80 and 120; lr 0.1
  (``_vgg19``), 0.01 (``_lr001``), or 0.1 with linear warmup over 10K iterations (``_warmup``);
  augmentation.
* ResNet-20: global over the convs, 20%, shortcuts and output unpruned; SGD 0.9, wd 1e-4, batch 128,
  30K iterations, x0.1 at 20K and 25K; lr 0.1, 0.01 (``_lr001``), or 0.03 with warmup over 20K
  (``_warmup``); augmentation.

Milestones are steps, so the epoch-based ones are computed from the training split (Fashion-MNIST-32:
55,000 images, CIFAR-10: 45,000, each after holding out 5,000 for validation).

``fmnist_<model>_cpu`` presets keep each model and its rates and fit 2 CPU cores: the first 10,000
training images, 2 trials, ticket and ``reinit`` at every level, and two paper levels per lth level
(every rate ``p`` becomes ``1 - (1 - p)**2``). No VGG-19 (about a second a step on 2 cores).
All presets evaluate the test split only at early stop and at the end (``test_at="best"``, lth.best).
"""

from __future__ import annotations

TRAIN = {"fashion-mnist-32": 55_000, "cifar10": 45_000}  # training images after the validation split
DATA = {"fmnist": "fashion-mnist-32", "cifar10": "cifar10"}


def twice(p: float) -> float:
    """Two paper levels at rate ``p`` as one: ``1 - (1 - p)**2`` (rounded for the preset listing)."""
    return round(1.0 - (1.0 - p) ** 2, 6)


def _conv(n: int, lr: float, iterations: int, conv_rate: float) -> dict:
    return dict(model=f"conv{n}", optimizer="adam", lr=lr, batch_size=60, iterations=iterations, eval_every=100,
                init="glorot_normal", prune_scope="layer", layer_rates={}, levels=20,
                group_rates={"conv": conv_rate, "fc": 0.2, "output": 0.1}, test_at="best")


CONV = {2: _conv(2, 2e-4, 20_000, 0.1), 4: _conv(4, 3e-4, 25_000, 0.1), 6: _conv(6, 3e-4, 30_000, 0.15)}

# the output layer is the only fc layer of VGG-19 and ResNet-20: output_rate 0 leaves it unpruned
_SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4, init="kaiming_normal", prune_scope="global",
            prune_rate=0.2, layer_rates={}, output_rate=0.0, augment=True, lr_schedule="step", test_at="best")


def _vgg(train: int) -> dict:
    per_epoch = train // 64
    return dict(model="vgg19", batch_size=64, iterations=160 * per_epoch, milestones=[80 * per_epoch, 120 * per_epoch],
                eval_every=per_epoch, levels=20, **_SGD)


RESNET = dict(model="resnet20", batch_size=128, iterations=30_000, milestones=[20_000, 25_000], eval_every=500,
              levels=20, group_rates={"conv": 0.2, "shortcut": 0.0}, **_SGD)
LR_VARIANTS = {  # suffix -> (lr, warmup steps) for VGG-19, ResNet-20
    "vgg19": {"": (0.1, 0), "_lr001": (0.01, 0), "_warmup": (0.1, 10_000)},
    "resnet20": {"": (0.1, 0), "_lr001": (0.01, 0), "_warmup": (0.03, 20_000)},
}
NAMES = {2: "Conv-2", 4: "Conv-4", 6: "Conv-6"}


def _cpu_conv(n: int, epochs: int, levels: int) -> dict:
    paper = CONV[n]
    return dict(paper, train_images=10_000, epochs=epochs, levels=levels, trials=2, controls=["reinit"],
                group_rates={k: twice(v) for k, v in paper["group_rates"].items()})


def _cpu_resnet(lr: float, warmup_fraction: float) -> dict:
    # 8 epochs of 10,000 images at batch 128 = 624 steps; the paper's milestones (2/3, 5/6 of training)
    # and warmup (2/3 of training for lr 0.03) at the same fractions
    steps = 8 * (10_000 // 128)
    return dict(RESNET, model_args={"width": 8}, train_images=10_000, iterations=steps,
                milestones=[round(steps * 2 / 3), round(steps * 5 / 6)], warmup=round(steps * warmup_fraction),
                lr=lr, eval_every=78, levels=5, trials=2, controls=["reinit"], prune_rate=twice(0.2),
                group_rates={"conv": twice(0.2), "shortcut": 0.0})


def presets() -> dict[str, dict]:
    """Every CNN preset by name (see the module docstring)."""
    out: dict[str, dict] = {}
    for prefix, dataset in DATA.items():
        where = "Fashion-MNIST zero-padded to 32x32" if prefix == "fmnist" else "CIFAR-10 (--data-dir)"
        for n, cfg in CONV.items():
            out[f"{prefix}_conv{n}"] = dict(
                description=f"Frankle & Carbin 2019 {NAMES[n]} on {where}: Adam {cfg['lr']:g}, batch 60, "
                f"{cfg['iterations'] // 1000}K iterations, conv {cfg['group_rates']['conv']:.0%} / fc 20% / "
                "output 10% per level, reset to init", dataset=dataset, **cfg)
        for suffix, (lr, warmup) in LR_VARIANTS["vgg19"].items():
            out[f"{prefix}_vgg19{suffix}"] = dict(
                description=f"VGG-19 on {where}: SGD lr {lr:g}{f' warmup {warmup:,}' if warmup else ''}, momentum "
                "0.9, wd 1e-4, batch 64, 160 epochs (x0.1 at 80, 120), global 20% over convs, augmentation",
                dataset=dataset, lr=lr, warmup=warmup, **_vgg(TRAIN[dataset]))
        for suffix, (lr, warmup) in LR_VARIANTS["resnet20"].items():
            out[f"{prefix}_resnet20{suffix}"] = dict(
                description=f"ResNet-20 on {where}: SGD lr {lr:g}{f' warmup {warmup:,}' if warmup else ''}, "
                "momentum 0.9, wd 1e-4, batch 128, 30K iterations (x0.1 at 20K, 25K), global 20% over convs "
                "(shortcuts, output unpruned), augmentation", dataset=dataset, lr=lr, warmup=warmup, **RESNET)
    for n, (epochs, levels) in {2: (4, 7), 4: (3, 6), 6: (3, 5)}.items():
        out[f"fmnist_conv{n}_cpu"] = dict(
            description=f"{NAMES[n]} for 2 CPU cores: fashion-mnist-32, first 10,000 training images, {epochs} "
            f"epochs x {levels} levels of two paper levels each, 2 trials, ticket + reinit",
            dataset="fashion-mnist-32", **_cpu_conv(n, epochs, levels))
    for suffix, (lr, warmup) in {"": (0.1, 0.0), "_warmup": (0.03, 2 / 3)}.items():
        out[f"fmnist_resnet20_cpu{suffix}"] = dict(
            description=f"ResNet-20 width 8 for 2 CPU cores: lr {lr:g}{' with warmup over 2/3 of training' if warmup else ''}"
            ", 8 epochs of the first 10,000 images x 5 levels of two paper levels each (36% of the convs), "
            "2 trials, ticket + reinit (add --rewind-step K for rewinding)",
            dataset="fashion-mnist-32", **_cpu_resnet(lr, warmup))
    return out
