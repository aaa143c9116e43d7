"""The noisy quadratic model of the paper's section 3.1 and Appendix A, analytic and empirical.

L̂(x) = ½ (x − c)ᵀA(x − c) with c ~ N(0, Σ), A = diag(a) and Σ = diag(sigma2). The expected loss
(Eq. 5) is L = ½ Σ_i a_i (E[x_i]² + V[x_i] + sigma2_i), and the dimensions evolve independently.

The analytic side gives Proposition 2's variance fixed points (Eqs. 6–7) and the expected loss
after a number of steps from a deterministic start, by unrolling Eqs. 8–9 (SGD) or Lemma 1's
Eqs. 10–11 (Lookahead(SGD)): the numbers behind the paper's Figures 3 and 11. The empirical side,
:class:`NoisyQuadratic`, runs many independent replicas side by side as the rows of one
parameter, so that any optimizer lookbench builds can be measured on the same model and compared
with the analysis.

A note on the paper's text: Eq. 6 and the first line of Prop. 2's proof print γ²A²Σ² and γA²Σ;
Eq. 9 (and the algebra) give γ²A²Σ with Σ the noise *covariance*, which is what is used here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookbench._lazy import lazy
from lookbench.tasks.base import Task, TaskSize, Workload
from lookbench.theory import (  # noqa: F401 (re-exported)
    ArrayLike,
    NqmOptions,
    _check_lr,
    _check_stable_lr,
    _geometric_sum,
    _lookahead_args,
    _loss,
    _spectrum,
    default_spectrum,
    expected_loss,
    expected_loss_curve,
    steady_state_loss,
    steady_state_variance,
)

# Adam's step is about lr per coordinate whatever the gradient's scale; SGD's must keep
# lr·max(a) < 2 (Proposition 2), and max(a) = 1 in the default spectrum.
_LRS: dict[str, list[float]] = {
    "sgd": [0.03, 0.1, 0.3, 1.0, 1.5],
    "adam": [1e-3, 3e-3, 1e-2, 3e-2, 0.1],
    "adamw": [1e-3, 3e-3, 1e-2, 3e-2, 0.1],
}
_MOMENTUM: dict[str, list[float]] = {"sgd": [0.0], "adam": [0.9], "adamw": [0.9]}


# The analysis (Eq. 5, Proposition 2, Lemma 1) and the options live in lookbench.theory, which
# imports no torch (the report uses them); they are this module's too.

# -- the task ---------------------------------------------------------------------------------


if TYPE_CHECKING:
    from torch import nn

torch = lazy("torch")  # (the class is read, to check a study, before torch is imported)


class NoisyQuadratic(Task):
    """The paper's noisy quadratic model (section 3.1), many replicas at once.

    Each step draws one noise sample c per replica, so the batch size is not used. The weights
    are float64: the tests compare them with the analysis to a few standard errors, and at this
    size the cost is nil.
    """

    name = "nqm"
    summary = "noisy quadratic model (paper §3.1), Monte Carlo over replicas"
    data = "none"
    metric = "test_loss"
    higher_is_better = False
    default_epochs = 10
    default_batch_size = 1  # unused: one noise sample per replica per step
    default_schedule = "constant"
    Options = NqmOptions

    def size(self) -> TaskSize:
        opts: NqmOptions = self.options  # type: ignore[assignment]
        return TaskSize(None, None, opts.replicas * opts.dim)

    def loss_floor(self) -> float:
        """½ Σ a_i σ²_i: Eq. 5 with the mean and the variance of x at 0. The noise term is
        there whatever x is (the optimum of each sample L̂ is a random c), so no optimizer goes
        below it; a constant-lr one stays above it by its steady-state variance (Prop. 2)."""
        opts: NqmOptions = self.options  # type: ignore[assignment]
        a, sigma2 = default_spectrum(opts.dim)
        return float(_loss(a, sigma2, np.zeros_like(a), np.zeros_like(a)))

    def initial_loss(self) -> float:
        """½ Σ a_i (x0² + σ²_i): Eq. 5 at the fixed start point (every coordinate x0,
        variance 0), the loss every trial starts from."""
        opts: NqmOptions = self.options  # type: ignore[assignment]
        a, sigma2 = default_spectrum(opts.dim)
        return float(_loss(a, sigma2, np.full_like(a, opts.x0), np.zeros_like(a)))

    def deterministic(self) -> bool:
        """With ``analytic=True`` the loss is Eq. 5's expectation: no seed changes it."""
        return bool(self.options.analytic)  # type: ignore[attr-defined]

    def default_grid(self, inner: str) -> dict[str, dict[str, list[Any]]]:
        if inner not in _LRS:
            return super().default_grid(inner)
        lrs, momentum = _LRS[inner], _MOMENTUM[inner]
        return {
            "lookahead": {"lr": lrs, "momentum": momentum, "k": [5, 10], "alpha": [0.2, 0.5, 0.8]},
            inner: {"lr": lrs, "momentum": momentum},
        }

    def check_config(self, config: Any) -> None:
        """The analytic mode knows the expected dynamics of SGD and Lookahead(SGD) only (Eqs.
        8–9, Lemma 1), with whole Lookahead cycles per epoch; trained mode runs anything."""
        opts: NqmOptions = self.options  # type: ignore[assignment]
        if not opts.analytic:
            return
        lookahead = config.optimizer == "lookahead"
        inner = config.inner if lookahead else config.optimizer
        if inner != "sgd":
            raise ValueError(f"the analytic NQM covers SGD and Lookahead(SGD), not {inner}")
        if (config.momentum or 0.0) != 0.0:
            raise ValueError(f"the analytic NQM covers SGD without momentum, not momentum "
                             f"{config.momentum:g}")
        if lookahead and config.alpha == "adaptive":
            raise ValueError("the analytic NQM covers a fixed alpha, not adaptive")
        if lookahead and opts.steps_per_epoch % config.k:
            raise ValueError(f"the analytic NQM needs steps_per_epoch "
                             f"({opts.steps_per_epoch}) to be a multiple of k ({config.k})")

    def analytic_curve(self, config: Any) -> list[dict[str, float]] | None:
        """With ``analytic=True``: Eq. 5's expected loss at the start and after each epoch,
        from the config's lr (and k, alpha for Lookahead), by unrolling the expected dynamics."""
        opts: NqmOptions = self.options  # type: ignore[assignment]
        if not opts.analytic:
            return None
        self.check_config(config)
        lookahead = config.optimizer == "lookahead"
        a, sigma2 = default_spectrum(opts.dim)
        with np.errstate(over="ignore", invalid="ignore"):
            curve = expected_loss_curve(
                a, sigma2, config.lr, opts.steps_per_epoch * config.epochs, opts.x0,
                config.k if lookahead else None, config.alpha if lookahead else None,
                every=opts.steps_per_epoch,
            )
        return [{"test_loss": float(v)} for v in curve]

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        """The start point is fixed (x0), so ``seed`` is unused; the noise comes from the
        generator the trial runner passes to ``train_batches``."""
        opts: NqmOptions = self.options  # type: ignore[assignment]
        dtype = torch.float64
        a_np, s_np = default_spectrum(opts.dim)
        a = torch.tensor(a_np, dtype=dtype, device=device)
        sigma2 = torch.tensor(s_np, dtype=dtype, device=device)
        noise_sd = sigma2.sqrt()
        shape = (opts.replicas, opts.dim)
        from lookbench.tasks.point import Point

        model = Point(torch.full(shape, opts.x0, dtype=dtype, device=device))

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
            for _ in range(opts.steps_per_epoch):
                yield torch.randn(shape, generator=generator, device=device, dtype=dtype) * noise_sd

        def loss(model: nn.Module, c: torch.Tensor) -> torch.Tensor:
            # A sum over replicas, so each replica's gradient is exactly its own a ⊙ (x − c).
            return 0.5 * (a * (model() - c) ** 2).sum()

        def evaluate(model: nn.Module) -> dict[str, float]:
            x = model().detach()
            per_replica = 0.5 * (a * (x**2 + sigma2)).sum(dim=1)  # Eq. 5 given x
            return {"test_loss": float(per_replica.mean())}

        return Workload(
            model=model,
            steps_per_epoch=opts.steps_per_epoch,
            train_batches=train_batches,
            loss=loss,
            evaluate=evaluate,
        )
