"""Every optimizer lookbench compares, built by name from a flat dict of hyperparameters.

A trial's configuration is data (a row of the trials table, an Optuna trial's params), so the
optimizer must be buildable from ``(name, **hparams)``: ``build("lookahead", model.parameters(),
inner="sgd", lr=0.1, momentum=0.9, k=5, alpha=0.5)``. The layout follows timm's optimizer
factory: one small builder function per name in a registry, whose keyword arguments *are* the
accepted hyperparameters and their defaults, so ``hyperparameters(name)`` and the error for an
unknown name are derived from the code rather than kept in a second list.

Naming across families is uniform so one sweep axis means one thing: ``momentum`` is SGD's
heavy-ball coefficient and Adam's β1.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from lookbench.optim.averaging import AveragedOptimizer
from lookbench.optim.lookahead import Lookahead

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
Builder = Callable[..., Optimizer]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: its builder and a one-line description."""

    name: str
    summary: str
    builder: Builder
    wraps: bool  # takes ``inner=`` plus the inner optimizer's hyperparameters


_REGISTRY: dict[str, OptimizerEntry] = {}
PLAIN = ("sgd", "adam", "adamw")  # optimizers that wrap nothing


def _register(name: str, summary: str) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        wraps = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _signature(builder))
        _REGISTRY[name] = OptimizerEntry(name, summary, builder, wraps)
        return builder

    return decorate


def _signature(builder: Builder) -> list[inspect.Parameter]:
    return list(inspect.signature(builder).parameters.values())[1:]  # drop ``params``


def _check(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
           high_open: bool = True) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (ok_low and ok_high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


def _check_common(lr: float, momentum: float, weight_decay: float) -> None:
    _check("lr", lr, 0.0, float("inf"), low_open=True)
    _check("momentum", momentum, 0.0, 1.0)
    _check("weight_decay", weight_decay, 0.0, float("inf"))


# -- plain optimizers ---------------------------------------------------------------------


@_register("sgd", "SGD with heavy-ball momentum (Nesterov optional)")
def _sgd(params: Params, *, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = False,
         dampening: float = 0.0, weight_decay: float = 0.0, foreach: bool | None = None,
         fused: bool | None = None) -> Optimizer:
    _check_common(lr, momentum, weight_decay)
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                           dampening=dampening, weight_decay=weight_decay, foreach=foreach,
                           fused=fused)


def _adam_family(cls: type[Optimizer], params: Params, lr: float, momentum: float,
                 beta2: float, eps: float, weight_decay: float, amsgrad: bool,
                 foreach: bool | None, fused: bool | None) -> Optimizer:
    _check_common(lr, momentum, weight_decay)
    _check("beta2", beta2, 0.0, 1.0)
    _check("eps", eps, 0.0, float("inf"))
    return cls(params, lr=lr, betas=(momentum, beta2), eps=eps, weight_decay=weight_decay,
               amsgrad=amsgrad, foreach=foreach, fused=fused)


@_register("adam", "Adam (momentum = beta1; L2 weight decay)")
def _adam(params: Params, *, lr: float = 1e-3, momentum: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
          foreach: bool | None = None, fused: bool | None = None) -> Optimizer:
    return _adam_family(torch.optim.Adam, params, lr, momentum, beta2, eps, weight_decay,
                        amsgrad, foreach, fused)


@_register("adamw", "AdamW (momentum = beta1; decoupled weight decay)")
def _adamw(params: Params, *, lr: float = 1e-3, momentum: float = 0.9, beta2: float = 0.999,
           eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
           foreach: bool | None = None, fused: bool | None = None) -> Optimizer:
    return _adam_family(torch.optim.AdamW, params, lr, momentum, beta2, eps, weight_decay,
                        amsgrad, foreach, fused)


# -- wrappers -----------------------------------------------------------------------------


def _inner(params: Params, inner: str, allowed: tuple[str, ...], wrapper: str,
           hparams: dict[str, Any]) -> Optimizer:
    if inner not in allowed:
        raise ValueError(f"{wrapper} can wrap {', '.join(allowed)}; got inner={inner!r}")
    return build(inner, params, **hparams)


@_register("lookahead", "Lookahead (Zhang et al. 2019) around any other optimizer")
def _lookahead(params: Params, *, inner: str = "sgd", k: int = 5, alpha: float | str = 0.5,
               inner_state: str = "maintain", alpha_low: float = 0.5,
               **inner_hparams: Any) -> Optimizer:
    allowed = tuple(n for n in _REGISTRY if n != "lookahead")
    return Lookahead(_inner(params, inner, allowed, "lookahead", inner_hparams), k=k,
                     alpha=alpha, inner_state=inner_state, alpha_low=alpha_low)  # type: ignore[arg-type]


@_register("polyak", "Polyak-Ruppert (uniform) iterate averaging of SGD")
def _polyak(params: Params, *, inner: str = "sgd", start: int = 0, every: int = 1,
            **inner_hparams: Any) -> Optimizer:
    return AveragedOptimizer(_inner(params, inner, PLAIN, "polyak", inner_hparams), "uniform",
                             start=start, every=every)


@_register("ema", "exponential moving average of SGD's iterates")
def _ema(params: Params, *, inner: str = "sgd", decay: float = 0.999, start: int = 0,
         every: int = 1, **inner_hparams: Any) -> Optimizer:
    return AveragedOptimizer(_inner(params, inner, PLAIN, "ema", inner_hparams), "ema",
                             decay=decay, start=start, every=every)


@_register("swa", "stochastic weight averaging: uniform average from step `start` on")
def _swa(params: Params, *, inner: str = "sgd", start: int = 0, every: int = 1,
         **inner_hparams: Any) -> Optimizer:
    return AveragedOptimizer(_inner(params, inner, PLAIN, "swa", inner_hparams), "uniform",
                             start=start, every=every)


# -- public API -----------------------------------------------------------------------------


def available() -> dict[str, str]:
    """Registered optimizer names and their one-line summaries."""
    return {name: entry.summary for name, entry in _REGISTRY.items()}


def _entry(name: str) -> OptimizerEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {', '.join(_REGISTRY)}"
        ) from None


def hyperparameters(name: str, inner: str | None = None) -> dict[str, Any]:
    """Accepted hyperparameters of ``name`` (wrapping ``inner``) and their defaults."""
    entry = _entry(name)
    out = {
        p.name: p.default
        for p in _signature(entry.builder)
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    if entry.wraps:
        out["inner"] = inner or out["inner"]
        out.update({k: v for k, v in hyperparameters(inner or out["inner"]).items()
                    if k not in out})
    return out


def build(name: str, params: Params, **hparams: Any) -> Optimizer:
    """Build optimizer ``name`` over ``params``; unknown or out-of-range values raise ValueError.

    ``None`` values are ignored, so a flat trial config with unused fields set to ``None``
    (``k=None`` for a plain SGD trial) can be passed as is.
    """
    hparams = {k: v for k, v in hparams.items() if v is not None}
    entry = _entry(name)
    accepted = hyperparameters(name, hparams.get("inner"))
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    return entry.builder(params, **hparams)
