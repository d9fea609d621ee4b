"""Decoding for sequence-to-sequence models: greedy and batched beam search over a KV cache.

A decoder here is any ``fwd(src, tgt, cache=dict) -> (logits [B, T, V], cache)`` on plain ``[B, ...]``
tensors (:class:`lth.models.seq2seq.Seq2Seq`'s cached forward); :func:`one_member` turns a forward of
one ensemble member on ``[1, ...]`` tensors (``lth.evaluation.member_forwards``) into one. Every tensor
in the cache has the batch (row) dimension first, so beams are reordered with one index per tensor.

Beam search (``beam`` K, length penalty ``alpha``): each step scores the K live hypotheses of every
sentence extended by every token and keeps the 2K best; an end-of-sentence among the first K finishes a
hypothesis with score ``sum of log-probabilities / ((5 + length) / 6) ** alpha`` (GNMT; ``length``
counts the tokens with the end-of-sentence), the best K others stay live. A sentence is done with K
finished hypotheses (fairseq's rule); at ``max_len`` the live ones are finished as they are. The result
is the best finished hypothesis. ``beam=1`` is greedy decoding (tested); :func:`greedy` is its direct form.
"""

from __future__ import annotations

from typing import Callable

import torch

from .ensemble_modes import map_tensors


def one_member(forward: Callable) -> Callable:
    """A forward of one member on ``[1, ...]`` tensors -> the same on ``[B, ...]`` tensors."""

    def fwd(*args, **kwargs):
        args, kwargs = map_tensors(lambda t: t.unsqueeze(0), (args, kwargs))
        return map_tensors(lambda t: t.squeeze(0), forward(*args, **kwargs))

    return fwd


def max_length(src: torch.Tensor, pad: int) -> int:
    """Target tokens a batch may generate: twice its longest source plus 10 (the filter keeps the
    character-length ratio of a pair within 2)."""
    return 2 * int((src != pad).sum(1).max()) + 10


def _strip(rows: torch.Tensor, eos: int) -> list[list[int]]:
    out = []
    for r in rows.tolist():
        out.append(r[: r.index(eos)] if eos in r else r)
    return out


@torch.no_grad()
def greedy(fwd: Callable, src: torch.Tensor, *, bos: int, eos: int, pad: int, max_len: int | None = None,
           cached: bool = True) -> list[list[int]]:
    """The argmax token at every step, until every sentence has ended; token lists without bos/eos.
    ``cached=False`` recomputes the whole prefix every step (``fwd(src, prefix)`` -> logits; for tests)."""
    B, max_len = src.shape[0], max_len or max_length(src, pad)
    seq = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    alive, cache = torch.ones(B, dtype=torch.bool, device=src.device), {}
    for _ in range(max_len):
        if cached:
            logits, cache = fwd(src, seq[:, -1:], cache=cache)
        else:
            logits = fwd(src, seq)
        nxt = torch.where(alive, logits[:, -1].argmax(-1), torch.full_like(alive, pad, dtype=torch.long))
        seq = torch.cat((seq, nxt[:, None]), 1)
        alive &= nxt != eos
        if not alive.any():
            break
    return _strip(seq[:, 1:], eos)


@torch.no_grad()
def beam_search(fwd: Callable, src: torch.Tensor, *, beam: int = 4, alpha: float = 0.6, bos: int, eos: int,
                pad: int, max_len: int | None = None) -> list[list[int]]:
    """The best hypothesis of each sentence (module docstring); token lists without bos/eos."""
    B, K, max_len = src.shape[0], beam, max_len or max_length(src, pad)
    logits, cache = fwd(src, torch.full((B, 1), bos, dtype=torch.long, device=src.device), cache={})
    cache = map_tensors(lambda t: t.repeat_interleave(K, 0), cache)  # rows b*K .. b*K + K-1: sentence b
    lp = logits[:, -1].float().log_softmax(-1).repeat_interleave(K, 0)  # [B*K, V]
    V = lp.shape[-1]
    scores = torch.zeros(B, K, device=src.device)
    scores[:, 1:] = float("-inf")  # at the first step only one hypothesis per sentence is live
    hyps = torch.empty(B * K, 0, dtype=torch.long, device=src.device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    penalty = lambda n: ((5.0 + n) / 6.0) ** alpha  # noqa: E731
    for step in range(max_len):
        top, idx = (scores.view(-1, 1) + lp).view(B, K * V).topk(2 * K, dim=1)  # [B, 2K]
        top_l, src_l, tok_l = top.tolist(), (idx // V).tolist(), (idx % V).tolist()
        new_scores = torch.full((B, K), float("-inf"), device=src.device)
        new_src, new_tok = [[0] * K for _ in range(B)], [[pad] * K for _ in range(B)]
        for b in range(B):
            if done[b]:
                continue
            j = 0
            for c in range(2 * K):
                s, k, t = top_l[b][c], src_l[b][c], tok_l[b][c]
                if s == float("-inf") or (j == K and c >= K):
                    break
                if t == eos:
                    if c < K:
                        finished[b].append((s / penalty(step + 1), hyps[b * K + k].tolist()))
                elif j < K:
                    new_scores[b, j], new_src[b][j], new_tok[b][j] = s, k, t
                    j += 1
            done[b] = len(finished[b]) >= K
        if all(done):
            break
        rows = (torch.arange(B, device=src.device)[:, None] * K + torch.tensor(new_src, device=src.device)).view(-1)
        hyps = torch.cat((hyps[rows], torch.tensor(new_tok, device=src.device).view(-1, 1)), 1)
        scores = new_scores
        if step == max_len - 1:
            break
        cache = map_tensors(lambda t: t[rows], cache)
        logits, cache = fwd(src, hyps[:, -1:], cache=cache)
        lp = logits[:, -1].float().log_softmax(-1)
    out = []
    for b in range(B):
        if not done[b]:  # out of length: the live hypotheses compete as they are
            for k in range(K):
                s = float(scores[b, k])
                if s > float("-inf"):
                    finished[b].append((s / penalty(hyps.shape[1]), hyps[b * K + k].tolist()))
        out.append(max(finished[b], key=lambda f: f[0])[1] if finished[b] else [])
    return out
