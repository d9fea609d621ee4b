"""The language-modeling task: windows, batches, loss, and evaluation sums (loss, acc, exact bpb)."""

import math

import pytest
import torch

from lth.data import text as T
from lth.data.text import TokenData
from lth.ensemble import Ensemble
from lth.errors import ConfigError
from lth.models.gpt import GPT, GPTConfig
from lth.tasks.lm import LanguageModeling
from lth.train import TrainSpec, evaluate as train_evaluate, train

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap fallback


def byte_data(train: bytes, val: bytes) -> TokenData:
    as_tensor = lambda b: torch.tensor(list(b), dtype=torch.int32)  # noqa: E731
    return TokenData(as_tensor(train), as_tensor(val), 256, torch.ones(256, dtype=torch.int64), len(val))


def periodic(n: int) -> bytes:
    return bytes(i % 256 for i in range(n))


def uniform(members: int, vocab: int):
    def forward(x):  # x [M, c, T] -> equal logits for every token
        assert x.shape[0] == members and x.dtype == torch.int64
        return torch.zeros(*x.shape, vocab)

    return forward


def test_windows_are_non_overlapping_and_targets_are_shifted_inputs():
    task = LanguageModeling(byte_data(periodic(1000), periodic(300)), 16)
    assert task.train_size == (1000 - 1) // 16 and task.shape == (16,) and task.num_classes == 256
    idx = torch.tensor([[0, 3], [61, 5]])
    x, y = task.batch(idx)
    assert x.shape == y.shape == (2, 2, 16) and x.dtype == y.dtype == torch.int64
    assert x[1, 0, 0] == 61 * 16 % 256 and x[0, 1, 0] == 48  # window i starts at token i * T
    torch.testing.assert_close(y[..., :-1], x[..., 1:])
    torch.testing.assert_close(y[..., -1], (x[..., -1] + 1) % 256)  # the last window's target exists


def test_loss_is_the_sum_of_member_mean_cross_entropies():
    task = LanguageModeling(byte_data(periodic(1000), periodic(300)), 8)
    x, y = task.batch(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    out = torch.randn(2, 3, 8, 256)
    per_member = [torch.nn.functional.cross_entropy(out[m].reshape(-1, 256), y[m].reshape(-1)) for m in range(2)]
    torch.testing.assert_close(task.loss(out, y), per_member[0] + per_member[1])


def test_evaluate_returns_member_sums_and_token_count():
    task = LanguageModeling(byte_data(periodic(1000), periodic(300)), 16)
    sums = task.evaluate(uniform(3, 256), 3, "val")
    assert set(sums) == {"loss", "acc", "bpb", "n"}
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in sums.values())
    assert torch.all(sums["n"] == (300 - 1) // 16 * 16)


def test_uniform_logits_give_exactly_8_bits_per_byte_on_bytes():
    text = T.load_text().encode("utf-8")[:5000]
    task = LanguageModeling(byte_data(text[:4000], text[4000:]), 32)
    s = task.evaluate(uniform(2, 256), 2, "val", chunk=5)
    torch.testing.assert_close(s["loss"] / s["n"], torch.full((2,), math.log(256), dtype=torch.float64))
    torch.testing.assert_close(s["bpb"] / s["n"], torch.full((2,), 8.0, dtype=torch.float64), rtol=1e-12, atol=0)


def test_uniform_logits_bpb_is_log2_vocab_times_tokens_per_byte_for_sentencepiece(tmp_path):
    pytest.importorskip("sentencepiece")
    lines = T.load_text().split("\n")[:800]
    model = T.train_tokenizer("\n".join(lines[:700]), tmp_path / "sp", 400, num_threads=1)
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\nnaïve 😀  spaces\n", encoding="utf-8")
    T.encode_corpus(tmp_path / "c.txt", model, tmp_path / "tok")
    data = T.load_tokens(tmp_path / "tok")
    task = LanguageModeling(data, 16)
    s = task.evaluate(uniform(1, 400), 1, "val")
    tokens = task.eval_windows * 16
    targets = data.val[1 : tokens + 1].long()  # the evaluated targets, every window back to back
    nbytes = int(data.token_bytes[targets].sum())
    assert nbytes == len(T.Tokenizer(model).decode(targets).encode("utf-8"))  # per-token bytes are exact
    assert nbytes < 3 * tokens  # multi-byte tokens: not the byte-level ratio
    expected = math.log2(400) * tokens / nbytes
    assert abs(float(s["bpb"][0] / s["n"][0]) - expected) < 1e-12


def test_evaluate_sums_over_ranks_equal_one_process():
    text = T.load_text().encode("utf-8")[:6000]
    task = LanguageModeling(byte_data(text[:3000], text[3000:]), 16)
    torch.manual_seed(0)
    table = torch.randn(256, 256)

    def bigram(x):  # a member-dependent forward: logits from the current token
        return table[x] * torch.arange(1, x.shape[0] + 1).view(-1, 1, 1, 1)

    one = task.evaluate(bigram, 2, "val")
    parts = [task.evaluate(bigram, 2, "val", rank=r, world=3) for r in range(3)]
    for k in one:
        torch.testing.assert_close(sum(p[k] for p in parts), one[k], rtol=1e-12, atol=1e-9)
    bpb = one["loss"] / one["n"] / math.log(2)  # bytes: bpb is nats per token in bits
    torch.testing.assert_close(one["bpb"] / one["n"], bpb)


def test_accuracy_counts_correct_next_tokens_per_member():
    task = LanguageModeling(byte_data(periodic(1000), periodic(500)), 16)

    def forward(x):  # member 0 knows the rule next = x + 1, member 1 is uniform
        logits = torch.zeros(*x.shape, 256)
        logits[0] = torch.nn.functional.one_hot((x[0] + 1) % 256, 256) * 50.0
        return logits

    s = task.evaluate(forward, 2, "val")
    assert s["acc"][0] == s["n"][0] and s["loss"][0] / s["n"][0] < 1e-6
    assert abs(float(s["loss"][1] / s["n"][1]) - math.log(256)) < 1e-9


def test_eval_tokens_caps_the_evaluated_windows_to_a_fixed_prefix():
    task = LanguageModeling(byte_data(periodic(1000), periodic(1000)), 16, eval_tokens=100)
    assert task.eval_windows == 6
    assert torch.all(task.evaluate(uniform(1, 256), 1, "test")["n"] == 96)
    with pytest.raises(ConfigError):
        LanguageModeling(byte_data(periodic(1000), periodic(10)), 16)


def test_gpt_ensemble_trains_with_the_lth_trainer():
    text = T.load_text().encode("utf-8")[:40000]
    task = LanguageModeling(byte_data(text[:36000], text[36000:]), 32)
    cfg = GPTConfig(vocab_size=256, seq_len=32, n_layer=1, d_model=32, n_head=2, n_kv_head=1)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(GPT(cfg))
    ens = Ensemble(models[0], [dict(m.named_parameters()) for m in models])
    before = train_evaluate(ens, task, _ctx(), splits=("val",))
    train(ens, {}, task, TrainSpec(iterations=40, batch_size=8, lr=1e-2, eval_every=1000), [0, 1])
    after = train_evaluate(ens, task, _ctx(), splits=("val",))
    assert set(after) == {"val_loss", "val_acc", "val_bpb"}
    assert torch.all(after["val_bpb"] < before["val_bpb"] - 1.0)
    torch.testing.assert_close(after["val_bpb"], after["val_loss"] / math.log(2))


def _ctx():
    from lth.dist import Context

    return Context()

