"""Run by tests/test_distributed.py under torchrun: a tiny lottery run where every rank records digests
of the masks it computed itself (before rank 0's broadcast) and of its trained weights."""

import hashlib
import json
import os
import sys

import torch

from lth import level_masks, lottery
from lth.presets import Config

out, log_dir = sys.argv[1], sys.argv[2]
rank = int(os.environ.get("RANK", "0"))
digests = {"masks": [], "weights": []}


def digest(tensors):
    h = hashlib.sha256()
    for n in sorted(tensors):
        h.update(n.encode())
        h.update(tensors[n].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


prune = level_masks.LevelPruning.prune  # where the lottery computes a level's masks


def recording_prune(self, *a, **k):
    new = prune(self, *a, **k)
    digests["masks"].append(digest(new))
    return new


level_masks.LevelPruning.prune = recording_prune
train_group = lottery.Lottery._train_group


def recording_train_group(self, group, *a, **k):
    out = train_group(self, group, *a, **k)  # (final states, captured states, the gradual hook or None)
    digests["weights"].append(digest({f"{i}.{n}": v for i, f in enumerate(out[0]) for n, v in f.items()}))
    return out


lottery.Lottery._train_group = recording_train_group
cfg = Config(iterations=20, eval_every=10, levels=2, trials=2, controls=["random"], prune_rate=0.5)
lottery.run(cfg, out, progress=False)
with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
    json.dump(digests, f)
