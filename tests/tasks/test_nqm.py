"""The noisy quadratic model (paper, section 3.1 and Appendix A) against the paper.

The reference values are computed here from the paper's recursions (Eq. 9 and Lemma 1's
Eq. 11), iterated step by step, and from Monte-Carlo runs of the real ``Lookahead`` and SGD on
the task's workload; not from ``lookbench.tasks.nqm``'s own closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lookbench import tasks
from lookbench.optim import Lookahead, evaluation_weights
from lookbench.tasks.nqm import (
    NoisyQuadratic,
    default_spectrum,
    expected_loss,
    expected_loss_curve,
    steady_state_loss,
    steady_state_variance,
)

A_SMALL = np.array([0.05, 0.2, 0.5, 1.0, 1.8])
S_SMALL = 1.0 / A_SMALL  # the paper's Σ = A⁻¹


# -- the paper's recursions, iterated --------------------------------------------------------


def sgd_step_moments(a, s2, lr, mean, var):
    """Eqs. 8–9: one SGD step of the mean and the variance."""
    q = 1 - lr * a
    return q * mean, q**2 * var + lr**2 * a**2 * s2


def lookahead_cycle_moments(a, s2, lr, k, alpha, mean, var):
    """Lemma 1, Eqs. 10–11: one cycle of the slow weights' mean and variance (sum written out)."""
    q = 1 - lr * a
    contraction = 1 - alpha + alpha * q**k
    noise = alpha**2 * sum(q ** (2 * i) for i in range(k)) * lr**2 * a**2 * s2
    return contraction * mean, contraction**2 * var + noise


def iterate_to_fixed_point(step, var, max_iter=1_000_000):
    for _ in range(max_iter):
        new = step(var)
        if np.allclose(new, var, rtol=1e-14, atol=0):
            return new
        var = new
    raise AssertionError("the recursion did not converge")


def eq5(a, s2, mean, var):
    return 0.5 * np.sum(a * (mean**2 + var + s2))


# -- the spectrum ---------------------------------------------------------------------------


def test_default_spectrum_is_power_law_with_inverse_noise():
    a, s2 = default_spectrum(4)
    np.testing.assert_allclose(a, [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(s2, [1, 2, 3, 4])
    assert default_spectrum()[0].shape == (100,)
    with pytest.raises(ValueError, match="dim"):
        default_spectrum(0)


# -- Proposition 2 ------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.1, 0.5, 1.0])
def test_sgd_variance_is_the_fixed_point_of_eq9(lr):
    fixed = iterate_to_fixed_point(
        lambda v: sgd_step_moments(A_SMALL, S_SMALL, lr, 0.0, v)[1], np.zeros_like(A_SMALL)
    )
    np.testing.assert_allclose(steady_state_variance(A_SMALL, S_SMALL, lr), fixed, rtol=1e-10)
    # and Eq. 6 as printed (with Σ the covariance): γ²A²Σ / (I − (I − γA)²)
    eq6 = lr**2 * A_SMALL**2 * S_SMALL / (1 - (1 - lr * A_SMALL) ** 2)
    np.testing.assert_allclose(steady_state_variance(A_SMALL, S_SMALL, lr), eq6, rtol=1e-12)


@pytest.mark.parametrize(
    "lr,k,alpha", [(0.1, 5, 0.5), (0.5, 5, 0.2), (1.0, 10, 0.8), (0.7, 3, 1.0)]
)
def test_lookahead_variance_is_the_fixed_point_of_lemma1(lr, k, alpha):
    fixed = iterate_to_fixed_point(
        lambda v: lookahead_cycle_moments(A_SMALL, S_SMALL, lr, k, alpha, 0.0, v)[1],
        np.zeros_like(A_SMALL),
    )
    np.testing.assert_allclose(
        steady_state_variance(A_SMALL, S_SMALL, lr, k=k, alpha=alpha), fixed, rtol=1e-10
    )


@pytest.mark.parametrize("lr", [0.05, 0.5, 1.05])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_alpha_one_is_sgd(lr, k):
    np.testing.assert_allclose(
        steady_state_variance(A_SMALL, S_SMALL, lr, k=k, alpha=1.0),
        steady_state_variance(A_SMALL, S_SMALL, lr),
        rtol=1e-12,
    )


@pytest.mark.parametrize("lr,alpha", [(0.3, 0.5), (1.0, 0.2), (1.05, 0.9)])
def test_k_one_is_sgd_at_alpha_times_lr(lr, alpha):
    # φ ← φ + α(φ − γ∇ − φ) is an SGD step of size αγ.
    np.testing.assert_allclose(
        steady_state_variance(A_SMALL, S_SMALL, lr, k=1, alpha=alpha),
        steady_state_variance(A_SMALL, S_SMALL, alpha * lr),
        rtol=1e-12,
    )


def test_lookahead_variance_is_below_sgd_for_alpha_below_one():
    """The paper's remark after Proposition 2, over a grid of every hyperparameter."""
    a, s2 = default_spectrum(50)
    for lr in [0.01, 0.3, 1.0, 1.9]:
        v_sgd = steady_state_variance(a, s2, lr)
        for k in [2, 5, 10, 50]:
            for alpha in [0.01, 0.2, 0.5, 0.8, 0.99]:
                v_la = steady_state_variance(a, s2, lr, k=k, alpha=alpha)
                assert np.all(v_la < v_sgd), (lr, k, alpha)
                assert steady_state_loss(a, s2, lr, k=k, alpha=alpha) < steady_state_loss(a, s2, lr)


def test_steady_state_loss_is_eq5_at_zero_mean():
    v = steady_state_variance(A_SMALL, S_SMALL, 0.4, k=5, alpha=0.5)
    assert steady_state_loss(A_SMALL, S_SMALL, 0.4, k=5, alpha=0.5) == pytest.approx(
        eq5(A_SMALL, S_SMALL, 0.0, v), rel=1e-14
    )


# -- the expected loss over time --------------------------------------------------------------


@pytest.mark.parametrize("x0", [1.0, np.array([3.0, -2.0, 1.0, 0.5, 0.0])])
def test_expected_loss_at_step_zero_is_the_start(x0):
    start = 0.5 * np.sum(A_SMALL * (np.asarray(x0) ** 2 + S_SMALL))
    assert expected_loss(A_SMALL, S_SMALL, 0.3, 0, x0) == pytest.approx(start, rel=1e-14)
    la = expected_loss(A_SMALL, S_SMALL, 0.3, 0, x0, k=5, alpha=0.5)
    assert la == pytest.approx(start, rel=1e-14)


def test_sgd_curve_unrolls_eqs_8_and_9():
    x0 = np.array([3.0, -2.0, 1.0, 0.5, 0.0])
    lr, steps, every = 0.6, 60, 3
    mean, var, expected = x0.copy(), np.zeros_like(x0), []
    for t in range(steps + 1):
        if t % every == 0:
            expected.append(eq5(A_SMALL, S_SMALL, mean, var))
        mean, var = sgd_step_moments(A_SMALL, S_SMALL, lr, mean, var)
    curve = expected_loss_curve(A_SMALL, S_SMALL, lr, steps, x0, every=every)
    np.testing.assert_allclose(curve, expected, rtol=1e-12)
    assert expected_loss(A_SMALL, S_SMALL, lr, steps, x0) == pytest.approx(expected[-1], rel=1e-12)


@pytest.mark.parametrize("lr,k,alpha", [(0.6, 5, 0.5), (1.0, 4, 0.2), (0.1, 10, 1.0)])
def test_lookahead_curve_unrolls_lemma1(lr, k, alpha):
    x0 = np.array([3.0, -2.0, 1.0, 0.5, 0.0])
    cycles, cycles_per_point = 24, 2
    mean, var, expected = x0.copy(), np.zeros_like(x0), []
    for n in range(cycles + 1):
        if n % cycles_per_point == 0:
            expected.append(eq5(A_SMALL, S_SMALL, mean, var))
        mean, var = lookahead_cycle_moments(A_SMALL, S_SMALL, lr, k, alpha, mean, var)
    curve = expected_loss_curve(
        A_SMALL, S_SMALL, lr, cycles * k, x0, k=k, alpha=alpha, every=cycles_per_point * k
    )
    np.testing.assert_allclose(curve, expected, rtol=1e-12)


def test_unstable_learning_rate_grows_over_a_finite_horizon():
    # No fixed point, but the unrolled dynamics still hold: the variance of a = 1.8 blows up.
    curve = expected_loss_curve(A_SMALL, S_SMALL, 1.5, 40, 1.0, every=10)
    assert np.all(np.diff(curve) > 0)


@pytest.mark.parametrize("la", [{}, {"k": 5, "alpha": 0.5}, {"k": 10, "alpha": 0.2}])
def test_expected_loss_converges_to_the_steady_state(la):
    a, s2 = default_spectrum(100)
    lr = 0.5
    target = steady_state_loss(a, s2, lr, **la)
    far = expected_loss(a, s2, lr, 200_000, 2.0, **la)
    assert far == pytest.approx(target, rel=1e-12)
    near = expected_loss(a, s2, lr, 100, 2.0, **la)
    assert abs(near - target) > 1e-3  # and it is not there from the start


def test_lookahead_reaches_a_lower_loss_at_equal_learning_rate():
    a, s2 = default_spectrum(100)
    la = expected_loss(a, s2, 1.0, 5000, 1.0, k=5, alpha=0.5)
    assert la < expected_loss(a, s2, 1.0, 5000, 1.0)


# -- argument errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": 2 / 1.8}, "2/max"),
        ({"lr": 1.5}, "2/max"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": 0.3, "k": 5}, "both k and alpha"),
        ({"lr": 0.3, "alpha": 0.5}, "both k and alpha"),
        ({"lr": 0.3, "k": 0, "alpha": 0.5}, "k must"),
        ({"lr": 0.3, "k": 2.5, "alpha": 0.5}, "k must"),
        ({"lr": 0.3, "k": 5, "alpha": 0.0}, "alpha"),
        ({"lr": 0.3, "k": 5, "alpha": 1.5}, "alpha"),
    ],
)
def test_steady_state_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        steady_state_variance(A_SMALL, S_SMALL, **kwargs)
    with pytest.raises(ValueError, match=match):
        steady_state_loss(A_SMALL, S_SMALL, **kwargs)


def test_spectrum_is_validated():
    with pytest.raises(ValueError, match="curvature"):
        steady_state_variance(np.array([1.0, 0.0]), np.ones(2), 0.1)
    with pytest.raises(ValueError, match="noise"):
        steady_state_variance(np.ones(2), np.array([1.0, -1.0]), 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        steady_state_variance(np.ones(2), np.ones(3), 0.1)


def test_expected_loss_rejects_partial_cycles_and_bad_steps():
    with pytest.raises(ValueError, match="multiple of k"):
        expected_loss(A_SMALL, S_SMALL, 0.3, 12, 1.0, k=5, alpha=0.5)
    with pytest.raises(ValueError, match="multiple of k"):
        expected_loss_curve(A_SMALL, S_SMALL, 0.3, 20, 1.0, k=5, alpha=0.5, every=2)
    with pytest.raises(ValueError, match="multiple of every"):
        expected_loss_curve(A_SMALL, S_SMALL, 0.3, 10, 1.0, every=3)
    with pytest.raises(ValueError, match="steps"):
        expected_loss(A_SMALL, S_SMALL, 0.3, -1, 1.0)
    with pytest.raises(ValueError, match="both k and alpha"):
        expected_loss(A_SMALL, S_SMALL, 0.3, 10, 1.0, k=5)
    with pytest.raises(ValueError, match="lr"):
        expected_loss(A_SMALL, S_SMALL, 0.0, 10, 1.0)


# -- the task, and the analysis against the real optimizers ---------------------------------


def run_workload(task, make_opt, epochs, seed=0):
    """Drive the workload as the trial runner does: one generator per epoch, evaluate on the
    evaluation weights. Returns (per-replica Eq. 5 losses, evaluate's value)."""
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=seed)
    opt = make_opt(wl.model.parameters())
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(1000 * seed + epoch)
        for c in wl.train_batches(epoch, gen):
            opt.zero_grad(set_to_none=True)
            wl.loss(wl.model, c).backward()
            opt.step()
    a, s2 = (torch.from_numpy(v) for v in default_spectrum(task.options.dim))
    with torch.no_grad(), evaluation_weights(opt):
        x = wl.model.x.detach()
        per_replica = 0.5 * (a * (x**2 + s2)).sum(dim=1)
        metric = wl.evaluate(wl.model)["test_loss"]
    return per_replica.numpy(), metric


def test_monte_carlo_of_the_real_optimizers_matches_the_expected_loss():
    """Lookahead(SGD) and SGD on 8,192 float64 replicas of a 20-dimensional model (small, to
    stay quick), after 6 cycles of k = 5 steps from x0 = 3, where the mean still matters."""
    lr, k, alpha, x0, epochs, steps, dim = 0.5, 5, 0.5, 3.0, 3, 10, 20
    task = tasks.get("nqm", dim=dim, replicas=8192, steps_per_epoch=steps, x0=x0)
    a, s2 = default_spectrum(dim)
    runs = {
        "lookahead": (
            lambda ps: Lookahead(torch.optim.SGD(ps, lr=lr), k=k, alpha=alpha),
            expected_loss(a, s2, lr, epochs * steps, x0, k=k, alpha=alpha),
        ),
        "sgd": (
            lambda ps: torch.optim.SGD(ps, lr=lr),
            expected_loss(a, s2, lr, epochs * steps, x0),
        ),
    }
    for name, (make_opt, predicted) in runs.items():
        losses, metric = run_workload(task, make_opt, epochs)
        se = losses.std(ddof=1) / math.sqrt(len(losses))
        assert metric == pytest.approx(losses.mean(), rel=1e-12)
        assert abs(losses.mean() - predicted) < 5 * se, (name, losses.mean(), predicted, se)
        # The check can tell the two apart: their predictions differ by far more than that.
        other = runs["sgd" if name == "lookahead" else "lookahead"][1]
        assert abs(other - predicted) > 20 * se


def test_workload_shapes_and_noise():
    task = NoisyQuadratic.with_options(dim=7, replicas=5, steps_per_epoch=4, x0=2.0)
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    (x,) = list(wl.model.parameters())
    assert x.shape == (5, 7) and x.dtype == torch.float64
    assert torch.all(x == 2.0)
    assert wl.steps_per_epoch == 4
    batches = list(wl.train_batches(0, torch.Generator().manual_seed(3)))
    assert len(batches) == 4 and all(c.shape == (5, 7) for c in batches)
    again = list(wl.train_batches(0, torch.Generator().manual_seed(3)))
    other = list(wl.train_batches(0, torch.Generator().manual_seed(4)))
    assert all(torch.equal(b, c) for b, c in zip(batches, again))
    assert not torch.equal(batches[0], other[0])
    assert task.size().parameters == 35 and task.size().train_examples is None


def test_noise_has_covariance_sigma():
    task = NoisyQuadratic.with_options(dim=4, replicas=20_000, steps_per_epoch=1)
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    (c,) = list(wl.train_batches(0, torch.Generator().manual_seed(0)))
    _, s2 = default_spectrum(4)
    # Relative standard error of a sample variance is sqrt(2/(n−1)) ≈ 1%; allow 5 of them.
    np.testing.assert_allclose(c.var(dim=0).numpy(), s2, rtol=0.05)
    assert torch.all(c.mean(dim=0).abs() < 5 * torch.from_numpy(s2).sqrt() / math.sqrt(20_000))


def test_each_replica_gets_its_own_gradient():
    task = NoisyQuadratic.with_options(dim=6, replicas=3)
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    with torch.no_grad():
        wl.model.x.copy_(torch.randn(3, 6, dtype=torch.float64))
    c = torch.randn(3, 6, dtype=torch.float64)
    wl.loss(wl.model, c).backward()
    a = torch.from_numpy(default_spectrum(6)[0])
    torch.testing.assert_close(wl.model.x.grad, a * (wl.model.x.detach() - c), rtol=1e-14, atol=0)


def test_evaluate_at_the_start_is_eq5_with_zero_variance():
    task = NoisyQuadratic.with_options(dim=10, replicas=4, x0=1.5)
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    a, s2 = default_spectrum(10)
    value = wl.evaluate(wl.model)["test_loss"]
    assert value == pytest.approx(0.5 * np.sum(a * (1.5**2 + s2)), rel=1e-14)
    assert value == pytest.approx(expected_loss(a, s2, 0.1, 0, 1.5), rel=1e-14)


def test_task_metadata_options_and_grids():
    assert tasks.task_class("nqm") is NoisyQuadratic
    task = tasks.get("nqm")
    assert (task.metric, task.higher_is_better, task.default_batch_size) == ("test_loss", False, 1)
    assert task.options.dim == 100 and task.options.replicas == 256
    for bad in ({"dim": 0}, {"replicas": 0}, {"steps_per_epoch": 0}, {"batch": 3}):
        with pytest.raises(ValidationError):
            tasks.get("nqm", **bad)
    grid = task.default_grid("sgd")
    assert set(grid) == {"lookahead", "sgd"}
    assert grid["lookahead"]["lr"] == grid["sgd"]["lr"]
    assert grid["lookahead"]["k"] == [5, 10] and grid["lookahead"]["alpha"] == [0.2, 0.5, 0.8]
    a, _ = default_spectrum(task.options.dim)
    assert max(grid["sgd"]["lr"]) < 2 / a.max()  # every SGD learning rate has a fixed point
    for inner in ("adam", "adamw"):
        g = task.default_grid(inner)
        assert set(g) == {"lookahead", inner} and g[inner]["momentum"] == [0.9]
    # No paper grid for RMSprop: the section 5.5 design around its default learning rate.
    assert task.default_grid("rmsprop") == {
        "lookahead": {"lr": [0.001, 0.003, 0.01, 0.03, 0.1], "momentum": [0.0], "k": [5],
                      "alpha": [0.5]},
        "rmsprop": {"lr": [0.001, 0.003, 0.01, 0.03, 0.1], "momentum": [0.0]}}


@pytest.mark.parametrize(("dim", "x0"), [(100, 1.0), (10, 1.5), (1, -3.0)])
def test_loss_floor_and_initial_loss_follow_from_the_options(dim, x0):
    task = NoisyQuadratic.with_options(dim=dim, x0=x0, replicas=2)
    # a_i = 1/i and σ²_i = i, so each a_i σ²_i is 1 and Σ a_i = H_dim, the harmonic number.
    harmonic = sum(1.0 / i for i in range(1, dim + 1))
    assert task.loss_floor() == pytest.approx(dim / 2, rel=1e-14)
    assert task.initial_loss() == pytest.approx(0.5 * (x0**2 * harmonic + dim), rel=1e-14)
    # The floor is where a constant learning rate's steady state tends as the rate goes to 0
    # (Proposition 2), and every rate stays above it.
    a, s2 = default_spectrum(dim)
    assert steady_state_loss(a, s2, 1e-9) == pytest.approx(task.loss_floor(), rel=1e-8)
    assert all(steady_state_loss(a, s2, lr) > task.loss_floor() for lr in (1e-3, 0.1, 1.0))
    # The initial loss is what a trial's first evaluation sees.
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    assert wl.evaluate(wl.model)["test_loss"] == pytest.approx(task.initial_loss(), rel=1e-14)


def test_tasks_without_a_known_floor_say_so():
    digits = tasks.get("digits")
    assert digits.loss_floor() is None and digits.initial_loss() is None
