"""Parallel corpora for translation: a TSV of aligned sentence pairs -> fixed splits -> token ids.

File format: UTF-8 (gzipped or not), one pair a line, ``ref<TAB>english<TAB>spanish``: three fields, none
empty. ``ref`` names the pair (``Gen.1.1``: book, chapter, verse); the split is by its book, the text before
the first ``.``. Any other line is refused with one :class:`~lth.errors.DataError` naming the file and line.

The embedded corpus (``files/translation/bible-en-es.tsv.gz``, README there): 31,077 Bible verse pairs,
World English Bible / Reina-Valera 1909 (public domain). Fixed split by book (Brix et al. 2020 train on
WMT; this is the track's CPU-sized stand-in):

* test: Ruth, Jonah, Mark, Philippians, James (``TEST_BOOKS``);
* dev: Esther, Colossians, 1 John (``DEV_BOOKS``), for early stopping;
* train: the other 58 books.

Filter (every split): a pair is dropped when its character-length ratio ``len(en) / len(es)`` is outside
``[0.5, 2]`` or its source has more than 600 characters (:func:`keep`). On the embedded corpus that drops
63 pairs (60 train, 1 dev, 2 test; the source-length rule only Revelation 22:21, whose English line holds
the translation's glossary) and leaves 29,628 / 366 / 1,020 pairs (``tests/test_translation.py``).

Direction: English -> Spanish; ``reverse=True`` gives Spanish -> English (the filter is symmetric
except for the source length, which is then the Spanish side's).

Tokens: one joint SentencePiece unigram vocabulary over both languages of the TRAINING split
(:func:`joint_tokenizer`, ``lth.data.text.tokenizer_model`` with ``model_type="unigram"`` and the
special ids pad 1, bos 2, eos 3), trained in memory on one thread: the same model bytes every time, so
a ticket records its SHA-256 instead of shipping it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lth.data.idx import read_bytes
from lth.errors import ConfigError, DataError

EMBEDDED_PAIRS = Path(__file__).resolve().parent / "files" / "translation" / "bible-en-es.tsv.gz"
TEST_BOOKS = ("Ruth", "Jonah", "Mark", "Phil", "Jas")
DEV_BOOKS = ("Esth", "Col", "1John")
MIN_RATIO, MAX_RATIO, MAX_SOURCE_CHARS = 0.5, 2.0, 600
PAD, BOS, EOS = 1, 2, 3  # the special ids of a joint tokenizer (lth.data.text.tokenizer_model, specials=True)


@dataclass
class Split:
    """Pairs of one split: ``refs``, ``src`` and ``tgt`` strings, aligned."""

    refs: list[str] = field(default_factory=list)
    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)

    def head(self, n: int | None) -> "Split":
        return self if n is None else Split(self.refs[:n], self.src[:n], self.tgt[:n])


@dataclass
class Parallel:
    """The three splits of a corpus and how many pairs the filter dropped from each."""

    train: Split
    dev: Split
    test: Split
    dropped: dict[str, int]
    source: str
    sha256: str  # of the uncompressed file
    tokenizer_sha256: str | None = None  # of the joint tokenizer fitted on train (set by the translation task)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.dev, "dev": self.dev, "test": self.test}[name]


def book(ref: str) -> str:
    """The book of a reference: the text before its first ``.`` (``1John.5.7`` -> ``1John``)."""
    return ref.split(".", 1)[0]


def split_of(ref: str) -> str:
    b = book(ref)
    return "test" if b in TEST_BOOKS else "dev" if b in DEV_BOOKS else "train"


def keep(src: str, tgt: str) -> bool:
    """The filter: character-length ratio in [0.5, 2] and a source of at most 600 characters."""
    return MIN_RATIO <= len(src) / len(tgt) <= MAX_RATIO and len(src) <= MAX_SOURCE_CHARS


def find_tsv(data_dir: str | os.PathLike | None) -> Path:
    """The TSV a config names: ``None`` -> the embedded corpus; a file; or a directory holding exactly
    one ``*.tsv`` or ``*.tsv.gz``."""
    if data_dir is None:
        return EMBEDDED_PAIRS
    d = Path(data_dir)
    if d.is_file():
        return d
    if not d.is_dir():
        raise DataError(f"{data_dir}: no such file or directory")
    found = sorted(p for p in d.iterdir() if p.name.endswith((".tsv", ".tsv.gz")))
    if len(found) != 1:
        raise DataError(f"{data_dir}: expected exactly one .tsv or .tsv.gz file of sentence pairs, found {len(found)}")
    return found[0]


def read_pairs(path: str | os.PathLike) -> tuple[list[tuple[str, str, str]], str]:
    """``([(ref, english, spanish), ...], sha256 of the uncompressed bytes)``; a malformed line is a
    one-line DataError naming the file and line."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 (byte 0x{data[exc.start]:02x})") from None
    rows = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line and i == text.count("\n") + 1:
            break  # the final newline
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise DataError(f"{path}: line {i}: expected ref<TAB>english<TAB>spanish with none empty, "
                            f"got {len(parts)} field(s): {line[:60]!r}")
        rows.append(tuple(parts))
    if not rows:
        raise DataError(f"{path}: no sentence pairs")
    return rows, hashlib.sha256(data).hexdigest()


def load_parallel(data_dir: str | os.PathLike | None = None, reverse: bool = False) -> Parallel:
    """The corpus's splits (module docstring), English -> Spanish or with ``reverse`` the other way."""
    path = find_tsv(data_dir)
    rows, sha = read_pairs(path)
    splits = {"train": Split(), "dev": Split(), "test": Split()}
    dropped = {k: 0 for k in splits}
    for ref, en, es in rows:
        src, tgt = (es, en) if reverse else (en, es)
        name = split_of(ref)
        if not keep(src, tgt):
            dropped[name] += 1
            continue
        s = splits[name]
        s.refs.append(ref)
        s.src.append(src)
        s.tgt.append(tgt)
    for name, s in splits.items():
        if not s:
            raise DataError(f"{path}: the {name} split is empty (the split is by book: test {', '.join(TEST_BOOKS)}; "
                            f"dev {', '.join(DEV_BOOKS)}; train the rest)")
    return Parallel(splits["train"], splits["dev"], splits["test"], dropped, str(path), sha)


def parse_vocab(spec: str | None) -> int:
    """A translation config's ``tokenizer``: ``"unigram<N>"`` -> N (N in [264, 65535])."""
    n = spec[7:] if isinstance(spec, str) and spec.startswith("unigram") else ""
    if not n.isdigit() or not 264 <= int(n) <= 65535:
        raise ConfigError(f"translation tokenizer must be 'unigram<N>' with N in [264, 65535] (e.g. unigram4000), "
                          f"got {spec!r}")
    return int(n)


@functools.lru_cache(maxsize=4)
def _joint_model(src: tuple[str, ...], tgt: tuple[str, ...], vocab_size: int) -> bytes:
    from .text import tokenizer_model

    return tokenizer_model(["\n".join(src), "\n".join(tgt)], vocab_size, num_threads=1, where="translation pairs",
                           model_type="unigram", specials=True)


def joint_tokenizer(train: Split, vocab_size: int):
    """The joint unigram :class:`lth.data.text.Tokenizer` of a training split's two languages (one
    thread: the same model bytes every time; kept in memory for the process's next call)."""
    from .text import Tokenizer

    model = _joint_model(tuple(train.src), tuple(train.tgt), vocab_size)
    tok = Tokenizer.from_model(model, f"unigram{vocab_size}")
    sp = tok.sp
    if (sp.pad_id(), sp.bos_id(), sp.eos_id()) != (PAD, BOS, EOS):  # pragma: no cover - sentencepiece changed
        raise DataError(f"the joint tokenizer's special ids are {(sp.pad_id(), sp.bos_id(), sp.eos_id())}, "
                        f"not {(PAD, BOS, EOS)}")
    return tok
