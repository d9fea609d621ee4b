"""Run by tests/test_distributed.py under torchrun: a tiny image task whose batches turn NaN on rank 1
only, from step 3 on. Each rank writes rank<R>.json: the one-line error it stopped with."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lth import lottery
from lth.errors import NonFiniteLoss
from lth.metrics import ACC, MetricSpec
from lth.presets import Config
from lth.tasks import TASKS, TaskEntry
from lth.tasks.classify import ImageClassification


class NanOnRank1:
    """y = sign of the pixel sum; rank 1's batches are NaN from its 4th batch on."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(200, 1, 4, 4, generator=g)
        self.y = (self.x.sum((1, 2, 3)) > 0).long()
        self.shape, self.num_classes, self.train_size, self.calls = (1, 4, 4), 2, 200, 0

    def to(self, device):
        return self

    def batch(self, idx):
        self.calls += 1
        x = self.x[idx]
        if os.environ.get("RANK") == "1" and self.calls > 3:
            x = torch.full_like(x, float("nan"))
        return x, self.y[idx]

    loss = staticmethod(ImageClassification.loss)  # sum over members of each member's mean cross-entropy

    @torch.no_grad()
    def evaluate(self, forward, members, split, *, rank=0, world=1):
        x, y = self.x[rank::world], self.y[rank::world]
        out = forward(x.expand(members, *x.shape))
        loss = F.cross_entropy(out.transpose(1, 2), y.expand(members, -1), reduction="none").sum(1).double()
        return {"loss": loss, "acc": (out.argmax(-1) == y).sum(1).double(), "n": torch.full_like(loss, len(y))}


TASKS.register("nan_on_rank1")(TaskEntry(
    "nan_on_rank1", lambda cfg, device: NanOnRank1(), lambda cfg: ((1, 4, 4), 2),
    MetricSpec(("val_loss", "val_acc", "test_loss", "test_acc"), (ACC,)), "image"))
cfg = Config(dataset="nan_on_rank1", model_args={"hidden": [8]}, layer_rates={}, batch_size=8, iterations=10,
             eval_every=5, levels=0)
try:
    lottery.run(cfg, sys.argv[1], progress=False, dense_only=True)
    error = None
except NonFiniteLoss as e:
    error = str(e)
Path(sys.argv[2], f"rank{os.environ['RANK']}.json").write_text(json.dumps({"error": error}))
