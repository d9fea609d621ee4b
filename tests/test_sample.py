"""Sampling from the GPT (lth.sample.generate): reproducible, greedy, prompt first, in-vocabulary, learns."""

import pytest
import torch
import torch.nn.functional as F

from lth.data.text import Tokenizer
from lth.errors import ConfigError
from lth.models.gpt import GPT, GPTConfig
from lth.sample import generate

TINY = dict(vocab_size=256, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=2)
BYTES = Tokenizer("bytes")


def tiny(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw}))


class SmallVocab:
    """A tokenizer over the first 40 ids of a bigger model vocabulary (letters as ids 0-39)."""

    kind, vocab_size = "toy", 40

    def encode(self, text):
        return [ord(c) - 48 for c in text]

    def decode(self, ids):
        return "".join(chr(48 + i) for i in ids)


def test_greedy_is_deterministic_whatever_the_seed():
    m = tiny()
    outs = {generate(m, BYTES, "Hello", 20, temperature=0, seed=s) for s in range(3)}
    assert len(outs) == 1


def test_same_seed_gives_the_same_text():
    m = tiny()
    a = generate(m, BYTES, "Hello", 30, temperature=1.0, seed=7)
    assert a == generate(m, BYTES, "Hello", 30, temperature=1.0, seed=7)
    assert a != generate(m, BYTES, "Hello", 30, temperature=1.0, seed=8)


def test_output_begins_with_the_prompt_even_after_invalid_utf8():
    out = generate(tiny(), BYTES, "héllo ", 40, temperature=2.0, seed=0)  # random bytes: invalid UTF-8
    assert out.startswith("héllo ") and len(out) > len("héllo ")


def test_zero_new_tokens_returns_the_prompt():
    assert generate(tiny(), BYTES, "abc", 0) == "abc"


def test_sampled_tokens_stay_within_the_tokenizer_vocabulary():
    m = tiny()  # 256 logits, but the tokenizer knows 40
    for seed in range(3):
        out = generate(m, SmallVocab(), "012", 50, temperature=3.0, seed=seed)
        assert all(0 <= ord(c) - 48 < 40 for c in out)


def test_top_k_one_is_greedy():
    m = tiny()
    assert generate(m, BYTES, "abc", 20, temperature=1.0, top_k=1, seed=3) == generate(m, BYTES, "abc", 20,
                                                                                         temperature=0)


def test_context_is_cropped_to_seq_len():
    m = tiny()  # seq_len 16: a prompt of 40 bytes must not reach the model whole
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]))
    generate(m, BYTES, "x" * 40, 3, temperature=0)
    assert seen == [16, 16, 16]


def test_model_mode_is_restored():
    m = tiny()
    m.train()
    generate(m, BYTES, "a", 2)
    assert m.training


def test_a_model_trained_on_a_repeated_string_continues_it():
    data = torch.tensor(list(("the cat sat. " * 4).encode()), dtype=torch.long)
    x = torch.stack([data[s : s + 16] for s in range(13)])  # one window per phase of the 13-byte period
    y = torch.stack([data[s + 1 : s + 17] for s in range(13)])
    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    for _ in range(30):
        loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert generate(m, BYTES, "the cat", 18, temperature=0) == "the cat sat. the cat sat."


@pytest.mark.parametrize("prompt, n", [("", 5), ("a", -1), ("a", 1.5)])
def test_empty_prompt_or_bad_token_count_is_a_config_error(prompt, n):
    with pytest.raises(ConfigError):
        generate(tiny(), BYTES, prompt, n)


def test_tokenizer_larger_than_the_model_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="vocabulary"):
        generate(tiny(vocab_size=64), BYTES, "a", 1)


def test_sentencepiece_sampling_decodes_any_ids(tmp_path):
    pytest.importorskip("sentencepiece")
    from lth.data.text import load_text, train_tokenizer

    tok = Tokenizer(train_tokenizer("\n".join(load_text().split("\n")[:300]), tmp_path / "sp", 400, num_threads=1))
    out = generate(tiny(vocab_size=tok.vocab_size), tok, "In the beginning", 30, temperature=3.0, seed=0)
    assert out.startswith("In the beginning") and len(out) > len("In the beginning")
