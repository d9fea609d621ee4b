"""Text corpora: token shards, splits, byte and SentencePiece tokenizers, exact byte counts."""

import gzip
import json

import numpy as np
import pytest
import torch

from lth.data import text as T
from lth.errors import ConfigError, DataError

TRICKY = [
    "  two leading spaces, then  double  spaces and a trailing one \n",
    "\n",
    "naïve café — “quotes” ‘single’ 😀👍🏽 👨\u200d👩\u200d👧 中文字符 Ελληνικά ﬁ e\u0301\n",
    "\ttab\tseparated\r\n",
    "   \n",
    "U+2581 itself: a\u2581b \u2581\u2581 and NBSP a\u00a0b and NUL x\u0000y and BOM \ufeff.\n",
    "digits 1234567890 and 3.14159\n",
    "no final newline",
]
TRICKY_TEXT = "".join(TRICKY)


@pytest.fixture(scope="module")
def bible_lines():
    return T.load_text().split("\n")[:1500]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory, bible_lines):
    """A small SentencePiece model trained on ordinary English text (none of the tricky lines)."""
    pytest.importorskip("sentencepiece")
    prefix = tmp_path_factory.mktemp("tok") / "sp"
    return T.train_tokenizer("\n".join(bible_lines), prefix, 320, num_threads=1)


# --- shards --------------------------------------------------------------------------------------
def test_shard_round_trip(tmp_path):
    toks = np.array([0, 1, 255, 256, 1023, 65535, 7], dtype=np.int64)
    p = T.write_shard(tmp_path / "a.bin", toks)
    got = T.read_shard(p)
    assert isinstance(got, np.memmap) and got.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(got, toks)
    assert p.stat().st_size == 1024 + 2 * len(toks)
    header = np.fromfile(p, dtype="<i4", count=256)
    assert header[:3].tolist() == [20240520, 1, len(toks)] and not header[3:].any()


def test_empty_shard_round_trip(tmp_path):
    p = T.write_shard(tmp_path / "e.bin", [])
    assert T.read_shard(p).shape == (0,)


def test_write_shard_leaves_no_temporary_files(tmp_path):
    T.write_shard(tmp_path / "a.bin", np.arange(10))
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]


@pytest.mark.parametrize("bad", [[-1, 2], [65536], [[1, 2]], [0.5]])
def test_write_shard_rejects_tokens_outside_uint16(tmp_path, bad):
    with pytest.raises(DataError):
        T.write_shard(tmp_path / "a.bin", np.array(bad))
    assert not (tmp_path / "a.bin").exists()


def _corrupt(path, **fields):
    raw = bytearray(path.read_bytes())
    for i, key in enumerate(("magic", "version", "count")):
        if key in fields:
            raw[4 * i : 4 * i + 4] = int(fields[key]).to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "change, msg",
    [
        (dict(magic=20240521), "bad magic 20240521"),
        (dict(version=2), "unsupported shard version 2"),
        (dict(count=11), "does not match the header's 11 tokens"),
        (dict(count=-1), "does not match"),
    ],
)
def test_read_shard_rejects_bad_header_in_one_line_naming_the_file(tmp_path, change, msg):
    p = T.write_shard(tmp_path / "s.bin", np.arange(10))
    _corrupt(p, **change)
    with pytest.raises(DataError, match=msg) as e:
        T.read_shard(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [1, 2, -1])
def test_read_shard_rejects_wrong_size(tmp_path, cut):
    p = T.write_shard(tmp_path / "s.bin", np.arange(10))
    raw = p.read_bytes()
    p.write_bytes(raw[:-cut] if cut > 0 else raw + b"\0\0")  # truncated, odd, overlong
    with pytest.raises(DataError, match=r"size \d+ bytes does not match") as e:
        T.read_shard(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_read_shard_rejects_short_header_and_missing_file(tmp_path):
    (tmp_path / "h.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="truncated: 100 bytes"):
        T.read_shard(tmp_path / "h.bin")
    with pytest.raises(DataError, match="no such file"):
        T.read_shard(tmp_path / "none.bin")


# --- text and splits -----------------------------------------------------------------------------
def test_split_takes_the_last_tenth_of_lines_at_a_line_boundary():
    text = "".join(f"line {i}\n" for i in range(34))
    train, val = T.split_text(text)
    assert train + val == text
    assert val == "".join(f"line {i}\n" for i in range(31, 34))  # round(3.4) = 3 lines


def test_split_keeps_a_line_on_each_side_and_handles_no_final_newline():
    assert T.split_text("a\nb", 0.01) == ("a\n", "b")
    assert T.split_text("a\nb\n", 0.99) == ("a\n", "b\n")
    with pytest.raises(DataError, match="at least 2"):
        T.split_text("one line\n")
    with pytest.raises(ConfigError):
        T.split_text("a\nb\n", 1.0)


def test_embedded_corpus_split_is_the_documented_one():
    train, val = T.split_text(T.load_text())
    assert (T.count_lines(train), T.count_lines(val)) == (27969, 3108)
    assert (len(train.encode()), len(val.encode())) == (3649922, 393215)
    assert val.startswith("For he is not a Jew who is one outwardly")


def test_load_text_reads_gzip_and_rejects_non_utf8_in_one_line(tmp_path):
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress("héllo\n".encode()))
    assert T.load_text(tmp_path / "t.txt.gz") == "héllo\n"
    (tmp_path / "bad.txt").write_bytes(b"ok\xff\xfe")
    with pytest.raises(DataError, match=r"not UTF-8 text: byte 0xff at offset 2") as e:
        T.load_text(tmp_path / "bad.txt")
    assert "\n" not in str(e.value)


# --- tokenizers ----------------------------------------------------------------------------------
def test_byte_tokenizer_round_trips_with_one_byte_per_token():
    tok = T.Tokenizer("bytes")
    ids = tok.encode(TRICKY_TEXT)
    assert tok.decode(ids) == TRICKY_TEXT
    assert len(ids) == len(TRICKY_TEXT.encode()) == tok.token_bytes()[ids].sum()


@pytest.mark.parametrize("text", TRICKY + [TRICKY_TEXT, " ", "\u2581", "\n\n", ""])
def test_sentencepiece_round_trips_tricky_text(sp_model, text):
    tok = T.Tokenizer(sp_model)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY + [TRICKY_TEXT, " leading space", "\u2581\u2581x"])
def test_sentencepiece_token_bytes_sum_to_the_utf8_length(sp_model, text):
    tok = T.Tokenizer(sp_model)
    ids = tok.encode(text)
    assert tok.token_bytes()[ids].sum() == len(text.encode("utf-8"))


def test_sentencepiece_vocab_layout_unk_then_bytes(sp_model):
    tok = T.Tokenizer(sp_model)
    table = tok.token_bytes()
    assert tok.vocab_size == 320 and table.shape == (320,)
    assert tok.sp.IdToPiece(0) == "<unk>" and table[0] == 0
    assert [tok.sp.IdToPiece(i) for i in (1, 256)] == ["<0x00>", "<0xFF>"] and np.all(table[1:257] == 1)
    assert table[257:].min() >= 1  # every learned piece stands for some bytes


def test_tokenizer_trained_from_a_file_never_sees_the_validation_tail(tmp_path, bible_lines):
    pytest.importorskip("sentencepiece")
    lines = bible_lines[:900] + ["qqq xqqqx qqqq"] * 100  # the val tail (last 10%) is all q's
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = T.train_tokenizer(tmp_path / "c.txt", tmp_path / "sp", 400, num_threads=1)
    tok = T.Tokenizer(model)
    assert not any("q" in tok.sp.IdToPiece(i) for i in range(257, 400))


def test_train_tokenizer_rejects_bad_vocab_size(tmp_path):
    with pytest.raises(ConfigError, match="vocab_size"):
        T.train_tokenizer("some text\n", tmp_path / "sp", 100)


def test_bad_model_file_is_a_one_line_data_error(tmp_path):
    pytest.importorskip("sentencepiece")
    (tmp_path / "x.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model") as e:
        T.Tokenizer(tmp_path / "x.model")
    assert "\n" not in str(e.value)


# --- corpora -------------------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path, bible_lines):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(bible_lines[:300]) + "\n" + TRICKY_TEXT * 3, encoding="utf-8")
    return p


@pytest.mark.parametrize("kind", ["bytes", "sentencepiece"])
def test_encode_corpus_writes_shards_and_exact_validation_bytes(tmp_path, corpus, request, kind):
    spec = "bytes" if kind == "bytes" else request.getfixturevalue("sp_model")
    meta = T.encode_corpus(corpus, spec, tmp_path / "tok")
    train, val = T.split_text(corpus.read_bytes().decode("utf-8"))  # read_text would turn \r\n into \n
    side = json.loads((tmp_path / "tok" / "val.json").read_text())
    assert side["bytes"] == meta["val_bytes"] == len(val.encode("utf-8"))
    tok = T.Tokenizer(spec)
    assert tok.decode(T.read_shard(tmp_path / "tok" / "val.bin")) == val
    assert tok.decode(T.read_shard(tmp_path / "tok" / "train.bin")) == train
    data = T.load_tokens(tmp_path / "tok")
    assert data.vocab_size == tok.vocab_size and data.val_bytes == side["bytes"]
    assert int(data.token_bytes[data.val.long()].sum()) == len(val.encode("utf-8"))
    assert (tmp_path / "tok" / "tokenizer.model").exists() == (kind == "sentencepiece")


def test_load_tokens_rejects_a_sidecar_that_does_not_match(tmp_path, corpus):
    T.encode_corpus(corpus, "bytes", tmp_path / "tok")
    side = tmp_path / "tok" / "val.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "bytes": 5}))
    with pytest.raises(DataError, match="says 5 bytes"):
        T.load_tokens(tmp_path / "tok")


def test_embedded_corpus_loads_at_the_byte_level():
    data = T.load_tokens()
    assert data.vocab_size == 256 and data.train.dtype == torch.int32
    assert (len(data.train), len(data.val), data.val_bytes) == (3649922, 393215, 393215)
    assert bytes(data.val[:6].tolist()) == b"For he"


@pytest.fixture(scope="module")
def embedded_bpe():
    """The embedded corpus in a 400-token BPE trained on its training split (rebuilt in memory)."""
    return T.load_tokens(tokenizer="bpe400")


def test_embedded_bpe_counts_exactly_the_validation_bytes(embedded_bpe):
    val = T.split_text(T.load_text())[1]
    assert embedded_bpe.vocab_size == 400 and embedded_bpe.val_bytes == len(val.encode("utf-8"))
    assert int(embedded_bpe.token_bytes[embedded_bpe.val.long()].sum()) == embedded_bpe.val_bytes
    assert len(embedded_bpe.val) < embedded_bpe.val_bytes  # pieces longer than a byte


def test_embedded_bpe_tokenizer_is_rebuilt_identically(embedded_bpe):
    again = T.embedded_tokenizer("bpe400")
    assert again.sha256 == embedded_bpe.tokenizer_sha256 and torch.equal(
        torch.from_numpy(again.encode(T.split_text(T.load_text())[1]).astype("int32")), embedded_bpe.val)


@pytest.mark.parametrize("spec", ["bpe", "bpe12", "bpe70000", "wordpiece", "bpe1024x"])
def test_bad_tokenizer_spec_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="tokenizer must be"):
        T.parse_tokenizer(spec)


def test_embedded_tokenizer_is_refused_beside_a_token_directory(tmp_path, corpus):
    T.encode_corpus(corpus, "bytes", tmp_path / "tok")
    with pytest.raises(ConfigError, match="brings its own tokens"):
        T.load_tokens(tmp_path / "tok", tokenizer="bpe400")
