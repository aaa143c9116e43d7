"""The baseline optimizers and the factory that builds every optimizer by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lookbench.optim import (
    AveragedOptimizer,
    Lookahead,
    available,
    build,
    evaluation_weights,
    hyperparameters,
)


def _drive(opt, p, grads):
    """Step ``opt`` with the given gradients; return the iterates after each step."""
    iterates = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        iterates.append(p.detach().clone())
    return iterates


def _grads(n, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(dim, generator=gen, dtype=torch.float64) for _ in range(n)]


def test_polyak_evaluates_on_the_running_mean_of_the_iterates():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = build("polyak", [p], lr=0.1, momentum=0.9)
    iterates = _drive(opt, p, _grads(9))
    with evaluation_weights(opt):
        torch.testing.assert_close(p.detach(), torch.stack(iterates).mean(0))
    assert torch.equal(p.detach(), iterates[-1])


def test_ema_evaluates_on_the_exponential_average():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = build("ema", [p], lr=0.1, momentum=0.0, decay=0.8)
    iterates = _drive(opt, p, _grads(6))
    expected = iterates[0]
    for x in iterates[1:]:
        expected = 0.8 * expected + 0.2 * x
    with evaluation_weights(opt):
        torch.testing.assert_close(p.detach(), expected)


def test_swa_averages_from_start_every_n_steps():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = build("swa", [p], lr=0.1, start=4, every=2)
    iterates = _drive(opt, p, _grads(11))
    with evaluation_weights(opt):  # steps 6, 8, 10 are averaged
        torch.testing.assert_close(p.detach(), torch.stack(iterates[5:10:2]).mean(0))


def test_before_averaging_starts_evaluation_uses_the_weights_themselves():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = build("swa", [p], lr=0.1, start=100)
    iterates = _drive(opt, p, _grads(3))
    with evaluation_weights(opt):
        assert torch.equal(p.detach(), iterates[-1])


def test_averaging_checkpoint_round_trip():
    grads = _grads(10)
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = build("polyak", [p], lr=0.1, start=2)
    _drive(opt, p, grads)
    q = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt_q = build("polyak", [q], lr=0.1, start=2)
    _drive(opt_q, q, grads[:5])
    sd, value = opt_q.state_dict(), q.detach().clone()
    r = nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt_r = build("polyak", [r], lr=0.1, start=2)
    opt_r.load_state_dict(sd)
    with torch.no_grad():
        r.copy_(value)
    _drive(opt_r, r, grads[5:])
    assert torch.equal(p.detach(), r.detach())
    assert torch.equal(opt.state[p]["avg_param"], opt_r.state[r]["avg_param"])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lookahead", "polyak", "ema", "swa",
                                  "asgd"])
def test_every_registered_optimizer_builds_and_trains(name):
    assert name in available()
    model = nn.Linear(4, 2)
    opt = build(name, model.parameters())
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(nn.functional.mse_loss(model(x), y).detach()) < first


def test_factory_maps_hyperparameters_to_each_family():
    ps = [nn.Parameter(torch.zeros(2))]
    sgd = build("sgd", ps, lr=0.2, momentum=0.5, nesterov=True, weight_decay=1e-3)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.5
    adam = build("adam", ps, lr=3e-4, momentum=0.8, beta2=0.99)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.99)
    assert isinstance(build("adamw", ps), torch.optim.AdamW)
    la = build("lookahead", ps, inner="adamw", lr=1e-3, k=10, alpha=0.8, inner_state="reset",
               weight_decay=1.0)
    assert isinstance(la, Lookahead) and isinstance(la.inner, torch.optim.AdamW)
    assert la.k == 10 and la.alpha == 0.8 and la.inner_state == "reset"
    assert la.param_groups[0]["weight_decay"] == 1.0
    nested = build("lookahead", ps, inner="polyak", lr=0.1, start=3)
    assert isinstance(nested.inner, AveragedOptimizer) and nested.inner.start == 3
    # A flat trial config passes None for the fields an optimizer does not use.
    plain = build("sgd", ps, lr=0.1, momentum=0.9, k=None, alpha=None)
    assert isinstance(plain, torch.optim.SGD)


def test_hyperparameters_lists_the_inner_optimizers_too():
    hp = hyperparameters("lookahead", "adam")
    assert hp["inner"] == "adam" and hp["k"] == 5 and hp["alpha"] == 0.5
    assert hp["beta2"] == 0.999 and "nesterov" not in hp
    assert hyperparameters("sgd")["momentum"] == 0.9


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("lbfgs", {}, "unknown optimizer 'lbfgs'; choose one of"),
        ("sgd", {"k": 5}, "sgd does not take k"),
        ("sgd", {"lr": -0.1}, r"lr must be in \(0.0, inf\)"),
        ("sgd", {"momentum": 1.0}, r"momentum must be in \[0.0, 1.0\)"),
        ("adam", {"beta2": 1.5}, "beta2 must be in"),
        ("lookahead", {"alpha": 1.2}, r"alpha must be a number in \(0, 1\]"),
        ("lookahead", {"k": 0}, "k must be an integer >= 1"),
        ("lookahead", {"inner": "lookahead"}, "lookahead can wrap"),
        ("polyak", {"inner": "ema"}, "polyak can wrap sgd, adam, adamw, nadam"),
        ("ema", {"decay": 1.0}, r"decay must be in \[0, 1\)"),
        ("swa", {"start": -1}, "start must be an integer >= 0"),
        ("asgd", {"start": 3}, "asgd does not take start"),
        ("sgd", {"nesterov": True, "momentum": 0.0}, "nesterov=True needs momentum > 0"),
    ],
)
def test_factory_rejects_bad_hyperparameters_clearly(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        build(name, [nn.Parameter(torch.zeros(2))], **hparams)
