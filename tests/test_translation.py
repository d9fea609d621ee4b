"""The translation track (issue 12): the Bible pairs' split, the joint tokenizer, the seq2seq model's
decoding, BLEU, and a lottery run of translation_tiny through the public API, packed and re-evaluated."""

import csv
import dataclasses

import pytest
import torch

from lth import lottery, pack
from lth import ticket as T
from lth.data import parallel as P
from lth.decode import beam_search, greedy
from lth.errors import DataError
from lth.init import init_from_seed
from lth.models import build
from lth.presets import preset, validate
from lth.tasks.translate import Translation, corpus_stats


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls: one thread is faster, and on a busy machine two spinning OpenMP threads made this
    file take 5 minutes instead of 30 s (restored after the file)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus():
    return P.load_parallel()


def test_splits_are_disjoint_by_book_and_have_the_counts(corpus):
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (29_628, 366, 1_020)
    assert corpus.dropped == {"train": 60, "dev": 1, "test": 2}  # 63 of 31,077
    books = {name: {P.book(r) for r in corpus.split(name).refs} for name in ("train", "dev", "test")}
    assert books["test"] == set(P.TEST_BOOKS) and books["dev"] == set(P.DEV_BOOKS) and len(books["train"]) == 58
    assert not books["train"] & books["dev"] and not books["train"] & books["test"] and not books["dev"] & books["test"]
    assert corpus.sha256 == "70f0477f21e96aedef235f57988ac976a7dbaa3c28984c8ad651496ec299eed4"


def test_reverse_swaps_source_and_target(corpus):
    rev = P.load_parallel(reverse=True)
    assert rev.dev.src[:3] == corpus.dev.tgt[:3] and rev.dev.tgt[:3] == corpus.dev.src[:3]


def test_a_malformed_line_is_refused_naming_file_and_line(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("Ruth.1.1\tIn the days\tEn los días\nRuth.1.2\tonly two fields\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv: line 2: expected ref<TAB>english<TAB>spanish"):
        P.load_parallel(tmp_path)


def test_the_joint_tokenizer_is_deterministic_with_pad_bos_eos(corpus):
    part = corpus.train.head(600)
    a = P.joint_tokenizer(part, 500)
    P._joint_model.cache_clear()  # train it again, not from the cache
    b = P.joint_tokenizer(part, 500)
    assert a.model_bytes == b.model_bytes and a.sha256 == b.sha256
    assert (a.sp.pad_id(), a.sp.bos_id(), a.sp.eos_id()) == (P.PAD, P.BOS, P.EOS)
    assert a.sp.decode(a.sp.encode(corpus.dev.tgt[0])) == corpus.dev.tgt[0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = init_from_seed(build("seq2seq_tiny", (2,), 500), 0, "xavier_uniform").eval()
    return m


def _src(batch=5, length=9, vocab=500):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, vocab, (batch, length), generator=g)
    src[1, 6:] = P.PAD  # a padded sentence
    src[:, -1] = torch.where(src[:, -1] == P.PAD, P.PAD, P.EOS)
    return src


def test_cached_decoding_equals_full_decoding(model):
    src = _src()
    tgt = torch.randint(4, 500, (5, 7))
    full = model(src, tgt)
    cache, steps = {}, []
    for t in range(tgt.shape[1]):
        logits, cache = model(src, tgt[:, t : t + 1], cache=cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    kw = dict(bos=P.BOS, eos=P.EOS, pad=P.PAD, max_len=12)
    assert greedy(model, src, **kw) == greedy(model, src, cached=False, **kw)


def test_beam_1_equals_greedy(model):
    src = _src()
    kw = dict(bos=P.BOS, eos=P.EOS, pad=P.PAD, max_len=12)
    assert beam_search(model, src, beam=1, **kw) == greedy(model, src, **kw)
    assert len(beam_search(model, src, beam=4, **kw)) == 5


def test_vmap_and_loop_ensembles_compute_the_same_logits_and_cache(model):
    from lth.ensemble import Ensemble

    states = [{n: p.detach() + 0.01 * i for n, p in model.named_parameters()} for i in range(2)]
    src, tgt = _src().expand(2, -1, -1), torch.randint(4, 500, (2, 5, 4))
    outs = {}
    for mode in ("stacked", "loop"):
        ens = Ensemble(model, states, mode=mode).eval()
        with torch.no_grad():
            _, cache = ens(src, tgt[:, :, :3], cache={})
            outs[ens.path()] = (ens(src, tgt), ens(src, tgt[:, :, 3:], cache=cache)[0])
    torch.testing.assert_close(outs["vmap"], outs["loop"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["loop"][1], outs["loop"][0][:, :, 3:], atol=1e-5, rtol=1e-5)


def test_bleu_and_chrf_of_the_references_against_themselves_are_100(corpus):
    refs = corpus.test.tgt[:50]
    bleu, chrf = corpus_stats(refs, refs)
    got = Translation.finalize({"loss": torch.zeros(1), "n": torch.ones(1), "bleu": bleu[None], "chrf": chrf[None]})
    assert float(got["bleu"][0]) == pytest.approx(100.0) and float(got["chrf"][0]) == pytest.approx(100.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = validate(dataclasses.replace(preset("translation_tiny"), levels=1, iterations=20, eval_every=10,
                                       train_pairs=600, eval_pairs=8))
    out = tmp_path_factory.mktemp("translation") / "run"
    lottery.run(cfg, out, progress=False)
    return out


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_a_lottery_of_translation_tiny_records_bleu_and_chrf(run_dir):
    rows = _rows(run_dir)
    assert {"val_bleu", "test_bleu", "test_chrf", "val_loss"} <= set(rows[0])
    assert {r["level"] for r in rows} == {"0", "1"}
    last = [r for r in rows if r["level"] == "1" and r["step"] == "20"][0]
    assert last["test_bleu"] != "" and 0 <= float(last["test_chrf"]) <= 100
    assert float(last["val_loss"]) < 6.2  # below uniform over 500 tokens (6.21 nats): it learned something
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in (run_dir / "metrics.json").read_text()


@pytest.mark.exact
def test_pack_and_eval_reproduce_the_recorded_bleu(run_dir, tmp_path):
    t = pack.from_run(run_dir, level=1, trained=True, dtype="float32")
    from lth.tasks import _translation_data

    assert t.meta["tokenizer_sha256"] == _translation_data(pack._run_config(t.meta["config"]))[1].sha256
    T.save(t, tmp_path / "tiny.ticket")
    got = pack.evaluate(T.load(tmp_path / "tiny.ticket"))
    want = [r for r in _rows(run_dir) if r["level"] == "1" and r["step"] == "20"][0]
    for k in ("val_loss", "val_bleu", "val_chrf", "test_loss", "test_bleu", "test_chrf"):
        assert round(got[k], 6) == float(want[k]), k


def test_lth_translate_prints_one_line_per_input_line(run_dir, tmp_path, capsys):
    from lth.cli import main

    f = tmp_path / "in.txt"
    f.write_text("In the beginning.\n\nGod said.\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(f), "--beam", "1", "--no-progress"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 3 + 1  # three lines (the empty one kept), newline-ended


def test_data_order_is_a_permutation_in_length_bucketed_batches(corpus):
    import numpy as np

    part = dataclasses.replace(corpus, train=corpus.train.head(600))
    task = Translation(part, P.joint_tokenizer(part.train, 500))
    order = task.data_order(0, 0, task.train_size, 16)
    assert sorted(order.tolist()) == list(range(600))

    def spread(perm):  # mean (longest - shortest target) within a batch of 16
        lens = task.tgt_len[torch.from_numpy(perm[:592].reshape(-1, 16))]
        return float((lens.max(1).values - lens.min(1).values).float().mean())

    assert spread(order) < spread(np.random.default_rng(0).permutation(600)) / 3
