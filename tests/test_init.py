"""lth.init: seeded, bit-exact initialisation (the bits are part of the ticket file format)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lth.counter_rng as rng_mod
import lth.init as init_mod
from lth.errors import ConfigError
from lth.init import SCHEMES, Dist, fans, generate, init_from_seed, weights_sha256

ROOT = Path(__file__).resolve().parents[1]


def lenet() -> nn.Module:
    # Fixed architecture for the golden and cross-process tests: do not change it.
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


class TinyBlock(nn.Module):
    """Names like a GPT block, to exercise the name-based schemes."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.ln = nn.LayerNorm(16)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(16, 48)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(16, 64, bias=False)
        self.mlp.proj = nn.Linear(64, 16, bias=False)
        self.conv = nn.Conv2d(3, 8, 3)


# Changing any of these digests breaks every ticket ever shipped: tickets store (seed, mask) and
# regenerate the weights through lth.init. If one changes, the change to lth.init is the bug.
GOLDEN = {
    ("lenet", "glorot_normal", 1234): "7a8e5157ee6db9c5a93da89e0b85fb0b910a6ec0840a65a9e26d09d97ab65fb7",
    ("lenet", "kaiming_uniform", 1234): "46c2f890b5ab58746e5c1083fe4ef83272ec8e78b1ca4068ab2e364de471cd09",
    ("lenet", "signed_constant", 1234): "1ae558d59325adec416293414230ff304458cedd9e78296b424249bb9f3026c2",
    ("tiny", "golf", 1234): "3b3186a5ae7fee8bebe76d71d948509b46af9fd48dc809d42a4fc9f9d506e9f5",
    ("tiny", "kaiming_normal", 7): "755db5a4a11f585805cd07dfaaa292621e2122b212aa8b21135feadfa69d6199",
    ("tiny", "xavier_uniform", 2**64 - 1): "71b9dc068ee434b3e096a2dfa9abea919d2a958709204a9bef3f0c4da62d6c5b",
}
MODELS = {"lenet": lenet, "tiny": TinyBlock}


@pytest.mark.exact
@pytest.mark.parametrize("model,scheme,seed", sorted(GOLDEN, key=str))
def test_golden_sha256_of_small_model(model, scheme, seed):
    torch.manual_seed(0)  # torch's RNG must not matter
    m = init_from_seed(MODELS[model](), seed, scheme)
    assert weights_sha256(m) == GOLDEN[(model, scheme, seed)]


@pytest.mark.exact
def test_golden_first_values_of_each_kind():
    # The same promise, readable: exact float32 bits of the first values of each random kind.
    bits = {k: generate(1234, "w", (8,), Dist(k, 0.5)).numpy().view(np.uint32) for k in rng_mod._STREAMS}
    assert {k: " ".join(f"{v:08x}" for v in b) for k, b in bits.items()} == {
        "normal": "3cc092a2 3ecacc0d bf024485 beebd944 3f270b0c bdf5d950 3ea5c69b 3f1d2c4d",
        "uniform": "3e4800e4 3e8deeec be8de998 bdb4c5e0 be5e7594 3df53f50 3e4a131c bb346400",
        "signed_constant": "3f000000 3f000000 3f000000 3f000000 bf000000 3f000000 bf000000 bf000000",
    }


def test_hash_is_splitmix64():
    # The element hashes are the splitmix64 stream of the key (reference vector for seed 1234567).
    h = rng_mod._hash_chunk(1234567, 0, 5, rng_mod._Buffers(5))
    assert h.tolist() == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


def test_same_bits_across_thread_counts():
    big = (3 * rng_mod._PARALLEL_MIN + 12345,)  # large enough to use the thread pool
    old = torch.get_num_threads()
    try:
        digests = []
        for n in (1, 2):
            torch.set_num_threads(n)
            t = {k: generate(5, "big", big, Dist(k, 0.1)) for k in rng_mod._STREAMS}
            digests.append((weights_sha256(t), weights_sha256(init_from_seed(lenet(), 1234))))
    finally:
        torch.set_num_threads(old)
    assert digests[0] == digests[1]


def test_same_bits_across_chunk_sizes(monkeypatch):
    shape = (70001,)
    ref = {k: generate(9, "x", shape, Dist(k, 1.0)) for k in rng_mod._STREAMS}
    for chunk in (1000, 4096):
        monkeypatch.setattr(rng_mod, "_CHUNK", chunk)
        monkeypatch.setattr(rng_mod, "_PARALLEL_MIN", 2 * chunk)
        got = {k: generate(9, "x", shape, Dist(k, 1.0)) for k in rng_mod._STREAMS}
        assert weights_sha256(got) == weights_sha256(ref)


def test_same_bits_across_processes():
    code = (
        "import torch, sys; sys.path.insert(0, 'tests'); torch.set_num_threads(1); "
        "from test_init import lenet; from lth.init import init_from_seed, weights_sha256; "
        "print(weights_sha256(init_from_seed(lenet(), 1234, 'glorot_normal')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == weights_sha256(init_from_seed(lenet(), 1234, "glorot_normal"))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    kind=st.sampled_from(init_mod.KINDS),
    scale=st.floats(2.0**-20, 2.0**20),
)
def test_generate_is_deterministic_and_finite(seed, shape, kind, scale):
    a = generate(seed, "layer.weight", shape, Dist(kind, scale))
    b = generate(seed, "layer.weight", tuple(shape), Dist(kind, scale))
    assert a.dtype == torch.float32 and a.device.type == "cpu" and tuple(a.shape) == tuple(shape)
    assert torch.isfinite(a).all()
    assert a.numpy().tobytes() == b.numpy().tobytes()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), n=st.integers(1, 300), m=st.integers(1, 300))
def test_element_depends_only_on_its_index(seed, n, m):
    # Prefixes agree whatever the shape: value i is a function of (seed, name, dist, i).
    a = generate(seed, "p", (n,), Dist("normal", 1.0))
    b = generate(seed, "p", (m, 1), Dist("normal", 1.0)).flatten()
    k = min(n, m)
    assert a[:k].numpy().tobytes() == b[:k].numpy().tobytes()


def test_normal_moments():
    std = 0.05
    x = generate(3, "w", (1_000_000,), Dist("normal", std)).double()
    z = x / std
    assert abs(z.mean().item()) < 5e-3  # 5 sigma is 5e-3
    assert abs(z.std().item() - 1) < 5e-3
    assert abs((z**4).mean().item() - 3) < 0.05  # normal kurtosis
    assert abs((z.abs() < 1).double().mean().item() - 0.6826894921) < 3e-3
    assert z.abs().max().item() <= math.sqrt(64 * math.log(2)) + 1e-6  # Box-Muller with u1 >= 2**-32


def test_uniform_within_bounds_and_moments():
    a = 0.3
    x = generate(3, "w", (1_000_000,), Dist("uniform", a))
    assert x.min().item() >= -a and x.max().item() <= a
    u = x.double() / a
    assert abs(u.mean().item()) < 3e-3
    assert abs(u.var().item() - 1 / 3) < 3e-3
    hist = torch.histc(u.float(), bins=10, min=-1, max=1) / u.numel()
    assert (hist - 0.1).abs().max().item() < 3e-3


def test_signed_constant_takes_two_values():
    w = torch.empty(256, 1000)
    d = SCHEMES["signed_constant"]("fc.weight", w)
    c = np.float32(math.sqrt(2 / 1000))
    assert d == Dist("signed_constant", math.sqrt(2 / 1000))
    x = generate(0, "fc.weight", w.shape, d)
    assert set(x.unique().tolist()) == {float(-c), float(c)}
    assert abs((x > 0).double().mean().item() - 0.5) < 0.01


def test_different_names_give_independent_streams():
    n = 200_000
    a = generate(1, "fc1.weight", (n,), Dist("normal", 1.0)).double()
    b = generate(1, "fc2.weight", (n,), Dist("normal", 1.0)).double()
    assert not torch.equal(a, b)
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(n)
    # the distributions use separate streams too: uniform signs are not normal signs
    u = generate(1, "fc1.weight", (n,), Dist("uniform", 1.0)).double()
    assert abs(((u > 0) == (a > 0)).double().mean().item() - 0.5) < 0.01


def test_different_seeds_differ():
    xs = [generate(s, "w", (1000,), Dist("normal", 1.0)) for s in (0, 1, 2, 2**32, 2**64 - 1)]
    for i in range(len(xs)):
        for j in range(i):
            assert (xs[i] != xs[j]).double().mean().item() > 0.99


def test_ln_and_cos_match_math_to_1e_14():
    rng = np.random.default_rng(0)
    u1 = (rng.integers(0, 2**32, 100_000, dtype=np.uint64) + 1).astype(np.float64) * 2.0**-32
    edge = [2.0**-32, 1 - 2.0**-32, 1.0, 0.5, 2.0, math.sqrt(0.5), 1e-300, 1e300]
    x = np.concatenate([u1, np.exp(rng.uniform(-700, 700, 50_000)), edge])
    ref = np.array([math.log(v) for v in x])
    assert np.all(np.abs(rng_mod._ln(x) - ref) <= 1e-14 * np.maximum(1.0, np.abs(ref)))
    t = np.concatenate(
        [rng.integers(0, 2**32, 100_000).astype(np.float64) * 2.0**-32, rng.random(50_000), [0, 0.25, 0.5, 1.0]]
    )
    ref = np.array([math.cos(2 * math.pi * v) for v in t])
    assert np.abs(rng_mod._cos_turns(t) - ref).max() < 1e-14


def test_zero_for_bias():
    m = TinyBlock()
    m.attn.c_attn_bias = nn.Parameter(torch.full((4,), 7.0))
    for name in SCHEMES:
        init_from_seed(m, 3, name)
        assert torch.count_nonzero(m.attn.c_attn.bias) == 0 and torch.count_nonzero(m.attn.c_attn_bias) == 0
        assert torch.all(m.ln.weight == 1) and torch.all(m.ln.bias == 0)  # other < 2-D params: ones


def test_golf_is_he_uniform_into_relu_and_xavier_elsewhere():
    m, golf = TinyBlock(), SCHEMES["golf"]
    for name, p in m.named_parameters():
        if p.dim() < 2:
            continue
        fi, fo = fans(p.shape)
        he = name in ("mlp.fc.weight",)
        want = Dist("uniform", math.sqrt(6 / fi) if he else math.sqrt(6 / (fi + fo)))
        assert golf(name, p) == want, name
    w = torch.empty(8, 4)
    for name in ("h.0.mlp.c_fc.weight", "fc1.weight", "mlp.up.weight", "layers.1.mlp.up_proj.weight"):
        assert golf(name, w) == Dist("uniform", math.sqrt(6 / 4)), name
    for name in ("mlp.fc2.weight", "mlp.c_proj.weight", "group.weight", "fc.weight", "lm_head.weight"):
        assert golf(name, w) == Dist("uniform", math.sqrt(6 / 12)), name


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2), (6, 2, 3, 3), (2, 0), (7, 5, 1, 1, 2)])
def test_fans_match_torch(shape):
    assert fans(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_unknown_scheme_is_config_error():
    with pytest.raises(ConfigError) as e:
        init_from_seed(lenet(), 0, "he_normal")
    msg = str(e.value)
    assert "\n" not in msg and "he_normal" in msg and all(name in msg for name in SCHEMES)


@pytest.mark.parametrize(
    "bad",
    [lambda: Dist("gaussian", 1.0), lambda: Dist("normal", -1.0), lambda: Dist("uniform", math.inf),
     lambda: Dist("normal", 1e-30), lambda: generate(-1, "w", (2,), Dist("ones")),
     lambda: generate(2**64, "w", (2,), Dist("ones")), lambda: generate(0, "w", (2, -1), Dist("ones"))],
)
def test_bad_dist_seed_or_shape_is_config_error(bad):
    with pytest.raises(ConfigError):
        bad()


def test_init_from_seed_fills_on_param_dtype():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ref = init_from_seed(lenet(), 11)
    for device in devices:
        for dtype in (torch.float64, torch.bfloat16, torch.float16):
            m = lenet().to(device=device, dtype=dtype)
            assert init_from_seed(m, 11) is m
            for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
                assert p.dtype == dtype and p.device.type == device
                assert torch.equal(p, q.to(device=device, dtype=dtype)), name
                assert p.requires_grad and p.grad is None
