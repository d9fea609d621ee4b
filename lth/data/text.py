"""Text corpora for language modeling: plain UTF-8 text -> tokens -> token shards.

Tokenizers. ``"bytes"``: the UTF-8 bytes themselves (vocabulary 256; token = byte). Or a SentencePiece
BPE model (``.model`` file) trained with :func:`train_tokenizer` on the training split, with
``byte_fallback`` (a character outside the vocabulary becomes its UTF-8 bytes ``<0xNN>``), identity
normalisation, no dummy prefix and no whitespace collapsing, so that ``decode(encode(text)) == text``
for any text (a literal ``▁`` included, see :meth:`Tokenizer.encode`) and every token stands for a fixed
number of UTF-8 bytes (:meth:`Tokenizer.token_bytes`): bits per byte can then be measured exactly.

Splits. The validation split is the END of the text: its last ``round(val_fraction * lines)`` lines
(lines end at ``"\\n"``; at least one line each side), 10% by default; the rest is the training split.
For the embedded World English Bible that is the last 3,108 of its 31,077 lines. :func:`split_text`.

Shards (the parameter-golf / modded-nanogpt format): a header of 256 little-endian int32 (magic
20240520, version 1, token count, then zeros) followed by the tokens as little-endian uint16; the file
size is exactly ``1024 + 2 * count``. :func:`encode_corpus` writes a directory::

    train.bin     tokens of the training split
    val.bin       tokens of the validation split
    val.json      {"bytes": exact UTF-8 byte count of the validation text, "tokens", "lines", "sha256"}
    meta.json     tokenizer ("bytes" or "sentencepiece"), vocab_size, token_bytes (per-token byte
                  lengths), source, val_fraction
    tokenizer.model   a copy of the SentencePiece model (SentencePiece only)

which :func:`load_tokens` reads back. ``load_tokens()`` with no directory encodes the embedded corpus in
memory: at the byte level, or with ``tokenizer="bpe1024"`` (any ``bpe<N>``) with a SentencePiece model
trained on its training split on the spot (:func:`embedded_tokenizer`: one thread, about 0.3 s, the same
model every time), so a run, a ticket or ``lth generate`` on the embedded corpus never needs a file.
:func:`tokenizer_model` also fits unigram models, jointly on several texts, with pad/bos/eos ids: the
translation track's vocabulary (``lth.data.parallel.joint_tokenizer``). Every problem with a user's file is a one-line
:class:`lth.errors.DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lth.data.idx import one_line, read_bytes
from lth.data.shards import (HEADER_BYTES, HEADER_INTS, MAGIC, MAX_VOCAB, VERSION,  # noqa: F401 - the format's
                             read_shard, write_shard)  # home is lth.data.shards; importable from here too
from lth.errors import ConfigError, DataError
from lth.io import atomic_write_bytes, atomic_write_json

VAL_FRACTION = 0.1
EMBEDDED_TEXT = Path(__file__).resolve().parent / "files" / "text" / "bible-web-en.txt.gz"


# ---------------------------------------------------------------------------------------------------
# Text and splits


def load_text(path: str | os.PathLike | None = None) -> str:
    """A UTF-8 text file (gzipped or not, told by its magic bytes); ``None``: the embedded corpus."""
    path = EMBEDDED_TEXT if path is None else path
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from exc


def count_lines(text: str) -> int:
    """Lines end at ``"\\n"``; a last line without one still counts."""
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """``(train, val)``: val is the last ``round(val_fraction * lines)`` lines (at least one line on each
    side); ``train + val == text``."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = count_lines(text)
    if n < 2:
        raise DataError(f"the text has {n} line(s); a train/validation split needs at least 2")
    k = min(max(round(val_fraction * n), 1), n - 1)
    cut = -1
    for _ in range(n - k):  # the start of line n - k is just after the (n - k)-th newline
        cut = text.index("\n", cut + 1)
    return text[: cut + 1], text[cut + 1 :]


def _lines(text: str) -> list[str]:
    """The text's lines, each with its ``"\\n"`` (so ``"".join(_lines(t)) == t``)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    return out + [parts[-1]] if parts[-1] else out


# ---------------------------------------------------------------------------------------------------
# Tokenizers
def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("SentencePiece tokenizers need the sentencepiece package: pip install sentencepiece") from exc
    return sentencepiece


class Tokenizer:
    """``"bytes"`` or a SentencePiece model: ``encode``, ``decode``, ``vocab_size``, ``token_bytes``."""

    def __init__(self, spec: str | os.PathLike = "bytes"):
        self.spec = str(spec)
        self.sp = None
        self.model_bytes = None
        if self.spec == "bytes":
            self.kind, self.vocab_size = "bytes", 256
            return
        self._load(read_bytes(spec))

    @classmethod
    def from_model(cls, model: bytes, name: str = "sentencepiece") -> "Tokenizer":
        """A SentencePiece tokenizer from its serialized model (``name`` is only for messages)."""
        tok = cls.__new__(cls)
        tok.spec = name
        tok._load(model)
        return tok

    @property
    def sha256(self) -> str:
        """Identifies the tokenizer: ``"bytes"``, or the SHA-256 of the SentencePiece model."""
        return "bytes" if self.model_bytes is None else hashlib.sha256(self.model_bytes).hexdigest()

    def _load(self, model: bytes) -> None:
        spec = self.spec
        spm = _sentencepiece()
        self.model_bytes = model
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_bytes)
        except Exception as exc:  # sentencepiece raises RuntimeError/OSError with multi-line text
            raise DataError(f"{spec}: not a SentencePiece model: {one_line(exc)}") from exc
        self.kind, self.vocab_size = "sentencepiece", int(self.sp.GetPieceSize())
        if self.vocab_size > MAX_VOCAB:
            raise DataError(f"{spec}: vocabulary of {self.vocab_size} does not fit uint16 tokens")

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint16) of ``text``, encoded line by line (no token spans a newline).

        SentencePiece writes a space as ``▁`` (U+2581), so a literal U+2581 in the text would decode
        as a space: it is encoded as its three UTF-8 byte pieces instead, which decode to itself.
        """
        if self.sp is None:
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)
        mark = [self.sp.PieceToId(f"<0x{b:02X}>") for b in "\u2581".encode("utf-8")]
        ids: list[int] = []
        for i, chunk in enumerate(text.split("\u2581")):
            if i:
                ids += mark
            ids += [t for line in self.sp.encode(_lines(chunk)) for t in line]
        return np.asarray(ids, dtype=np.uint16)

    def decode(self, ids) -> str:
        ids = [int(t) for t in np.asarray(ids).reshape(-1)]
        if self.sp is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self.sp.decode(ids)

    def token_bytes(self) -> np.ndarray:
        """[vocab_size] int64: the UTF-8 bytes each token adds to the decoded text.

        Bytes: 1. SentencePiece: a byte-fallback piece ``<0xNN>`` is 1 byte; a control or unknown piece
        0; any other piece its text with ``▁`` (U+2581, 3 bytes) counted as the 1-byte space it decodes
        to. Exact for models without a dummy prefix (the decoder strips the first ``▁`` of such a model's
        output); :func:`encode_corpus` checks the sum against the text.
        """
        if self.sp is None:
            return np.ones(256, dtype=np.int64)
        sp, out = self.sp, np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if sp.IsByte(i):
                out[i] = 1
            elif not (sp.IsControl(i) or sp.IsUnknown(i)):
                out[i] = len(sp.IdToPiece(i).replace("\u2581", " ").encode("utf-8"))
        return out


def train_tokenizer(
    source: str | os.PathLike | None,
    model_prefix: str | os.PathLike,
    vocab_size: int,
    *,
    val_fraction: float = VAL_FRACTION,
    num_threads: int | None = None,
) -> Path:
    """Train a SentencePiece BPE tokenizer; writes ``{model_prefix}.model`` atomically and returns it.

    ``source``: a ``str`` is the training text itself, used whole; a path (``pathlib.Path`` or other
    ``os.PathLike``) or ``None`` (the embedded corpus) is a text file, of which only the training split
    (all but the validation tail, see :func:`split_text`) is used. The options: :func:`tokenizer_model`.
    """
    text = source if isinstance(source, str) else split_text(load_text(source), val_fraction)[0]
    where = "text" if isinstance(source, str) else str(source or EMBEDDED_TEXT)
    model = tokenizer_model(text, vocab_size, num_threads=num_threads, where=where)
    path = Path(f"{model_prefix}.model")
    atomic_write_bytes(path, model)
    return path


def tokenizer_model(text: str | Sequence[str], vocab_size: int, *, num_threads: int | None = None, where: str = "text",
                    model_type: str = "bpe", specials: bool = False) -> bytes:
    """The serialized SentencePiece model trained on ``text`` (each line one sentence).

    ``text`` may be several texts (a sequence of strings): their lines are one training set, so the
    model is a JOINT vocabulary (the translation track's source and target languages).
    ``model_type``: ``"bpe"`` (the language models) or ``"unigram"`` (the translation track, as Brix
    et al.'s sentencepiece vocabulary). ``specials``: ids 1, 2, 3 are ``<pad>``, ``<s>`` (bos) and
    ``</s>`` (eos), so the bytes are ids 4-259 (sequence-to-sequence models need the three).

    Options: BPE, ``byte_fallback``, identity normalisation, no dummy prefix, whitespace kept as is
    (whitespace-only pieces allowed), digits split, only the ``<unk>`` special piece (id 0), so ids
    1-256 are the bytes ``<0x00>``-``<0xFF>``. The same text, size and sentencepiece version give the
    same bytes (a test checks it), which lets a run on the embedded corpus rebuild its tokenizer
    instead of storing it (:func:`embedded_tokenizer`).
    """
    low = 264 if specials else 260
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not low <= vocab_size <= MAX_VOCAB:
        raise ConfigError(f"vocab_size must be an integer in [{low}, {MAX_VOCAB}], got {vocab_size!r}")
    if model_type not in ("bpe", "unigram"):
        raise ConfigError(f"model_type must be bpe or unigram, got {model_type!r}")
    texts = [text] if isinstance(text, str) else list(text)
    sentences = [s for t in texts for s in t.split("\n") if s]
    if not sentences:
        raise DataError(f"{where}: no text to train a tokenizer on")
    spm = _sentencepiece()
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            max_sentence_length=1 << 20,
            unk_id=0,
            **(dict(pad_id=1, bos_id=2, eos_id=3) if specials else dict(bos_id=-1, eos_id=-1, pad_id=-1)),
            num_threads=num_threads or min(4, os.cpu_count() or 1),
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise DataError(f"sentencepiece could not train a {vocab_size}-token model: {one_line(exc)}") from exc
    return model.getvalue()


def parse_tokenizer(spec: str | None) -> int | None:
    """A config's ``tokenizer`` for the embedded corpus: None or ``"bytes"`` -> None, ``"bpe<N>"`` -> N."""
    if spec in (None, "bytes"):
        return None
    n = spec[3:] if isinstance(spec, str) and spec.startswith("bpe") else ""
    if not n.isdigit() or not 260 <= int(n) <= MAX_VOCAB:
        raise ConfigError(f"tokenizer must be 'bytes' or 'bpe<N>' with N in [260, {MAX_VOCAB}] (e.g. bpe1024), got {spec!r}")
    return int(n)


def embedded_tokenizer(spec: str | None, val_fraction: float = VAL_FRACTION, *, train: str | None = None) -> "Tokenizer":
    """The tokenizer ``spec`` names for the embedded corpus: bytes, or a ``bpe<N>`` SentencePiece model
    trained (in memory, one thread, about 0.3 s for bpe1024) on the embedded training split (``train``,
    if the caller has it already); rebuilt the same each time."""
    n = parse_tokenizer(spec)
    if n is None:
        return Tokenizer("bytes")
    train = split_text(load_text(None), val_fraction)[0] if train is None else train
    return Tokenizer.from_model(tokenizer_model(train, n, num_threads=1, where=str(EMBEDDED_TEXT)), spec)


# ---------------------------------------------------------------------------------------------------
# Corpora: text -> shards -> tokens
def encode_corpus(
    text_path: str | os.PathLike | None,
    tokenizer: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = VAL_FRACTION,
) -> dict:
    """Split ``text_path`` (``None``: the embedded corpus), encode both splits with ``tokenizer``
    (``"bytes"`` or a ``.model`` path) and write ``out_dir``'s shards and JSON (see the module
    docstring); returns the meta dict. Fails with a DataError if the tokenizer does not reproduce the
    text exactly or its per-token byte lengths do not add up to the text's bytes.
    """
    tok = Tokenizer(tokenizer)
    text = load_text(text_path)
    train, val = split_text(text, val_fraction)
    table = tok.token_bytes()
    from ..io import make_dir

    out, counts = make_dir(out_dir), {}  # one line when it cannot be made or written
    for name, part in (("train", train), ("val", val)):
        ids, nbytes = _encode_exactly(tok, table, part, name)
        write_shard(out / f"{name}.bin", ids)
        counts[name] = (len(ids), nbytes, count_lines(part), hashlib.sha256(part.encode("utf-8")).hexdigest())
    n, nbytes, lines, sha = counts["val"]
    atomic_write_json(out / "val.json", {"bytes": nbytes, "tokens": n, "lines": lines, "sha256": sha})
    if tok.model_bytes is not None:
        atomic_write_bytes(out / "tokenizer.model", tok.model_bytes)
    meta = {
        "format": "lth-tokens",
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "token_bytes": table.tolist(),
        "source": "embedded:bible-web-en" if text_path is None else str(text_path),
        "val_fraction": val_fraction,
        "train_tokens": counts["train"][0],
        "train_bytes": counts["train"][1],
        "val_tokens": n,
        "val_bytes": nbytes,
    }
    atomic_write_json(out / "meta.json", meta)
    return meta


def _encode_exactly(tok: Tokenizer, table: np.ndarray, part: str, name: str) -> tuple[np.ndarray, int]:
    """``(ids, UTF-8 bytes)`` of ``part``; a DataError unless the ids decode to it and their byte
    lengths add up to its bytes (what bits per byte needs)."""
    ids = tok.encode(part)
    nbytes = len(part.encode("utf-8"))
    if tok.decode(ids) != part:
        raise DataError(f"{tok.spec}: does not reproduce the {name} text exactly; train one with train_tokenizer")
    if int(table[ids].sum()) != nbytes:
        raise DataError(
            f"{tok.spec}: token byte lengths add up to {int(table[ids].sum())}, but the {name} text has "
            f"{nbytes} bytes (a dummy-prefix model?); train one with train_tokenizer"
        )
    return ids, nbytes


@dataclass
class TokenData:
    """Token streams of a corpus: ``train``/``val`` int32 [N], ``token_bytes`` int64 [vocab_size]."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    token_bytes: torch.Tensor
    val_bytes: int  # UTF-8 bytes of the validation text (= token_bytes[val].sum())
    tokenizer: str = "bytes"
    tokenizer_sha256: str | None = None  # of an embedded bpe<N> model rebuilt in memory (Tokenizer.sha256)

    def to(self, device) -> "TokenData":
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   token_bytes=self.token_bytes.to(device))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {one_line(exc)}") from exc


def load_tokens(data_dir: str | os.PathLike | None = None, val_fraction: float = VAL_FRACTION,
                tokenizer: str | None = None) -> TokenData:
    """Tokens of an :func:`encode_corpus` directory; ``None``: the embedded corpus, split with
    ``val_fraction`` and encoded in memory with ``tokenizer`` (None or ``"bytes"``, or ``"bpe<N>"``, see
    :func:`embedded_tokenizer`; a directory brings its own tokens, so it must be None there)."""
    if data_dir is None:
        parts = split_text(load_text(None), val_fraction)
        tok = embedded_tokenizer(tokenizer, val_fraction, train=parts[0])
        table = tok.token_bytes()
        (train, _), (val, val_bytes) = (_encode_exactly(tok, table, part, name)
                                        for name, part in zip(("train", "val"), parts))
        return TokenData(
            torch.from_numpy(train.astype(np.int32)), torch.from_numpy(val.astype(np.int32)), tok.vocab_size,
            torch.from_numpy(table), val_bytes, tok.kind, None if tok.model_bytes is None else tok.sha256,
        )
    if parse_tokenizer(tokenizer) is not None:
        raise ConfigError(f"tokenizer {tokenizer!r} is for the embedded corpus; {data_dir} brings its own tokens")
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{data_dir}: token directory does not exist")
    meta, side = _read_json(d / "meta.json"), _read_json(d / "val.json")
    try:
        vocab, table, val_bytes = int(meta["vocab_size"]), np.asarray(meta["token_bytes"], np.int64), int(side["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{d / 'meta.json'}: missing or bad field: {one_line(exc)}") from exc
    if table.shape != (vocab,):
        raise DataError(f"{d / 'meta.json'}: token_bytes has {table.size} entries for a vocabulary of {vocab}")
    shards = {}
    for name in ("train", "val"):
        toks = read_shard(d / f"{name}.bin")
        if toks.size and int(toks.max()) >= vocab:
            raise DataError(f"{d / f'{name}.bin'}: token {int(toks.max())} outside the vocabulary of {vocab}")
        shards[name] = torch.from_numpy(np.asarray(toks, dtype=np.int32))
    counted = int(table[shards["val"].numpy()].sum())
    if counted != val_bytes:
        raise DataError(f"{d / 'val.json'}: says {val_bytes} bytes, but the val tokens cover {counted}")
    return TokenData(
        shards["train"], shards["val"], vocab, torch.from_numpy(table), val_bytes, str(meta.get("tokenizer"))
    )

