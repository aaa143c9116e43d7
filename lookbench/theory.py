"""The paper's noisy quadratic analysis (section 3.1, Appendix A), without torch.

Proposition 2's variance fixed points (Eqs. 6–7) and the expected loss (Eq. 5) after a number of
steps from a deterministic start, by unrolling Eqs. 8–9 (SGD) or Lemma 1's Eqs. 10–11
(Lookahead(SGD)), and the noisy quadratic task's options. The task
(``lookbench.tasks.nqm``) computes its analytic results with these; the report draws them
beside the measured ones, and lives here apart so that reading a study imports no torch
(seconds of a report's start-up). See ``lookbench.tasks.nqm`` for the model and a note on the
paper's text.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ArrayLike = np.ndarray | float


def check_k(k: object) -> int:
    """``k`` as an int if it is an integer >= 1, else a ``ValueError`` saying so."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (inner steps per sync), got {k!r}")
    return int(k)


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """``alpha`` as a float if it is a number in (0, 1], else a ``ValueError`` saying so."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {alpha!r}")
    return float(alpha)


def lookahead_args(k: object, alpha: object, plain: str) -> tuple[int, float] | None:
    """For the analyses: ``None`` when neither k nor alpha is given (the ``plain`` inner
    optimizer), else the validated pair; giving only one of them is an error."""
    if k is None and alpha is None:
        return None
    if k is None or alpha is None:
        raise ValueError(f"give both k and alpha (Lookahead) or neither ({plain})")
    return check_k(k), check_alpha(alpha)


def default_spectrum(dim: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Curvatures a_i = 1/i (i = 1..dim) and noise variances sigma2 = 1/a (Σ = A⁻¹).

    The paper (Appendix A.1) takes "the worst-case model from Li (also used by Wu et al.)" for
    A and sets Σ = A⁻¹. Our reading of that reference is the power-law spectrum a_i = 1/i of
    the noisy quadratics in Wu et al. (2018) and Zhang et al. (2019); the exact eigenvalues
    behind Figure 3 are not printed.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    a = 1.0 / np.arange(1, dim + 1, dtype=np.float64)
    return a, 1.0 / a


def _spectrum(a: ArrayLike, sigma2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``sigma2`` as float64 arrays of one shape; curvatures > 0, variances >= 0."""
    a_arr = np.asarray(a, dtype=np.float64)
    s_arr = np.asarray(sigma2, dtype=np.float64)
    try:
        a_arr, s_arr = np.broadcast_arrays(a_arr, s_arr)
    except ValueError:
        raise ValueError(f"a {a_arr.shape} and sigma2 {s_arr.shape} do not broadcast") from None
    if a_arr.size == 0:
        raise ValueError("a must hold at least one curvature")
    if not (np.all(np.isfinite(a_arr)) and np.all(a_arr > 0)):
        raise ValueError("every curvature a_i must be finite and > 0")
    if not (np.all(np.isfinite(s_arr)) and np.all(s_arr >= 0)):
        raise ValueError("every noise variance sigma2_i must be finite and >= 0")
    return a_arr, s_arr


def _lookahead_args(k: int | None, alpha: float | None) -> tuple[int, float] | None:
    """``None`` for plain SGD, else validated (k, alpha); giving only one of them is an error."""
    return lookahead_args(k, alpha, "SGD")


def _check_lr(lr: float) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
        math.isfinite(lr) and lr > 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


def _check_stable_lr(lr: float, a: np.ndarray) -> float:
    """Proposition 2 needs 0 < γ < 2/L (L = max a): outside it there is no fixed point."""
    lr = _check_lr(lr)
    limit = 2.0 / float(a.max())
    if lr >= limit:
        raise ValueError(
            f"lr={lr} has no variance fixed point: Proposition 2 needs "
            f"0 < lr < 2/max(a) = {limit:g}"
        )
    return lr


def steady_state_variance(a: ArrayLike, sigma2: ArrayLike, lr: float, k: int | None = None,
                          alpha: float | None = None) -> np.ndarray:
    """Proposition 2's per-dimension variance fixed point: Eq. 6 (SGD) or Eq. 7 (Lookahead).

    Eq. 6 is written as γaσ²/(2 − γa), which equals γ²a²σ²/(1 − (1 − γa)²) without the
    cancellation in the denominator at small γa.
    """
    a_arr, s_arr = _spectrum(a, sigma2)
    lr = _check_stable_lr(lr, a_arr)
    la = _lookahead_args(k, alpha)
    v_sgd = lr * a_arr * s_arr / (2.0 - lr * a_arr)  # Eq. 6
    if la is None:
        return v_sgd
    k_, alpha_ = la
    q = 1.0 - lr * a_arr
    num = alpha_**2 * (1.0 - q ** (2 * k_))
    return num / (num + 2.0 * alpha_ * (1.0 - alpha_) * (1.0 - q**k_)) * v_sgd  # Eq. 7


def _loss(a: np.ndarray, sigma2: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Eq. 5, summed over the last axis: ½ Σ a (E[x]² + V[x] + σ²)."""
    return 0.5 * np.sum(a * (mean**2 + var + sigma2), axis=-1)


def steady_state_loss(a: ArrayLike, sigma2: ArrayLike, lr: float, k: int | None = None,
                      alpha: float | None = None) -> float:
    """Eq. 5 at Proposition 2's fixed point, where the mean is 0: ½ Σ a (V* + σ²)."""
    a_arr, s_arr = _spectrum(a, sigma2)
    v = steady_state_variance(a_arr, s_arr, lr, k, alpha)
    return float(_loss(a_arr, s_arr, np.zeros_like(a_arr), v))


def _geometric_sum(r: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Σ_{i<n} r^i element-wise for r >= 0, accurate also for r close to 1 (and exact at r = 1)."""
    r, n = np.broadcast_arrays(np.asarray(r, dtype=np.float64), np.asarray(n, dtype=np.float64))
    out = n.copy()  # the r = 1 case
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_r = np.log(r)
        ratio = np.expm1(n * log_r) / np.expm1(log_r)  # (r^n − 1)/(r − 1)
    general = (r != 1.0) & (n > 0)
    out[general] = ratio[general]
    out[n == 0] = 0.0
    return out


def expected_loss_curve(a: ArrayLike, sigma2: ArrayLike, lr: float, steps: int, x0: ArrayLike,
                        k: int | None = None, alpha: float | None = None,
                        every: int = 1) -> np.ndarray:
    """Eq. 5's expected loss after 0, every, 2·every, …, steps inner steps from x0 (variance 0).

    Element j is the loss after j·every steps (so the curve has steps/every + 1 points and starts
    at x0). SGD follows Eqs. 8–9, E[x_t] = q^t x0 and V[x_t] = γ²a²σ² Σ_{i<t} q^{2i} with
    q = 1 − γa; Lookahead(SGD) is observed at its slow weights after each cycle of k steps and
    follows Lemma 1: E[φ_n] = c^n x0 and V[φ_n] = α² γ²a²σ² Σ_{i<k} q^{2i} Σ_{j<n} c^{2j} with
    c = 1 − α + α q^k (Eqs. 10–11). The recursions are linear with constant coefficients, so
    unrolling them n times gives these geometric sums exactly. A finite horizon needs no fixed
    point, so any lr > 0 is accepted (the loss grows when lr ≥ 2/max(a)).
    """
    a_arr, s_arr = _spectrum(a, sigma2)
    lr = _check_lr(lr)
    la = _lookahead_args(k, alpha)
    for name, value in (("steps", steps), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if steps < 0 or every < 1:
        raise ValueError(f"need steps >= 0 and every >= 1, got steps={steps}, every={every}")
    if steps % every:
        raise ValueError(f"steps={steps} must be a multiple of every={every}")
    period = 1 if la is None else la[0]
    if every % period:
        raise ValueError(
            f"Lookahead's loss is defined at its slow weights, after whole cycles: "
            f"every={every} (and so steps) must be a multiple of k={period}"
        )
    x0_arr = np.broadcast_to(np.asarray(x0, dtype=np.float64), a_arr.shape)
    q = 1.0 - lr * a_arr
    noise = lr**2 * a_arr**2 * s_arr  # γ²a²σ², the variance one SGD step adds (Eq. 9)
    n = (np.arange(0, steps + 1, every) // period)[:, None]  # steps or cycles done, per point
    if la is None:
        factor, per_period = q, noise
    else:
        k_, alpha_ = la
        factor = 1.0 - alpha_ + alpha_ * q**k_
        per_period = alpha_**2 * noise * _geometric_sum(q**2, np.asarray(k_))
    with np.errstate(over="ignore", invalid="ignore"):
        mean = factor**n * x0_arr
        var = per_period * _geometric_sum(factor**2, n)
        return _loss(a_arr, s_arr, mean, var)


def expected_loss(a: ArrayLike, sigma2: ArrayLike, lr: float, steps: int, x0: ArrayLike,
                  k: int | None = None, alpha: float | None = None) -> float:
    """Eq. 5's expected loss after ``steps`` inner steps from x0 (:func:`expected_loss_curve`)."""
    la = _lookahead_args(k, alpha)
    period = 1 if la is None else la[0]
    if isinstance(steps, (int, np.integer)) and steps > 0 and steps % period:
        raise ValueError(f"steps={steps} must be a multiple of k={period} (whole Lookahead cycles)")
    every = steps if isinstance(steps, (int, np.integer)) and steps > 0 else period
    return float(expected_loss_curve(a, sigma2, lr, steps, x0, k, alpha, every=every)[-1])


class NqmOptions(BaseModel):
    """Options of the noisy quadratic task."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(100, ge=1, description="dimensions; curvatures a_i = 1/i, Σ = A⁻¹")
    replicas: int = Field(
        256, ge=1, description="independent copies run side by side as rows of one parameter, "
        "so test_loss is a Monte-Carlo mean over them",
    )
    steps_per_epoch: int = Field(100, ge=1, description="optimizer steps per epoch")
    x0: float = Field(1.0, description="every coordinate of the start point")
    analytic: bool = Field(
        False, description="compute each epoch's expected loss from the paper's dynamics "
        "(Eqs. 8-9, Lemma 1) instead of training: SGD and Lookahead(SGD), no momentum",
    )
