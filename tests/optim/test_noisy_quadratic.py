"""Lookahead on the paper's noisy quadratic model (section 3.1, Appendix A), by Monte Carlo.

L̂(x) = ½ (x − c)ᵀA(x − c) with c ~ N(0, Σ), A and Σ diagonal. Many independent replicas run
side by side as the rows of one parameter tensor (every update is element-wise), driven by the
real ``Lookahead(torch.optim.SGD)``. Their sample mean and variance must follow Lemma 1's
trajectory and settle at Proposition 2's fixed point, within sampling error, and below SGD's.
The formulas are typed in here from the paper, independently of lookbench's code.
"""

from __future__ import annotations

import torch

from lookbench.optim import Lookahead

A = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
SIGMA2 = 1.0 / A  # the paper's setup, Σ = A⁻¹
LR = 0.3  # γ < 2 / max(a)
K, ALPHA = 5, 0.4
REPLICAS = 40_000


def v_sgd(a, s2, lr):
    """Eq. (6): V*_SGD = γ²A²Σ / (I − (I − γA)²)."""
    return lr**2 * a**2 * s2 / (1 - (1 - lr * a) ** 2)


def v_lookahead(a, s2, lr, k, alpha):
    """Eq. (7): V*_LA = α²(I − (I−γA)^2k) / (α²(I − (I−γA)^2k) + 2α(1−α)(I − (I−γA)^k)) V*_SGD."""
    q = 1 - lr * a
    num = alpha**2 * (1 - q ** (2 * k))
    return num / (num + 2 * alpha * (1 - alpha) * (1 - q**k)) * v_sgd(a, s2, lr)


def lemma1(a, s2, lr, k, alpha, x0, cycles):
    """Eqs. (10)-(11): mean and variance of φ_t for t = 1..cycles, from φ0 = x0 (variance 0)."""
    q = 1 - lr * a
    contraction = 1 - alpha + alpha * q**k
    noise = alpha**2 * sum(q ** (2 * i) for i in range(k)) * lr**2 * a**2 * s2
    mean, var, out = x0.clone(), torch.zeros_like(x0), []
    for _ in range(cycles):
        mean = contraction * mean
        var = contraction**2 * var + noise
        out.append((mean.clone(), var.clone()))
    return out


def _simulate(opt_factory, steps, x0, record_every):
    """Run REPLICAS copies for ``steps`` steps; return (mean, var) after every ``record_every``."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.nn.Parameter(x0.expand(REPLICAS, -1).clone())
    opt = opt_factory([x])
    sd = SIGMA2.sqrt()
    records = []
    for t in range(1, steps + 1):
        c = torch.randn(x.shape, generator=gen, dtype=torch.float64) * sd
        x.grad = A * (x.detach() - c)
        opt.step()
        if t % record_every == 0:
            records.append((x.detach().mean(0), x.detach().var(0)))
    return records


def test_slow_weights_follow_lemma1_from_the_start():
    x0 = torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=torch.float64)
    cycles = 12
    measured = _simulate(
        lambda ps: Lookahead(torch.optim.SGD(ps, lr=LR), k=K, alpha=ALPHA), K * cycles, x0, K
    )
    expected = lemma1(A, SIGMA2, LR, K, ALPHA, x0, cycles)
    for t, ((m, v), (m_exp, v_exp)) in enumerate(zip(measured, expected), 1):
        se_mean = (v_exp / REPLICAS).sqrt()
        assert ((m - m_exp).abs() <= 5 * se_mean + 1e-12).all(), f"mean after cycle {t}"
        se_var = v_exp * (2 / (REPLICAS - 1)) ** 0.5
        assert ((v - v_exp).abs() <= 5 * se_var).all(), f"variance after cycle {t}"


def test_steady_state_variance_is_proposition2_and_below_sgd():
    x0 = torch.zeros(4, dtype=torch.float64)
    burn_in, window = 60, 40  # cycles
    la = _simulate(
        lambda ps: Lookahead(torch.optim.SGD(ps, lr=LR), k=K, alpha=ALPHA),
        K * (burn_in + window), x0, K,
    )[burn_in:]
    sgd = _simulate(lambda ps: torch.optim.SGD(ps, lr=LR), K * (burn_in + window), x0, K)[burn_in:]
    v_la = torch.stack([v for _, v in la]).mean(0)
    v_sg = torch.stack([v for _, v in sgd]).mean(0)
    v_la_star = v_lookahead(A, SIGMA2, LR, K, ALPHA)
    v_sg_star = v_sgd(A, SIGMA2, LR)
    # Each snapshot's variance has relative s.e. sqrt(2/R) ≈ 0.7%; 3% is > 4 s.e.
    torch.testing.assert_close(v_la, v_la_star, rtol=0.03, atol=0)
    torch.testing.assert_close(v_sg, v_sg_star, rtol=0.03, atol=0)
    assert (v_la_star < v_sg_star).all()  # the paper's remark on Eq. (7)
    assert (v_la < v_sg * 0.97).all()  # and measured so, beyond sampling error
    for m, _ in la:
        assert ((m.abs()) <= 5 * (v_la_star / REPLICAS).sqrt()).all()  # E[φ] → 0
