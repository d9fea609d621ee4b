"""Run by tests/test_distributed.py under torchrun: a tiny language-model training run (dense, with
warmup, warmdown, clipping and gradient accumulation); rank 0 writes results.csv."""

import sys

from lth import lottery
from lth.presets import Config

cfg = Config(**{**Config().to_dict(), **{k: v for k, v in __import__("json").loads(sys.argv[2]).items()}})
lottery.run(cfg, sys.argv[1], progress=False, dense_only=True)
