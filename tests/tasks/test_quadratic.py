"""The deterministic quadratic (paper, section 3.2 and Appendix B.1) against known results.

References: Polyak's optimal heavy-ball parameters and rate, gradient descent's (κ−1)/(κ+1),
the decay measured on the real ``Lookahead(SGD(momentum=β))`` driving the task's workload, and
Figure 4's qualitative claims.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lookbench import tasks
from lookbench.optim import INNER_STATE_POLICIES, build
from lookbench.tasks.quadratic import (
    DeterministicQuadratic,
    convergence_rate,
    optimal_rate,
    rate_curve,
    spectrum,
)

# -- classical results ------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_polyak_optimal_heavy_ball_rate(kappa):
    """η = 4/(√L + √μ)², β = ((√κ − 1)/(√κ + 1))² give ρ = (√κ − 1)/(√κ + 1) (Polyak, 1964)."""
    mu, big_l = 1.0 / kappa, 1.0
    eta = 4.0 / (math.sqrt(big_l) + math.sqrt(mu)) ** 2
    root = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    eig = spectrum(64, kappa)
    # The end points are double (defective) roots, whose computed |λ| is off by ~√eps.
    assert convergence_rate(eta, root**2, eig) == pytest.approx(root, abs=1e-6)
    # and no learning rate does better at that momentum
    assert optimal_rate(root**2, kappa)[1] == pytest.approx(root, abs=1e-6)


@pytest.mark.parametrize("kappa", [1.0, 10.0, 1000.0])
def test_gradient_descent_optimal_rate(kappa):
    """Without momentum the best step is 2/(L + μ) with rate (κ − 1)/(κ + 1)."""
    lr, rate = optimal_rate(0.0, kappa)
    assert rate == pytest.approx((kappa - 1) / (kappa + 1), abs=1e-9)
    assert lr == pytest.approx(2.0 / (1.0 + 1.0 / kappa), rel=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("lr", [0.1, 1.0, 2.5])
@pytest.mark.parametrize("inner_state", ["maintain", "interpolate"])
def test_alpha_one_is_classical_momentum(momentum, lr, inner_state):
    # α = 1 makes φ ← θ_k; "maintain" and "interpolate" then carry v_k over unchanged.
    eig = spectrum(16, 50.0)
    cm = convergence_rate(lr, momentum, eig)
    for k in (1, 5, 20):
        la = convergence_rate(lr, momentum, eig, k=k, alpha=1.0, inner_state=inner_state)
        assert la == pytest.approx(cm, rel=1e-9)


def test_alpha_one_with_reset_is_not_cm_unless_there_is_no_momentum():
    eig = spectrum(16, 50.0)
    assert convergence_rate(1.0, 0.0, eig, k=5, alpha=1.0, inner_state="reset") == pytest.approx(
        convergence_rate(1.0, 0.0, eig), rel=1e-12
    )
    assert convergence_rate(0.5, 0.9, eig, k=5, alpha=1.0, inner_state="reset") != pytest.approx(
        convergence_rate(0.5, 0.9, eig), rel=1e-3
    )


@pytest.mark.parametrize("inner_state", INNER_STATE_POLICIES)
def test_k_one_without_momentum_is_gradient_descent_at_alpha_lr(inner_state):
    eig = spectrum(16, 50.0)
    expected = np.abs(1 - 0.3 * 1.5 * eig).max()
    rate = convergence_rate(1.5, 0.0, eig, k=1, alpha=0.3, inner_state=inner_state)
    assert rate == pytest.approx(expected, rel=1e-12)


# -- the analysis against the real optimizer ------------------------------------------------


def measured_rate(task, optimizer, hparams, period, decay_to=1e-40, max_steps=4000):
    """Per-step decay of ‖x_t‖ of the real optimizer on the workload, sampled every ``period``
    steps (at Lookahead's syncs): the slope of log max‖x‖ over windows of 10 samples, fitted
    over the second half of the run. The window max follows the envelope of an oscillating
    decay; the second half lets sub-dominant modes die out."""
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    opt = build(optimizer, wl.model.parameters(), **hparams)
    norms = [float(wl.model.x.detach().norm())]
    gen = torch.Generator()
    steps = 0
    while norms[-1] > decay_to * norms[0] and steps < max_steps:
        for batch in wl.train_batches(0, gen):
            opt.zero_grad(set_to_none=True)
            wl.loss(wl.model, batch).backward()
            opt.step()
            steps += 1
            if steps % period == 0:
                norms.append(float(wl.model.x.detach().norm()))
    log_norms = np.log(norms)
    window = 10
    maxima = np.array([log_norms[i : i + window].max()
                       for i in range(0, len(log_norms) - window + 1, window)])
    t = np.arange(len(maxima)) * window * period
    half = len(maxima) // 2
    return math.exp(np.polyfit(t[half:], maxima[half:], 1)[0])


SETTINGS = [
    # (momentum, lr): κ = 10 on 8 directions; the four predictions differ by ≥ 3% of 1 − ρ.
    (0.99, 0.5),
    (0.9, 1.0),
]


@pytest.mark.parametrize("momentum,lr", SETTINGS)
def test_predicted_rates_match_the_real_optimizers(momentum, lr):
    """Tolerance: 1% of −log ρ. In these settings the estimator's own error (sub-dominant
    modes, window phase) measured below 0.2%; the predictions for CM and the three policies are
    at least 2.7% apart, so a wrong cycle map would fail."""
    task = DeterministicQuadratic.with_options(dim=8, condition_number=10.0, steps_per_epoch=100)
    eig = spectrum(8, 10.0)
    k, alpha = 5, 0.5
    cases = {"cm": (convergence_rate(lr, momentum, eig), "sgd", {}, 1)}
    for state in INNER_STATE_POLICIES:
        predicted = convergence_rate(lr, momentum, eig, k=k, alpha=alpha, inner_state=state)
        cases[state] = (predicted, "lookahead", {"k": k, "alpha": alpha, "inner_state": state}, k)
    preds = sorted(math.log(c[0]) for c in cases.values())
    assert all(abs(b / a - 1) > 0.02 for a, b in zip(preds, preds[1:]))
    for name, (predicted, optimizer, extra, period) in cases.items():
        rate = measured_rate(task, optimizer, {"lr": lr, "momentum": momentum, **extra}, period)
        assert math.log(rate) == pytest.approx(math.log(predicted), rel=0.01), (
            name, rate, predicted
        )


# -- Figure 4 -------------------------------------------------------------------------------


def test_figure4_lookahead_helps_when_momentum_is_too_high():
    """β = 0.99 is strongly under-damped for small κ (CM oscillates at ρ = √β): Lookahead(k =
    20, α = 0.5) converges faster there, by more than 2× in 1 − ρ at κ ≤ 10."""
    curve = rate_curve([3.0, 10.0, 30.0, 100.0], 0.99, k=20, alpha=0.5)
    np.testing.assert_allclose(curve["cm"], 1 - math.sqrt(0.99), rtol=1e-6)
    assert np.all(curve["lookahead"] > curve["cm"])
    assert np.all(curve["lookahead"][:2] > 2 * curve["cm"][:2])


def test_figure4_lookahead_is_slightly_worse_when_over_damped():
    """β = 0.5 at κ ≥ 1000 (over-damped: CM creeps monotonically along 1/κ). There Lookahead
    is slower, but not by much: in the slowest direction a cycle contracts by
    1 − α + α(1 − ε)^k ≈ 1 − αkε, so 1 − ρ shrinks by about the factor α."""
    curve = rate_curve([1e3, 1e4, 1e5], 0.5, k=20, alpha=0.5)
    assert np.all(curve["lookahead"] <= curve["cm"])
    assert np.all(curve["lookahead"] >= 0.4 * curve["cm"])


def test_optimal_rate_finds_the_best_learning_rate_on_a_fine_grid():
    """Lookahead's ρ(lr) is not unimodal; the search must still find the global best."""
    kappa, momentum, k, alpha = 30.0, 0.99, 20, 0.5
    eig = np.geomspace(1 / kappa, 1, 64)
    lr_star, rate_star = optimal_rate(momentum, kappa, k=k, alpha=alpha)
    assert convergence_rate(lr_star, momentum, eig, k=k, alpha=alpha) == pytest.approx(rate_star)
    grid = np.geomspace(1e-3, 8.0, 3000)
    brute = min(convergence_rate(float(lr), momentum, eig, k=k, alpha=alpha) for lr in grid)
    assert rate_star <= brute + 1e-9


def test_rate_curve_layout():
    curve = rate_curve([10.0, 100.0], 0.9)
    assert set(curve) == {"condition_number", "cm", "lookahead"}
    assert all(v.shape == (2,) for v in curve.values())
    np.testing.assert_array_equal(curve["condition_number"], [10.0, 100.0])


# -- argument errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"eigenvalues": []}, "eigenvalues"),
        ({"eigenvalues": [1.0, -0.5]}, "eigenvalues"),
        ({"k": 5}, "both k and alpha"),
        ({"alpha": 0.5}, "both k and alpha"),
        ({"k": 0, "alpha": 0.5}, "k must"),
        ({"k": 5, "alpha": 0.0}, "alpha"),
        ({"k": 5, "alpha": 1.2}, "alpha"),
        ({"k": 5, "alpha": 0.5, "inner_state": "keep"}, "inner_state"),
    ],
)
def test_convergence_rate_rejects_bad_arguments(kwargs, match):
    args = {"lr": 0.5, "momentum": 0.9, "eigenvalues": [0.1, 1.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        convergence_rate(**args)


def test_optimal_rate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="condition_number"):
        optimal_rate(0.9, 0.5)
    with pytest.raises(ValueError, match="n_eigen"):
        optimal_rate(0.9, 10.0, n_eigen=1)
    with pytest.raises(ValueError, match="momentum"):
        optimal_rate(1.0, 10.0)


def test_divergent_settings_have_rate_above_one():
    eig = spectrum(8, 10.0)
    assert convergence_rate(2.1, 0.0, eig) > 1  # ηL > 2(1 + β)
    assert convergence_rate(3.9, 0.9, eig) > 1
    assert convergence_rate(3.7, 0.9, eig) < 1
    assert convergence_rate(400.0, 0.9, eig, k=200, alpha=0.5) == math.inf  # overflow is ∞


# -- the task -------------------------------------------------------------------------------


def test_spectrum_spans_the_condition_number():
    eig = spectrum(5, 1000.0)
    np.testing.assert_allclose(eig, [1e-3, 10 ** -2.25, 10 ** -1.5, 10 ** -0.75, 1.0])
    np.testing.assert_array_equal(spectrum(1, 1000.0), [1.0])
    with pytest.raises(ValueError):
        spectrum(4, 0.5)


def test_workload_loss_gradient_and_evaluate():
    task = DeterministicQuadratic.with_options(
        dim=6, condition_number=100.0, steps_per_epoch=3, x0=2.0
    )
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    (x,) = list(wl.model.parameters())
    assert x.shape == (6,) and x.dtype == torch.float64 and torch.all(x == 2.0)
    batches = list(wl.train_batches(0, torch.Generator()))
    assert batches == [None, None, None] and wl.steps_per_epoch == 3
    a = spectrum(6, 100.0)
    expected = 0.5 * np.sum(a * 4.0)
    assert wl.evaluate(wl.model)["test_loss"] == pytest.approx(expected, rel=1e-14)
    loss = wl.loss(wl.model, None)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-14)
    loss.backward()
    torch.testing.assert_close(x.grad, torch.from_numpy(a) * 2.0, rtol=1e-14, atol=0)
    assert task.size().parameters == 6


def test_task_metadata_options_and_grid():
    assert tasks.task_class("quadratic") is DeterministicQuadratic
    task = tasks.get("quadratic")
    assert (task.metric, task.higher_is_better, task.default_batch_size) == ("test_loss", False, 1)
    assert task.options.dim == 50 and task.options.condition_number == 1000.0
    for bad in ({"dim": 0}, {"condition_number": 0.5}, {"steps_per_epoch": 0}, {"noise": 1}):
        with pytest.raises(ValidationError):
            tasks.get("quadratic", **bad)
    grid = task.default_grid("sgd")
    assert set(grid) == {"lookahead", "sgd"}
    assert grid["lookahead"]["lr"] == grid["sgd"]["lr"]
    assert grid["sgd"]["momentum"] == [0.5, 0.9, 0.99]
    assert grid["lookahead"]["k"] == [5, 20] and grid["lookahead"]["alpha"] == [0.5, 0.8]
    eig = spectrum(task.options.dim, task.options.condition_number)
    for beta in grid["sgd"]["momentum"]:  # every CM configuration of the grid converges
        assert convergence_rate(max(grid["sgd"]["lr"]), beta, eig) < 1
    with pytest.raises(ValueError, match="adam"):
        task.default_grid("adam")


@pytest.mark.parametrize(("dim", "kappa", "x0"),
                         [(50, 1000.0, 1.0), (6, 100.0, 2.0), (1, 10.0, 3.0)])
def test_loss_floor_is_zero_and_initial_loss_is_f_at_x0(dim, kappa, x0):
    task = DeterministicQuadratic.with_options(dim=dim, condition_number=kappa, x0=x0)
    assert task.loss_floor() == 0.0
    # Eigenvalues κ^(-1 + j/(dim-1)), j = 0..dim-1 (just 1 for one dimension).
    a = [kappa ** (-1 + j / (dim - 1)) for j in range(dim)] if dim > 1 else [1.0]
    assert task.initial_loss() == pytest.approx(0.5 * x0**2 * math.fsum(a), rel=1e-12)
    wl = task.workload(batch_size=1, device=torch.device("cpu"), seed=0)
    assert wl.evaluate(wl.model)["test_loss"] == pytest.approx(task.initial_loss(), rel=1e-14)
