"""BERT (Devlin et al. 2019) in plain torch, with Hugging Face ``BertModel`` parameter names.

    input_ids [B, T], attention_mask [B, T] -> embeddings (word + position + token type, LayerNorm,
    dropout) -> L x layer -> head
    layer (post-LN, as BERT):  x = LN(x + dropout(attn_out(self_attention(x))))
                               x = LN(x + dropout(output(gelu(intermediate(x)))))

Parameter names are ``BertModel``'s, so a local HF checkpoint loads 1:1 (:meth:`Bert.from_hf`,
:func:`load_hf_state`) and :meth:`Bert.state_dict_hf` writes one back (``bert.`` prefix + head names of
``BertForSequenceClassification`` / ``BertForMaskedLM``)::

    embeddings.{word,position,token_type}_embeddings.weight      [V | P | 2, d]
    embeddings.LayerNorm.{weight,bias}                            [d]
    encoder.layer.{i}.attention.self.{query,key,value}.weight     [d, d]   (+ .bias)
    encoder.layer.{i}.attention.output.dense.weight               [d, d]   (+ .bias, LayerNorm)
    encoder.layer.{i}.intermediate.dense.weight                   [I, d]   (+ .bias)
    encoder.layer.{i}.output.dense.weight                         [d, I]   (+ .bias, LayerNorm)

Heads (``head``): ``"cls"``: ``pooler.dense`` + tanh on [CLS], dropout, ``classifier`` [labels, d]
(``BertForSequenceClassification``); ``"mlm"``: ``cls.predictions.transform.dense`` + GELU +
``cls.predictions.transform.LayerNorm``, decoder tied to the word embeddings, ``cls.predictions.bias``
(``BertForMaskedLM``); its logits are computed at the given masked positions only (``mlm_positions``
[B, P] -> logits [B, P, V]).

Prunable (:meth:`Bert.default_prunable`, as BERT-Tickets' ``pruning_model``): the six matrices of every
layer (query, key, value, attention output, intermediate, output); with ``cfg.prune_pooler`` also
``pooler.dense.weight``. Never embeddings, biases, LayerNorms or heads. MiniLM-L6-H384: 36 matrices,
10,616,832 weights.

No buffers (positions are ``arange``), dropout through ``lth.dropout`` (``F.dropout``'s contract, a
cheaper mask on the CPU): an ensemble member draws its own masks on the vmap path and on the loop path.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..bert_presets import default_pretrained  # kept torch-free there: `lth presets` loads no torch
from ..dropout import dropout
from ..errors import ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"BERT {k} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"BERT hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_attention_heads}")

    @classmethod
    def from_json(cls, path) -> "BertConfig":
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu" \
                or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{path}: not a BERT config with GELU and absolute positions")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def to_hf(self, head: str, num_labels: int) -> dict:
        arch = {"cls": "BertForSequenceClassification", "mlm": "BertForMaskedLM"}[head]
        out = {"architectures": [arch], "model_type": "bert", "hidden_act": "gelu", "initializer_range": 0.02,
               "position_embedding_type": "absolute", **asdict(self)}
        if head == "cls":
            out.update(num_labels=num_labels, id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
                       label2id={f"LABEL_{i}": i for i in range(num_labels)})
        return out


def weight_file(directory) -> Path:
    for name in WEIGHT_FILES:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    raise ConfigError(f"{directory} has no {' or '.join(WEIGHT_FILES)}")


def load_hf_state(directory) -> dict[str, torch.Tensor]:
    """A local HF checkpoint's tensors under our names: ``bert.`` stripped, old ``gamma``/``beta`` renamed,
    ``position_ids`` and the tied decoder weight dropped."""
    path = weight_file(directory)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for k, v in raw.items():
        k = k[5:] if k.startswith("bert.") else k
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k))
        if k.endswith("position_ids") or k in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue
        out[k] = v
    return out


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.p = c.hidden_dropout_prob

    def forward(self, ids, token_type_ids):
        pos = torch.arange(ids.shape[-1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return dropout(self.LayerNorm(x), self.p, self.training)


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        d = c.hidden_size
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.heads, self.p = c.num_attention_heads, c.attention_probs_dropout_prob

    def forward(self, x, bias):  # x [B, T, d], bias [B, 1, 1, T] (0 or -inf-ish at padding)
        B, T, d = x.shape
        q, k, v = (f(x).view(B, T, self.heads, -1).transpose(1, 2) for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias  # [B, H, T, T]
        probs = dropout(scores.softmax(-1), self.p, self.training)
        return (probs @ v).transpose(1, 2).reshape(B, T, d)


class DenseLN(nn.Module):
    """``attention.output`` and ``output``: dense, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, c: BertConfig, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.p = c.hidden_dropout_prob

    def forward(self, h, residual):
        return self.LayerNorm(dropout(self.dense(h), self.p, self.training) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseLN(c, c.hidden_size)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseLN(c, c.intermediate_size)

    def forward(self, x, bias):
        x = self.attention.output(self.attention.self(x, bias), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])


class Pooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class Transform(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class Predictions(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = Transform(c)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))


class MLMHead(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.predictions = Predictions(c)


class Bert(nn.Module):
    stackable = False
    ensemble_mode = {"cpu": "loop", "cuda": "stacked"}  # measured on CPU: see docs/bert.md

    def __init__(self, cfg: BertConfig, head: str = "cls", num_labels: int = 2, pretrained: str | None = None):
        super().__init__()
        if head not in ("cls", "mlm"):
            raise ConfigError(f"BERT head must be cls or mlm, got {head!r}")
        self.cfg, self.head, self.num_labels, self.pretrained = cfg, head, num_labels, pretrained
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        if head == "cls":
            self.pooler = Pooler(cfg)
            self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        else:
            self.cls = MLMHead(cfg)

    # --- forward ---------------------------------------------------------------------------------

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):
        """Last hidden states [B, T, d] (``BertModel``'s ``last_hidden_state``)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_positions=None):
        lead = input_ids.shape[:-1]
        flat = [t if t is None else t.reshape(-1, t.shape[-1]) for t in (input_ids, attention_mask, token_type_ids)]
        h = self.encode(*flat)
        if self.head == "cls":
            pooled = torch.tanh(self.pooler.dense(h[:, 0]))
            return self.classifier(dropout(pooled, self.cfg.hidden_dropout_prob, self.training)).view(*lead, -1)
        if mlm_positions is not None:  # logits at the masked positions only: [B, P, V]
            pos = mlm_positions.reshape(-1, mlm_positions.shape[-1])
            h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))
        t = self.cls.predictions.transform
        h = t.LayerNorm(F.gelu(t.dense(h)))
        logits = F.linear(h, self.embeddings.word_embeddings.weight, self.cls.predictions.bias)
        return logits.view(*lead, *logits.shape[1:])

    # --- what the model knows about itself (lth.models) ------------------------------------------

    def default_prunable(self, cfg) -> list[str]:
        names = [f"encoder.layer.{i}.{m}.weight" for i in range(self.cfg.num_hidden_layers)
                 for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                           "attention.output.dense", "intermediate.dense", "output.dense")]
        if getattr(cfg, "prune_pooler", None) and self.head == "cls":
            names.append("pooler.dense.weight")
        return names

    def output_layers(self) -> list[str]:
        return ["classifier.weight", "classifier.bias"] if self.head == "cls" else ["cls.predictions.bias"]

    def seeded_parameters(self) -> list[str]:
        """Parameters a pre-trained checkpoint need not hold: they come from the run's seed (the task head)."""
        own = ["classifier.weight", "classifier.bias"] if self.head == "cls" else \
            [n for n, _ in self.named_parameters() if n.startswith("cls.")]
        return own + (["pooler.dense.weight", "pooler.dense.bias"] if self.head == "cls" else [])

    # --- Hugging Face interop --------------------------------------------------------------------

    @classmethod
    def from_hf(cls, directory, head: str = "cls", num_labels: int = 2) -> "Bert":
        """The architecture of ``directory/config.json`` with its weights (a head it lacks stays as built)."""
        model = cls(BertConfig.from_json(Path(directory) / "config.json"), head, num_labels, str(directory))
        own = dict(model.named_parameters())
        state = {k: v for k, v in load_hf_state(directory).items() if k in own}
        missing = sorted(set(own) - set(state) - set(model.seeded_parameters()))
        if missing:
            raise ConfigError(f"{directory}: the checkpoint lacks {missing[:3]} ({len(missing)} tensors)")
        with torch.no_grad():
            for k, v in state.items():
                if tuple(v.shape) != tuple(own[k].shape):
                    raise ConfigError(f"{directory}: {k} has shape {list(v.shape)}, the model {list(own[k].shape)}")
                own[k].copy_(v)
        return model

    def state_dict_hf(self) -> dict[str, torch.Tensor]:
        """Tensors under ``BertForSequenceClassification`` / ``BertForMaskedLM`` names (``bert.`` prefix)."""
        out = {}
        for n, p in self.named_parameters():
            p = p.detach().contiguous()
            out[n if n.startswith(("classifier.", "cls.")) else f"bert.{n}"] = p
        if self.head == "mlm":
            out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"].clone()
            out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].clone()
        return out


ARGS = ("pretrained", "head", "num_labels", *(f.name for f in fields(BertConfig)))


def build(shape, num_classes: int, **kw) -> Bert:
    """Registry constructor. ``pretrained``: an HF directory whose ``config.json`` gives the architecture
    (default: all-MiniLM-L6-v2 when installed; ``None`` with no default: :class:`BertConfig`'s fields);
    any :class:`BertConfig` field overrides it (tiny test models). Weights are NOT loaded here: θ0 comes
    from the run's weight source (``weights=checkpoint:DIR/model.safetensors``). ``num_classes`` is the
    task's labels (``head="cls"``) or vocabulary (``"mlm"``)."""
    unknown = sorted(set(kw) - set(ARGS))
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to bert (it takes: {', '.join(ARGS)})")
    head = kw.pop("head", "cls")
    num_labels = kw.pop("num_labels", None)
    pretrained = kw.pop("pretrained", "default")
    pretrained = default_pretrained() if pretrained == "default" else pretrained
    base = asdict(BertConfig.from_json(Path(pretrained) / "config.json")) if pretrained else {}
    cfg = BertConfig(**{**base, **kw})
    if head == "cls":
        if num_labels is not None and num_labels != num_classes:
            raise ConfigError(f"model_args num_labels {num_labels} is not the task's {num_classes} classes")
    elif num_classes != cfg.vocab_size:
        raise ConfigError(f"the task's vocabulary ({num_classes}) is not the model's vocab_size {cfg.vocab_size}")
    if shape and shape[-1] > cfg.max_position_embeddings:
        raise ConfigError(f"seq_len {shape[-1]} exceeds BERT's max_position_embeddings {cfg.max_position_embeddings}")
    return Bert(cfg, head, int(num_classes), pretrained)


def check_args(args: dict) -> None:
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise ConfigError(f"model_args {unknown} unknown to bert (it takes: {', '.join(ARGS)})")
    if args.get("head", "cls") not in ("cls", "mlm"):
        raise ConfigError(f"model_args head must be cls or mlm, got {args['head']!r}")
    p = args.get("pretrained", "default")
    if p not in ("default", None) and not (Path(p) / "config.json").is_file():
        raise ConfigError(f"model_args pretrained {p} is not a Hugging Face directory (no config.json)")
