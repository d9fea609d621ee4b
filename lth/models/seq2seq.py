"""An encoder-decoder Transformer for translation (Vaswani et al. 2017, pre-LN), in the nanoGPT style.

    src [B, S] -> embed * sqrt(d) + sinusoid -> dropout -> n_enc x EncoderLayer -> LayerNorm -> memory [B, S, d]
    tgt [B, T] -> embed * sqrt(d) + sinusoid -> dropout -> n_dec x DecoderLayer(memory) -> LayerNorm
               -> embed.weight^T (tied) -> logits [B, T, V]
    EncoderLayer:  x = x + drop(attn(ln1(x)));  x = x + drop(ffn(ln2(x)))
    DecoderLayer:  x = x + drop(self_attn(ln1(x)));  x = x + drop(cross_attn(ln2(x), memory));
                   x = x + drop(ffn(ln3(x)))
    ffn:           fc2(drop(relu(fc1(x))))

ONE embedding ``embed.weight`` [V, d] serves the source, the target and the output projection (Brix et al.
2020 prune it as one matrix). Padding (``pad_id``) is derived from the token ids: source padding is masked
out of every attention over the source; target padding only follows a sentence's tokens, which the
causal mask already hides from real positions. Parameters (each matrix its own prunable tensor)::

    embed.weight                                   [V, d]
    enc.{i}.attn.{q,k,v,o}.{weight,bias}           [d, d], [d]
    enc.{i}.ffn.fc1.{weight,bias}, ffn.fc2.*       [f, d], [f]; [d, f], [d]
    enc.{i}.ln{1,2}.{weight,bias}, enc_ln.*        [d]
    dec.{i}.self_attn.*, dec.{i}.cross_attn.*      as attn
    dec.{i}.ffn.*, dec.{i}.ln{1,2,3}.*, dec_ln.*

Incremental decoding: ``forward(src, tgt, cache=dict)`` returns ``(logits, cache)``; the cache holds the
encoder output, its padding, the cross-attention keys/values (computed once) and each decoder layer's
self-attention keys/values so far, all tensors (so :class:`lth.ensemble.Ensemble` maps them per member).
``tgt`` then holds only the new tokens, at positions continuing the cached ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..dropout import dropout
from ..errors import ConfigError


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 4000
    d_model: int = 128
    n_enc: int = 3
    n_dec: int = 3
    n_head: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    pad_id: int = 1  # lth.data.parallel's joint tokenizer: pad 1, bos 2, eos 3
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self):
        for k in ("vocab_size", "d_model", "n_enc", "n_dec", "n_head", "d_ff"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"seq2seq {k} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head:
            raise ConfigError(f"seq2seq d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"seq2seq dropout must be in [0, 1), got {self.dropout!r}")


# Named sizes (vocab_size comes from the task's tokenizer). Parameters at the presets' vocabularies:
# tiny (vocab 500): 37,504; cpu (vocab 4,000): 1,901,056; base (vocab 8,000): 7,578,624.
SIZES: dict[str, dict] = {
    "tiny": dict(d_model=32, n_enc=1, n_dec=1, n_head=2, d_ff=64),
    "cpu": dict(d_model=128, n_enc=3, n_dec=3, n_head=4, d_ff=512),
    "base": dict(d_model=256, n_enc=3, n_dec=3, n_head=4, d_ff=1024),
}


def sinusoid(start: int, T: int, d: int, device=None) -> torch.Tensor:
    """[T, d] positions start..start+T-1: sin on even channels, cos on odd, wavelengths 2pi..10000 2pi."""
    pos = torch.arange(start, start + T, device=device, dtype=torch.float32)[:, None]  # [T, 1]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    out = torch.zeros(T, d, device=device)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq[: d // 2])
    return out


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v, o projections (four prunable matrices)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        d = cfg.d_model
        self.h, self.hd, self.p = cfg.n_head, d // cfg.n_head, cfg.dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, H, T, hd]
        return x.view(x.shape[0], x.shape[1], self.h, self.hd).transpose(1, 2)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # keys, values [B, H, S, hd]
        return self.heads(self.k(x)), self.heads(self.v(x))

    def forward(self, x, k, v, keep):  # x [B, T, d], k/v [B, H, S, hd], keep: bool, broadcasts to [B, H, T, S]
        q = self.heads(self.q(x))  # [B, H, T, hd]
        att = (q @ k.transpose(-2, -1)) * self.hd**-0.5  # [B, H, T, S]
        att = dropout(att.masked_fill(~keep, float("-inf")).softmax(-1), self.p, self.training)
        y = (att @ v).transpose(1, 2).reshape(x.shape)  # [B, T, d]
        return self.o(y)


class FFN(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.fc1, self.fc2, self.p = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model), cfg.dropout

    def forward(self, x):  # [B, T, d]
        return self.fc2(dropout(F.relu(self.fc1(x)), self.p, self.training))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.attn, self.ln2, self.ffn = nn.LayerNorm(d), Attention(cfg), nn.LayerNorm(d), FFN(cfg)
        self.p = cfg.dropout

    def forward(self, x, keep):  # x [B, S, d], keep [B, 1, 1, S]
        h = self.ln1(x)
        x = x + dropout(self.attn(h, *self.attn.kv(h), keep), self.p, self.training)
        return x + dropout(self.ffn(self.ln2(x)), self.p, self.training)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.self_attn = nn.LayerNorm(d), Attention(cfg)
        self.ln2, self.cross_attn = nn.LayerNorm(d), Attention(cfg)
        self.ln3, self.ffn, self.p = nn.LayerNorm(d), FFN(cfg), cfg.dropout

    def forward(self, x, causal, cross_kv, src_keep, past=None):
        """x [B, T, d]; causal [T, t + T]; cross_kv: memory's keys/values [B, H, S, hd]; src_keep [B, 1, 1, S];
        past: this layer's cached self-attention keys/values [B, H, t, hd] or None. -> (x, (k, v) so far)."""
        h = self.ln1(x)
        k, v = self.self_attn.kv(h)  # [B, H, T, hd]
        if past is not None:
            k, v = torch.cat((past[0], k), 2), torch.cat((past[1], v), 2)  # [B, H, t + T, hd]
        x = x + dropout(self.self_attn(h, k, v, causal), self.p, self.training)
        x = x + dropout(self.cross_attn(self.ln2(x), *cross_kv, src_keep), self.p, self.training)
        return x + dropout(self.ffn(self.ln3(x)), self.p, self.training), (k, v)


class Seq2Seq(nn.Module):
    stackable = False  # lth.ensemble: vmap works (linears, explicit attention, no sdpa); measured at M = 2,
    # 2 x 32 x 40 tokens, one thread, seq2seq_cpu: the loop 0.73-1.01 s a step, vmap 0.97-1.06 s
    ensemble_mode = {"cpu": "loop", "cuda": "stacked"}

    def __init__(self, cfg: Seq2SeqConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or Seq2SeqConfig(**kwargs)
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.enc = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.n_enc)])
        self.dec = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.n_dec)])
        self.enc_ln, self.dec_ln = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)

    # --- what the model knows about itself (lth.models) ---------------------------------------------
    def output_layers(self) -> list[str]:
        return ["embed.weight"]  # the output projection is the (shared) embedding

    def default_prunable(self, cfg=None) -> list[str]:
        """Every matrix, the shared embedding included; never a bias or a LayerNorm."""
        return [n for n, p in self.named_parameters() if p.dim() >= 2]

    # --- forward ----------------------------------------------------------------------------------
    def embed_at(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:  # [B, T] -> [B, T, d]
        d = self.cfg.d_model
        x = self.embed(ids) * math.sqrt(d) + sinusoid(start, ids.shape[1], d, ids.device).to(self.embed.weight.dtype)
        return dropout(x, self.cfg.dropout, self.training)

    def encode(self, src: torch.Tensor) -> dict:
        """src [B, S] -> {"memory": [B, S, d], "src_keep": [B, 1, 1, S] bool, "ck{i}", "cv{i}": [B, H, S, hd]}."""
        keep = (src != self.cfg.pad_id)[:, None, None, :]
        x = self.embed_at(src)
        for layer in self.enc:
            x = layer(x, keep)
        memory = self.enc_ln(x)
        out = {"memory": memory, "src_keep": keep}
        for i, layer in enumerate(self.dec):
            out[f"ck{i}"], out[f"cv{i}"] = layer.cross_attn.kv(memory)
        return out

    def decode(self, tgt: torch.Tensor, enc: dict, start: int = 0, past: dict | None = None):
        """tgt [B, T] at positions start.. -> (logits [B, T, V], {"k{i}", "v{i}": [B, H, start + T, hd]})."""
        T = tgt.shape[1]
        q_pos = torch.arange(start, start + T, device=tgt.device)
        causal = torch.arange(start + T, device=tgt.device)[None, :] <= q_pos[:, None]  # [T, start + T]
        x, kv = self.embed_at(tgt, start), {}
        for i, layer in enumerate(self.dec):
            prev = None if past is None else (past[f"k{i}"], past[f"v{i}"])
            x, (kv[f"k{i}"], kv[f"v{i}"]) = layer(x, causal, (enc[f"ck{i}"], enc[f"cv{i}"]), enc["src_keep"], prev)
        return F.linear(self.dec_ln(x), self.embed.weight), kv  # [B, T, V], tied output projection

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, cache: dict | None = None):
        """src [B, S], tgt [B, T] token ids -> logits [B, T, V] (teacher forcing).

        With ``cache`` (a dict; ``{}`` to start): ``tgt`` are the next tokens after those cached; returns
        ``(logits, new cache)``. The encoder runs only when the cache has no ``memory`` yet."""
        if cache is None:
            return self.decode(tgt, self.encode(src))[0]
        enc = cache if "memory" in cache else {**cache, **self.encode(src)}
        start = enc["k0"].shape[2] if "k0" in enc else 0
        logits, kv = self.decode(tgt, enc, start, enc if "k0" in enc else None)
        return logits, {**enc, **kv}


def num_params(cfg: Seq2SeqConfig) -> int:
    """All parameters: the shared embedding once, every projection with its bias, every LayerNorm."""
    d, f = cfg.d_model, cfg.d_ff
    attn, ffn, ln = 4 * (d * d + d), 2 * d * f + f + d, 2 * d
    return cfg.vocab_size * d + cfg.n_enc * (attn + ffn + 2 * ln) + cfg.n_dec * (2 * attn + ffn + 3 * ln) + 2 * ln


def build(shape, num_classes: int, size: str = "cpu", **overrides) -> Seq2Seq:
    """Registry constructor: ``num_classes`` is the joint vocabulary; ``size`` picks a base from
    :data:`SIZES`, ``overrides`` any :class:`Seq2SeqConfig` field."""
    if size not in SIZES:
        raise ConfigError(f"unknown seq2seq size {size!r}; choose from {sorted(SIZES)}")
    return Seq2Seq(Seq2SeqConfig(**{**SIZES[size], **overrides, "vocab_size": int(num_classes)}))
