"""Lookahead against the paper's Algorithm 1, written out plainly, not against itself.

The reference loops below follow Algorithm 1 line by line with hand-written inner optimizers
(heavy-ball SGD in PyTorch's convention, and Adam), in float64, and the inner-state policies of
Appendix D.1. lookbench's ``Lookahead`` around ``torch.optim.SGD``/``Adam`` must give the same
trajectory at every step, including mid-cycle.
"""

from __future__ import annotations

import pytest
import torch

from lookbench.optim import Lookahead

DIM = 6


def _problem(seed: int = 1):
    """A fixed, non-linear gradient field: g(x) = A x − b + 0.5 sin(3x)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    a = m @ m.T / DIM + 0.1 * torch.eye(DIM, dtype=torch.float64)
    b = torch.randn(DIM, generator=gen, dtype=torch.float64)
    x0 = torch.randn(DIM, generator=gen, dtype=torch.float64)

    def grad(x: torch.Tensor) -> torch.Tensor:
        return a @ x - b + 0.5 * torch.sin(3 * x)

    return x0, grad


def reference_sgd(x0, grad, steps, lr, mu, k, alpha, policy):
    """Algorithm 1 with heavy-ball SGD (v ← μv + g; θ ← θ − lr·v) as the inner optimizer."""
    phi = x0.clone()
    theta = x0.clone()
    v = torch.zeros_like(x0)
    v_slow = torch.zeros_like(x0)
    trajectory = []
    for t in range(1, steps + 1):
        v = mu * v + grad(theta)
        theta = theta - lr * v
        if t % k == 0:  # outer update after k inner steps, then θ ← φ
            phi = phi + alpha * (theta - phi)
            theta = phi.clone()
            if policy == "reset":
                v = torch.zeros_like(v)
            elif policy == "interpolate":
                v_slow = v_slow + alpha * (v - v_slow)
                v = v_slow.clone()
        trajectory.append((theta.clone(), phi.clone()))
    return trajectory


def reference_adam(x0, grad, steps, lr, k, alpha, policy, b1=0.9, b2=0.999, eps=1e-8):
    """Algorithm 1 with Adam (Kingma & Ba) as the inner optimizer; the step count t never resets."""
    phi = x0.clone()
    theta = x0.clone()
    m = torch.zeros_like(x0)
    m_slow = torch.zeros_like(x0)
    s = torch.zeros_like(x0)
    trajectory = []
    for t in range(1, steps + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        s_hat = s / (1 - b2**t)
        theta = theta - lr * m_hat / (s_hat.sqrt() + eps)
        if t % k == 0:
            phi = phi + alpha * (theta - phi)
            theta = phi.clone()
            if policy == "reset":
                m = torch.zeros_like(m)
            elif policy == "interpolate":
                m_slow = m_slow + alpha * (m - m_slow)
                m = m_slow.clone()
        trajectory.append((theta.clone(), phi.clone()))
    return trajectory


def run_lookbench(x0, grad, steps, make_inner, **la_kwargs):
    p = torch.nn.Parameter(x0.clone())
    opt = Lookahead(make_inner([p]), **la_kwargs)
    trajectory = []
    for _ in range(steps):
        p.grad = grad(p.detach())
        opt.step()
        trajectory.append((p.detach().clone(), opt.state[p]["slow_param"].clone()))
    return trajectory


@pytest.mark.parametrize("policy", ["maintain", "reset", "interpolate"])
@pytest.mark.parametrize(("k", "alpha"), [(5, 0.5), (3, 0.8), (10, 0.2)])
def test_sgd_momentum_matches_algorithm1(policy, k, alpha):
    x0, grad = _problem()
    steps = 4 * k + 3  # ends mid-cycle
    ref = reference_sgd(x0, grad, steps, lr=0.05, mu=0.9, k=k, alpha=alpha, policy=policy)
    ours = run_lookbench(
        x0, grad, steps, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        k=k, alpha=alpha, inner_state=policy,
    )
    for t, ((theta_r, phi_r), (theta, phi)) in enumerate(zip(ref, ours), 1):
        torch.testing.assert_close(theta, theta_r, rtol=1e-12, atol=1e-12, msg=f"θ at step {t}")
        torch.testing.assert_close(phi, phi_r, rtol=1e-12, atol=1e-12, msg=f"φ at step {t}")


@pytest.mark.parametrize("policy", ["maintain", "reset", "interpolate"])
def test_adam_matches_algorithm1(policy):
    x0, grad = _problem(seed=2)
    ref = reference_adam(x0, grad, 27, lr=0.01, k=5, alpha=0.5, policy=policy)
    ours = run_lookbench(
        x0, grad, 27, lambda ps: torch.optim.Adam(ps, lr=0.01), k=5, alpha=0.5,
        inner_state=policy,
    )
    for t, ((theta_r, phi_r), (theta, phi)) in enumerate(zip(ref, ours), 1):
        torch.testing.assert_close(theta, theta_r, rtol=1e-10, atol=1e-12, msg=f"θ at step {t}")
        torch.testing.assert_close(phi, phi_r, rtol=1e-10, atol=1e-12, msg=f"φ at step {t}")


def test_policies_really_differ_for_adam():
    """"reset" and "interpolate" must act on Adam's first moment, not silently do nothing."""
    x0, grad = _problem(seed=2)
    finals = {}
    for policy in ("maintain", "reset", "interpolate"):
        traj = run_lookbench(x0, grad, 12, lambda ps: torch.optim.Adam(ps, lr=0.01), k=5,
                             alpha=0.5, inner_state=policy)
        finals[policy] = traj[-1][0]
    assert not torch.allclose(finals["maintain"], finals["reset"])
    assert not torch.allclose(finals["maintain"], finals["interpolate"])
    assert not torch.allclose(finals["reset"], finals["interpolate"])


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_alpha_one_is_the_inner_optimizer_exactly(k, inner):
    """α = 1 (any k, including k = 1) must reproduce the inner optimizer bit for bit."""
    x0, grad = _problem()
    make = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    }[inner]
    p_ref = torch.nn.Parameter(x0.clone())
    bare = make([p_ref])
    ours = run_lookbench(x0, grad, 17, make, k=k, alpha=1.0)
    for t, (theta, _) in enumerate(ours, 1):
        p_ref.grad = grad(p_ref.detach())
        bare.step()
        assert torch.equal(theta, p_ref.detach()), f"step {t}"


def test_k_one_with_plain_sgd_is_sgd_with_lr_scaled_by_alpha():
    """With k = 1 and no momentum, φ ← φ − α·lr·g: plain SGD with learning rate α·lr."""
    x0, grad = _problem()
    ours = run_lookbench(x0, grad, 20, lambda ps: torch.optim.SGD(ps, lr=0.1), k=1, alpha=0.3)
    x = x0.clone()
    for theta, _ in ours:
        x = x - 0.03 * grad(x)
        torch.testing.assert_close(theta, x, rtol=1e-12, atol=1e-12)


def test_optax_numeric_check():
    """optax's test: θ0 = 3, gradient 2, SGD lr 0.5, k = 3, α = 1/3 gives 1 after 6 steps
    (timm and torch-optimizer give −1)."""
    p = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([p], lr=0.5), k=3, alpha=1 / 3)
    for _ in range(6):
        p.grad = torch.tensor([2.0], dtype=torch.float64)
        opt.step()
    assert p.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [5, 10, 100])
@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_tensorflow_addons_numeric_check(k, alpha):
    """TFA's test: after exactly k Adam(lr=1e-3) steps with a fixed gradient,
    θ = θ0 + α(θk − θ0) to 1e-6."""
    theta0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    g = torch.tensor([0.1, 0.1], dtype=torch.float64)
    bare_p = torch.nn.Parameter(theta0.clone())
    bare = torch.optim.Adam([bare_p], lr=1e-3)
    p = torch.nn.Parameter(theta0.clone())
    opt = Lookahead(torch.optim.Adam([p], lr=1e-3), k=k, alpha=alpha)
    for _ in range(k):
        bare_p.grad = g.clone()
        bare.step()
        p.grad = g.clone()
        opt.step()
    expected = theta0 + alpha * (bare_p.detach() - theta0)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_slow_weights_start_from_the_weights_at_the_first_step():
    """Weights loaded after the optimizer was built (pretrained, .to(dtype)) are φ0, not the
    random init the optimizer saw at construction (paper code PR #8, kozistr#306)."""
    model = torch.nn.Linear(4, 1, bias=False).double()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2, alpha=0.5)
    pretrained = torch.full_like(model.weight, 7.0)
    with torch.no_grad():
        model.weight.copy_(pretrained)
    g = torch.ones_like(pretrained)
    for _ in range(2):
        model.weight.grad = g.clone()
        opt.step()
    # θ2 = 7 − 0.2; φ1 = 7 + 0.5(θ2 − 7) = 6.9
    torch.testing.assert_close(model.weight.detach(), torch.full_like(pretrained, 6.9))


def test_parameters_without_grad_at_the_sync_are_still_synced():
    """A parameter that moved during the cycle but has no .grad at the sync must still be
    interpolated (timm and pytorch_optimizer skip it)."""
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([p], lr=1.0, momentum=0.0), k=4, alpha=0.5)
    for step in range(4):
        p.grad = torch.ones(3, dtype=torch.float64) if step < 2 else None
        opt.step()
    # θ moved to −2 in the first two steps and stayed; φ = 0 + 0.5(−2 − 0) = −1.
    torch.testing.assert_close(p.detach(), torch.full((3,), -1.0, dtype=torch.float64))


def test_groups_with_their_own_k_and_alpha():
    x0, grad = _problem()
    a = torch.nn.Parameter(x0.clone())
    b = torch.nn.Parameter(x0.clone())
    inner = torch.optim.SGD(
        [{"params": [a]}, {"params": [b], "lookahead_k": 3, "lookahead_alpha": 0.8}],
        lr=0.05, momentum=0.9,
    )
    opt = Lookahead(inner, k=5, alpha=0.5)
    ref_a = reference_sgd(x0, grad, 13, 0.05, 0.9, 5, 0.5, "maintain")
    ref_b = reference_sgd(x0, grad, 13, 0.05, 0.9, 3, 0.8, "maintain")
    for t in range(13):
        a.grad = grad(a.detach())
        b.grad = grad(b.detach())
        opt.step()
        torch.testing.assert_close(a.detach(), ref_a[t][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.detach(), ref_b[t][0], rtol=1e-12, atol=1e-12)


def test_foreach_and_loop_paths_agree():
    x0, grad = _problem()
    runs = []
    for foreach in (True, False):
        runs.append(run_lookbench(
            x0, grad, 23, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), k=5,
            alpha=0.5, inner_state="interpolate", foreach=foreach,
        ))
    for (t1, p1), (t2, p2) in zip(*runs):
        torch.testing.assert_close(t1, t2, rtol=1e-14, atol=0)
        torch.testing.assert_close(p1, p2, rtol=1e-14, atol=0)


def test_sync_now_does_the_outer_update_and_restarts_the_cycle():
    x0, grad = _problem()
    p = torch.nn.Parameter(x0.clone())
    opt = Lookahead(torch.optim.SGD([p], lr=0.05), k=5, alpha=0.5)
    for _ in range(3):
        p.grad = grad(p.detach())
        opt.step()
    theta3 = p.detach().clone()
    opt.sync()
    expected = x0 + 0.5 * (theta3 - x0)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
    assert opt.param_groups[0]["lookahead_step"] == 0
    assert torch.equal(opt.state[p]["slow_param"], p.detach())


def test_cache_sized_chunking_of_large_tensors_is_exact():
    """Tensors larger than a CPU chunk are synced through flat views; the result must be the
    formula's, for contiguous and channels-last tensors alike, and equal to the plain loop's."""
    gen = torch.Generator().manual_seed(5)
    shapes = [(700_001,), (3,), (64, 64, 3, 3), (300_000,)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    init[2] = init[2].contiguous(memory_format=torch.channels_last)
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
             for _ in range(4)]
    results = []
    for foreach in (True, False):
        ps = [torch.nn.Parameter(t.clone(memory_format=torch.preserve_format)) for t in init]
        opt = Lookahead(torch.optim.SGD(ps, lr=0.1), k=4, alpha=0.3, foreach=foreach)
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = g
            opt.step()
        results.append([p.detach().clone() for p in ps])
    for i, t in enumerate(init):
        theta_k = t - 0.1 * sum(step[i] for step in grads)
        expected = t + 0.3 * (theta_k - t)
        torch.testing.assert_close(results[0][i], expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(results[0][i], results[1][i])
