"""Fuzz the ticket reader: mutated files must give a ticket or a TicketError, never anything else.

    python bench/fuzz_ticket.py [--n 10000] [--seed 0]

Builds real LeNet ticket files (range-coded at 20% and 2%, raw at 50%, row/column-structured masks, and
a weights="stored" ticket with fp16 survivors and a bf16 scale), then throws ``--n`` mutants at
``decode`` + ``build_model``: byte flips, truncations, insertions, deletions (all caught by the checksum),
and header JSON edits and payload byte flips with a recomputed checksum, so that the checks behind the
checksum (sizes, counts, codings, range decoding, the architecture) are exercised too. Prints outcome
counts per mutation and writes bench/results/fuzz_ticket.json. Exit status 1 if any "other" exception.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import re
import struct
import time
from collections import Counter, defaultdict

import numpy as np
import torch
from common import record, table

from lth import ticket as T
from lth.init import init_from_seed
from lth.models import build

ARCH = T.make_arch("lenet_300_100", (1, 28, 28), 10)
SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


# ---------------------------------------------------------------------------------------------------
# Seed files.
def random_masks(rng: np.random.Generator, density: float) -> dict:
    return {n: torch.from_numpy(rng.random(s) < density) for n, s in SHAPES.items()}


def structured_masks(rng: np.random.Generator) -> dict:
    """fc1 with dead neurons (range_rows), fc2 with dead inputs (range_cols), fc3 random."""
    rows = (rng.random((300, 1)) < 0.5) & (rng.random((300, 784)) < 0.3)
    cols = (rng.random((1, 300)) < 0.5) & (rng.random((100, 300)) < 0.3)
    return {"fc1.weight": torch.from_numpy(rows), "fc2.weight": torch.from_numpy(cols),
            "fc3.weight": torch.from_numpy(rng.random((10, 100)) < 0.2)}


def seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    meta = {"task": "mnist", "test_acc": 0.981, "level": 4, "source": "runs/quick"}
    files = {}
    for name, masks in [("range20", random_masks(rng, 0.2)), ("range2", random_masks(rng, 0.02)),
                        ("raw50", random_masks(rng, 0.5)), ("structured", structured_masks(rng))]:
        files[name] = T.encode(T.Ticket(arch=ARCH, seed=1, init="glorot_normal", masks=masks, meta=meta))
    masks = random_masks(rng, 0.05)
    trained = init_from_seed(build("lenet_300_100", (1, 28, 28), 10), 2, "kaiming_uniform")
    floats = {**T.surviving_floats(trained, masks, torch.float16), "scale.fc1": torch.ones(300, dtype=torch.bfloat16)}
    files["stored"] = T.encode(T.Ticket(arch=ARCH, seed=1, init="glorot_normal", masks=masks, floats=floats,
                                        weights="stored", meta={**meta, "rewind_step": 500}))
    return files


# ---------------------------------------------------------------------------------------------------
# Mutations: each takes (rng, data) and returns the mutant.
def split(data: bytes) -> tuple[dict, bytes]:
    (hlen,) = struct.unpack_from("<I", data, 6)
    return json.loads(data[10 : 10 + hlen]), data[10 + hlen : -32]


def reforge(header, payloads: bytes) -> bytes:
    """Re-pack with a valid checksum, so the mutant gets past the envelope checks."""
    head = json.dumps(header).encode()
    body = b"LTHT" + struct.pack("<HI", 1, len(head)) + head + payloads
    return body + hashlib.sha256(body).digest()


def flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def insert(rng: random.Random, data: bytes) -> bytes:
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[pos:]


def delete(rng: random.Random, data: bytes) -> bytes:
    pos = rng.randrange(len(data))
    return data[:pos] + data[pos + rng.randint(1, 16) :]


def _paths(obj, prefix=()):
    """Every (container, key) in a JSON tree."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield obj, k
        yield from _paths(v, prefix + (k,))


def _new_value(rng: random.Random, old):
    """A plausible-but-wrong replacement: nearby ints, other types, other codings/dtypes, deep nesting.
    Sizes stay bounded (no 10**9-entry shapes that would only measure the allocator)."""
    choices = [None, True, 0, -1, 1, 2**63, 2**70, 1.5, float("inf"), "", "x", [], {}, [1, 2], {"a": 1},
               "range", "range_rows", "range_cols", "raw", "all", "none", "float16", "bfloat16", "float64",
               "seed", "stored", "lenet_300_100", [[[[[]]]]]]
    if isinstance(old, int) and not isinstance(old, bool):
        choices += [old + 1, old - 1, old * 2, old // 2, old + 8, -old]
    if isinstance(old, list) and old and all(isinstance(x, int) for x in old):
        choices += [old[::-1], old[:-1], old + [1], [x + 1 for x in old], [x * 2 for x in old]]
    if isinstance(old, str):
        choices += [old.upper(), old + "x", old[:-1]]
    return rng.choice(choices)


def edit_header(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    paths = list(_paths(header))
    for _ in range(rng.randint(1, 2)):
        container, key = rng.choice(paths)
        action = rng.random()
        if action < 0.1 and isinstance(container, dict):
            del container[key]
        elif action < 0.15 and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        else:
            container[key] = _new_value(rng, container[key])
        paths = list(_paths(header))
        if not paths:
            break
    return reforge(header, payloads)


def edit_payload(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    if not payloads:
        return reforge(header, payloads)
    return reforge(header, flip(rng, payloads))


def swap_codings(rng: random.Random, data: bytes) -> bytes:
    """Keep every payload but relabel one mask's coding: garbage fed to the other decoders."""
    header, payloads = split(data)
    entry = rng.choice(header["masks"])
    entry["coding"] = rng.choice([c for c in T.CODINGS if c != entry["coding"]])
    return reforge(header, payloads)


MUTATIONS = {
    "flip": (flip, 0.25), "truncate": (truncate, 0.12), "insert": (insert, 0.08), "delete": (delete, 0.05),
    "header_edit+sum": (edit_header, 0.30), "payload_flip+sum": (edit_payload, 0.12),
    "coding_swap+sum": (swap_codings, 0.08),
}


# ---------------------------------------------------------------------------------------------------
def outcome(data: bytes) -> tuple[str, str]:
    try:
        T.build_model(T.decode(data, source="fuzz.ticket"))
        return "ok", ""
    except T.TicketError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        return "TicketError", msg
    except Exception as e:  # the bug this script hunts for
        return "other", f"{type(e).__name__}: {e}"


def message_kind(msg: str) -> str:
    """A TicketError message with the source, names and numbers blanked, to group alike failures."""
    msg = msg.split(": ", 1)[1]
    msg = re.sub(r"'[^']*'", "'.'", msg.split(" (")[0])
    return re.sub(r"\d+", "N", msg)[:80]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    files = seed_files()
    for name, data in files.items():
        assert outcome(data)[0] == "ok", name
    names, weights = list(MUTATIONS), [w for _, w in MUTATIONS.values()]
    counts: dict[str, Counter] = defaultdict(Counter)
    messages: Counter = Counter()
    others: list[str] = []
    t0 = time.perf_counter()
    for _ in range(args.n):
        kind = rng.choices(names, weights)[0]
        seed_name = rng.choice(list(files))
        result, msg = outcome(MUTATIONS[kind][0](rng, files[seed_name]))
        counts[kind][result] += 1
        if result == "TicketError":
            messages[message_kind(msg)] += 1
        elif result == "other" and len(others) < 20:
            others.append(f"{kind} on {seed_name}: {msg}")
    seconds = time.perf_counter() - t0

    rows = [{"mutation": k, "n": sum(c.values()), "ok": c["ok"], "TicketError": c["TicketError"], "other": c["other"]}
            for k, c in counts.items()]
    total = Counter()
    for c in counts.values():
        total.update(c)
    rows.append({"mutation": "TOTAL", "n": sum(total.values()), "ok": total["ok"],
                 "TicketError": total["TicketError"], "other": total["other"]})
    print(table(rows, ["mutation", "n", "ok", "TicketError", "other"]))
    print(f"\n{args.n} mutants of {len(files)} files ({', '.join(f'{k} {len(v)} B' for k, v in files.items())}) "
          f"in {seconds:.1f} s")
    print("most common TicketError messages:")
    for msg, n in messages.most_common(12):
        print(f"  {n:6d}  {msg}")
    for line in others:
        print("OTHER:", line)
    out = record("fuzz_ticket", {
        "n": args.n, "seed": args.seed, "seconds": seconds, "rows": rows,
        "files": {k: len(v) for k, v in files.items()}, "messages": dict(messages.most_common(40)), "others": others,
    })
    print(f"wrote {out}")
    raise SystemExit(1 if total["other"] else 0)


if __name__ == "__main__":
    main()
