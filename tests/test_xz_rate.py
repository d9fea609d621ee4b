"""xz's conditional rate (lth.xz_rate): seen text is nearly free, random text is not, fields agree."""

import random

import pytest

from lth.errors import ConfigError
from lth.xz_rate import conditional_bpb, xz_size


def random_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ,.\n") for _ in range(n))


TRAIN = random_text(20_000, seed=0)


def test_val_text_seen_in_train_costs_far_less_than_random_text():
    seen = conditional_bpb(TRAIN, TRAIN[5_000:9_000])["bpb"]
    fresh = conditional_bpb(TRAIN, random_text(4_000, seed=1))["bpb"]
    assert seen < 0.1 < 4.0 < fresh  # 31 symbols: log2(31) = 4.95 bits each


def test_fields_are_consistent():
    val = "In the beginning — “quoted” text.\n"
    r = conditional_bpb(TRAIN, val)
    assert r["train_bytes"] == len(TRAIN.encode()) and r["val_bytes"] == len(val.encode("utf-8")) > len(val)
    assert r["xz_train_bytes"] == xz_size(TRAIN.encode())
    assert r["xz_all_bytes"] == xz_size((TRAIN + val).encode())
    assert r["bpb"] == (r["xz_all_bytes"] - r["xz_train_bytes"]) * 8 / r["val_bytes"]


def test_empty_val_text_is_a_config_error():
    with pytest.raises(ConfigError, match="non-empty"):
        conditional_bpb(TRAIN, "")
