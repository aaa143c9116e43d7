"""NT-ASGD (the ``asgd`` baseline): Merity et al.'s non-monotone trigger, checked against
hand-worked validation series, and the average it starts."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from lookbench.optim import (
    NTAveragedOptimizer,
    build,
    evaluation_weights,
    hyperparameters,
)


def _fires_at(values, patience=5):
    """The 1-based evaluation at which the trigger fires (``None``: never)."""
    opt = build("asgd", [nn.Parameter(torch.zeros(1))], lr=0.1, patience=patience)
    for i, v in enumerate(values, 1):
        if opt.observe_validation(v):
            return i
    return None


def test_the_trigger_compares_with_the_best_before_the_last_five():
    # By hand, Merity's `val_loss > min(best_val_loss[:-5])` with the values seen before:
    # 7th (3.8): min([5]) = 5, no; 8th (3.9): min([5, 4]) = 4, no; 9th (4.0): min([5, 4, 3])
    # = 3, fires. (Worse than the best so far would have fired at the 4th, 3.5 > 3.)
    assert _fires_at([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]) == 9


def test_the_trigger_never_fires_while_validation_improves():
    assert _fires_at([100.0 - i for i in range(60)]) is None
    assert _fires_at([3.0] * 20) is None  # equal is not worse


@pytest.mark.parametrize("patience", [0, 1, 5])
def test_a_rising_series_fires_only_after_more_than_patience_values(patience):
    # The values before it: more than `patience` needed, so the earliest is value patience + 2.
    assert _fires_at([float(i) for i in range(1, 20)], patience) == patience + 2


def test_the_trigger_fires_once_and_later_values_are_ignored():
    opt = build("asgd", [nn.Parameter(torch.zeros(1))], lr=0.1, patience=1)
    assert [opt.observe_validation(v) for v in (5.0, 4.0, 6.0, 7.0, 1.0)] == [
        False, False, True, False, False]
    assert opt.param_groups[0]["validations"] == (5.0, 4.0, 6.0)
    assert opt.triggered


def _grads(n, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(dim, generator=gen, dtype=torch.float64) for _ in range(n)]


def _epochs(opt, p, grads, values, steps_per_epoch=3):
    """Train epoch by epoch (``steps_per_epoch`` steps, then one validation value each), as
    the trial runner does; return the iterates after every step."""
    iterates = []
    for e, value in enumerate(values):
        for g in grads[e * steps_per_epoch:(e + 1) * steps_per_epoch]:
            p.grad = g.clone()
            opt.step()
            iterates.append(p.detach().clone())
        opt.observe_validation(value)
    return iterates


def test_evaluation_uses_the_weights_then_the_mean_of_the_iterates_since_the_trigger():
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = build("asgd", [p], lr=0.1, momentum=0.0, weight_decay=1e-3, patience=1)
    grads = _grads(15)
    iterates = _epochs(opt, p, grads, [5.0, 4.0])  # 6 steps, no trigger yet
    with evaluation_weights(opt):
        assert torch.equal(p.detach(), iterates[-1])
    iterates += _epochs(opt, p, grads[6:], [6.0])  # fires after step 9
    with evaluation_weights(opt):  # no step since: still the weights themselves
        assert torch.equal(p.detach(), iterates[-1])
    iterates += _epochs(opt, p, grads[9:], [1.0, 1.0])
    with evaluation_weights(opt):
        torch.testing.assert_close(p.detach(), torch.stack(iterates[9:]).mean(0))
    assert torch.equal(p.detach(), iterates[-1])
    # The inner optimizer ran unchanged: the iterates are plain SGD's.
    q = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    sgd = build("sgd", [q], lr=0.1, momentum=0.0, weight_decay=1e-3)
    for g in grads:
        q.grad = g.clone()
        sgd.step()
    assert torch.equal(q.detach(), iterates[-1])


@pytest.mark.parametrize("cut", [1, 3, 4, 5])  # no value, a history, fired, averaging
def test_a_checkpoint_mid_way_continues_identically(cut):
    grads, values = _grads(18), [5.0, 4.0, 4.5, 6.0, 3.0, 2.0]
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    straight = build("asgd", [p], lr=0.1, momentum=0.9, patience=2)
    _epochs(straight, p, grads, values)
    q = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    first = build("asgd", [q], lr=0.1, momentum=0.9, patience=2)
    _epochs(first, q, grads[:3 * cut], values[:cut])
    buffer = io.BytesIO()  # as a trial's checkpoint is written and read
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    r = nn.Parameter(torch.ones(4, dtype=torch.float64))
    resumed = build("asgd", [r], lr=0.1, momentum=0.9, patience=2)
    resumed.load_state_dict(state)
    with torch.no_grad():
        r.copy_(q)
    _epochs(resumed, r, grads[3 * cut:], values[cut:])
    assert torch.equal(p.detach(), r.detach())
    assert straight.param_groups[0]["average_start"] == 12  # fired after epoch 4's 12 steps
    for key in ("average_start", "average_count", "validations"):
        assert resumed.param_groups[0][key] == straight.param_groups[0][key]
    assert torch.equal(straight.state[p]["avg_param"], resumed.state[r]["avg_param"])


def test_deepcopy_keeps_the_trigger_and_patience():
    p = nn.Parameter(torch.zeros(2))
    opt = build("asgd", [p], lr=0.1, patience=3)
    opt.observe_validation(1.0)
    twin = copy.deepcopy(opt)
    assert isinstance(twin, NTAveragedOptimizer) and twin.patience == 3
    assert twin.param_groups[0]["validations"] == (1.0,)


def test_asgd_takes_patience_and_the_inner_optimizers_hyperparameters():
    hp = hyperparameters("asgd", "sgd")
    assert hp["patience"] == 5 and hp["inner"] == "sgd" and "momentum" in hp
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        build("asgd", [nn.Parameter(torch.zeros(2))], patience=-1)
    with pytest.raises(ValueError, match="asgd can wrap"):
        build("asgd", [nn.Parameter(torch.zeros(2))], inner="polyak")


def test_asgd_trains_alone_never_in_a_population():
    from lookbench.execution.population.optim import why_not

    assert "asgd" in why_not("asgd", {"inner": "sgd", "lr": 1.0})
    assert "trains alone" in why_not("asgd", {"inner": "sgd", "lr": 1.0})
