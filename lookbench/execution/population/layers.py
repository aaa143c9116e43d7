"""M copies of one network as one network: the population's model.

The layout is HFTA's (Wang et al., MLSys 2021): activations keep the members side by side in
the channel dimension, ``(batch, M·C, ...)``, so each member's block of channels is its own
network's activations. Then

* a convolution becomes one grouped convolution with M times the groups (each member's filters
  see only its own channels),
* a linear layer becomes one batched matrix product over a ``(M, out, in)`` weight,
* a batch norm over M·C channels keeps each member's own batch statistics and running
  averages, exactly as when it trains alone,
* and everything without parameters that works per channel (ReLU, pooling, flatten, adding
  a residual) runs unchanged.

A module without parameters that does *not* work per channel (a pad or reshape over channels)
can say how to copy itself: a method ``population_copy(members, M)`` returning the module to
use (``lookbench.tasks.models``' option-A shortcut does). Anything else is refused, and
:func:`stack` checks the result numerically against each member's own network before it is
used, so a forward that mixes members is caught rather than trained.

Every parameter of the population has the members' blocks contiguous along dim 0: member
m's tensor is ``p.view(M, -1)[m]`` (the contract ``lookbench.execution.population.optim`` steps).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

# How close a member's output in the population must be to its own network's output (float32;
# a grouped convolution or batched product adds its terms in another order).
PROBE_RTOL = 1e-4
PROBE_ATOL = 1e-5


class NotPopulable(Exception):
    """The model cannot be trained as a population; the message says why, in one line."""


class PopLinear(nn.Module):
    """M linear layers: ``(B, M·in) → (B, M·out)`` with a ``(M, out, in)`` weight."""

    def __init__(self, members: list[nn.Linear]) -> None:
        super().__init__()
        self.members = len(members)
        self.in_features = members[0].in_features
        self.out_features = members[0].out_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in members]))
                     if members[0].bias is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.members, self.in_features).transpose(0, 1)  # (M, N, in)
        if self.bias is not None:
            out = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        else:
            out = torch.bmm(x, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(*lead, self.members * self.out_features)


def _pop_conv(members: list[nn.Conv2d]) -> nn.Conv2d:
    """M convolutions as one with M times the groups; the weights concatenated in dim 0."""
    c = members[0]
    if c.padding_mode != "zeros":
        raise NotPopulable(f"a convolution with padding_mode={c.padding_mode!r}")
    m = len(members)
    conv = nn.Conv2d(c.in_channels * m, c.out_channels * m, c.kernel_size, c.stride,
                     c.padding, c.dilation, c.groups * m, c.bias is not None,
                     device=c.weight.device, dtype=c.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([x.weight for x in members]))
        if c.bias is not None:
            conv.bias.copy_(torch.cat([x.bias for x in members]))
    return conv


def _pop_norm(members: list[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    """M batch norms as one over M·C channels: per-channel statistics are per member."""
    b = members[0]
    like = b.weight if b.affine else b.running_mean
    norm = type(b)(b.num_features * len(members), b.eps, b.momentum, b.affine,
                   b.track_running_stats,
                   device=None if like is None else like.device,
                   dtype=None if like is None else like.dtype)
    with torch.no_grad():
        if b.affine:
            norm.weight.copy_(torch.cat([x.weight for x in members]))
            norm.bias.copy_(torch.cat([x.bias for x in members]))
        if b.track_running_stats:
            norm.running_mean.copy_(torch.cat([x.running_mean for x in members]))
            norm.running_var.copy_(torch.cat([x.running_var for x in members]))
            norm.num_batches_tracked.copy_(b.num_batches_tracked)
    return norm


_CONVERTERS: dict[type, Callable[[list[Any]], nn.Module]] = {
    nn.Linear: PopLinear,
    nn.Conv2d: _pop_conv,
    nn.BatchNorm1d: _pop_norm,
    nn.BatchNorm2d: _pop_norm,
}


def _convert(members: list[nn.Module]) -> nn.Module:
    """The population copy of one module given its M members (same type and structure)."""
    first = members[0]
    if hasattr(first, "population_copy"):
        return first.population_copy(members, len(members))
    if type(first) in _CONVERTERS:
        return _CONVERTERS[type(first)](members)
    if isinstance(first, nn.Dropout) and first.p > 0:
        raise NotPopulable("dropout: a member's dropout masks would differ from its own run's")
    own = list(first.named_parameters(recurse=False)) + list(first.named_buffers(recurse=False))
    if own:
        raise NotPopulable(f"{type(first).__name__} layers have no population form yet")
    children = list(first.named_children())
    if not children:
        return copy.deepcopy(first)  # parameter-free and per channel: ReLU, pooling, flatten
    out = copy.copy(first)  # the container's own forward, with its children replaced
    out._modules = {}  # type: ignore[assignment]
    for name, _ in children:
        setattr(out, name, _convert([getattr(m, name) for m in members]))
    return out


def stack(models: list[nn.Module]) -> nn.Module:
    """One network running ``models`` side by side (see the module docstring), with copies of
    their current weights and buffers; raises :class:`NotPopulable` saying why it cannot."""
    structure = [(n, tuple(p.shape)) for n, p in models[0].state_dict().items()]
    for m in models[1:]:
        if [(n, tuple(p.shape)) for n, p in m.state_dict().items()] != structure:
            raise NotPopulable("the members' networks differ in structure")
    population = _convert(models)
    population.population_size = len(models)  # (an attribute: state_dict keys stay the same)
    return population


def to_population(inputs: Tensor) -> Tensor:
    """``(M, B, C, ...)`` member inputs → the population's ``(B, M·C, ...)``."""
    m, b = inputs.shape[:2]
    return inputs.transpose(0, 1).reshape(b, m * inputs.shape[2], *inputs.shape[3:])


def from_population(outputs: Tensor, members: int) -> Tensor:
    """The population's ``(B, M·K, ...)`` outputs → ``(M, B, K, ...)``."""
    b = outputs.shape[0]
    return outputs.reshape(b, members, outputs.shape[1] // members,
                           *outputs.shape[2:]).transpose(0, 1)


def member_state_dict(population: nn.Module, template: nn.Module, member: int,
                      members: int) -> dict[str, Tensor]:
    """Member ``member``'s weights and buffers in ``template``'s own ``state_dict`` layout
    (views into the population, no copies): what its single network would hold."""
    pop = population.state_dict(keep_vars=True)
    out = {}
    for name, t in template.state_dict().items():
        p = pop[name].detach()
        if name.endswith("num_batches_tracked"):
            out[name] = p
        else:
            out[name] = p.view(members, -1)[member].view(t.shape)
    return out


@torch.no_grad()
def load_member(population: nn.Module, member: int, members: int,
                state: dict[str, Tensor]) -> None:
    """Write one member's single-network ``state`` into its slot of the population."""
    pop = population.state_dict(keep_vars=True)
    for name, value in state.items():
        p = pop[name]
        if name.endswith("num_batches_tracked"):
            p.copy_(value)
        else:
            p.view(members, -1)[member].copy_(value.reshape(-1))


@torch.no_grad()
def check_outputs(population: nn.Module, models: list[nn.Module], sample: Tensor) -> None:
    """Raise :class:`NotPopulable` unless every member's output in the population equals its
    own network's on ``sample`` (one member's input batch), in training and evaluation mode.
    Runs on copies: nothing here changes a running statistic of the real networks."""
    pop, singles = copy.deepcopy(population), [copy.deepcopy(m) for m in models]
    members: int = population.population_size  # type: ignore[assignment]
    # Each member its own input (the sample scaled), so a forward that mixes members shows.
    inputs = torch.stack([sample * (1 + i / members) for i in range(members)])
    for train in (True, False):
        pop.train(train)
        for s in singles:
            s.train(train)
        got = from_population(pop(to_population(inputs)), members)
        for i, single in enumerate(singles):
            want = single(inputs[i])
            if got[i].shape != want.shape or not torch.allclose(got[i], want, rtol=PROBE_RTOL,
                                                                 atol=PROBE_ATOL):
                raise NotPopulable("the network's forward mixes the members' channels (a "
                                   "reshape or pad over channels); give the module a "
                                   "population_copy()")
