"""A decoder-only transformer language model (GPT), in the style of the parameter-golf baseline.

    tokens [B, T] -> embed -> RMSNorm -> n_layer x Block -> RMSNorm -> tied head -> softcap -> logits [B, T, V]
    Block:  x = x + attn(norm(x));  x = x + mlp(norm(x))
    attn:   causal grouped-query attention, RMSNorm on q and k, rotary positions (RoPE)
    mlp:    fc (d -> mlp_mult d), relu(.)^2, proj (mlp_mult d -> d)

No biases and no learned norm gains, so with ``scales=False`` every parameter is a matrix used in a
matmul. The output head is the input embedding (``embed.weight`` [V, d], tied: one tensor, one mask).
Matrices have distinct names for pruning::

    embed.weight                     [V, d]
    blocks.{i}.attn.q.weight         [n_head * hd, d]       hd = d / n_head
    blocks.{i}.attn.k.weight         [n_kv_head * hd, d]
    blocks.{i}.attn.v.weight         [n_kv_head * hd, d]
    blocks.{i}.attn.o.weight         [d, d]
    blocks.{i}.mlp.fc.weight         [mlp_mult * d, d]
    blocks.{i}.mlp.proj.weight       [d, mlp_mult * d]

``scales=True`` adds learned 1-D scales, all initialised to 1 (hooks for supermasks: the weights can be
frozen while the scales learn):

    blocks.{i}.attn.head_scale       [n_head]   each head's output, before o
    blocks.{i}.attn.out_scale        [d]        the attention branch's output, per channel
    blocks.{i}.mlp.out_scale         [d]        the MLP branch's output, per channel
    logit_scale                      [d]        the final normalised hidden state, before the tied head

The forward takes one model's parameters; :class:`lth.ensemble.Ensemble` runs M stacked members
through ``torch.func.vmap`` (``stackable = False``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

# Under torch.func.vmap (lth.ensemble) CPU attention has no batching rule and runs once per member;
# measured, that is faster than the batched math path, so torch's "performance drop" warning is noise.
warnings.filterwarnings(
    "ignore", message=r"There is a performance drop because we have not yet implemented the batching rule "
    r"for aten::_scaled_dot_product", category=UserWarning,
)


@dataclass
class GPTConfig:
    vocab_size: int = 256
    seq_len: int = 256  # training context; used by flops_per_token (RoPE works at any length)
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    n_kv_head: int = 2  # grouped-query attention: n_head / n_kv_head query heads share a k/v head
    mlp_mult: int = 2
    softcap: float | None = 30.0  # logits -> softcap * tanh(logits / softcap); None or 0: off
    rope_base: float = 10000.0
    scales: bool = False  # add the learned 1-D scales listed in the module docstring

    def __post_init__(self):
        for k in ("vocab_size", "seq_len", "n_layer", "d_model", "n_head", "n_kv_head", "mlp_mult"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"GPT {k} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head:
            raise ConfigError(f"GPT d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"GPT n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}")
        if self.head_dim % 2:
            raise ConfigError(f"GPT head dimension d_model / n_head = {self.head_dim} must be even for RoPE")
        if self.softcap is not None and not self.softcap >= 0:
            raise ConfigError(f"GPT softcap must be >= 0 or None, got {self.softcap!r}")
        if not self.rope_base > 0:
            raise ConfigError(f"GPT rope_base must be > 0, got {self.rope_base!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


# Named sizes. lm_golf: the parameter-golf baseline (17,039,360 parameters). lm_cpu: trains on two CPU
# cores in minutes on bytes (1,900,544 parameters).
SIZES: dict[str, dict] = {
    "golf": dict(vocab_size=1024, seq_len=1024, n_layer=9, d_model=512, n_head=8, n_kv_head=4, mlp_mult=2),
    "cpu": dict(vocab_size=256, seq_len=256, n_layer=4, d_model=256, n_head=4, n_kv_head=2, mlp_mult=2),
}


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension, no gain."""
    return F.rms_norm(x, (x.size(-1),))


def rotary(T: int, hd: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, hd/2] for positions 0..T-1 at frequencies base^(-2i/hd)."""
    inv_freq = base ** (-torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)  # [hd/2]
    angle = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv_freq  # [T, hd/2]
    return angle.cos(), angle.sin()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., i], x[..., i + hd/2]) of x [..., T, hd] by each position's angles.

    Relative: <rope(q at m), rope(k at n)> depends on q, k and m - n only.
    """
    x1, x2 = x.chunk(2, dim=-1)  # [..., T, hd/2] each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.n_head, self.n_kv_head, self.hd, self.rope_base = cfg.n_head, cfg.n_kv_head, hd, cfg.rope_base
        self.q = nn.Linear(d, cfg.n_head * hd, bias=False)
        self.k = nn.Linear(d, cfg.n_kv_head * hd, bias=False)
        self.v = nn.Linear(d, cfg.n_kv_head * hd, bias=False)
        self.o = nn.Linear(cfg.n_head * hd, d, bias=False)
        if cfg.scales:
            self.head_scale = nn.Parameter(torch.ones(cfg.n_head))
            self.out_scale = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, d]
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_head, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k(x).view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v(x).view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # [B, Hkv, T, hd]
        cos, sin = rotary(T, self.hd, self.rope_base, x.device)
        q, k = rope(norm(q), cos, sin), rope(norm(k), cos, sin)
        if self.n_kv_head != self.n_head:  # each k/v head serves n_head / n_kv_head query heads
            g = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # [B, H, T, hd]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
        if hasattr(self, "head_scale"):
            y = y * self.head_scale.to(y.dtype)[:, None, None]
        y = self.o(y.transpose(1, 2).reshape(B, T, self.n_head * self.hd))  # [B, T, d]
        if hasattr(self, "out_scale"):
            y = y * self.out_scale.to(y.dtype)
        return y


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_mult * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.d_model, cfg.d_model, bias=False)
        if cfg.scales:
            self.out_scale = nn.Parameter(torch.ones(cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, d]
        y = self.proj(F.relu(self.fc(x)).square())  # ReLU^2
        if hasattr(self, "out_scale"):
            y = y * self.out_scale.to(y.dtype)
        return y


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(norm(x))
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    stackable = False  # Ensemble runs members through torch.func.vmap
    # With weights frozen (lth.supermask), these 1-D scales still train: a few floats per layer and head.
    supermask_trainable = ("head_scale", "out_scale", "logit_scale")

    def __init__(self, cfg: GPTConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or GPTConfig(**kwargs)
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)  # tied head: initial logits ~ N(0, 1)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        if cfg.scales:
            self.logit_scale = nn.Parameter(torch.ones(cfg.d_model))
        self.output_layer = "embed"  # the output matrix (tied) is embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx: [..., T] int64 -> logits [..., T, V]
        lead, T = idx.shape[:-1], idx.shape[-1]
        x = norm(self.embed(idx.reshape(-1, T)))  # [B, T, d]
        for block in self.blocks:
            x = block(x)
        x = norm(x)
        if hasattr(self, "logit_scale"):
            x = x * self.logit_scale.to(x.dtype)
        logits = F.linear(x, self.embed.weight)  # [B, T, V], tied head
        c = self.cfg.softcap
        if c:
            logits = c * torch.tanh(logits / c)
        return logits.reshape(*lead, T, -1)


def matmul_params(cfg: GPTConfig) -> int:
    """Parameters used in matmuls: every matrix, the tied embedding once (as the head). With
    ``scales=False`` this is every parameter of the model."""
    d, hd, L = cfg.d_model, cfg.head_dim, cfg.n_layer
    attn = d * cfg.n_head * hd + 2 * d * cfg.n_kv_head * hd + cfg.n_head * hd * d  # q, k, v, o
    mlp = 2 * d * cfg.mlp_mult * d  # fc, proj
    return L * (attn + mlp) + cfg.vocab_size * d


def num_params(cfg: GPTConfig) -> int:
    """All parameters, scales included."""
    scales = cfg.n_layer * (cfg.n_head + 2 * cfg.d_model) + cfg.d_model if cfg.scales else 0
    return matmul_params(cfg) + scales


def flops_per_token(cfg: GPTConfig) -> int:
    """Training FLOPs per token, forward + backward: 6 N + 12 L d T (the nanoGPT / PaLM estimate).

    N = :func:`matmul_params` (2 FLOPs per parameter per token forward, 4 backward), and 12 L d T for
    the attention scores and the weighted values at context T = ``seq_len`` (counted without the causal
    halving, as nanoGPT does). Elementwise work (norms, RoPE, softmax, scales) is not counted.
    """
    return 6 * matmul_params(cfg) + 12 * cfg.n_layer * cfg.d_model * cfg.seq_len


def build(shape, num_classes: int, size: str = "cpu", **overrides) -> GPT:
    """Registry constructor: ``shape`` is the task's example shape ``(seq_len,)``, ``num_classes`` the
    vocabulary size; ``size`` picks a base from :data:`SIZES`, ``overrides`` any :class:`GPTConfig` field."""
    if size not in SIZES:
        raise ConfigError(f"unknown GPT size {size!r}; choose from {sorted(SIZES)}")
    unknown = sorted(set(overrides) - set(asdict(GPTConfig())))
    if unknown:
        raise ConfigError(f"unknown GPT config field(s) {unknown}")
    fields = {**SIZES[size], **overrides, "vocab_size": int(num_classes), "seq_len": int(shape[-1])}
    return GPT(GPTConfig(**fields))

