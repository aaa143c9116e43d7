"""The population's network: M networks side by side equal each network run alone, forward
and backward, and a member's weights go in and come out in its own network's layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lookbench.execution.population import layers
from lookbench.tasks.digits import build_mlp
from lookbench.tasks.models import resnet18_cifar, resnet20

M = 4


def _members(build, seeds=range(M), dtype=torch.float32):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build().to(dtype))
    return out


def _inputs(shape, dtype=torch.float32):
    g = torch.Generator().manual_seed(7)
    return torch.randn(M, *shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("build, shape", [
    (lambda: build_mlp(32), (16, 64)),
    (lambda: resnet20(10), (8, 3, 16, 16)),  # option-A shortcuts: a population_copy
    (lambda: resnet18_cifar(10), (4, 3, 8, 8)),  # 1×1 convolution shortcuts
])
def test_each_member_computes_what_its_own_network_does(build, shape):
    # In float64 a member's result is its own network's to rounding: a grouped convolution adds
    # the same terms. (In float32 a deep network's gradient can differ by ~1% on an unlucky
    # batch-norm channel: conditioning, not a difference of the computation.)
    members = _members(build, dtype=torch.float64)
    pop = layers.stack(members)
    x = _inputs(shape, torch.float64)  # each member its own batch
    out = layers.from_population(pop(layers.to_population(x)), M)
    out.square().sum().backward()
    for m, net in enumerate(members):
        want = net(x[m])
        assert torch.allclose(out[m], want, rtol=1e-10, atol=1e-12)
        want.square().sum().backward()
    # gradients: member m's block of each population parameter is its own network's gradient
    for (name, p), *singles in zip(pop.named_parameters(),
                                   *[n.named_parameters() for n in members]):
        for m, (_, q) in enumerate(singles):
            got = p.grad.view(M, -1)[m].view(q.shape)
            assert torch.allclose(got, q.grad, rtol=1e-9, atol=1e-10), name
    # batch norm: each member's running statistics are its own
    for m, net in enumerate(members):
        state = layers.member_state_dict(pop, net, m, M)
        for key, value in net.state_dict().items():
            if "running" in key:
                assert torch.allclose(state[key], value, rtol=1e-10, atol=1e-12), key


def test_a_member_goes_in_and_comes_out_in_its_own_layout():
    members = _members(lambda: resnet20(10))
    pop = layers.stack(members)
    other = resnet20(10)
    layers.load_member(pop, 2, M, other.state_dict())
    got = layers.member_state_dict(pop, other, 2, M)
    assert all(torch.equal(got[k], v) for k, v in other.state_dict().items())
    kept = layers.member_state_dict(pop, other, 1, M)
    assert all(torch.equal(kept[k], v) for k, v in members[1].state_dict().items())


class _MixesChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x):
        return self.linear(x - x.mean(dim=1, keepdim=True))  # a mean over *all* features


def test_a_forward_that_mixes_members_is_caught_not_trained():
    members = _members(_MixesChannels)
    pop = layers.stack(members)
    with pytest.raises(layers.NotPopulable, match="mixes the members"):
        layers.check_outputs(pop, members, torch.randn(5, 8))
    with pytest.raises(layers.NotPopulable, match="LSTM"):
        layers.stack(_members(lambda: nn.Sequential(nn.LSTM(4, 4))))
    with pytest.raises(layers.NotPopulable, match="dropout"):
        layers.stack(_members(lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))))
