import torch
from torch import nn

from lth.ensemble import Ensemble
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
