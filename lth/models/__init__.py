"""Model registry: a name in a config -> a constructor, plus what a model knows about itself.

Registry ``MODELS``. Contract of an entry (:class:`ModelEntry`):

- ``make(shape, num_classes, **model_args) -> nn.Module``: the network for a task's example shape and
  classes (or vocabulary); ``build(name, shape, classes, **args)`` calls it. Parameter names are the
  names masks, checkpoints and tickets use.
- ``inputs``: the kind of example it takes (``"image"``, ``"tokens"``), matched against the task
  entry's ``inputs`` (``lth.tasks``) when a config is validated.
- ``context``: for token models, the example length the model is built for when the config gives
  none (``None``: the config must give ``seq_len``).

What a built model knows about itself, each a function here with a default that a model overrides by
defining the method (or attribute) of the same name:

- :func:`output_layers` ``(model) -> [param names]``: the output layer's parameters (LeNet: ``fc3.*``;
  GPT: its tied ``embed.weight``, which is its ``lm_head``). Default: the parameters under the module
  ``model.output_layer`` names, else the last matrix. ``Config.output_rate`` prunes these.
- :func:`param_groups` ``(model) -> {"decay": [...], "no_decay": [...]}``: parameter names with and
  without weight decay. Default: norms, biases and every other 1-D parameter get none.
- :func:`default_prunable` ``(model, cfg) -> [param names]``: what pruning acts on. Default:
  matrices and kernels (dim >= 2), biases only with ``cfg.prune_biases``, nothing named ``embed``
  unless ``cfg.prune_embeddings``. The CNNs (``conv2/4/6``, ``vgg19``, ``resnet20``) define their own,
  :func:`lth.models.layers.weights_only`: a BatchNorm's gain and shift are never pruned, even with
  ``cfg.prune_biases``.

Image entries take the task's example shape ``(C, H, W)``; ``check`` refuses unknown ``model_args``
and bad values in one line (``lenet_300_100``: ``hidden``; ``resnet20``: ``width``, the first
stage's filters, 16 by default; the others take none). The translation models ``seq2seq_tiny``,
``seq2seq_cpu``, ``seq2seq_base`` (``lth.models.seq2seq``) take ``inputs="pairs"``: ``(src, tgt)`` token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A registered model family member (see the module docstring)."""

    name: str
    make: Callable[..., nn.Module]
    inputs: str = "image"
    context: int | None = None
    # check(model_args): raises ConfigError (one line) on an unknown name or a bad value, before anything
    # is built or written; None: the constructor's keyword parameters (inspect.signature) name what it takes
    check: Callable[[dict], None] | None = None

    def __call__(self, shape, num_classes: int, **kwargs) -> nn.Module:
        return self.make(shape, num_classes, **kwargs)


MODELS: Registry[ModelEntry] = Registry("model")


def _check_lenet(args: dict) -> None:
    unknown = sorted(set(args) - {"hidden"})
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to lenet_300_100 (it takes: hidden, a list of layer widths)")
    hidden = args.get("hidden", [300, 100])
    if (not isinstance(hidden, (list, tuple)) or not hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)):
        raise ConfigError(f"model_args hidden must be a non-empty list of positive layer widths, got {hidden!r} "
                          "(on the command line: hidden=300:100)")


def _lenet(shape, num_classes, **kw):
    from .lenet import LeNet

    _check_lenet(kw)
    c, h, w = shape
    return LeNet(c * h * w, tuple(kw.get("hidden", (300, 100))), num_classes)


def _check_gpt(args: dict) -> None:
    from .gpt import GPTConfig

    _check_fields(GPTConfig, "GPT", args)


def _check_fields(config, label: str, args: dict, computed: tuple[str, ...] = ()) -> None:
    """``args`` name fields of the dataclass ``config`` (not the ``computed`` ones) with values of their types."""
    from dataclasses import fields

    types = {f.name: str(f.type) for f in fields(config) if f.name not in computed}
    unknown = sorted(set(args) - set(types))
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to {label} (it takes: {', '.join(types)})")
    for k, v in args.items():
        t = types[k]
        if v is None and "None" in t:
            continue
        ok = (isinstance(v, bool) if t.startswith("bool") else
              isinstance(v, int) and not isinstance(v, bool) if t.startswith("int") else
              isinstance(v, (int, float)) and not isinstance(v, bool) if t.startswith("float") else True)
        if not ok:
            raise ConfigError(f"model_args {k} must be {t.split(' |')[0]}, got {v!r}")


def _gpt(size):
    def make(shape, num_classes, **kw):
        from . import gpt

        return gpt.build(shape, num_classes, size=size, **kw)

    return make


def _image_shape(name: str, shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(f"{name} takes images (C, H, W), got example shape {tuple(shape)}")
    return tuple(int(d) for d in shape)


def _no_args(name: str) -> Callable[[dict], None]:
    def check(args: dict) -> None:
        if args:
            raise ConfigError(f"model_args {sorted(args)} unknown to {name} (it takes none)")

    return check


def _conv(pairs: int):
    """Conv-2/4/6 (lth.models.conv): the fc input is computed from the task's H and W."""

    def make(shape, num_classes, **kw):
        from .conv import Conv

        _no_args(f"conv{2 * pairs}")(kw)
        c, h, w = _image_shape(f"conv{2 * pairs}", shape)
        return Conv(pairs, c, h, w, num_classes)

    return make


def _vgg(shape, num_classes, **kw):
    """VGG-19 (lth.models.vgg), Liu et al.'s CIFAR variant: takes no model_args."""
    from .vgg import VGG

    _no_args("vgg19")(kw)
    c, h, w = _image_shape("vgg19", shape)
    return VGG(c, h, w, num_classes)


def _check_resnet(args: dict) -> None:
    unknown = sorted(set(args) - {"width"})
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to resnet20 (it takes: width, the first stage's filters)")
    width = args.get("width", 16)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"model_args width must be a positive int (16: the paper's ResNet-20), got {width!r}")


def _resnet(shape, num_classes, **kw):
    """ResNet-20 (lth.models.resnet): model_args width = the first stage's filters (16; 8 halves all)."""
    from .resnet import ResNet

    _check_resnet(kw)
    c, _, _ = _image_shape("resnet20", shape)
    return ResNet(c, num_classes, width=kw.get("width", 16))


MODELS.register("lenet_300_100")(ModelEntry("lenet_300_100", _lenet, "image", check=_check_lenet))
# The CNNs of Frankle & Carbin 2019 (issue 11), one file per family: conv.py, vgg.py, resnet.py.
MODELS.register("conv2")(ModelEntry("conv2", _conv(1), "image", check=_no_args("conv2")))
MODELS.register("conv4")(ModelEntry("conv4", _conv(2), "image", check=_no_args("conv4")))
MODELS.register("conv6")(ModelEntry("conv6", _conv(3), "image", check=_no_args("conv6")))
MODELS.register("vgg19")(ModelEntry("vgg19", _vgg, "image", check=_no_args("vgg19")))
MODELS.register("resnet20")(ModelEntry("resnet20", _resnet, "image", check=_check_resnet))
# gpt_cpu: trains on two CPU cores in minutes; gpt_golf: the parameter-golf baseline shape (lth.models.gpt).
# Their contexts are lth.models.gpt.SIZES[...]["seq_len"] (asserted in tests/test_registries.py).
MODELS.register("gpt_cpu")(ModelEntry("gpt_cpu", _gpt("cpu"), "tokens", context=256, check=_check_gpt))
MODELS.register("gpt_golf")(ModelEntry("gpt_golf", _gpt("golf"), "tokens", context=1024, check=_check_gpt))


def _bert(shape, num_classes, **kw):
    from . import bert

    return bert.build(shape, num_classes, **kw)


def _check_bert(args: dict) -> None:
    from . import bert

    bert.check_args(args)


# BERT encoders (issue 13, lth.models.bert): Hugging Face BertModel names; the architecture from a local HF
# directory (model_args pretrained; default all-MiniLM-L6-v2), θ0 from weights=checkpoint:DIR/model.safetensors.
# Inputs "ids_mask": keyword inputs input_ids and attention_mask [B, T] (and mlm_positions for the MLM head).
MODELS.register("bert")(ModelEntry("bert", _bert, "ids_mask", check=_check_bert))

def _check_seq2seq(args: dict) -> None:
    from .seq2seq import Seq2SeqConfig

    _check_fields(Seq2SeqConfig, "seq2seq", args, computed=("vocab_size",))


def _seq2seq(size):
    def make(shape, num_classes, **kw):
        from . import seq2seq

        _check_seq2seq(kw)
        return seq2seq.build(shape, num_classes, size=size, **kw)

    return make


# The translation track (issue 12, Brix et al. 2020): pre-LN encoder-decoder Transformers over sentence
# pairs (inputs "pairs": source and target token ids), sizes in lth.models.seq2seq.SIZES.
for _size in ("tiny", "cpu", "base"):
    MODELS.register(f"seq2seq_{_size}")(ModelEntry(f"seq2seq_{_size}", _seq2seq(_size), "pairs", check=_check_seq2seq))


def entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def check_args(name: str, args: dict) -> None:
    """One-line ConfigError if model ``name`` does not take ``args`` (unknown names, wrong types): the
    entry's ``check``, else the keyword parameters of its constructor's signature."""
    import inspect

    e = MODELS.get(name)
    if e.check is not None:
        return e.check(dict(args))
    params = list(inspect.signature(e.make).parameters.values())[2:]  # after shape, num_classes
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # takes anything: it checks its own arguments when built
    unknown = sorted(set(args) - {p.name for p in params})
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to {name} (it takes: {', '.join(p.name for p in params)})")


def build(name: str, shape, num_classes: int, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS.get(name)(shape, num_classes, **kwargs)


def output_layers(model: nn.Module) -> list[str]:
    """Names of the output layer's parameters (see the module docstring)."""
    own = getattr(model, "output_layers", None)
    if callable(own):
        return list(own())
    params = dict(model.named_parameters())
    out = getattr(model, "output_layer", None)
    if out is not None:
        return [n for n in params if n.startswith(f"{out}.")]
    matrices = [n for n, p in params.items() if p.dim() >= 2]
    return matrices[-1:]


def param_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names with (``decay``) and without (``no_decay``: 1-D, norms, biases) weight decay."""
    own = getattr(model, "param_groups", None)
    if callable(own):
        return own()
    groups: dict[str, list[str]] = {"decay": [], "no_decay": []}
    for n, p in model.named_parameters():
        groups["decay" if p.dim() >= 2 else "no_decay"].append(n)
    return groups


def default_prunable(model: nn.Module, cfg) -> list[str]:
    """The parameters pruning acts on for ``cfg`` (see the module docstring)."""
    own = getattr(model, "default_prunable", None)
    if callable(own):
        return list(own(cfg))
    from ..masks import prunable_names

    exclude = () if cfg.prune_embeddings else ("embed",)
    return prunable_names(model, biases=cfg.prune_biases, exclude=exclude)
