"""Model registry: a name in a config -> a constructor taking the task's input shape and classes."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def _lenet(shape, num_classes, **kw):
    from .lenet import LeNet

    c, h, w = shape
    return LeNet(c * h * w, tuple(kw.get("hidden", (300, 100))), num_classes)


def _gpt(size):
    def make(shape, num_classes, **kw):
        from . import gpt

        return gpt.build(shape, num_classes, size=size, **kw)

    return make


# gpt_cpu: trains on two CPU cores in minutes; gpt_golf: the parameter-golf baseline shape (lth.models.gpt).
MODELS = {"lenet_300_100": _lenet, "gpt_cpu": _gpt("cpu"), "gpt_golf": _gpt("golf")}


def build(name: str, shape, num_classes: int, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](shape, num_classes, **kwargs)
