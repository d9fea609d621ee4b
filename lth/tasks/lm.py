"""Next-token language modeling on token streams (lth.data.text): cross-entropy, accuracy, bits per byte.

Examples are the non-overlapping windows of ``seq_len + 1`` tokens starting at multiples of ``seq_len``
in the training stream (window i: inputs ``tokens[i T : i T + T]``, targets shifted by one), so
``train_size = (len(train) - 1) // seq_len``. Evaluation uses the same windows of the validation stream,
all of them or the first ``eval_tokens // seq_len`` (a fixed prefix, the same for every run).

Metrics. :meth:`evaluate` returns per-member SUMS that the trainer all-reduces and divides by ``n``
(the number of target tokens evaluated):

* ``loss``: summed next-token NLL in nats -> mean nats per token;
* ``acc``: number of targets that are the argmax -> next-token accuracy;
* ``bpb``: nats / ln 2 scaled by ``N / B``, where N and B are the target tokens and the UTF-8 bytes they
  decode to over ALL evaluated windows (every rank computes the same N and B): summed over ranks and
  divided by ``n = N`` this is (total nats) / ln 2 / B, the validation bits per byte, exactly.

Bytes come from the tokenizer's per-token byte lengths (``TokenData.token_bytes``); with the byte
vocabulary every token is one byte and bpb = loss / ln 2 (8.0 for uniform logits over 256 bytes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.text import TokenData
from ..errors import ConfigError, DataError

LN2 = math.log(2.0)


class LanguageModeling:
    metrics = ("loss", "acc", "bpb")
    splits = ("val",)  # one held-out split; evaluate("test") is the same split

    def __init__(self, data: TokenData, seq_len: int, *, eval_tokens: int | None = None):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
        self.data, self.seq_len = data, seq_len
        self.train_size = (len(data.train) - 1) // seq_len
        windows = (len(data.val) - 1) // seq_len
        for name, n, w in (("training", len(data.train), self.train_size), ("validation", len(data.val), windows)):
            if w < 1:
                raise ConfigError(f"the {name} split has {n} tokens, fewer than seq_len + 1 ({seq_len + 1})")
        if eval_tokens is not None:
            if eval_tokens < seq_len:
                raise ConfigError(f"eval_tokens must be at least seq_len = {seq_len}, got {eval_tokens}")
            windows = min(windows, eval_tokens // seq_len)
        self.eval_windows = windows
        self.shape = (seq_len,)
        self.num_classes = data.vocab_size
        # Targets and bytes over all evaluated windows (the same on every rank): bpb's N and B.
        y = self._windows(data.val, torch.arange(windows, device=data.val.device))[1]
        self.eval_targets = int(y.numel())
        self.eval_bytes = int(data.token_bytes[y.long()].sum())
        if self.eval_bytes < 1:
            raise DataError("the evaluated validation tokens decode to 0 bytes; bits per byte is undefined")

    def to(self, device) -> "LanguageModeling":
        self.data = self.data.to(device)
        return self

    def _windows(self, tokens: torch.Tensor, idx: torch.Tensor):
        """Window indices [...] -> inputs x [..., T] int64 and targets y [..., T] int64."""
        T = self.seq_len
        pos = idx.to(tokens.device)[..., None] * T + torch.arange(T + 1, device=tokens.device)  # [..., T + 1]
        w = tokens[pos].long()
        return w[..., :-1], w[..., 1:]

    def batch(self, idx: torch.Tensor):
        """idx: [M, B] window indices into the training stream -> x [M, B, T], y [M, B, T] (int64)."""
        return self._windows(self.data.train, idx)

    @staticmethod
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over members of each member's mean token cross-entropy; out [M, B, T, V], y [M, B, T]."""
        m = y.shape[0]
        return F.cross_entropy(out.reshape(y.numel(), -1), y.reshape(-1)) * m

    @torch.no_grad()
    def evaluate(self, forward, members: int, split: str, *, chunk: int | None = None, rank: int = 0, world: int = 1):
        """Per-member sums 'loss' (nats), 'acc' (correct), 'bpb' (see the module docstring) and 'n'
        (target tokens) over this rank's windows (``rank::world``) of the validation stream."""
        if split not in ("val", "test"):
            raise ConfigError(f"unknown split {split!r} for language modeling; it has 'val' (= 'test')")
        tokens, T, V = self.data.val, self.seq_len, self.num_classes
        if chunk is None:  # windows per forward: about 2**22 logits (32 MB as float64) at a time
            chunk = max(1, (1 << 22) // (members * T * V))
        mine = torch.arange(rank, self.eval_windows, world, device=tokens.device)
        loss = torch.zeros(members, dtype=torch.float64, device=tokens.device)
        correct = torch.zeros_like(loss)
        for i in range(0, len(mine), chunk):
            x, y = self._windows(tokens, mine[i : i + chunk])  # [c, T]
            out = forward(x.unsqueeze(0).expand(members, *x.shape)).double()  # [M, c, T, V]
            yy = y.unsqueeze(0).expand(members, *y.shape)
            nll = F.cross_entropy(out.reshape(-1, V), yy.reshape(-1), reduction="none")  # float64: exact sums
            loss += nll.view(members, -1).sum(1)
            correct += (out.argmax(-1) == yy).flatten(1).sum(1).double()
        n = torch.full_like(loss, float(len(mine) * T))
        bpb = loss / LN2 * (self.eval_targets / self.eval_bytes)
        return {"loss": loss, "acc": correct, "bpb": bpb, "n": n}
