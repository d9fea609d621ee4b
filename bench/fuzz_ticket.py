"""Fuzz the ticket reader: mutated files must give a ticket or a TicketError, never anything else, and no
load may take over 2 s or 1 GB.

    python bench/fuzz_ticket.py [--n 5000] [--seed 0] [--docs]   # --smoke: a handful, in seconds

Builds real LeNet ticket files (range-coded at 20% and 2%, raw at 50%, row/column-structured masks, and
a weights="stored" ticket with fp16 survivors and a bf16 scale), each with the meta a packed run records
(its config, dataset, lth version, results), then throws ``--n`` mutants at the reader, the same number
of each kind:

* byte level (flips, truncations, insertions, deletions): all caught by the checksum;
* container level, checksum recomputed: header JSON edits, payload flips, mask codings relabelled;
* semantic, checksum recomputed: a header field (arch, meta, meta.config, a mask entry) given a value of
  another type, an unknown field added (to the header, arch, kwargs, meta, meta.config, a mask entry),
  a key removed, huge counts (up to 400,000 mask entries, 20,000 float entries, counts and shapes near
  2**31), huge architectures (hidden layers of 20,000 and 60,000 units, wide inputs, 2**24 classes, a
  100-layer GPT).

Each load (``lth.ticket.inspect``: decode, rebuild, weights digest) runs in a forked child under a 1 GB
address-space cap (``RLIMIT_AS``, over what the child starts with) and a 2 s timer. Outcomes per kind:
``loads`` (rebuilt), ``build refused`` (decoded, refused by the rebuild: a one-line TicketError),
``refused`` (a one-line TicketError from the reader), ``other`` (any other exception), ``slow`` (over
2 s), ``memory`` (out of memory, or over 1 GB more resident). Prints the table, writes
bench/results/fuzz_ticket.json and with ``--docs`` the table into docs/benchmarks.md. Exit status 1 if
any mutant ends as other, slow or memory.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import random
import re
import resource
import select
import signal
import struct
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import common
from common import ROOT, record, table

from lth import __version__
from lth import ticket as T
from lth.init import init_from_seed
from lth.models import build
from lth.presets import Config

importlib.import_module("lth.models.gpt")  # imported once here, as in any lth process, not in each child
torch.set_num_threads(1)  # forked children must not inherit a busy thread pool
ARCH = T.make_arch("lenet_300_100", (1, 28, 28), 10)
SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
SECONDS, CAP = 2.0, 1 << 30


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
    meta = {"task": "mnist", "level": 4, "source": "runs/quick", "config": Config(name="fuzz").to_dict(),
            "dataset": "mnist", "lth_version": __version__, "results": {"test_acc": 0.981}}
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
    """(header, payloads) of a ticket file, version 1 (JSON as is) or 2 (zlib-compressed JSON)."""
    (version, hlen) = struct.unpack_from("<HI", data, 4)
    head = data[10 : 10 + hlen]
    return json.loads(zlib.decompress(head) if version == 2 else head), data[10 + hlen : -32]


def reforge(header, payloads: bytes) -> bytes:
    """Re-pack as version 2 with a valid checksum, so the mutant gets past the envelope checks."""
    head = zlib.compress(json.dumps(header).encode(), 9)
    body = b"LTHT" + struct.pack("<HI", 2, len(head)) + head + payloads
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


# Semantic mutations: the header stays a well-formed ticket container; what it says is wrong.
OTHER_TYPES = [None, True, False, 0, -1, 7, 2**31, 2**70, 1.5, -0.0, "", "x", "a\0b", "mnist", "text",
               "gpt_cpu", "0" * 64, [], [1], [1, 28, 28], ["x"], {}, {"a": 1}, {"config": {}}, [[[[[]]]]]]


def _fields(header: dict) -> list[tuple[dict, str]]:
    """(container, key) of every field lth reads: top level, arch, kwargs, meta, meta.config, entries."""
    out = [(header, k) for k in header]
    for sub in ("arch", "meta"):
        if isinstance(header.get(sub), dict):
            out += [(header[sub], k) for k in header[sub]]
    for node in (header["arch"].get("kwargs"), header["meta"].get("config")):
        if isinstance(node, dict):
            out += [(node, k) for k in node]
    for e in header["masks"] + header["floats"]:
        out += [(e, k) for k in e]
    return out


def type_swap(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    node, key = rng.choice(_fields(header))
    node[key] = rng.choice([v for v in OTHER_TYPES if type(v) is not type(node[key])])
    return reforge(header, payloads)


def unknown_field(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    node = rng.choice([header, header["arch"], header["arch"]["kwargs"], header["meta"], header["meta"]["config"],
                       rng.choice(header["masks"])])
    node[rng.choice(["foo", "hidden", "n_layer", "extra_field", "weights_source", "x" * 40])] = rng.choice(OTHER_TYPES)
    return reforge(header, payloads)


def missing_key(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    node, key = rng.choice(_fields(header))
    del node[key]
    return reforge(header, payloads)


def huge_count(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    n = rng.choice([10_001, 20_000, 100_000, 400_000])
    choice = rng.randrange(5)
    if choice == 0:  # many empty masks (the 1 MB ticket that took 23 s and 1 GB)
        header["masks"] = [{"name": f"m{i}", "shape": [0], "coding": "none", "nbytes": 0, "count": 0} for i in range(n)]
    elif choice == 1:  # many empty floats
        header["floats"] = [{"name": f"f{i}", "shape": [0], "dtype": "float32", "nbytes": 0} for i in range(n // 5)]
    elif choice == 2:  # a huge count or shape for one mask
        e = rng.choice(header["masks"])
        e[rng.choice(["count", "shape"])] = rng.choice([2**31, 2**40, [2**31, 2**31], [n, n], [65536, 65536]])
    elif choice == 3:  # one real mask entry listed many times under other names
        e = header["masks"][0]
        header["masks"] += [{**e, "name": f"{e['name']}{i}", "nbytes": 0} for i in range(rng.choice([100, n]))]
    else:  # a range-coded mask declared as a huge all-kept tensor
        e = rng.choice(header["masks"])
        e.update(shape=[300, 784 * rng.choice([1000, 100_000])], coding="all", count=300 * 784 * 1000)
    return reforge(header, payloads)


def huge_arch(rng: random.Random, data: bytes) -> bytes:
    header, payloads = split(data)
    arch = header["arch"]
    choice = rng.randrange(5)
    if choice == 0:
        arch["kwargs"] = {"hidden": rng.choice([[60000, 60000], [20000, 20000], [20000], [300, 100] * 50, [1] * 2000])}
    elif choice == 1:
        arch["input_shape"] = rng.choice([[1, 28, 28000], [1000, 1000, 1000], [3, 224, 224], [2**24, 2**24]])
    elif choice == 2:
        arch["num_classes"] = rng.choice([2**24, 10**6, 2**31])
    elif choice == 3:  # a language model, meta made consistent, as big as the kwargs ask
        arch.update(model="gpt_golf", input_shape=[rng.choice([1024, 10**6])], num_classes=rng.choice([1024, 10**6]),
                    kwargs=rng.choice([{}, {"n_layer": 100}, {"n_embd": 8192}, {"n_layer": 2}]))
        header["meta"]["config"].update(model="gpt_golf", dataset="text")
        header["meta"]["dataset"] = "text"
    else:  # a big architecture whose masks are left as they were
        arch["kwargs"] = {"hidden": [rng.choice([1000, 5000, 12000])] * rng.choice([1, 2, 4])}
    return reforge(header, payloads)


MUTATIONS = {
    "byte flip": flip, "truncation": truncate, "insertion": insert, "deletion": delete,
    "header JSON edit+sum": edit_header, "payload flip+sum": edit_payload, "coding relabel+sum": swap_codings,
    "field type swapped+sum": type_swap, "unknown field+sum": unknown_field, "key removed+sum": missing_key,
    "huge counts+sum": huge_count, "huge architecture+sum": huge_arch,
}


# ---------------------------------------------------------------------------------------------------
def outcome(data: bytes) -> tuple[str, str]:
    """One load: decode, rebuild and digest (what `lth inspect` does)."""
    try:
        info = T.inspect(data, source="fuzz.ticket")
    except T.TicketError as e:
        msg = str(e)
        return ("memory" if "MemoryError" in msg or "alloc" in msg else "refused"), msg
    except MemoryError as e:
        return "memory", repr(e)
    except Exception as e:  # the bug this script hunts for
        return "other", f"{type(e).__name__}: {e}"
    if info["build_error"]:
        msg = info["build_error"]
        return ("memory" if "MemoryError" in msg or "alloc" in msg else "build refused"), msg
    return "loads", ""


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _child(data: bytes, w: int) -> None:
    try:
        vm = _status("VmSize:")
        resource.setrlimit(resource.RLIMIT_AS, (vm + CAP, vm + CAP))
        rss0 = _status("VmRSS:")
        t0 = time.perf_counter()
        result, msg = outcome(data)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
        if result not in ("other", "memory") and ("\n" in msg):
            result, msg = "other", "multi-line TicketError: " + msg
        if peak > CAP:
            result = "memory"
        payload = [result, msg[:400], seconds, peak]
    except BaseException as e:  # noqa: BLE001 - reported, never hidden
        payload = ["other", f"{type(e).__name__}: {e}"[:400], 0.0, 0]
    os.write(w, json.dumps(payload).encode())
    os._exit(0)


def run_one(data: bytes) -> tuple[str, str, float, int]:
    """outcome(data) in a forked child with a 1 GB cap and a 2 s timer (killed at 2 s + 3 s)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(data, w)
    os.close(w)
    t0 = time.perf_counter()
    chunks = []
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, SECONDS + 3 - (time.perf_counter() - t0)))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "slow", "killed after 5 s", time.perf_counter() - t0, 0
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return "memory" if os.WIFSIGNALED(status) else "other", f"child died (status {status})", 0.0, 0
    result, msg, seconds, peak = json.loads(b"".join(chunks))
    if seconds > SECONDS and result != "other":
        result = "slow"
    return result, msg, seconds, peak


def message_kind(msg: str) -> str:
    """A TicketError message with the source, names and numbers blanked, to group alike failures."""
    msg = msg.split(": ", 1)[-1]
    msg = re.sub(r"'[^']*'", "'.'", msg.split(" (")[0])
    return re.sub(r"[\d,]+\d", "N", msg)[:80]


OUTCOMES = ["loads", "build refused", "refused", "other", "slow", "memory"]


def write_docs(rows: list[dict], args, seconds: float, files: dict, docs: Path) -> None:
    """Replace the fuzz section of docs/benchmarks.md with this run's table."""
    lines = [
        "## Ticket file: fuzzing the reader", "",
        f"`python bench/fuzz_ticket.py --n {args.n} --docs` — {args.n:,} mutants of five real LeNet ticket files "
        f"(range-coded 20% and 2%, raw 50%, row/column-structured, stored fp16 weights with a bf16 scale; each "
        f"with a packed run's meta: config, dataset, lth version, results), {len(MUTATIONS)} kinds, the same "
        f"number of each; every load (decode, rebuild, weights digest, as `lth inspect`) in a forked child "
        f"under a 1 GB address-space cap and a 2 s timer; {seconds:.0f} s on 2 shared cores. \"+sum\": checksum "
        f"recomputed, so the checks behind it run. *decodes* = the reader accepted the header (then the "
        f"rebuild loaded it or refused it with one line).", "",
        "| mutation | n | decodes | loads | build refused | refused | other exception | over 2 s | over 1 GB | "
        "slowest | most memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['mutation']} | {r['n']:,} | {r['loads'] + r['build refused']:,} | {r['loads']:,} | "
                     f"{r['build refused']:,} | {r['refused']:,} | {r['other']} | {r['slow']} | {r['memory']} | "
                     f"{r['max_seconds']:.2f} s | {r['max_mb']:.0f} MB |")
    lines += ["", "The mutants that load are edits a recomputed checksum cannot catch and the schema allows (a "
              "changed seed, `meta` value, config value of the right type, float value, or a smaller "
              "architecture the masks still fit); every other mutant is refused with one `TicketError` line "
              "(`lth.ticket.schema`: types, registered names, masks that fit the architecture built on the "
              "meta device, `--max-params`, entry counts).", ""]
    text = docs.read_text()
    start = text.index("## Ticket file: fuzzing the reader")
    end = text.index("\n## ", start + 1) + 1
    docs.write_text(text[:start] + "\n".join(lines) + "\n" + text[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000, help="mutants in all (the same number of each kind)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="2 mutants of each kind, results to --out only")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/fuzz_ticket.json)")
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--only", default=None, help="one mutation kind (a MUTATIONS name)")
    args = ap.parse_args()
    if args.smoke:
        args.n = 2 * len(MUTATIONS)

    rng = random.Random(args.seed)
    files = seed_files()
    for name, data in files.items():
        assert run_one(data)[0] == "loads", name
    kinds = [args.only] if args.only else list(MUTATIONS)
    counts: dict[str, Counter] = defaultdict(Counter)
    worst: dict[str, list] = defaultdict(lambda: [0.0, 0])
    messages: Counter = Counter()
    bad: list[str] = []
    t0 = time.perf_counter()
    for i in range(args.n):
        kind = kinds[i % len(kinds)]
        seed_name = rng.choice(list(files))
        result, msg, seconds, peak = run_one(MUTATIONS[kind](rng, files[seed_name]))
        counts[kind][result] += 1
        worst[kind] = [max(worst[kind][0], seconds), max(worst[kind][1], peak)]
        if result in ("refused", "build refused"):
            messages[message_kind(msg)] += 1
        elif result in ("other", "slow", "memory") and len(bad) < 40:
            bad.append(f"{result}: {kind} on {seed_name}: {msg}")
    seconds = time.perf_counter() - t0

    rows = [{"mutation": k, "n": sum(counts[k].values()), **{o: counts[k][o] for o in OUTCOMES},
             "max_seconds": round(worst[k][0], 3), "max_mb": round(worst[k][1] / 2**20, 1)} for k in kinds]
    total = {"mutation": "TOTAL", **{c: sum(r[c] for r in rows) for c in ["n", *OUTCOMES]},
             "max_seconds": max(r["max_seconds"] for r in rows), "max_mb": max(r["max_mb"] for r in rows)}
    rows.append(total)
    print(table(rows, ["mutation", "n", *OUTCOMES, "max_seconds", "max_mb"]))
    print(f"\n{args.n} mutants of {len(files)} files ({', '.join(f'{k} {len(v)} B' for k, v in files.items())}) "
          f"in {seconds:.1f} s")
    print("most common TicketError messages:")
    for msg, n in messages.most_common(15):
        print(f"  {n:6d}  {msg}")
    for line in bad:
        print("BAD:", line)
    payload = {"n": args.n, "seed": args.seed, "smoke": args.smoke, "seconds": seconds, "rows": rows,
               "limits": {"seconds": SECONDS, "bytes": CAP},
               "files": {k: len(v) for k, v in files.items()}, "messages": dict(messages.most_common(40)), "bad": bad}
    if args.out:
        from lth.io import atomic_write_json

        atomic_write_json(Path(args.out), payload)
        print(f"wrote {args.out}")
    elif not args.smoke:
        print(f"wrote {record('fuzz_ticket', payload)}")
    if args.docs and not args.smoke:
        write_docs(rows, args, seconds, files, ROOT / "docs" / "benchmarks.md")
        print("wrote docs/benchmarks.md")
    raise SystemExit(1 if total["other"] + total["slow"] + total["memory"] else 0)


if __name__ == "__main__":
    common.run_main(main)
