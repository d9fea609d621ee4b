"""Tasks: data + loss + metrics for one kind of problem. A task knows nothing about pruning.

Registry ``TASKS``, keyed by the config's ``dataset`` (``mnist``, ``fashion-mnist``, ``fashion-mnist-32``,
``cifar10``, ``text``, ``translation``; the BERT track's ``bert_bbc``, ``bert_fortunes``, ``bert_mlm`` in ``bert_tasks.py``).
A new track adds a file here and one ``TASKS.register`` call; nothing else
dispatches on a dataset name.

Contract of an entry (:class:`TaskEntry`):

- ``load(cfg, device) -> task``: the task instance (its data on ``device``).
- ``shape(cfg) -> (example shape, classes)``: without loading data (a ticket is rebuilt from it);
  ``classes`` is the number of classes or the vocabulary size.
- ``metrics``: a :class:`lth.metrics.MetricSpec`: the ``results.csv`` columns the task writes,
  which one early-stops and in which direction, and the headline column of tables and plots.
- ``inputs``: the kind of example the task feeds a model (``"image"``, ``"tokens"``, ``"pairs"``: source
  and target token ids, translation); a model entry
  (``lth.models.MODELS``) names the kind it takes, and a config whose two kinds differ is refused.
- ``needs_data_dir``: the task has no embedded copy of its data.
- ``ticket_meta(cfg) -> dict``: what a packed ticket records to check, when it is evaluated, that
  the data rebuilt then is the data it was trained on (the embedded corpus's tokenizer hash).
- ``check(cfg)``: raises :class:`~lth.errors.ConfigError` (one line) for task-specific config values
  that cannot work (a tokenizer on an image task, ...); runs in ``lth.presets.validate``.

Contract of a task instance:

- ``shape``, ``num_classes``, ``train_size`` (examples a step's indices range over), ``to(device)``;
  ``splits`` (optional, default ``("val", "test")``): a task with one held-out split reports it as
  ``test_*`` too, so every results row has the same columns.
- ``batch(idx) -> (x, y)``: ``idx`` is ``[M, B]`` indices into the training split (member ``m``'s
  data order comes from its seed and the step, see ``lth.train.Batches``), ``x`` and ``y`` lead with
  ``[M, B]``. Randomness in it (augmentation, token masking) draws from torch's default generator,
  which the trainer seeds from (member seeds, step, micro-batch, rank) for that step alone
  (``lth.train.step_rng``): the same batches every run, and a resumed run sees what the killed one
  would have.
- ``data_order(seed, epoch, n, batch_size) -> permutation`` (optional): the task's own per-member
  order instead of ``lth.train.data_order`` (translation: length-bucketed batches); a function of
  (seed, epoch) like it, so a resumed run sees the same batches.
- ``loss(out, y) -> scalar``: the sum over members of each member's mean loss (so each member gets
  exactly its own gradient).
- ``evaluate(forward, members, split, *, rank=0, world=1) -> sums``: per-member SUMS over this
  rank's share of ``split``, as tensors with a leading member dimension (``[M]`` or ``[M, ...]``, e.g.
  n-gram match counts per order), plus ``"n"``. The trainer all-reduces every entry over ranks, so
  data-parallel evaluation equals one process.
- ``finalize(sums) -> metrics`` (optional): turns the all-reduced sums into ``[M]`` metrics named
  without the split (``loss``, ``acc``, ``bleu``). Without it, :func:`mean_of_sums`: every sum divided
  by ``n``. Corpus-level metrics (BLEU, chrF) are not means: their task sums the statistics they
  need and computes the metric here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..metrics import ACC, BPB, MetricSpec
from ..registry import Registry

Shape = tuple[tuple[int, ...], int]


def _no_checks(cfg) -> None:
    return None


def _no_meta(cfg) -> dict:
    return {}


@dataclass(frozen=True)
class TaskEntry:
    """A registered task (see the module docstring for the contract)."""

    name: str
    load: Callable[[Any, str], Any]
    shape: Callable[[Any], Shape]
    metrics: MetricSpec
    inputs: str
    needs_data_dir: bool = False
    check: Callable[[Any], None] = _no_checks
    ticket_meta: Callable[[Any], dict] = _no_meta


TASKS: Registry[TaskEntry] = Registry("dataset")


def mean_of_sums(sums: dict) -> dict:
    """The default finalize: every sum divided by ``n`` (loss, accuracy and bits per byte are means)."""
    n = sums["n"]
    return {k: v / n for k, v in sums.items() if k != "n"}


def finalize(task, sums: dict) -> dict:
    """The task's metrics from all-reduced sums: ``task.finalize`` if it has one, else the means."""
    own = getattr(task, "finalize", None)
    return own(sums) if own is not None else mean_of_sums(sums)


def entry(cfg) -> TaskEntry:
    """The entry a config's ``dataset`` names (one-line ConfigError listing the choices otherwise)."""
    return TASKS.get(cfg.dataset)


def load(cfg, device: str):
    return entry(cfg).load(cfg, device)


def shape(cfg) -> Shape:
    return entry(cfg).shape(cfg)


# --- image classification ---------------------------------------------------------------------------

IMAGE_METRICS = MetricSpec(("val_loss", "val_acc", "test_loss", "test_acc"), (ACC,))


def _image(name: str, pad: int = 0, augments: bool = False) -> Callable[[Any, str], Any]:
    def load_images(cfg, device):
        from ..data import load_mnist
        from .classify import ImageClassification

        data = load_mnist(cfg.data_dir, name=name, normalize=cfg.normalize, pad=pad)
        return ImageClassification(data, augment=augments and bool(cfg.augment),
                                   train_images=cfg.train_images).to(device)

    return load_images


def _image_shape(cfg) -> Shape:
    return (1, 28, 28), 10  # the MNIST file layout


def _no_augment(cfg) -> None:
    """``augment`` on a task without augmentation (it would be ignored, silently): one line."""
    if cfg.augment:
        raise ConfigError(f"dataset {cfg.dataset} has no augmentation (augment is for the 32x32 image tasks: "
                          f"fashion-mnist-32, cifar10)")


def _augmented_image_check(cfg) -> None:
    if cfg.tokenizer not in (None, "bytes"):
        from ..data.text import parse_tokenizer

        parse_tokenizer(cfg.tokenizer)
        raise ConfigError(f"tokenizer {cfg.tokenizer} is for dataset text, not {cfg.dataset}")


def _image_check(cfg) -> None:
    _augmented_image_check(cfg)
    _no_augment(cfg)


TASKS.register("mnist")(TaskEntry("mnist", _image("mnist"), _image_shape, IMAGE_METRICS, "image", check=_image_check))
TASKS.register("fashion-mnist")(TaskEntry("fashion-mnist", _image("fashion-mnist"), _image_shape, IMAGE_METRICS,
                                          "image", check=_image_check))

# The CNN track's inputs (issue 11): every CNN keeps the paper's CIFAR shape, 32x32. Fashion-MNIST is
# zero-padded 28 -> 32 (2 pixels each side) before normalizing, so the border is black like the background.
# Both take augment=true: the CIFAR training augmentation (lth.tasks.augment).
TASKS.register("fashion-mnist-32")(TaskEntry("fashion-mnist-32", _image("fashion-mnist", pad=2, augments=True),
                                             lambda cfg: ((1, 32, 32), 10), IMAGE_METRICS, "image",
                                             check=_augmented_image_check))


def _cifar10_load(cfg, device):
    from ..data.cifar import load_cifar10
    from .classify import ImageClassification

    data = load_cifar10(cfg.data_dir, normalize=cfg.normalize)
    return ImageClassification(data, augment=bool(cfg.augment), train_images=cfg.train_images).to(device)


def _cifar10_check(cfg) -> None:
    _augmented_image_check(cfg)
    if cfg.data_dir is not None:  # the six batch files are there (before a run directory is made)
        from ..data.cifar import locate
        from ..errors import DataError

        try:
            locate(cfg.data_dir)
        except DataError as exc:
            raise ConfigError(str(exc)) from None


# CIFAR-10 from its python batches in data_dir (`lth data download cifar10`), per-channel normalization.
TASKS.register("cifar10")(TaskEntry("cifar10", _cifar10_load, lambda cfg: ((3, 32, 32), 10), IMAGE_METRICS,
                                    "image", needs_data_dir=True, check=_cifar10_check))


# --- language modeling ----------------------------------------------------------------------------

TEXT_METRICS = MetricSpec(("val_loss", "val_acc", "val_bpb", "test_loss", "test_acc", "test_bpb"), (BPB, ACC))


def seq_len(cfg) -> int:
    """Tokens per example: ``cfg.seq_len``, else ``model_args["seq_len"]``, else the model's context."""
    from .. import models

    if cfg.seq_len or cfg.model_args.get("seq_len"):
        return int(cfg.seq_len or cfg.model_args["seq_len"])
    context = models.entry(cfg.model).context
    if context is None:
        raise ConfigError(f"model {cfg.model} has no default context: give seq_len")
    return int(context)


def _text_load(cfg, device):
    from ..data.text import load_tokens
    from .lm import LanguageModeling

    tokens = load_tokens(cfg.data_dir, tokenizer=cfg.tokenizer)
    return LanguageModeling(tokens, seq_len(cfg), eval_tokens=cfg.eval_tokens).to(device)


def _text_shape(cfg) -> Shape:
    """A token directory's vocabulary is in its meta.json; the embedded corpus's is the tokenizer's."""
    import json
    from pathlib import Path

    if cfg.data_dir is None:
        from ..data.text import parse_tokenizer

        return (seq_len(cfg),), parse_tokenizer(cfg.tokenizer) or 256
    meta = Path(cfg.data_dir) / "meta.json"
    if not meta.exists():
        raise ConfigError(f"{cfg.data_dir} is not a token directory (no meta.json; see `lth data encode`)")
    return (seq_len(cfg),), int(json.loads(meta.read_text())["vocab_size"])


def _text_check(cfg) -> None:
    if cfg.train_images is not None:
        raise ConfigError("train_images is for the image tasks, not dataset text")
    _no_augment(cfg)
    if cfg.tokenizer in (None, "bytes"):
        return
    from ..data.text import parse_tokenizer

    parse_tokenizer(cfg.tokenizer)
    if cfg.data_dir is not None:
        raise ConfigError(f"tokenizer {cfg.tokenizer} is for the embedded corpus; data_dir {cfg.data_dir} brings "
                          f"its own tokens (see `lth data encode`)")


def _text_ticket_meta(cfg) -> dict:
    """An embedded-corpus bpe<N> run's tokenizer is rebuilt, not shipped: record its hash to check."""
    if cfg.data_dir is not None or cfg.tokenizer in (None, "bytes"):
        return {}
    from ..data.text import embedded_tokenizer

    return {"tokenizer_sha256": embedded_tokenizer(cfg.tokenizer).sha256}


TASKS.register("text")(TaskEntry("text", _text_load, _text_shape, TEXT_METRICS, "tokens", check=_text_check,
                                 ticket_meta=_text_ticket_meta))


# --- translation (issue 12) -------------------------------------------------------------------------

def _translation_metrics() -> MetricSpec:
    from ..metrics import Column

    bleu = Column("test_bleu", "test BLEU", "", 1.0, ".2f", "max", ("es", "final"), "bleu_vs_remaining.png",
                  "Test BLEU at early stop (sacrebleu)")
    chrf = Column("test_chrf", "test chrF", "", 1.0, ".2f", "max", ("es",))
    val = Column("val_bleu", "dev BLEU", "", 1.0, ".2f", "max", ("es", "best"))
    try:
        from .translate import signatures

        notes = signatures()
    except ConfigError:  # sacrebleu missing: the task refuses to load, the registry still imports
        notes = ()
    return MetricSpec(("val_loss", "val_bleu", "val_chrf", "test_loss", "test_bleu", "test_chrf"), (bleu, chrf, val),
                      early_stop="val_bleu", mode="max", notes=notes)


def _translation_data(cfg):
    """(the corpus with the training split cut to ``train_pairs``, its joint tokenizer)."""
    import dataclasses

    from ..data.parallel import joint_tokenizer, load_parallel, parse_vocab

    data = load_parallel(cfg.data_dir, reverse=bool(cfg.reverse))
    data = dataclasses.replace(data, train=data.train.head(cfg.train_pairs))
    tok = joint_tokenizer(data.train, parse_vocab(cfg.tokenizer))
    return dataclasses.replace(data, tokenizer_sha256=tok.sha256), tok  # lth.pack.evaluate checks it


def _translation_load(cfg, device):
    from .translate import Translation

    data, tok = _translation_data(cfg)
    return Translation(data, tok, label_smoothing=cfg.label_smoothing or 0.0, beam=cfg.beam or 4,
                       eval_pairs=cfg.eval_pairs).to(device)


def _translation_shape(cfg) -> Shape:
    from ..data.parallel import parse_vocab

    return (2,), parse_vocab(cfg.tokenizer)


def _translation_check(cfg) -> None:
    from ..data.parallel import parse_vocab

    parse_vocab(cfg.tokenizer)
    if cfg.train_images is not None:
        raise ConfigError("train_images is for the image tasks; translation takes train_pairs")
    _no_augment(cfg)
    for k in ("train_pairs", "eval_pairs", "beam"):
        v = getattr(cfg, k)
        if v is not None and v < 1:
            raise ConfigError(f"{k} must be >= 1, got {v}")
    if cfg.label_smoothing is not None and not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")


def _translation_ticket_meta(cfg) -> dict:
    """The joint tokenizer is rebuilt from the corpus, not shipped: record its hash to check."""
    return {"tokenizer_sha256": _translation_data(cfg)[1].sha256}


# Sentence pairs (lth.data.parallel; data_dir: a directory with one ref<TAB>en<TAB>es TSV, None: the embedded
# Bible pairs) in a joint unigram vocabulary (tokenizer "unigram<N>"); BLEU/chrF in finalize (lth.tasks.translate).
TASKS.register("translation")(TaskEntry("translation", _translation_load, _translation_shape, _translation_metrics(),
                                        "pairs", check=_translation_check, ticket_meta=_translation_ticket_meta))


# --- the BERT track (issue 13): text classification and masked LM, lth.tasks.bert_tasks ---------------
from . import bert_tasks  # noqa: E402,F401  (registers bert_bbc, bert_fortunes, bert_mlm)
