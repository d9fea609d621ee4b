"""Text from a trained GPT: autoregressive sampling with temperature and top-k, reproducible by seed."""

from __future__ import annotations

import torch

from .errors import ConfigError


def _decode(tokenizer, ids: list[int]) -> str:
    """Decode sampled ids; a byte model can emit invalid UTF-8, which becomes U+FFFD rather than an error."""
    if getattr(tokenizer, "kind", None) == "bytes":
        return bytes(ids).decode("utf-8", errors="replace")
    return tokenizer.decode(ids)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0, device="cpu") -> str:
    """``prompt`` followed by ``max_new_tokens`` sampled tokens, decoded.

    The model (a :class:`lth.models.gpt.GPT` on ``device``) sees at most its training context
    ``model.cfg.seq_len`` of the most recent tokens. ``temperature`` 0 is greedy (argmax); otherwise
    logits / temperature are sampled, restricted to the ``top_k`` most likely tokens if given, with a
    ``torch.Generator`` seeded by ``seed``, so the same call gives the same text. Only ids below the
    tokenizer's vocabulary are sampled (a model may pad its vocabulary). The model's train/eval mode is
    restored afterwards.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ConfigError("generate needs a non-empty prompt: the model has no start-of-text token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    vocab = tokenizer.vocab_size
    if vocab > model.cfg.vocab_size:
        raise ConfigError(f"the tokenizer's {vocab} tokens do not fit the model's vocabulary of {model.cfg.vocab_size}")
    device = torch.device(device)
    where = next(model.parameters()).device
    if where.type != device.type:
        raise ConfigError(f"the model is on {where}, not on the requested device {device}: move it with model.to()")
    prompt_ids = [int(t) for t in tokenizer.encode(prompt)]
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # [1, T]
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -model.cfg.seq_len :])[:, -1, :vocab].float()  # [1, vocab]
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < vocab:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            idx = torch.cat((idx, nxt), dim=1)
    finally:
        model.train(was_training)
    return prompt + _decode(tokenizer, idx[0, len(prompt_ids) :].tolist())


def tokenizer_for(config: dict, override: str | None = None):
    """The tokenizer a run's config trained on: ``override`` if given, else the SentencePiece model in
    its token directory (``data_dir/tokenizer.model``), else the embedded corpus's (``tokenizer``:
    bytes, or a ``bpe<N>`` model rebuilt from the embedded training text)."""
    from pathlib import Path

    from .data.text import Tokenizer, embedded_tokenizer

    if override is not None:
        return Tokenizer(override)
    d = config.get("data_dir")
    if d is None:
        return embedded_tokenizer(config.get("tokenizer"))
    if (Path(d) / "tokenizer.model").exists():
        return Tokenizer(Path(d) / "tokenizer.model")
    import json

    meta = Path(d) / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("tokenizer") not in (None, "bytes"):
        raise ConfigError(f"{d} has no tokenizer.model; give --tokenizer")
    return Tokenizer("bytes")
