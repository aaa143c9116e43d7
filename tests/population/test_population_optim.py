"""PopulationOptimizer: every member steps as its own single-trial optimizer would.

Each test feeds the population and M single optimizers (``lookbench.optim.build``) the same
gradients (different per member) and compares member by member. Tolerance (float32): rtol 1e-5,
atol 1e-6. The population's per-member column products round differently from torch's fused
``add(..., alpha=a)`` in the last bit (SGD); over 25 steps that stays far inside it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lookbench.execution.population.optim import PopulationOptimizer, family, why_not
from lookbench.optim import build, evaluation_weights

RTOL, ATOL = 1e-5, 1e-6

# The single model: a linear layer, a convolution and a bias.
SHAPES = [torch.Size([6, 5]), torch.Size([4, 3, 3, 3]), torch.Size([4])]

MEMBERS = [
    ("sgd", {"lr": 0.1, "momentum": 0.0}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("lookahead", {"inner": "sgd", "lr": 0.2, "momentum": 0.9, "dampening": 0.1, "k": 3,
                   "alpha": 0.5, "inner_state": "interpolate"}),
    ("adam", {"lr": 1e-2, "weight_decay": 1e-2}),
    ("lookahead", {"inner": "adam", "lr": 3e-3, "momentum": 0.8, "beta2": 0.99, "k": 5,
                   "alpha": 0.8, "inner_state": "reset"}),
    ("adamw", {"lr": 5e-3, "weight_decay": 0.1, "eps": 1e-6}),
    ("lookahead", {"inner": "sgd", "lr": 0.1, "momentum": 0.5, "k": 4, "alpha": 0.3,
                   "inner_state": "reset", "weight_decay": 5e-4}),
    ("lookahead", {"inner": "adamw", "lr": 1e-3, "k": 2, "alpha": 0.6,
                   "inner_state": "interpolate"}),
    ("lookahead", {"inner": "sgd", "lr": 0.1, "momentum": 0.0, "k": 2, "alpha": 0.5,
                   "inner_state": "interpolate"}),
    ("lookahead", {"inner": "sgd", "lr": 0.1, "k": 5, "alpha": 0.5}),  # maintain, defaults
]
# Interleaved families (rows gathered), and grouped by family (rows sliced).
ORDERS = {
    "interleaved": list(range(len(MEMBERS))),
    "grouped": sorted(range(len(MEMBERS)), key=lambda i: family(*MEMBERS[i])),
}


def population_shape(shape: torch.Size, m: int, i: int) -> tuple[int, ...]:
    return (m, *shape) if i == 0 else (m * shape[0], *shape[1:])  # (M,out,in), (M·C, ...)


def stack(tensors: list[torch.Tensor], i: int) -> torch.Tensor:
    return torch.stack([t.reshape(-1) for t in tensors]).view(
        population_shape(SHAPES[i], len(tensors), i))


def member(p: torch.Tensor, m: int, i: int, size: int) -> torch.Tensor:
    return p.detach().reshape(size, -1)[m].view(SHAPES[i])


class Pair:
    """A population and its members' single optimizers, fed the same gradients."""

    def __init__(self, members, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.members = members
        self.size = len(members)
        self.singles_params = [[torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
                               for _ in members]
        self.params = [stack([ps[i].detach() for ps in self.singles_params], i)
                       .requires_grad_() for i in range(len(SHAPES))]
        self.pop = PopulationOptimizer(self.params, SHAPES, members)
        self.singles = [build(name, ps, **hp)
                        for (name, hp), ps in zip(members, self.singles_params)]
        self.gen = torch.Generator().manual_seed(seed + 1)

    def grads(self) -> list[list[torch.Tensor]]:
        return [[torch.randn(s, generator=self.gen) for s in SHAPES] for _ in self.members]

    def step(self, grads=None, pop_grads=None) -> None:
        grads = grads or self.grads()
        for ps, gs, opt in zip(self.singles_params, grads, self.singles):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        for i, p in enumerate(self.params):
            p.grad = stack([gs[i] for gs in (pop_grads or grads)], i)
        self.pop.step()

    def set_lr_factor(self, f: float) -> None:
        self.pop.set_lr_factor(f)
        for (_, hp), opt in zip(self.members, self.singles):
            base = hp.get("lr")
            for group in opt.param_groups:
                group["lr"] = base * f

    def check(self, skip=()) -> None:
        for m in range(self.size):
            if m in skip:
                continue
            for i, p in enumerate(self.params):
                torch.testing.assert_close(member(p, m, i, self.size),
                                           self.singles_params[m][i].detach(), rtol=RTOL,
                                           atol=ATOL, msg=lambda s, m=m, i=i: f"member {m} "
                                           f"param {i}: {s}")


def check_state_dict(got, want, path="") -> None:
    """Same keys and structure; tensors close, everything else equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), (path, list(got), list(want))
        for key in want:
            check_state_dict(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), path
        for n, (a, b) in enumerate(zip(got, want)):
            check_state_dict(a, b, f"{path}[{n}]")
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, path
        assert got.dtype == want.dtype, path
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=path)
    else:
        assert got == want, (path, got, want)


@pytest.mark.parametrize("order", ORDERS)
def test_members_step_as_their_single_optimizers(order):
    pair = Pair([MEMBERS[i] for i in ORDERS[order]])
    evaluation_check(pair)  # before the first step: the parameters themselves
    for step in range(25):
        if step == 10:
            pair.set_lr_factor(0.5)
        if step == 18:
            pair.set_lr_factor(0.1)
        pair.step()
        pair.check()
        if step in (2, 11, 24):
            evaluation_check(pair)
    for m, (_, hp) in enumerate(pair.members):
        assert pair.pop.lr(m) == pair.singles[m].param_groups[0]["lr"] == hp["lr"] * 0.1


def evaluation_check(pair: Pair) -> None:
    """evaluation_weights() puts each Lookahead member's slow weights in (the others keep
    theirs), as each single optimizer does, and restores the training weights exactly."""
    before = [p.detach().clone() for p in pair.params]
    with pair.pop.evaluation_weights():
        for m, opt in enumerate(pair.singles):
            with evaluation_weights(opt):
                for i, p in enumerate(pair.params):
                    torch.testing.assert_close(member(p, m, i, pair.size),
                                               pair.singles_params[m][i].detach(),
                                               rtol=RTOL, atol=ATOL)
        with pytest.raises(RuntimeError):
            pair.pop.step()
    for p, b in zip(pair.params, before):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize("order", ORDERS)
def test_member_state_dict_is_the_single_optimizers(order):
    pair = Pair([MEMBERS[i] for i in ORDERS[order]], seed=3)
    for m, opt in enumerate(pair.singles):  # before any step
        check_state_dict(pair.pop.member_state_dict(m), opt.state_dict())
    pair.set_lr_factor(0.7)
    for _ in range(13):  # mid-cycle for every k
        pair.step()
    for m, opt in enumerate(pair.singles):
        check_state_dict(pair.pop.member_state_dict(m), opt.state_dict())


def test_a_single_optimizer_resumes_in_a_population_and_back():
    trained = Pair(MEMBERS, seed=5)
    for _ in range(12):
        trained.step()
    # A population resumed from the singles' checkpoints (parameters and optimizer states),
    # beside copies of those singles going on.
    resumed = Pair(MEMBERS, seed=5)
    resumed.singles_params, resumed.singles = copy.deepcopy(
        (trained.singles_params, trained.singles))
    with torch.no_grad():
        for i, p in enumerate(resumed.params):
            p.copy_(stack([ps[i].detach() for ps in trained.singles_params], i))
    for m, opt in enumerate(trained.singles):
        resumed.pop.load_member_state_dict(m, opt.state_dict())
        check_state_dict(resumed.pop.member_state_dict(m), opt.state_dict())
    # Fresh singles resumed from the trained population's members.
    singles_params = [[member(p, m, i, trained.size).clone().requires_grad_()
                       for i, p in enumerate(trained.params)] for m in range(trained.size)]
    singles = [build(name, ps, **hp) for (name, hp), ps in zip(MEMBERS, singles_params)]
    for m, opt in enumerate(singles):
        opt.load_state_dict(trained.pop.member_state_dict(m))
    trained.singles, trained.singles_params = singles, singles_params
    for _ in range(10):
        grads = trained.grads()
        for pair in (resumed, trained):
            pair.step([[g.clone() for g in gs] for gs in grads])
    for pair in (resumed, trained):
        pair.check()
    for p, q in zip(resumed.params, trained.params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=RTOL, atol=ATOL)


def test_load_refuses_another_configuration():
    pair = Pair(MEMBERS[:2])
    pair.step()
    with pytest.raises(ValueError, match="momentum"):
        pair.pop.load_member_state_dict(0, pair.singles[1].state_dict())


def test_a_frozen_member_cannot_touch_the_others():
    """After freeze(m), member m's NaN gradients change nothing else, bit for bit; its
    parameters and state are zero and stay zero."""
    frozen = 2
    runs = []
    for nan in (True, False):
        pair = Pair(MEMBERS, seed=7)
        for step in range(20):
            grads = pair.grads()
            pop_grads = [list(gs) for gs in grads]
            if step >= 8:
                pop_grads[frozen] = [torch.full_like(g, math.nan if nan else 1.0)
                                     for g in grads[frozen]]
            pair.step(grads, pop_grads)
            if step == 7:
                pair.pop.freeze(frozen)
        runs.append(pair)
    nan_run, finite_run = runs
    for p, q in zip(nan_run.params, finite_run.params):
        rows_p, rows_q = p.detach().reshape(len(MEMBERS), -1), q.detach().reshape(len(MEMBERS), -1)
        keep = [m for m in range(len(MEMBERS)) if m != frozen]
        assert torch.equal(rows_p[keep], rows_q[keep])
        assert torch.equal(rows_p[frozen], torch.zeros_like(rows_p[frozen]))
    nan_run.check(skip=(frozen,))  # the others still follow their single optimizers
    state = nan_run.pop.member_state_dict(frozen)
    tensors = [t for s in (state["state"], state["inner_state"]) for d in s.values()
               for t in d.values()]
    assert tensors and all(torch.equal(t, torch.zeros_like(t)) for t in tensors
                           if t.dim() > 0)
    with nan_run.pop.evaluation_weights():
        for p in nan_run.params:
            assert torch.isfinite(p).all()
    assert nan_run.pop.is_frozen(frozen) and not nan_run.pop.is_frozen(0)


def test_channels_last_parameters():
    """A channels-last convolution weight: each member's block is p[m·C:(m+1)·C]."""
    members = [MEMBERS[2], MEMBERS[4], MEMBERS[1]]
    size = len(members)
    gen = torch.Generator().manual_seed(11)
    shape = torch.Size([4, 3, 3, 3])
    init = [torch.randn(shape, generator=gen) for _ in members]
    p = torch.cat(init).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert not p.is_contiguous()
    pop = PopulationOptimizer([p], [shape], members)
    singles_params = [t.clone().requires_grad_() for t in init]
    singles = [build(n, [q], **hp) for (n, hp), q in zip(members, singles_params)]
    for _ in range(12):
        grads = [torch.randn(shape, generator=gen) for _ in members]
        for q, g, opt in zip(singles_params, grads, singles):
            q.grad = g.clone()
            opt.step()
        p.grad = torch.cat(grads).contiguous(memory_format=torch.channels_last)
        pop.step()
    for m in range(size):
        torch.testing.assert_close(p.detach()[4 * m: 4 * m + 4], singles_params[m].detach(),
                                   rtol=RTOL, atol=ATOL)
        check_state_dict(pop.member_state_dict(m), singles[m].state_dict())
    with pop.evaluation_weights():
        for m, opt in enumerate(singles):
            with evaluation_weights(opt):
                torch.testing.assert_close(p.detach()[4 * m: 4 * m + 4],
                                           singles_params[m].detach(), rtol=RTOL, atol=ATOL)


def test_why_not():
    assert why_not("sgd", {"lr": 0.1, "momentum": 0.0}) is None
    assert why_not("adamw", {"lr": 1e-3, "beta2": 0.99}) is None
    for policy in ("maintain", "reset", "interpolate"):
        assert why_not("lookahead", {"inner": "adam", "k": 7, "alpha": 0.3,
                                     "inner_state": policy}) is None
    refused = [
        ("lookahead", {"inner": "sgd", "alpha": "adaptive"}),
        ("adam", {"amsgrad": True}),
        ("lookahead", {"inner": "adam", "amsgrad": True}),
        ("polyak", {"inner": "sgd"}),
        ("ema", {}),
        ("swa", {}),
        ("rmsprop", {}),
        ("lookahead", {"inner": "rmsprop"}),
        ("sgd", {"lr": -1.0}),
        ("sgd", {"beta2": 0.9}),
    ]
    for name, hp in refused:
        reason = why_not(name, hp)
        assert isinstance(reason, str) and reason, (name, hp)
    with pytest.raises(ValueError, match="adaptive"):
        PopulationOptimizer([torch.zeros(2, 3, requires_grad=True)], [torch.Size([3])],
                            [("sgd", {}), ("lookahead", {"alpha": "adaptive"})])
    assert family("adamw", {}) == family("lookahead", {"inner": "adam"}) == "adam"
    assert family("lookahead", {}) == "sgd"
