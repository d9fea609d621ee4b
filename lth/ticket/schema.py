"""The ticket header's schema: what :func:`lth.ticket.decode` checks in ``arch`` and ``meta`` before any
mask or float payload is decoded and before anything uses the header.

A ticket is untrusted input (it is the file lth exists to ship), so the reader checks, in one place:

* counts first: at most ``MAX_ENTRIES`` mask entries and as many float entries;
* ``arch``: exactly the fields ``model`` (a registered :data:`lth.models.MODELS` name), ``input_shape``
  (1 to 4 positive ints), ``num_classes`` (a positive int) and ``kwargs`` (a dict, at most 4 kB of
  JSON); the architecture is built on the "meta" device (shapes only, nothing allocated) and its
  parameters and buffers must each number at most ``max_params`` (default ``MAX_PARAMS``, 50 million;
  ``--max-params`` on ``lth eval``, ``inspect``, ``generate`` and ``train --ticket`` raises it);
* the masks: each names a parameter of that architecture, with its shape (checked on the header's
  entries, before a mask is decoded), so the masks can never ask for more than the architecture holds;
  with a ``meta.config``, they cover exactly the tensors that config prunes
  (``lth.models.default_prunable``), no more, no fewer;
* ``meta`` (free JSON, but what lth reads from it is checked): ``config`` a dict of
  :class:`lth.presets.Config` fields with values of their types (a field this lth does not know: the
  ticket comes from a newer lth, refused naming both versions), ``config.model`` the arch's model,
  ``config.dataset`` / ``dataset`` a registered task whose kind of input is the model's,
  ``config.data_dir`` None or a path string, ``tokenizer_sha256`` a SHA-256 hex string, ``results`` a
  dict of numbers, ``lth_version`` a string.

Every failure is a one-line :class:`TicketError` naming the field.
"""

from __future__ import annotations

import json
import re
import warnings

import torch

from .coding import TicketError

MAX_PARAMS = 50_000_000  # parameters (and, separately, buffer entries) of a ticket's architecture
MAX_ENTRIES = 10_000  # mask entries, and float entries, of one ticket
MAX_KWARGS_BYTES = 4096  # arch.kwargs as JSON
ARCH_FIELDS = ("model", "input_shape", "num_classes", "kwargs")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
          "list": (list,), "None": (type(None),)}


def check_counts(header: dict) -> None:
    """At most MAX_ENTRIES mask and float entries each: checked before any entry is looked at."""
    for key in ("masks", "floats"):
        entries = header.get(key)
        if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
            raise TicketError(f"header {key} has {len(entries):,} entries, over lth.ticket.MAX_ENTRIES={MAX_ENTRIES:,}")


def _int(value, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TicketError(f"{where} must be an int in [{lo}, {hi}], got {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_arch(arch: dict) -> tuple[str, list, int, dict]:
    """The arch dict's fields, typed and in range (nothing built yet)."""
    from .. import models

    unknown = sorted(set(arch) - set(ARCH_FIELDS))
    if unknown:
        raise TicketError(f"arch has unknown field {unknown[0]!r} (known: {', '.join(ARCH_FIELDS)})")
    for key in ("model", "input_shape", "num_classes"):
        if key not in arch:
            raise TicketError(f"arch is missing {key!r}")
    model = arch["model"]
    if not isinstance(model, str) or model not in models.MODELS:
        raise TicketError(f"arch.model {_short(model)} is not a registered model ({', '.join(sorted(models.MODELS))})")
    shape = arch["input_shape"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
        raise TicketError(f"arch.input_shape must be a list of 1 to 4 positive ints, got {_short(shape)}")
    for d in shape:
        _int(d, "arch.input_shape entries", 1, 1 << 24)
    classes = _int(arch["num_classes"], "arch.num_classes", 1, 1 << 24)
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise TicketError(f"arch.kwargs must be a dict, got {type(kwargs).__name__}")
    if len(json.dumps(kwargs)) > MAX_KWARGS_BYTES:
        raise TicketError(f"arch.kwargs is over {MAX_KWARGS_BYTES} bytes of JSON")
    return model, shape, classes, kwargs


def arch_model(arch: dict, max_params: int) -> torch.nn.Module:
    """Build the architecture on the "meta" device (nothing allocated) and check its size."""
    from .. import models

    model, shape, classes, kwargs = check_arch(arch)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = models.build(model, shape, classes, **kwargs)
    except Exception as e:
        raise TicketError(f"arch: cannot build architecture {model!r}: {e}") from None
    params = dict(net.named_parameters())
    for what, n in (("parameters", sum(p.numel() for p in params.values())),
                    ("buffer entries", sum(b.numel() for b in net.buffers()))):
        if n > max_params:
            raise TicketError(f"arch: {model} {json.dumps(kwargs)} has {n:,} {what}, over the limit of "
                              f"{max_params:,} (raise it with --max-params or lth.ticket.MAX_PARAMS)")
    return net


def check_prunable(names: list[str], net: torch.nn.Module, config: dict, model: str) -> None:
    """The masks cover exactly what the ticket's config prunes (``lth.models.default_prunable`` of the
    config, as the lottery and supermask runs that write tickets choose it): no masked tensor missing,
    none extra. A ticket without ``meta.config`` is not checked here (its masks still fit the arch)."""
    from .. import models
    from ..presets import Config

    want = set(models.default_prunable(net, Config(**config)))
    have = set(names)
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        what = f"a mask for {extra[0]!r}, which" if extra else f"no mask for {missing[0]!r}, which"
        verb = "does not prune" if extra else "prunes"
        raise TicketError(f"masks: {what} meta.config {verb} ({model}: {len(want)} prunable tensors, "
                          f"{len(have)} masks)")


def check_mask_entries(entries: list[dict], shapes: dict[str, tuple], model: str) -> None:
    """Each mask entry names a parameter of the architecture, with its shape (before any is decoded)."""
    for e in entries:
        name = e["name"]
        if name not in shapes:
            raise TicketError(f"mask {name!r} names no parameter of {model}")
        if tuple(e["shape"]) != shapes[name]:
            raise TicketError(f"mask {name!r} has shape {list(e['shape'])}, the parameter of {model} "
                              f"{list(shapes[name])}")


def _check_type(where: str, value, annotation: str) -> None:
    parts = [p.strip() for p in str(annotation).split("|")]
    kinds = tuple(t for p in parts for t in _TYPES.get(p.split("[")[0], ()))
    if not kinds or len(kinds) < len(parts):  # an annotation this check does not know: anything goes
        return
    if isinstance(value, bool) and bool not in kinds:
        raise TicketError(f"{where} must be {annotation}, got {_short(value)}")
    if not isinstance(value, kinds):
        raise TicketError(f"{where} must be {annotation}, got {type(value).__name__} {_short(value)}")


def check_config(config, writer: str) -> None:
    """``meta.config``: known Config fields, each of its type."""
    from .. import __version__
    from ..presets import field_types

    if not isinstance(config, dict):
        raise TicketError(f"meta.config must be a dict, got {type(config).__name__} {_short(config)}")
    types = field_types()
    for key, value in config.items():
        if key not in types:
            raise TicketError(f"meta.config: written by {writer} with config field {key!r} this lth "
                              f"({__version__}) does not know")
        _check_type(f"meta.config.{key}", value, types[key])
    data_dir = config.get("data_dir")
    if isinstance(data_dir, str) and (not data_dir or "\0" in data_dir):
        raise TicketError(f"meta.config.data_dir is not a path: {_short(data_dir)}")


def check_meta(meta: dict, model: str) -> None:
    """What lth reads from ``meta``: typed, registered, consistent with ``arch.model``."""
    from .. import models, tasks

    writer = meta.get("lth_version")
    if writer is not None and not isinstance(writer, str):
        raise TicketError(f"meta.lth_version must be a string, got {_short(writer)}")
    writer = f"lth {writer}" if writer else "another lth (one that did not record its version)"
    if "config" in meta:
        check_config(meta["config"], writer)
    config = meta.get("config") or {}
    sha = meta.get("tokenizer_sha256")
    if sha is not None and not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise TicketError(f"meta.tokenizer_sha256 must be 64 lowercase hex digits, got {_short(sha)}")
    results = meta.get("results")
    if results is not None and (not isinstance(results, dict) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in results.values())):
        raise TicketError(f"meta.results must be a dict of numbers, got {_short(results)}")
    if config.get("model", model) != model:
        raise TicketError(f"meta.config.model {config['model']!r} is not the architecture's {model!r}")
    for where, dataset in (("meta.dataset", meta.get("dataset")), ("meta.config.dataset", config.get("dataset"))):
        if dataset is None:
            continue
        if not isinstance(dataset, str) or dataset not in tasks.TASKS:
            raise TicketError(f"{where} {_short(dataset)} is not a registered task ({', '.join(sorted(tasks.TASKS))})")
        kind, wants = tasks.TASKS.get(dataset).inputs, models.entry(model).inputs
        if kind != wants:
            raise TicketError(f"{where} {dataset!r} feeds {kind}, but the architecture {model} takes {wants}")


def check_header(arch: dict, meta: dict, mask_entries: list[dict], max_params: int | None) -> None:
    """The whole schema check (see the module docstring), in order: arch fields, meta, size, masks."""
    model = check_arch(arch)[0]
    check_meta(meta, model)
    net = arch_model(arch, MAX_PARAMS if max_params is None else max_params)
    check_mask_entries(mask_entries, {n: tuple(p.shape) for n, p in net.named_parameters()}, model)
    if isinstance(meta.get("config"), dict):
        check_prunable([e["name"] for e in mask_entries], net, meta["config"], model)
