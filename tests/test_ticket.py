"""lth.ticket: the ticket file round-trips exactly, stays near the entropy bound and refuses bad files."""

import ast
import functools
import hashlib
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lth.ticket as T
from lth.init import generate, glorot_normal, init_from_seed
from lth.init import weights_sha256 as init_sha256
from lth.models import build
from lth.ticket import Ticket, TicketError

LENET_ARCH = T.make_arch("lenet_300_100", (1, 28, 28), 10)
LENET_SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
OVERHEAD_BYTES = 8  # allowed fixed overhead per tensor beyond 1% of the entropy bound
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def magnitude_masks(density: float, seed: int = 0) -> dict:
    """LeNet masks keeping the largest-magnitude fraction ``density`` of glorot-normal weights."""
    masks = {}
    for name, shape in LENET_SHAPES.items():
        w = generate(seed, name, shape, glorot_normal(name, torch.empty(shape))).abs().reshape(-1)
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.argsort(w, descending=True, stable=True)[: round(density * w.numel())]] = True
        masks[name] = keep.reshape(shape)
    return masks


def lenet_ticket(density: float = 0.05, **kw) -> Ticket:
    return Ticket(arch=LENET_ARCH, seed=7, init="glorot_normal", masks=magnitude_masks(density), **kw)


@functools.lru_cache(maxsize=None)
def lenet_bytes(density: float = 0.05) -> bytes:
    return T.encode(lenet_ticket(density, meta={"task": "mnist", "test_acc": 0.98, "level": 3}))


def split(data: bytes) -> tuple[dict, bytes]:
    """(header, payloads) of a ticket file."""
    (version, hlen) = struct.unpack_from("<HI", data, 4)
    head = data[10 : 10 + hlen]
    return json.loads(zlib.decompress(head) if version == 2 else head), data[10 + hlen : -32]


def reforge(header: dict, payloads: bytes, version: int = 2, head: bytes | None = None) -> bytes:
    """A file with an edited header (``head``: these header bytes as stored) and a valid checksum, so
    that the checks behind the checksum run."""
    if head is None:
        head = json.dumps(header).encode()
        head = zlib.compress(head) if version == 2 else head
    body = b"LTHT" + struct.pack("<HI", version, len(head)) + head + payloads
    return body + hashlib.sha256(body).digest()


def assert_same_ticket(a: Ticket, b: Ticket) -> None:
    assert json.loads(json.dumps(a.arch)) == b.arch and a.seed == b.seed and a.init == b.init
    assert a.weights == b.weights and json.loads(json.dumps(a.meta)) == b.meta
    assert list(a.masks) == list(b.masks) and list(a.floats) == list(b.floats)
    for name, m in a.masks.items():
        assert b.masks[name].dtype == torch.bool and torch.equal(m, b.masks[name])
    for name, f in a.floats.items():
        g = b.floats[name]
        assert g.dtype == f.dtype and g.shape == f.shape
        bits = torch.int32 if f.dtype == torch.float32 else torch.int16
        assert torch.equal(f.contiguous().view(bits), g.view(bits))  # bit-exact, NaN payloads included


# ---------------------------------------------------------------------------------------------------
@st.composite
def masks_and_floats(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = {}
    for i in range(draw(st.integers(0, 4))):
        shape = tuple(draw(st.lists(st.integers(0, 24), min_size=0, max_size=3)))
        kind = draw(st.sampled_from(["empty", "full", "random", "sparse", "rows", "cols"]))
        n = math.prod(shape)
        if kind in ("empty", "full"):
            m = np.full(n, kind == "full")
        elif kind in ("rows", "cols") and len(shape) >= 2:
            per = rng.random(shape[0] if kind == "rows" else math.prod(shape[1:]))
            mat = rng.random((shape[0], math.prod(shape[1:]))) < (per[:, None] if kind == "rows" else per[None, :])
            m = mat.reshape(-1)
        else:
            m = rng.random(n) < (0.03 if kind == "sparse" else rng.random())
        masks[f"layer{i}.weight"] = torch.from_numpy(m.reshape(shape).copy())
    floats = {}
    for i, dtype in enumerate(draw(st.lists(st.sampled_from(list(T.FLOAT_DTYPES.values())), max_size=3))):
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=2)))
        values = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)
        if values.numel():
            values.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), -0.0, 1e-40, 3.0]))
        floats[f"scale.{i}"] = values
    return masks, floats


@FAST
@given(masks_and_floats(), st.integers(0, 2**64 - 1), st.sampled_from(T.WEIGHTS))
def test_round_trip_is_exact(contents, seed, weights):
    masks, floats = contents
    # weights="constant" carries one sign bit per survivor of each masked matrix (alternating here)
    signs = {n: torch.arange(int(m.sum())) % 2 == 0 for n, m in masks.items() if m.dim() >= 2} \
        if weights == "constant" else {}
    t = Ticket(arch={"model": "anything", "kwargs": {"h": [3, 4]}}, seed=seed, init="golf", masks=masks,
               floats=floats, weights=weights, meta={"task": "x", "acc": 0.5, "note": "ünïcode"}, signs=signs)
    back = T.decode(T.encode(t), strict=False)  # the container alone: any arch
    assert_same_ticket(t, back)
    assert set(back.signs) == set(signs) and all(torch.equal(back.signs[n], v) for n, v in signs.items())


def _structured(kind: str) -> torch.Tensor:
    rng = np.random.default_rng(1)
    if kind == "rows":  # a third of the neurons dead, the rest dense
        return torch.from_numpy(np.repeat(rng.random((300, 1)) < 0.66, 784, axis=1) & (rng.random((300, 784)) < 0.9))
    if kind == "cols":  # dead border pixels
        return torch.from_numpy(np.repeat(rng.random((1, 784)) < 0.66, 300, axis=0) & (rng.random((300, 784)) < 0.9))
    density = {"raw": 0.5, "range": 0.05, "all": 1.0, "none": 0.0}[kind]
    if density in (0.0, 1.0):
        return torch.full((300, 784), bool(density))
    return torch.from_numpy(rng.random((300, 784)) < density)


@pytest.mark.parametrize("kind,coding", [("none", "none"), ("all", "all"), ("raw", "raw"), ("range", "range"),
                                         ("rows", "range_rows"), ("cols", "range_cols")])
def test_each_coding_is_chosen_where_it_wins_and_round_trips(kind, coding):
    m = _structured(kind)
    t = Ticket(arch=LENET_ARCH, seed=0, init="glorot_normal", masks={"fc1.weight": m})
    data = T.encode(t)
    info = T.inspect(data)
    assert info["masks"][0]["coding"] == coding
    assert torch.equal(T.decode(data).masks["fc1.weight"], m)
    if coding in ("range_rows", "range_cols"):  # structure beats the i.i.d. bound
        assert info["mask_bytes"] < info["entropy_bound_bytes"]


@pytest.mark.parametrize("density", [0.5, 0.2, 0.05, 0.01])
def test_mask_bytes_within_one_percent_of_entropy_bound(density):
    masks = magnitude_masks(density)
    info = T.inspect(T.encode(Ticket(arch=LENET_ARCH, seed=0, init="glorot_normal", masks=masks)))
    bound = T.entropy_bound_bits(masks) / 8
    assert info["entropy_bound_bytes"] == pytest.approx(bound)
    assert info["mask_bytes"] <= 1.01 * bound + OVERHEAD_BYTES * len(masks)
    for tensor in info["masks"]:
        assert tensor["bytes"] <= 1.01 * tensor["bound_bytes"] + OVERHEAD_BYTES


def test_encoding_is_deterministic_and_golden():
    # Pins the byte format, constriction's range coder included: if this digest changes, every ticket
    # ever shipped may no longer decode, so the change is a format change (bump VERSION).
    masks = {"a": torch.from_numpy(np.random.default_rng(0).random((40, 50)) < 0.1)}
    t = Ticket(arch={"model": "m"}, seed=1, init="glorot_normal", masks=masks, meta={"k": 1})
    data = T.encode(t)
    assert data == T.encode(t)
    assert T.inspect(data, strict=False)["masks"][0]["coding"] == "range"
    # The content is pinned as the version-1 file it makes (header JSON stored as is): the compressed
    # bytes of version 2 depend on the zlib build, what they inflate to does not.
    (hlen,) = struct.unpack_from("<I", data, 6)
    head = zlib.decompress(data[10 : 10 + hlen])
    v1 = b"LTHT" + struct.pack("<HI", 1, len(head)) + head + data[10 + hlen : -32]
    assert hashlib.sha256(v1 + hashlib.sha256(v1).digest()).hexdigest() == GOLDEN_SHA256
    # and a range-coded payload written by this version must keep decoding to the same mask
    assert torch.equal(T.decode_mask("range", bytes.fromhex(GOLDEN_RANGE_PAYLOAD), (40, 50), 210), masks["a"])


GOLDEN_SHA256 = "13a38fae94fe23112c27cbb4eabf2fdd759a0f6452f737730d47596383ab4c4d"
GOLDEN_RANGE_PAYLOAD = (
    "cbd315b917be876eb93e4d3a0d3442e3b61ddf480501b16498ce298fa83de170edfab6d4d19b5a97cd967b65d2dc0fb5"
    "a891644bfb8ff621def9bc3d23bf0ecf7752533c82e01a5654ede3cb6a0afdf06eb1239ec4c14459f860e264c5fd7b71"
    "0d4709fb72243a7cd1c85fbe1c8c2144b39678dc56ba8a1e300c"
)


# ---------------------------------------------------------------------------------------------------
def test_every_flipped_byte_is_detected_exhaustively():
    data = lenet_bytes()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01  # a single bit: the smallest corruption
        with pytest.raises(TicketError):
            T.decode(bytes(bad))


@FAST
@given(st.data())
def test_every_flipped_byte_is_detected(data):
    good = lenet_bytes()
    pos = data.draw(st.integers(0, len(good) - 1))
    bad = bytearray(good)
    bad[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(TicketError) as e:
        T.decode(bytes(bad), source="model.ticket")
    msg = str(e.value)
    assert msg.startswith("model.ticket: ") and "\n" not in msg
    if pos >= 10:
        assert "checksum mismatch" in msg or "truncated" in msg


def test_every_truncation_is_detected():
    data = lenet_bytes()
    for n in range(len(data)):
        with pytest.raises(TicketError) as e:
            T.decode(data[:n])
        assert "truncated" in str(e.value) or "checksum" in str(e.value)
    with pytest.raises(TicketError, match="truncated"):
        T.decode(data[:-1])
    with pytest.raises(TicketError, match="truncated"):
        T.decode(data[:5])


def test_wrong_magic_is_reported():
    with pytest.raises(TicketError, match=r"not a ticket file: bad magic b'PK\\x03\\x04'"):
        T.decode(b"PK\x03\x04" + lenet_bytes()[4:])


def test_unknown_version_is_reported():
    header, payloads = split(lenet_bytes())
    with pytest.raises(TicketError, match="unknown ticket format version 3"):
        T.decode(reforge(header, payloads, version=3))


def test_version_1_file_with_plain_json_header_still_decodes():
    header, payloads = split(lenet_bytes())
    assert_same_ticket(T.decode(lenet_bytes()), T.decode(reforge(header, payloads, version=1)))


def test_compressed_header_is_smaller_than_its_json():
    data = lenet_bytes()
    header, _ = split(data)
    (hlen,) = struct.unpack_from("<I", data, 6)
    assert hlen < len(json.dumps(header, separators=(",", ":")).encode())


def test_bad_json_header_is_reported():
    body = b"LTHT" + struct.pack("<HI", 1, 5) + b"{nope"
    with pytest.raises(TicketError, match="header is not valid JSON"):
        T.decode(body + hashlib.sha256(body).digest())


def test_header_that_is_not_zlib_is_reported():
    header, payloads = split(lenet_bytes())
    with pytest.raises(TicketError, match="header is not a zlib stream"):
        T.decode(reforge(header, payloads, head=json.dumps(header).encode()))


def test_header_zlib_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(T, "MAX_HEADER_BYTES", 1 << 16)
    header, payloads = split(lenet_bytes())
    bomb = zlib.compress(json.dumps({**header, "pad": " " * (1 << 20)}).encode(), 9)  # ~1 kB -> 1 MB
    with pytest.raises(TicketError, match="inflates past"):
        T.decode(reforge(header, payloads, head=bomb))


def test_header_cut_off_inside_its_zlib_stream_is_reported():
    header, payloads = split(lenet_bytes())
    head = zlib.compress(json.dumps(header).encode())
    with pytest.raises(TicketError, match="cut off"):
        T.decode(reforge(header, payloads, head=head[:-6]))


def test_header_payload_size_mismatch_is_reported():
    header, payloads = split(lenet_bytes())
    header["masks"][0]["nbytes"] += 1
    with pytest.raises(TicketError, match="size mismatch"):
        T.decode(reforge(header, payloads))


@pytest.mark.parametrize("density", [0.5, 0.05])  # raw and range coded
def test_mask_count_not_matching_its_payload_is_reported(density):
    header, payloads = split(lenet_bytes(density))
    header["masks"][1]["count"] += 1
    with pytest.raises(TicketError, match="fc2.weight"):
        T.decode(reforge(header, payloads))


@FAST
@given(st.data())
def test_header_edits_behind_a_valid_checksum_never_raise_raw_errors(data):
    header, payloads = split(lenet_bytes())
    entry = header[data.draw(st.sampled_from(["masks", "floats"]))] or header["masks"]
    target = entry[data.draw(st.integers(0, len(entry) - 1))]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=5),
                                      st.lists(st.integers(-3, 2000), max_size=3), st.floats()))
    try:
        T.build_model(T.decode(reforge(header, payloads)))
    except TicketError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,match", [
    (T.make_arch("lenet_300_100", (1, 28, 28), 10, hidden=[200, 100]), "shape"),
    (T.make_arch("lenet_300_100", (1, 14, 14), 10), "shape"),
    (T.make_arch("resnet_9000", (1, 28, 28), 10), "not a registered model|cannot build"),
    ({"model": "lenet_300_100"}, "input_shape"),
])
def test_mismatched_architecture_is_refused(arch, match):
    data = T.encode(Ticket(arch=arch, seed=0, init="glorot_normal", masks=magnitude_masks(0.1)))
    with pytest.raises(TicketError, match=match):  # by the reader, before any mask is decoded
        T.decode(data)
    with pytest.raises(TicketError, match=match):  # and by the rebuild of a ticket made in memory
        T.build_model(T.decode(data, strict=False))


def test_mask_for_unknown_parameter_is_refused():
    masks = {**magnitude_masks(0.1), "fc9.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(TicketError, match="fc9.weight"):
        T.build_model(Ticket(arch=LENET_ARCH, seed=0, init="glorot_normal", masks=masks))


def test_unknown_init_scheme_is_refused():
    with pytest.raises(TicketError, match="init scheme"):
        T.build_model(Ticket(arch=LENET_ARCH, seed=0, init="nope", masks=magnitude_masks(0.1)))


def test_build_model_zeroes_pruned_weights_and_keeps_init_for_survivors():
    t = T.decode(lenet_bytes())
    model = T.build_model(t)
    ref = init_from_seed(build("lenet_300_100", (1, 28, 28), 10), t.seed, t.init)
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        if name in t.masks:
            m = t.masks[name]
            assert torch.equal(p[~m], torch.zeros_like(p[~m])) and not torch.signbit(p[~m]).any()
            assert torch.equal(p[m], ref_params[name][m])
        else:
            assert torch.equal(p, ref_params[name])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_stored_weights_round_trip_at_half_precision(dtype):
    masks = magnitude_masks(0.05)
    trained = init_from_seed(build("lenet_300_100", (1, 28, 28), 10), 3, "kaiming_uniform")
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(1.5).add_(0.01)  # anything that is not the seed's init
    floats = {**T.surviving_floats(trained, masks, dtype), "scale.fc1": torch.tensor([2.0])}
    t = Ticket(arch=LENET_ARCH, seed=7, init="glorot_normal", masks=masks, floats=floats, weights="stored")
    back = T.decode(T.encode(t))
    assert back.floats["fc1.weight"].shape == (int(masks["fc1.weight"].sum()),)
    built = dict(T.build_model(back).named_parameters())
    for name, p in trained.named_parameters():
        want = p.detach().to(dtype).float()
        if name in masks:
            want = want * masks[name]
        assert torch.equal(built[name], want)
    assert torch.equal(back.floats["scale.fc1"], torch.tensor([2.0]))


def test_weights_sha256_stable_across_encode_decode(tmp_path):
    t = lenet_ticket(0.2)
    digest = T.weights_sha256(t)
    assert digest == init_sha256(T.build_model(t))
    path = tmp_path / "model.ticket"
    assert T.save(t, path) == path.stat().st_size
    assert T.weights_sha256(T.load(path)) == digest == T.inspect(path.read_bytes())["weights_sha256"]


def test_inspect_accounts_for_every_byte():
    info = T.inspect(lenet_bytes())
    parts = info["header_bytes"] + info["mask_bytes"] + info["float_bytes"] + info["checksum_bytes"]
    assert parts == info["total_bytes"] == len(lenet_bytes())
    assert info["prunable_weights"] == 266_200
    assert [m["name"] for m in info["masks"]] == list(LENET_SHAPES)
    assert 0 <= info["gap_to_bound"] < 0.01


def test_load_never_unpickles(tmp_path, monkeypatch):
    files = sorted(Path(T.__file__).parent.glob("*.py"))  # the package: every layer
    source = "\n".join(f.read_text() for f in files)
    nodes = [n for f in files for n in ast.walk(ast.parse(f.read_text()))]
    imported = {a.name for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    imported |= {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve"}
    assert "torch.load" not in source and "pickle" not in source.replace("unpickled", "")

    import pickle

    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    path = tmp_path / "t.ticket"
    T.save(lenet_ticket(0.05), path)
    T.build_model(T.load(path))


def test_missing_file_is_a_ticket_error(tmp_path):
    with pytest.raises(TicketError, match="cannot read ticket"):
        T.load(tmp_path / "absent.ticket")


def test_encode_refuses_what_decode_would_refuse():
    with pytest.raises(TicketError, match="bool"):
        T.encode(Ticket(arch={}, seed=0, init="golf", masks={"a": torch.ones(3)}))
    with pytest.raises(TicketError, match="dtype"):
        T.encode(Ticket(arch={}, seed=0, init="golf", masks={}, floats={"s": torch.ones(3, dtype=torch.float64)}))
    with pytest.raises(TicketError, match="NaN"):
        T.encode(Ticket(arch={}, seed=0, init="golf", masks={}, meta={"acc": float("nan")}))
    with pytest.raises(TicketError, match="keeps"):
        T.encode(Ticket(arch={}, seed=0, init="golf", masks={"a": torch.ones(3, dtype=torch.bool)},
                        floats={"a": torch.ones(2)}, weights="stored"))


def test_absurd_shapes_are_refused_before_allocating():
    header, payloads = split(lenet_bytes())
    header["masks"][0]["shape"] = [2**20, 2**20, 2**20]
    with pytest.raises(TicketError, match="MAX_ELEMENTS"):
        T.decode(reforge(header, payloads))
    header, payloads = split(lenet_bytes())
    for i, e in enumerate(header["masks"]):  # each under the cap, the three together over it
        e["shape"], e["name"] = [2**31 + 1], f"m{i}"
    with pytest.raises(TicketError, match="MAX_ELEMENTS"):
        T.decode(reforge(header, payloads))


def test_range_decoding_in_chunks_gives_the_same_mask(monkeypatch):
    monkeypatch.setattr(T, "_DECODE_CHUNK", 1000)  # fc1's 235,200 entries span many chunks
    t = T.decode(lenet_bytes())
    assert all(torch.equal(t.masks[n], m) for n, m in magnitude_masks(0.05).items())
