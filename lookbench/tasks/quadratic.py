"""The deterministic quadratic of the paper's section 3.2 and Appendix B.1, analytic and empirical.

f(x) = ½ xᵀAx (optimum 0) minimised by classical momentum (CM, heavy ball) and by Lookahead
around it. The analysis uses PyTorch's form of momentum, so it describes exactly what
``torch.optim.SGD(momentum=β)`` (and ``lookbench.optim.Lookahead`` around it) does: per
eigen-direction a of A,

    v_{t+1} = β v_t + a θ_t,   θ_{t+1} = θ_t − η v_{t+1},

i.e. the 2×2 step M = [[1 − ηa, −ηβ], [a, β]] on (θ, v). It is the heavy ball
θ_{t+1} = θ_t − ηaθ_t + β(θ_t − θ_{t−1}) with the same characteristic polynomial
λ² − (1 + β − ηa)λ + β, hence the same rates. A Lookahead cycle maps the state at a sync to the
state at the next one; how the momentum crosses the sync is the inner-state policy (Appendix
D.1), as ``lookbench.optim.Lookahead`` implements it:

* ``"maintain"``: (φ, v) ↦ ((1 − α)φ + α θ_k, v_k) with (θ_k, v_k) = M^k (φ, v);
* ``"reset"``: v is zeroed at each sync, so the cycle is the scalar (1 − α) + α (M^k)₀₀;
* ``"interpolate"``: v has a slow copy interpolated like φ, (φ, v) ↦ (1 − α)(φ, v) + α M^k (φ, v).

As Appendix B.1 says, the cycle is k updates, so the rate per inner step is the k-th root of the
cycle map's spectral radius; over A it is the worst eigen-direction's. (B.1 writes the system
on stacked iterates; its matrices are only partly printed, so this module does not claim to
reproduce them entry by entry — the three policies above are what the optimizer really does.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lookbench._lazy import lazy
from lookbench.choices import INNER_STATE_POLICIES
from lookbench.tasks.base import Task, TaskSize, Workload
from lookbench.theory import lookahead_args

if TYPE_CHECKING:
    from torch import nn

torch = lazy("torch")  # (the class is read, to check a study, before torch is imported)

GRID_POINTS_PER_DECADE = 40
GRID_DECADES = 6
GOLDEN_ITERATIONS = 80
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0

_LRS = [0.01, 0.03, 0.1, 0.3, 1.0, 2.0]  # ηa < 2(1 + β) keeps CM stable for every β here
_MOMENTA = [0.5, 0.9, 0.99]


# -- the analysis -------------------------------------------------------------------------------


def spectrum(dim: int, condition_number: float) -> np.ndarray:
    """``dim`` eigenvalues spread geometrically over [1/κ, 1], both ends included ([1] if dim=1)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    kappa = _check_condition_number(condition_number)
    if dim == 1:
        return np.ones(1)
    return np.geomspace(1.0 / kappa, 1.0, int(dim))


def _check_condition_number(kappa: float) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not (
        math.isfinite(kappa) and kappa >= 1
    ):
        raise ValueError(f"condition_number must be a finite number >= 1, got {kappa!r}")
    return float(kappa)


def _check_momentum(momentum: float) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
        0 <= momentum < 1
    ):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return float(momentum)


def _check_eigenvalues(eigenvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    eig = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if eig.size == 0 or not (np.all(np.isfinite(eig)) and np.all(eig > 0)):
        raise ValueError("eigenvalues must be a non-empty list of finite numbers > 0")
    return eig


def _check_lookahead(k: int | None, alpha: float | None,
                     inner_state: str) -> tuple[int, float] | None:
    """``None`` for CM, else validated (k, alpha); only one of k and alpha is an error."""
    if inner_state not in INNER_STATE_POLICIES:
        raise ValueError(
            f"inner_state must be one of {', '.join(INNER_STATE_POLICIES)}; got {inner_state!r}"
        )
    return lookahead_args(k, alpha, "classical momentum")


def momentum_matrix(lr: np.ndarray | float, momentum: float, eigenvalues: np.ndarray) -> np.ndarray:
    """M = [[1 − ηa, −ηβ], [a, β]] on (θ, v), shape lr.shape + (len(eigenvalues), 2, 2)."""
    lr_ = np.asarray(lr, dtype=np.float64)[..., None]
    a = np.broadcast_to(eigenvalues, lr_.shape[:-1] + eigenvalues.shape)
    m = np.empty(a.shape + (2, 2))
    m[..., 0, 0] = 1.0 - lr_ * a
    m[..., 0, 1] = -lr_ * momentum
    m[..., 1, 0] = a
    m[..., 1, 1] = momentum
    return m


def cycle_matrix(lr: np.ndarray | float, momentum: float, eigenvalues: np.ndarray, k: int,
                 alpha: float, inner_state: str = "maintain") -> np.ndarray:
    """One Lookahead cycle (k inner CM steps and the sync) as a 2×2 map on (φ, v) per direction.

    For "reset" the v row is zero (v is 0 at every sync), leaving the scalar (1 − α) + α(M^k)₀₀
    as the only non-zero eigenvalue.
    """
    mk = np.linalg.matrix_power(momentum_matrix(lr, momentum, eigenvalues), k)
    eye = np.eye(2)
    if inner_state == "interpolate":
        return (1.0 - alpha) * eye + alpha * mk
    if inner_state == "maintain":
        out = mk.copy()
        out[..., 0, :] = (1.0 - alpha) * eye[0] + alpha * mk[..., 0, :]
        return out
    if inner_state == "reset":
        out = np.zeros_like(mk)
        out[..., 0, :] = (1.0 - alpha) * eye[0] + alpha * mk[..., 0, :]
        return out
    raise ValueError(f"inner_state must be one of {', '.join(INNER_STATE_POLICIES)}; got {inner_state!r}")


def _spectral_radius(m: np.ndarray) -> np.ndarray:
    """Largest |eigenvalue| of each 2×2 matrix; ∞ where the entries overflowed."""
    finite = np.all(np.isfinite(m), axis=(-2, -1))
    out = np.full(m.shape[:-2], np.inf)
    if finite.any():
        out[finite] = np.abs(np.linalg.eigvals(m[finite])).max(axis=-1)
    return out


def _rates(lrs: np.ndarray, momentum: float, eigenvalues: np.ndarray,
           la: tuple[int, float] | None, inner_state: str) -> np.ndarray:
    """The per-inner-step rate for each learning rate in ``lrs`` (worst eigen-direction)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if la is None:
            return _spectral_radius(momentum_matrix(lrs, momentum, eigenvalues)).max(axis=-1)
        k, alpha = la
        radius = _spectral_radius(cycle_matrix(lrs, momentum, eigenvalues, k, alpha, inner_state))
        return radius.max(axis=-1) ** (1.0 / k)


def convergence_rate(lr: float, momentum: float, eigenvalues: Sequence[float] | np.ndarray,
                     k: int | None = None, alpha: float | None = None,
                     inner_state: str = "maintain") -> float:
    """ρ per inner step of CM (k, alpha None) or Lookahead(CM): ‖θ_t‖ ≤ C ρ^t (section 3.2).

    The spectral radius of the one-step (CM) or one-cycle (Lookahead, k-th root taken) map,
    maximised over the eigenvalues of A. ρ ≥ 1 means no convergence.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
        math.isfinite(lr) and lr > 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    beta = _check_momentum(momentum)
    eig = _check_eigenvalues(eigenvalues)
    la = _check_lookahead(k, alpha, inner_state)
    return float(_rates(np.asarray([float(lr)]), beta, eig, la, inner_state)[0])


def _golden_section(f: Callable[[float], float], lo: float, hi: float,
                    iterations: int = GOLDEN_ITERATIONS) -> tuple[float, float]:
    """(x, f(x)) at a local minimum of f on [lo, hi].

    Written here rather than taken from scipy: scipy arrives only as a dependency of
    scikit-learn, not of lookbench, and twenty lines do not justify a new direct dependency.
    """
    x1, x2 = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iterations):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - _INV_PHI * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + _INV_PHI * (hi - lo)
            f2 = f(x2)
    return (x1, f1) if f1 <= f2 else (x2, f2)


def optimal_rate(momentum: float, condition_number: float, k: int | None = None,
                 alpha: float | None = None, inner_state: str = "maintain",
                 n_eigen: int = 64) -> tuple[float, float]:
    """(lr*, ρ*): the learning rate minimising ρ at fixed momentum, as in Figure 4.

    A's eigenvalues are ``n_eigen`` points spread geometrically over [1/κ, 1]. Lookahead's ρ(lr)
    need not be unimodal (the phase of M^k turns with lr), so a log grid over six decades below
    an upper end finds the best basin first and golden-section search refines it. The upper end
    is 2(1 + β)/α: CM is stable only for ηa < 2(1 + β) (Jury's test on its characteristic
    polynomial), and the slow-weight interpolation can tolerate an inner step up to about 1/α
    times larger (exactly so for k = 1, β = 0).
    """
    beta = _check_momentum(momentum)
    kappa = _check_condition_number(condition_number)
    la = _check_lookahead(k, alpha, inner_state)
    if isinstance(n_eigen, bool) or not isinstance(n_eigen, (int, np.integer)) or n_eigen < 2:
        raise ValueError(f"n_eigen must be an integer >= 2, got {n_eigen!r}")
    eig = np.geomspace(1.0 / kappa, 1.0, int(n_eigen))
    hi = 2.0 * (1.0 + beta) / (1.0 if la is None else la[1]) / float(eig.max())
    log_grid = np.linspace(math.log(hi) - GRID_DECADES * math.log(10.0), math.log(hi),
                           GRID_DECADES * GRID_POINTS_PER_DECADE + 1)
    rates = _rates(np.exp(log_grid), beta, eig, la, inner_state)
    best = int(np.argmin(rates))
    lo_i, hi_i = max(best - 1, 0), min(best + 1, len(log_grid) - 1)

    def rate_at(log_lr: float) -> float:
        return float(_rates(np.asarray([math.exp(log_lr)]), beta, eig, la, inner_state)[0])

    log_lr, rate = _golden_section(rate_at, float(log_grid[lo_i]), float(log_grid[hi_i]))
    if rate > rates[best]:  # never worse than the grid
        log_lr, rate = float(log_grid[best]), float(rates[best])
    return math.exp(log_lr), rate


def rate_curve(condition_numbers: Sequence[float] | np.ndarray, momentum: float, k: int = 20,
               alpha: float = 0.5, inner_state: str = "maintain") -> dict[str, np.ndarray]:
    """Figure 4: 1 − ρ* of CM and of Lookahead(CM) at the optimal lr, per condition number."""
    kappas = np.asarray(condition_numbers, dtype=np.float64).reshape(-1)
    cm = [1.0 - optimal_rate(momentum, float(c))[1] for c in kappas]
    la = [1.0 - optimal_rate(momentum, float(c), k, alpha, inner_state)[1] for c in kappas]
    return {"condition_number": kappas, "cm": np.asarray(cm), "lookahead": np.asarray(la)}


# -- the task ---------------------------------------------------------------------------------


class QuadraticOptions(BaseModel):
    """Options of the deterministic quadratic task."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(50, ge=1, description="dimensions")
    condition_number: float = Field(
        1000.0, ge=1, description="κ: eigenvalues of A spread geometrically over [1/κ, 1]"
    )
    steps_per_epoch: int = Field(100, ge=1, description="optimizer steps per epoch")
    x0: float = Field(1.0, description="every coordinate of the start point")


class DeterministicQuadratic(Task):
    """f(x) = ½ xᵀAx by full-batch steps (section 3.2), to compare with :func:`convergence_rate`.

    Float64 weights: the loss falls by many orders of magnitude, and the comparison with the
    analysed rates must not stall at float32's resolution.
    """

    name = "quadratic"
    summary = "ill-conditioned quadratic (paper §3.2), full batch"
    data = "none"
    metric = "test_loss"
    higher_is_better = False
    default_epochs = 10
    default_batch_size = 1  # full-batch: unused
    default_schedule = "constant"
    Options = QuadraticOptions

    def size(self) -> TaskSize:
        return TaskSize(None, None, self.options.dim)  # type: ignore[attr-defined]

    def loss_floor(self) -> float:
        """0: f(x) = ½ xᵀAx with A positive definite is 0 at its optimum x = 0 and nowhere
        lower; without noise a converging optimizer gets there (at its rate ρ)."""
        return 0.0

    def initial_loss(self) -> float:
        """f(x0) = ½ x0² Σ a_i: the fixed start point (every coordinate x0) every trial
        starts from."""
        opts: QuadraticOptions = self.options  # type: ignore[assignment]
        a = spectrum(opts.dim, opts.condition_number)
        return float(0.5 * np.sum(a * opts.x0**2))

    def deterministic(self) -> bool:
        """Full-batch steps from a fixed start: every seed computes the same run."""
        return True

    def default_grid(self, inner: str) -> dict[str, dict[str, list[Any]]]:
        if inner != "sgd":
            raise ValueError(
                f"quadratic has a grid for inner sgd (classical momentum) only; got {inner!r}"
            )
        return {
            "lookahead": {"lr": _LRS, "momentum": _MOMENTA, "k": [5, 20], "alpha": [0.5, 0.8]},
            "sgd": {"lr": _LRS, "momentum": _MOMENTA},
        }

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        """Nothing is random here: ``seed`` and the generator are unused."""
        opts: QuadraticOptions = self.options  # type: ignore[assignment]
        dtype = torch.float64
        a = torch.tensor(spectrum(opts.dim, opts.condition_number), dtype=dtype, device=device)
        from lookbench.tasks.point import Point

        model = Point(torch.full((opts.dim,), opts.x0, dtype=dtype, device=device))

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[None]:
            for _ in range(opts.steps_per_epoch):
                yield None

        def f(model: nn.Module, batch: None = None) -> torch.Tensor:
            return 0.5 * (a * model() ** 2).sum()

        def evaluate(model: nn.Module) -> dict[str, float]:
            return {"test_loss": float(f(model).detach())}

        return Workload(
            model=model,
            steps_per_epoch=opts.steps_per_epoch,
            train_batches=train_batches,
            loss=f,
            evaluate=evaluate,
        )
