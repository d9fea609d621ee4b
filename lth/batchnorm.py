"""BatchNorm running statistics of a batched ensemble, recomputed on fixed training batches.

Interpolating two trained networks averages their weights, but a point between them has no running
statistics of its own: the averages of the ends' statistics do not describe the activations the averaged
weights produce. :func:`recompute_bn` gives each member the statistics of its own forward passes over
fixed training batches (:func:`bn_indices`: the first ``count`` batches of one seed's epoch-0 order), each
statistic the mean over those batches (what BatchNorm's ``momentum=None`` computes). Used by the
instability analysis (``lth.instability``). Torch is imported inside the functions only.
"""

from __future__ import annotations

STATS = ("running_mean", "running_var")


def batchnorms(model) -> list[str]:
    """Names of the modules with BatchNorm running statistics."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def bn_indices(seed: int, n: int, batch_size: int, count: int) -> list:
    """The fixed training batches BatchNorm statistics are recomputed on: the first ``count`` batches of
    the data order seed ``seed`` sees in epoch 0 (each a ``[batch_size]`` index tensor)."""
    from .train import Batches

    order = Batches([seed], n, batch_size)
    return [order(i)[0] for i in range(count)]


def recompute_bn(ens, task, indices: list, seed: int = 0) -> None:
    """Every member's BatchNorm running statistics, recomputed in place: reset, forward passes in
    training mode without gradients over the batches ``indices`` (batch i's randomness from
    ``step_rng([seed], i)``), each layer's statistics the mean of its per-batch statistics (what
    ``momentum=None`` gives). The forward passes run with momentum 1 (each leaves exactly its batch's
    statistics, summed here in float64): a cumulative average needs ``float(num_batches_tracked)``,
    which a vmapped member cannot give."""
    import torch

    from .train import autocast, call_with, step_rng

    names = batchnorms(ens.base)
    if not names:
        return
    bufs, mods = ens.buffer_dict(), dict(ens.base.named_modules())
    keys = [f"{n}.{k}" for n in names for k in STATS]
    dev = bufs[keys[0]].device
    sums = {k: torch.zeros_like(bufs[k], dtype=torch.float64) for k in keys}
    momenta, was = {n: mods[n].momentum for n in names}, ens.training
    try:
        with torch.no_grad():
            for n in names:
                bufs[f"{n}.running_mean"].zero_()
                bufs[f"{n}.running_var"].fill_(1.0)
                mods[n].momentum = 1.0
            ens.train()
            for i, idx in enumerate(indices):
                with step_rng([seed], i, 0, 0, dev), autocast(dev):
                    x, _ = task.batch(idx.unsqueeze(0).expand(ens.members, -1))
                    call_with(ens, x)
                for k in keys:
                    sums[k] += bufs[k].double()
            for k in keys:
                bufs[k].copy_(sums[k] / len(indices))
            for n in names:
                if f"{n}.num_batches_tracked" in bufs:
                    bufs[f"{n}.num_batches_tracked"].fill_(len(indices))
    finally:
        for n in names:
            mods[n].momentum = momenta[n]
        ens.train(was)
