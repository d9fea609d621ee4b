"""The foundation's presets: LeNet-300-100 on MNIST (Frankle & Carbin 2019), its quick lottery and the
supermask presets (Zhou et al. 2019; Ramanujan et al. 2020). Fields not named take ``lth.presets.Config``'s
defaults, which are the paper's LeNet lottery (Adam 1.2e-3, batch 60, 50K iterations, 20% a level)."""

from __future__ import annotations

# The LeNet supermask presets: signed-constant weights, 50% density, batch 128, 8 epochs.
_MNIST_SUPERMASK = dict(init="signed_constant", density=0.5, batch_size=128, epochs=8, eval_every=430)


def presets() -> dict[str, dict]:
    return {
        "mnist_lenet_300_100": dict(
            description="Frankle & Carbin 2019 LeNet-300-100 on MNIST: Adam 1.2e-3, batch 60, 50K iterations, "
            "prune 20%/level (output 10%), reset to init",
            # The paper feeds pixels in [0, 1]; its Adam rate is tuned for that (standardized inputs
            # cost ~0.2 points of dense accuracy at early stop here: see docs/lenet_paper/).
            normalize=False,
        ),
        "mnist_quick": dict(
            description="A few-minute LeNet lottery run on MNIST: 2 epochs/level, 5 levels at 50%/level, "
            "both controls",
            epochs=2,
            levels=5,
            prune_rate=0.5,
            layer_rates={"fc3.weight": 0.25},
            controls=["reinit", "random"],
            eval_every=200,
        ),
        "mnist_supermask": dict(
            description="Supermask on LeNet-300-100, weights never trained: edge-popup top-50% per layer over "
            "signed-constant weights, SGD 0.2 cosine, 8 epochs",
            **_MNIST_SUPERMASK,
            rule="topk",
            optimizer="sgd",
            lr=0.2,
            momentum=0.9,
            weight_decay=5e-4,
        ),
        "mnist_supermask_ste": dict(
            description="Supermask on LeNet-300-100, rule ste: sigmoid(score/T) >= 0.3 with T annealed 1 -> 0.05, "
            "50% target density, Adam 0.03 cosine, 8 epochs",
            **_MNIST_SUPERMASK,
            rule="ste",
            density_penalty=0.1,
            optimizer="adam",
            lr=0.03,
        ),
        "mnist_supermask_bernoulli": dict(
            description="Supermask on LeNet-300-100, rule bernoulli (Zhou et al. 2019): sampled masks, "
            "deterministic at evaluation, Adam 0.1 cosine, 8 epochs",
            **_MNIST_SUPERMASK,
            rule="bernoulli",
            optimizer="adam",
            lr=0.1,
        ),
    }
