"""Translation (issue 12, Brix et al. 2020): sentence pairs -> label-smoothed cross-entropy, BLEU, chrF.

Examples are the training pairs of :mod:`lth.data.parallel` in the joint unigram vocabulary: source ids +
``</s>``; the decoder reads ``<s>`` + target ids and predicts target ids + ``</s>``. Inputs of a batch:
``(src [M, B, S], tgt_in [M, B, T])``, padded with ``<pad>`` to the step's longest sentence; labels
``tgt_out [M, B, T]`` (``<pad>`` ignored).

Batches (the choice for lth's ``Batches``): ``batch_size`` counts SENTENCES, and the task gives the
trainer its own per-member permutation, :meth:`Translation.data_order`: an epoch's random permutation is
cut into pools of 100 batches, each pool sorted by length (target, then source) and cut into batches,
and the batches shuffled. So every batch holds sentences of similar length (little padding), every
example is seen once per epoch, and the order is a function of (seed, epoch) like every data order in
lth. (Brix et al. use 8,192-token batches; here a batch of 64 sentences is about 4,400 tokens, source
and target.) Members are padded to the step's longest sentence over all members.

Loss: each member's mean over its target tokens of the cross-entropy with label smoothing
(``Config.label_smoothing``, 0.1 in the presets), summed over members.

Evaluation returns per-member SUMS, all-reduced over ranks: ``loss`` (unsmoothed nats over target
tokens) and ``n`` (target tokens), and the sufficient statistics of corpus BLEU (``bleu``: [M, 10] =
hypothesis length, reference length, n-gram matches and totals for n = 1..4) and chrF (``chrf``: [M, 18])
from sacrebleu on detokenized output against the raw reference strings. :meth:`Translation.finalize`
turns them into ``loss`` (nats per token), ``bleu`` and ``chrf`` (sacrebleu's corpus scores, 0-100).
The dev split (``val``, early stopping on ``val_bleu``) is decoded greedily; the test split with beam
search (``Config.beam``, 4; length penalty 0.6, :mod:`lth.decode`). The sacrebleu signatures are
recorded in the run's ``metrics.json`` (``notes``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.parallel import BOS, EOS, PAD, Parallel, Split
from ..errors import ConfigError
from ..losses import smoothed_nll

ALPHA = 0.6  # beam search's length penalty ((5 + len) / 6) ** alpha
EVAL_SENTENCES = 64  # sentences decoded at once (beam search: times the beam)
POOL = 100  # batches per length-sorted pool of data_order


def sacrebleu_metrics():
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ConfigError("translation needs sacrebleu: pip install 'sacrebleu>=2'") from exc
    return BLEU(), CHRF()


def signatures() -> tuple[tuple[str, str], ...]:
    """sacrebleu's signatures of the two scores (one reference per sentence), e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    out = []
    for name, metric in zip(("bleu", "chrf"), sacrebleu_metrics()):
        metric.corpus_score(["a"], [["a"]])  # the signature needs the number of references seen
        out.append((name, str(metric.get_signature())))
    return tuple(out)


def corpus_stats(hyps: list[str], refs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """sacrebleu's sufficient statistics, summed over sentences: BLEU [10] (hypothesis and reference
    lengths, matches and totals of 1- to 4-grams) and chrF [18], float64 (exact integers)."""
    bleu, chrf = sacrebleu_metrics()
    out = []
    for metric, k in ((bleu, 10), (chrf, 18)):
        stats = metric._extract_corpus_statistics(hyps, [refs]) if hyps else []
        out.append(torch.from_numpy(np.asarray(stats, dtype=np.float64).reshape(-1, k).sum(0)))
    return out[0], out[1]


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> ([N, max len] int64 padded with <pad>, lengths [N])."""
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lens.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out, lens


class Translation:
    metrics = ("loss", "bleu", "chrf")
    splits = ("val", "test")

    def __init__(self, data: Parallel, tokenizer, *, label_smoothing: float = 0.0, beam: int = 4,
                 eval_pairs: int | None = None):
        self.data, self.tok, self.ls, self.beam = data, tokenizer, float(label_smoothing), int(beam)
        sp = tokenizer.sp
        self.num_classes = tokenizer.vocab_size
        self.shape = (2,)  # two sequences: source and target ids
        src = [ids + [EOS] for ids in sp.encode(data.train.src)]
        tgt = sp.encode(data.train.tgt)
        self.src, self.src_len = _pad(src)
        self.tgt_in, self.tgt_len = _pad([[BOS] + t for t in tgt])
        self.tgt_out, _ = _pad([t + [EOS] for t in tgt])
        self.train_size = len(src)
        self.eval = {"val": data.dev.head(eval_pairs), "test": data.test.head(eval_pairs)}
        self._length_key = (self.tgt_len * (int(self.src_len.max()) + 1) + self.src_len).numpy()

    def to(self, device) -> "Translation":
        for k in ("src", "src_len", "tgt_in", "tgt_len", "tgt_out"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    # --- training ---------------------------------------------------------------------------------
    def data_order(self, seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
        """Member ``seed``'s permutation for ``epoch`` with length-bucketed batches (module docstring)."""
        rng = np.random.default_rng([seed, epoch, 1])  # not lth.train.data_order's stream
        perm = rng.permutation(n)
        pool = POOL * batch_size
        chunks = [perm[i : i + pool] for i in range(0, n, pool)]
        chunks = [c[np.argsort(self._length_key[c], kind="stable")] for c in chunks]
        order = np.concatenate(chunks)
        full = (n // batch_size) * batch_size
        batches = order[:full].reshape(-1, batch_size)[rng.permutation(n // batch_size)]
        return np.concatenate([batches.reshape(-1), order[full:]])

    def batch(self, idx: torch.Tensor):
        """idx [M, B] training pairs -> ((src [M, B, S], tgt_in [M, B, T]), tgt_out [M, B, T])."""
        idx = idx.to(self.src.device)
        S, T = int(self.src_len[idx].max()), int(self.tgt_len[idx].max())
        return (self.src[idx, :S], self.tgt_in[idx, :T]), self.tgt_out[idx, :T]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over members of each member's mean label-smoothed token cross-entropy; out [M, B, T, V]."""
        m = y.shape[0]
        nll = smoothed_nll(out.reshape(y.numel(), -1), y.reshape(-1), self.ls, PAD).view(m, -1)  # lth.losses
        return (nll.sum(1) / (y != PAD).view(m, -1).sum(1).clamp(min=1)).sum()

    # --- evaluation -------------------------------------------------------------------------------
    def translate(self, fwd, sources: list[str], beam: int, batch: int = EVAL_SENTENCES) -> list[str]:
        """Detokenized translations of ``sources`` by ``fwd`` (a plain cached forward, lth.decode)."""
        from ..decode import beam_search, greedy

        device = self.src.device
        ids = [i + [EOS] for i in self.tok.sp.encode(list(sources))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths decode together
        out: list[str] = [""] * len(ids)
        for s in range(0, len(order), batch):
            part = order[s : s + batch]
            src = _pad([ids[i] for i in part])[0].to(device)
            if beam == 1:
                hyp = greedy(fwd, src, bos=BOS, eos=EOS, pad=PAD)
            else:
                hyp = beam_search(fwd, src, beam=beam, alpha=ALPHA, bos=BOS, eos=EOS, pad=PAD)
            for i, h in zip(part, hyp):
                out[i] = self.tok.sp.decode(h)
        return out

    @torch.no_grad()
    def evaluate(self, forward, members: int, split: str, *, rank: int = 0, world: int = 1):
        """Per-member sums over this rank's pairs (``rank::world``) of ``split`` (module docstring)."""
        from ..decode import one_member

        if split not in self.eval:
            raise ConfigError(f"unknown split {split!r} for translation; it has 'val' (dev) and 'test'")
        if members != 1:
            raise ConfigError("translation decodes one member at a time (lth.evaluation.member_forwards)")
        part: Split = self.eval[split]
        src_text, ref_text = part.src[rank::world], part.tgt[rank::world]
        device, sp = self.src.device, self.tok.sp
        loss = torch.zeros(1, dtype=torch.float64, device=device)
        n = torch.zeros_like(loss)
        if src_text:
            src_ids = [i + [EOS] for i in sp.encode(src_text)]
            tgt_ids = sp.encode(ref_text)
            for s in range(0, len(src_ids), EVAL_SENTENCES):
                src = _pad(src_ids[s : s + EVAL_SENTENCES])[0].to(device)
                tin = _pad([[BOS] + t for t in tgt_ids[s : s + EVAL_SENTENCES]])[0].to(device)
                tout = _pad([t + [EOS] for t in tgt_ids[s : s + EVAL_SENTENCES]])[0].to(device)
                out = forward(src[None], tin[None])[0].float()  # [B, T, V]
                nll = F.cross_entropy(out.reshape(-1, out.shape[-1]), tout.reshape(-1), ignore_index=PAD,
                                      reduction="none")
                loss += nll.double().sum()  # float64 sums of float32 terms: the same in any order of chunks
                n += (tout != PAD).sum()
        hyps = self.translate(one_member(forward), src_text, 1 if split == "val" else self.beam)
        b, c = corpus_stats(hyps, ref_text)
        return {"loss": loss, "n": n, "bleu": b[None].to(device), "chrf": c[None].to(device)}

    @staticmethod
    def finalize(sums: dict) -> dict:
        """All-reduced sums -> per-member ``loss`` (nats per target token), ``bleu``, ``chrf``."""
        bleu, chrf = sacrebleu_metrics()
        b, c = sums["bleu"].cpu().double(), sums["chrf"].cpu().double()
        score_b = [bleu._compute_score_from_stats([int(x) for x in row]).score for row in b]
        score_c = [chrf._compute_score_from_stats([int(x) for x in row]).score for row in c]
        return {"loss": sums["loss"] / sums["n"].clamp(min=1),
                "bleu": torch.tensor(score_b, dtype=torch.float64),
                "chrf": torch.tensor(score_c, dtype=torch.float64)}


# --- `lth translate` ---------------------------------------------------------------------------------

def add_parser(sub) -> None:
    """``lth translate RUN_DIR|FILE.ticket [--input FILE|-] [--beam 4]``: one translation a line on stdout."""
    p = sub.add_parser("translate", help="translate lines with a translation run's or ticket's network")
    p.add_argument("source", help="a translation run directory (its last level's trained ticket) or a .ticket file")
    p.add_argument("--input", default="-", help="text file, one sentence a line (default -: stdin)")
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    p.add_argument("--level", type=int, help="run directory: the level (default: the last finished)")
    p.add_argument("--trial", type=int, default=0, help="run directory: the trial (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_translate)


def cmd_translate(args) -> int:
    import sys
    from pathlib import Path

    from tqdm.auto import tqdm

    from .. import pack
    from .. import ticket as T
    from ..errors import LthError
    from . import _translation_data

    if args.beam < 1:
        raise LthError(f"--beam must be >= 1, got {args.beam}")
    src = Path(args.source)
    t = (pack.from_run(src, level=args.level, trial=args.trial, trained=True, dtype="float32") if src.is_dir()
         else T.load(src))
    cfg = pack._run_config(t.meta.get("config") or {})
    if cfg.dataset != "translation":
        raise LthError(f"{args.source} is a {cfg.dataset} network, not a translation one")
    data, tok = _translation_data(cfg)
    if t.meta.get("tokenizer_sha256") not in (None, tok.sha256):
        raise LthError(f"the {cfg.tokenizer} tokenizer rebuilt here (sha256 {tok.sha256[:12]}) is not the one the "
                       f"network was trained with ({t.meta['tokenizer_sha256'][:12]})")
    model = pack.build(t).eval()
    task = Translation.__new__(Translation)  # decoding only needs the tokenizer and a device
    task.tok, task.src = tok, torch.zeros(0, dtype=torch.long)
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text(encoding="utf-8")
    lines = text.splitlines()
    bar = tqdm(total=len(lines), unit="line", disable=args.no_progress, file=sys.stderr)
    for s in range(0, len(lines), EVAL_SENTENCES):
        part = lines[s : s + EVAL_SENTENCES]
        todo = [i for i, line in enumerate(part) if line.strip()]
        out = [""] * len(part)
        if todo:
            with torch.no_grad():
                for i, h in zip(todo, task.translate(model, [part[i] for i in todo], args.beam)):
                    out[i] = h
        print("\n".join(out), flush=True)
        bar.update(len(part))
    bar.close()
    return 0
