"""The language-model side of the command line: tokenizer, shards, training, supermasks, sampling."""

import csv

import pytest

from lth.cli import main
from lth.data import text as T

TINY = ["--model-args", "n_layer=1,d_model=32,n_head=2,n_kv_head=1", "--seq-len", "32", "--batch-size", "4",
        "--eval-tokens", "512", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 60 kB slice of the embedded Bible as a plain text file."""
    d = tmp_path_factory.mktemp("corpus")
    lines = T.load_text().splitlines(keepends=True)
    path = d / "text.txt"
    path.write_text("".join(lines[:600]), encoding="utf-8")
    return path


def test_data_encode_writes_shards_that_load_back(corpus, tmp_path, capsys):
    assert main(["data", "encode", str(corpus), "--tokenizer", "bytes", "-o", str(tmp_path / "enc")]) == 0
    data = T.load_tokens(tmp_path / "enc")
    train, val = T.split_text(corpus.read_text(encoding="utf-8"))
    assert len(data.train) == len(train.encode()) and data.val_bytes == len(val.encode())
    assert "val" in capsys.readouterr().out


def test_data_tokenizer_trains_a_model_that_encodes_exactly(corpus, tmp_path):
    assert main(["data", "tokenizer", str(corpus), "--vocab-size", "400", "-o", str(tmp_path / "sp")]) == 0
    assert main(["data", "encode", str(corpus), "--tokenizer", str(tmp_path / "sp.model"), "-o", str(tmp_path / "enc")]) == 0
    data = T.load_tokens(tmp_path / "enc")
    assert data.vocab_size == 400 and len(data.val) < data.val_bytes  # pieces longer than a byte


def test_missing_text_file_is_one_line_error(tmp_path, capsys):
    assert main(["data", "encode", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_lm_train_on_encoded_shards_records_bpb(corpus, tmp_path):
    main(["data", "encode", str(corpus), "-o", str(tmp_path / "enc")])
    out = tmp_path / "run"
    assert main(["train", "lm_cpu", "--out", str(out), "--data-dir", str(tmp_path / "enc"), "--iterations", "4",
                 "--eval-every", "2", "--rewind-step", "1", "--max-minutes", "none", *TINY]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "2", "4"] and all(float(r["val_bpb"]) > 0 for r in rows)


def test_lm_supermask_trains_only_masks_and_scales(tmp_path, capsys):
    out = tmp_path / "sm"
    assert main(["supermask", "lm_cpu_supermask", "--out", str(out), "--iterations", "3", "--eval-every", "3",
                 "--max-minutes", "none", *TINY[:1], "n_layer=1,d_model=32,n_head=2,n_kv_head=1,scales=true",
                 *TINY[2:]]) == 0
    text = capsys.readouterr().out
    # 1 layer at d=32: head_scale 2 + two out_scales 64 + logit_scale 32, plus one scale per masked matrix
    # (6, and the embedding: the preset masks it too)
    assert "and 105 scales" in text
    with open(out / "results.csv") as f:
        assert all(float(r["val_bpb"]) > 0 for r in csv.DictReader(f))


def _last_row(out, level=0):
    with open(out / "results.csv") as f:
        return max((r for r in csv.DictReader(f) if int(r["level"]) == level), key=lambda r: int(r["step"]))


def _eval(ticket, capsys):
    capsys.readouterr()
    assert main(["eval", str(ticket)]) == 0
    return dict(line.split()[:2] for line in capsys.readouterr().out.splitlines())


SM_TINY = ["--model-args", "n_layer=1,d_model=32,n_head=2,n_kv_head=1,scales=true", *TINY[2:]]


@pytest.mark.exact
def test_lm_supermask_ticket_reproduces_recorded_bpb_exactly(tmp_path, capsys):
    out = tmp_path / "sm"
    main(["supermask", "lm_cpu_supermask", "--out", str(out), "--iterations", "4", "--eval-every", "2",
          "--max-minutes", "none", *SM_TINY])
    assert main(["pack", str(out), "-o", str(tmp_path / "sm.ticket")]) == 0
    got, want = _eval(tmp_path / "sm.ticket", capsys), _last_row(out)
    assert got["val_bpb"] == want["val_bpb"] and got["val_loss"] == want["val_loss"]


@pytest.mark.exact
def test_lm_trained_ticket_reproduces_recorded_bpb_exactly(tmp_path, capsys):
    out = tmp_path / "imp"
    main(["lottery", "lm_cpu", "--out", str(out), "--iterations", "4", "--eval-every", "2", "--levels", "1",
          "--rewind-step", "1", "--max-minutes", "none", *TINY])
    assert main(["pack", str(out), "-o", str(tmp_path / "t.ticket"), "--trained", "--dtype", "float32"]) == 0
    got, want = _eval(tmp_path / "t.ticket", capsys), _last_row(out, level=1)
    assert got["val_bpb"] == want["val_bpb"]


def test_generate_continues_the_prompt_from_a_ticket(tmp_path, capsys):
    out = tmp_path / "sm"
    main(["supermask", "lm_cpu_supermask", "--out", str(out), "--iterations", "2", "--eval-every", "2",
          "--max-minutes", "none", *SM_TINY])
    main(["pack", str(out), "-o", str(tmp_path / "sm.ticket")])
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "sm.ticket"), "--prompt", "In the beginning", "--tokens", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("In the beginning") and len(text) > len("In the beginning")


def test_generate_refuses_an_image_ticket(tmp_path, capsys):
    from lth import lottery
    from lth.presets import Config

    lottery.run(Config(iterations=2, eval_every=2, levels=0), tmp_path / "r", progress=False)
    main(["pack", str(tmp_path / "r"), "-o", str(tmp_path / "l.ticket")])
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "l.ticket"), "--prompt", "x"]) == 2
    assert "not a language model" in capsys.readouterr().err


@pytest.mark.exact
def test_lm_ticket_on_embedded_bpe_reproduces_recorded_bpb_exactly(tmp_path, capsys):
    out = tmp_path / "bpe"
    assert main(["train", "lm_cpu", "--out", str(out), "--tokenizer", "bpe400", "--iterations", "2",
                 "--eval-every", "2", "--rewind-step", "1", "--max-minutes", "none", *TINY]) == 0
    assert main(["pack", str(out), "-o", str(tmp_path / "t.ticket"), "--trained", "--dtype", "float32"]) == 0
    got, want = _eval(tmp_path / "t.ticket", capsys), _last_row(out)
    assert got["val_bpb"] == want["val_bpb"]


def test_tokenizer_beside_data_dir_is_a_one_line_error(corpus, tmp_path, capsys):
    main(["data", "encode", str(corpus), "-o", str(tmp_path / "enc")])
    assert main(["train", "lm_cpu", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path / "enc"),
                 "--tokenizer", "bpe400", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "brings its own tokens" in err and "\n" not in err


def test_generate_rebuilds_an_embedded_bpe_tokenizer(tmp_path, capsys):
    out = tmp_path / "bpe"
    main(["train", "lm_cpu", "--out", str(out), "--tokenizer", "bpe400", "--iterations", "1", "--eval-every", "1",
          "--rewind-step", "0", "--max-minutes", "none", *TINY])
    main(["pack", str(out), "-o", str(tmp_path / "t.ticket")])
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "t.ticket"), "--prompt", "In the beginning", "--tokens", "8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("In the beginning") and len(text) > len("In the beginning")
