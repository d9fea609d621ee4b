"""Ensemble: stacked members against separate models; buffers, inputs and outputs, paths, one member."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lth.ensemble import Ensemble
from lth.ensemble_modes import DEFAULT_RULE, MODE_RULES
from lth.errors import ConfigError
from lth.models.lenet import LeNet


class Plain(nn.Module):
    """A model without stacked-parameter support: goes through vmap."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x).tanh()


def states(model_fn, n):
    out = []
    for i in range(n):
        torch.manual_seed(i)
        out.append({k: v.detach().clone() for k, v in model_fn().named_parameters()})
    return out


def test_stacked_forward_matches_each_member():
    ss = states(LeNet, 3)
    ens = Ensemble(LeNet(), ss)
    x = torch.randn(3, 5, 1, 28, 28)
    out = ens(x)
    for i, s in enumerate(ss):
        m = LeNet()
        m.load_state_dict(s)
        torch.testing.assert_close(out[i], m(x[i]), rtol=1e-5, atol=1e-5)


def test_vmap_path_matches_each_member():
    ss = states(Plain, 4)
    ens = Ensemble(Plain(), ss)
    assert not ens.stackable
    x = torch.randn(4, 2, 6)
    out = ens(x)
    for i, s in enumerate(ss):
        m = Plain()
        m.load_state_dict(s)
        torch.testing.assert_close(out[i], m(x[i]))


def test_each_member_gets_its_own_gradient():
    ss = states(LeNet, 2)
    ens = Ensemble(LeNet(), ss)
    x, y = torch.randn(2, 8, 1, 28, 28), torch.randint(0, 10, (2, 8))
    from lth.tasks.classify import ImageClassification

    ImageClassification.loss(ens(x), y).backward()
    m = LeNet()
    m.load_state_dict(ss[1])
    nn.functional.cross_entropy(m(x[1]), y[1]).backward()
    torch.testing.assert_close(ens.grads()["fc1.weight"][1], m.fc1.weight.grad, rtol=1e-4, atol=1e-6)


def test_member_state_round_trip():
    ss = states(LeNet, 2)
    ens = Ensemble(LeNet(), ss)
    ens.load_member(0, ss[1])
    assert torch.equal(ens.member_state(0)["fc2.weight"], ss[1]["fc2.weight"])


# --- state: buffers ------------------------------------------------------------------------------

class ConvBN(nn.Module):
    """A tiny conv + BatchNorm + linear net: [B, 2, 6, 6] -> [B, 3]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


def separate(model_fn, ss):
    out = []
    for s in ss:
        m = model_fn()
        m.load_state_dict(s, strict=False)
        out.append(m)
    return out


@pytest.mark.parametrize("mode", ["stacked", "loop"])
def test_batchnorm_running_stats_per_member_match_separate_models(mode):
    ss = states(ConvBN, 3)
    ens = Ensemble(ConvBN(), ss, mode=mode)
    assert ens.path() == ("vmap" if mode == "stacked" else "loop")
    assert ens.buffer_names == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    singles = separate(ConvBN, ss)
    opt = torch.optim.SGD(list(ens.stacked), lr=0.1)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in singles]
    for _ in range(3):
        x, y = torch.randn(3, 8, 2, 6, 6), torch.randint(0, 3, (3, 8))
        opt.zero_grad()
        out = ens(x)  # [M, B, 3]
        sum(nn.functional.cross_entropy(out[i], y[i]) for i in range(3)).backward()
        opt.step()
        for i, (m, o) in enumerate(zip(singles, opts)):
            o.zero_grad()
            want = m(x[i])
            nn.functional.cross_entropy(want, y[i]).backward()
            o.step()
            torch.testing.assert_close(out[i], want, rtol=1e-5, atol=1e-5)
    for i, m in enumerate(singles):
        st = ens.member_state(i)
        for n, b in m.named_buffers():
            torch.testing.assert_close(st[n], b, rtol=1e-5, atol=1e-6, msg=n)
    assert ens.buffer_dict()["bn.num_batches_tracked"].tolist() == [3, 3, 3]
    ens.eval()
    x = torch.randn(3, 5, 2, 6, 6)
    out = ens(x)
    for i, m in enumerate(singles):
        m.eval()
        torch.testing.assert_close(out[i], m(x[i]), rtol=1e-5, atol=1e-5)
    assert ens.buffer_dict()["bn.num_batches_tracked"].tolist() == [3, 3, 3]  # eval updates nothing


def test_buffers_are_registered_move_with_the_module_and_load_per_member():
    ss = states(ConvBN, 2)
    ss[1]["bn.running_mean"] = torch.arange(4.0)  # a state may carry buffers; the others come from the model
    ens = Ensemble(ConvBN(), ss)
    bufs = ens.buffer_dict()
    assert bufs["bn.running_mean"].shape == (2, 4) and bufs["bn.running_mean"][0].eq(0).all()
    assert torch.equal(bufs["bn.running_mean"][1], torch.arange(4.0))
    assert {"stacked_buffers.0", "stacked_buffers.1", "stacked_buffers.2"} <= set(ens.state_dict())
    ens.load_member(0, {"bn.running_var": torch.full((4,), 2.0), "fc.bias": torch.ones(3)})
    st = ens.member_state(0)
    assert torch.equal(st["bn.running_var"], torch.full((4,), 2.0)) and torch.equal(st["fc.bias"], torch.ones(3))
    ens.eval().to(torch.float64)  # a stale copy of the buffers would stay float32
    assert all(b.dtype == torch.float64 for n, b in ens.buffer_dict().items() if "num_batches" not in n)
    x = torch.randn(2, 3, 2, 6, 6, dtype=torch.float64)
    m = separate(ConvBN, [ens.member_state(0)])[0].double().eval()
    torch.testing.assert_close(ens(x)[0], m(x[0]))


# --- calls: several inputs, keyword inputs, pytree outputs, dropout ------------------------------


class TwoInputs(nn.Module):
    """(x [B, T, 4], pad [B, T] bool, scale: float, *, bias [B, 1, 4] or None) -> (y [B, 4], {'h': [B, T, 4]})."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, pad, scale, bias=None):
        h = self.fc(x) * scale
        if bias is not None:
            h = h + bias
        y = h.masked_fill(pad[..., None], 0.0).sum(1) / (~pad).sum(1, keepdim=True)
        return y, {"h": h}


@pytest.mark.parametrize("mode", ["stacked", "loop"])
def test_positional_and_keyword_inputs_and_tuple_dict_outputs(mode):
    ss = states(TwoInputs, 3)
    ens = Ensemble(TwoInputs(), ss, mode=mode)
    x, bias = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 1, 4)
    pad = torch.zeros(3, 2, 5, dtype=torch.bool)
    pad[1, :, 3:] = True
    y, d = ens(x, pad, 2.0, bias=bias)
    assert y.shape == (3, 2, 4) and d["h"].shape == (3, 2, 5, 4)
    y2, _ = ens(x, pad, 2.0, bias=None)  # a non-tensor keyword reaches every member unchanged
    for i, m in enumerate(separate(TwoInputs, ss)):
        wy, wd = m(x[i], pad[i], 2.0, bias=bias[i])
        torch.testing.assert_close(y[i], wy)
        torch.testing.assert_close(d["h"][i], wd["h"])
        torch.testing.assert_close(y2[i], m(x[i], pad[i], 2.0)[0])


class KwargsModel(nn.Module):
    """Hugging Face style: keyword tensors in, a dict out."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.types = nn.Embedding(2, 4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.drop(self.embed(input_ids) + self.types(token_type_ids))
        h = (h * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return {"logits": self.out(h), "hidden": h}


def kw_inputs(m):
    ids = torch.randint(0, 10, (m, 3, 6))
    att = torch.ones(m, 3, 6)
    att[:, :, 4:] = 0
    return dict(input_ids=ids, attention_mask=att, token_type_ids=torch.randint(0, 2, (m, 3, 6)))


@pytest.mark.parametrize("mode", ["stacked", "loop"])
def test_keyword_model_eval_matches_members_and_dropout_differs_per_member_in_training(mode):
    s = states(KwargsModel, 1)[0]
    ens = Ensemble(KwargsModel(), [s] * 3, mode=mode)  # identical members
    one = {k: v[:1].expand(3, *v.shape[1:]) for k, v in kw_inputs(1).items()}  # identical inputs
    ens.eval()
    a, b = ens(**one), ens(**one)
    assert torch.equal(a["logits"], b["logits"])  # evaluation is deterministic
    m = separate(KwargsModel, [s])[0].eval()
    want = m(**{k: v[0] for k, v in one.items()})["logits"]
    for i in range(3):
        torch.testing.assert_close(a["logits"][i], want)
    ens.train()
    h = ens(**one)["hidden"]
    assert not torch.equal(h[0], h[1]) and not torch.equal(h[1], h[2])  # each member its own dropout masks


# --- modes -----------------------------------------------------------------------------------------


def run_both(make, ss, inputs, loss_fn):
    got = []
    for mode in ("stacked", "loop"):
        ens = Ensemble(make(), ss, mode=mode)
        out = ens(*inputs)
        loss_fn(out).backward()
        got.append((ens.path(), out.detach(), ens.grads()))
    return got


def test_loop_and_vmap_give_the_same_outputs_and_gradients():
    ss = states(ConvBN, 3)
    (pa, oa, ga), (pb, ob, gb) = run_both(ConvBN, ss, (torch.randn(3, 4, 2, 6, 6),), lambda o: o.square().sum())
    assert (pa, pb) == ("vmap", "loop")
    torch.testing.assert_close(oa, ob, rtol=1e-5, atol=1e-5)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-5, msg=n)


def test_loop_of_a_stackable_model_runs_each_member_as_member_forward_does():
    """A bmm over M members need not round like M bmms over one (it does not on this CPU), so the loop
    matches the direct call to float tolerance and member_forward bit for bit."""
    ss = states(LeNet, 3)
    x = torch.randn(3, 7, 1, 28, 28)
    (pa, oa, ga), (pb, ob, gb) = run_both(LeNet, ss, (x,), lambda o: o.square().mean())
    assert (pa, pb) == ("direct", "loop")
    torch.testing.assert_close(oa, ob, rtol=1e-5, atol=1e-6)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-7, msg=n)
    ens = Ensemble(LeNet(), ss)
    assert torch.equal(ob, torch.cat([ens.member_forward(m, x[m : m + 1]) for m in range(3)]))


@pytest.mark.parametrize("make,mode", [(LeNet, "auto"), (LeNet, "loop"), (Plain, "stacked"), (Plain, "loop"),
                                       (ConvBN, "stacked"), (ConvBN, "loop")])
def test_member_forward_is_an_ensemble_of_that_member_alone(make, mode):
    ss = states(make, 3)
    ens = Ensemble(make(), ss, mode=mode).eval()
    x = torch.randn(1, 4, *((1, 28, 28) if make is LeNet else (6,) if make is Plain else (2, 6, 6)))
    for m in range(3):
        alone = Ensemble(make(), [ss[m]], mode=mode).eval()
        assert torch.equal(ens.member_forward(m, x), alone(x))
    if ens.path() == "loop":  # the loop runs each member as member_forward does, whatever M
        xs = torch.randn(3, *x.shape[1:])
        assert all(torch.equal(ens(xs)[m : m + 1], ens.member_forward(m, xs[m : m + 1])) for m in range(3))


class Declared(Plain):
    ensemble_mode = {"cpu": "loop", "cuda": "stacked"}


def test_auto_mode_follows_the_model_declaration_then_the_rules():
    assert Ensemble(LeNet(), states(LeNet, 2)).path() == "direct"
    assert Ensemble(Declared(), states(Declared, 2)).path() == "loop"
    assert Ensemble(Declared(), states(Declared, 2)).path("cuda") == "vmap"
    conv_rule = dict(MODE_RULES)[nn.modules.conv._ConvNd]
    assert Ensemble(ConvBN(), states(ConvBN, 2)).path() == {"stacked": "vmap", "loop": "loop"}[conv_rule["cpu"]]
    assert Ensemble(Plain(), states(Plain, 2)).path() == {"stacked": "vmap", "loop": "loop"}[DEFAULT_RULE["cpu"]]
    attn = nn.Sequential(nn.MultiheadAttention(4, 2, batch_first=True))
    mha_rule = dict(MODE_RULES)[nn.MultiheadAttention]
    assert Ensemble(attn, [dict(attn.named_parameters())]).path() == {"stacked": "vmap", "loop": "loop"}[mha_rule["cpu"]]
    with pytest.raises(ConfigError):
        Ensemble(Plain(), states(Plain, 2), mode="fast")


def test_mode_benchmark_smoke_runs(tmp_path):
    script = Path(__file__).resolve().parent.parent / "bench" / "ensemble_mode.py"
    out = tmp_path / "modes.json"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--members", "1", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    models = {"lenet", "conv2", "conv2_bn", "gpt_tiny", "seq2seq_tiny"}
    assert res["smoke"] and set(res["ms_per_step_per_model"]) == models
    assert set(res["ms_per_step_per_model"]["lenet"]["2"]) == {"direct", "vmap", "loop"}
