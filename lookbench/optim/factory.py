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
from typing import TYPE_CHECKING, Any

from lookbench._lazy import lazy

if TYPE_CHECKING:
    from torch.optim import Optimizer

torch = lazy("torch")  # (the names, defaults and bounds below are read without torch)

Params = Iterable[Any]  # tensors, or parameter groups (dicts)
Builder = Callable[..., "Optimizer"]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: its builder and a one-line description."""

    name: str
    summary: str
    builder: Builder
    wraps: bool  # takes ``inner=`` plus the inner optimizer's hyperparameters


_REGISTRY: dict[str, OptimizerEntry] = {}
ENTRY_POINT_GROUP = "lookbench.optimizers"


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


def _betas_builder(cls_name: str, default_lr: float) -> Builder:
    """A builder for NAdam, RAdam or Adamax: Adam's ``betas`` (momentum = β1), without amsgrad
    or fused. Its keyword arguments are the accepted hyperparameters, as for every builder."""

    def build_it(params: Params, *, lr: float = default_lr, momentum: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 foreach: bool | None = None) -> Optimizer:
        _check_common(lr, momentum, weight_decay)
        _check("beta2", beta2, 0.0, 1.0)
        cls = getattr(torch.optim, cls_name)
        return cls(params, lr=lr, betas=(momentum, beta2), eps=eps, weight_decay=weight_decay,
                   foreach=foreach)

    return build_it


_register("nadam", "NAdam: Adam with Nesterov momentum (momentum = beta1)")(
    _betas_builder("NAdam", 2e-3))
_register("radam", "RAdam: Adam with a rectified warm-up (momentum = beta1)")(
    _betas_builder("RAdam", 1e-3))
_register("adamax", "Adamax: Adam with the infinity norm (momentum = beta1)")(
    _betas_builder("Adamax", 2e-3))


@_register("rmsprop", "RMSprop (momentum = heavy-ball momentum; smoothing = its alpha)")
def _rmsprop(params: Params, *, lr: float = 1e-2, momentum: float = 0.0,
             smoothing: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
             centered: bool = False, foreach: bool | None = None) -> Optimizer:
    # torch calls the squared-gradient decay ``alpha``; here that name is Lookahead's slow step.
    _check_common(lr, momentum, weight_decay)
    _check("smoothing", smoothing, 0.0, 1.0)
    return torch.optim.RMSprop(params, lr=lr, alpha=smoothing, eps=eps,
                               weight_decay=weight_decay, momentum=momentum, centered=centered,
                               foreach=foreach)


@_register("adagrad", "Adagrad (no momentum)")
def _adagrad(params: Params, *, lr: float = 1e-2, lr_decay: float = 0.0,
             weight_decay: float = 0.0, eps: float = 1e-10, foreach: bool | None = None
             ) -> Optimizer:
    _check_common(lr, 0.0, weight_decay)
    return torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                               eps=eps, foreach=foreach)


@_register("adadelta", "Adadelta (no momentum; rho = its squared-update decay)")
def _adadelta(params: Params, *, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
              weight_decay: float = 0.0, foreach: bool | None = None) -> Optimizer:
    _check_common(lr, 0.0, weight_decay)
    _check("rho", rho, 0.0, 1.0)
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                foreach=foreach)


@_register("adafactor", "Adafactor (no momentum; factored second moments)")
def _adafactor(params: Params, *, lr: float = 1e-2, beta2_decay: float = -0.8, d: float = 1.0,
               weight_decay: float = 0.0, foreach: bool | None = None) -> Optimizer:
    _check_common(lr, 0.0, weight_decay)
    return torch.optim.Adafactor(params, lr=lr, beta2_decay=beta2_decay, d=d,
                                 weight_decay=weight_decay, foreach=foreach)


# -- wrappers -----------------------------------------------------------------------------


def plain() -> list[str]:
    """Registered optimizers that wrap nothing: what Lookahead and the averages can wrap (any
    ``module:Class`` or ``file.py:Class`` reference to an optimizer can be wrapped too)."""
    return [n for n, e in _REGISTRY.items() if not e.wraps]


def _inner(params: Params, inner: str, wrapper: str, hparams: dict[str, Any]) -> Optimizer:
    """Lookahead wraps any optimizer but itself (an average, say); an average wraps an
    optimizer that wraps nothing."""
    if inner == wrapper or (wrapper != "lookahead" and _entry(inner).wraps):
        allowed = [n for n in available() if n != wrapper] if wrapper == "lookahead" else plain()
        raise ValueError(f"{wrapper} can wrap {', '.join(allowed)} or your own; "
                         f"got inner={inner!r}")
    return build(inner, params, **hparams)


@_register("lookahead", "Lookahead (Zhang et al. 2019) around any other optimizer")
def _lookahead(params: Params, *, inner: str = "sgd", k: int = 5, alpha: float | str = 0.5,
               inner_state: str = "maintain", alpha_low: float = 0.5,
               **inner_hparams: Any) -> Optimizer:
    from lookbench.optim.lookahead import Lookahead

    return Lookahead(_inner(params, inner, "lookahead", inner_hparams), k=k,
                     alpha=alpha, inner_state=inner_state, alpha_low=alpha_low)  # type: ignore[arg-type]


@_register("polyak", "Polyak-Ruppert (uniform) iterate averaging of the inner optimizer (SGD by default)")
def _polyak(params: Params, *, inner: str = "sgd", start: int = 0, every: int = 1,
            **inner_hparams: Any) -> Optimizer:
    from lookbench.optim.averaging import AveragedOptimizer

    return AveragedOptimizer(_inner(params, inner, "polyak", inner_hparams), "uniform",
                             start=start, every=every)


@_register("ema", "exponential moving average of the inner optimizer's iterates (SGD by default)")
def _ema(params: Params, *, inner: str = "sgd", decay: float = 0.999, start: int = 0,
         every: int = 1, **inner_hparams: Any) -> Optimizer:
    from lookbench.optim.averaging import AveragedOptimizer

    return AveragedOptimizer(_inner(params, inner, "ema", inner_hparams), "ema",
                             decay=decay, start=start, every=every)


@_register("swa", "stochastic weight averaging: uniform average from step `start` on")
def _swa(params: Params, *, inner: str = "sgd", start: int = 0, every: int = 1,
         **inner_hparams: Any) -> Optimizer:
    from lookbench.optim.averaging import AveragedOptimizer

    return AveragedOptimizer(_inner(params, inner, "swa", inner_hparams), "uniform",
                             start=start, every=every)


@_register("asgd", "NT-ASGD (Merity et al.): the inner optimizer (SGD by default), averaged once validation stops improving")
def _asgd(params: Params, *, inner: str = "sgd", patience: int = 5,
          **inner_hparams: Any) -> Optimizer:
    from lookbench.optim.averaging import NTAveragedOptimizer

    return NTAveragedOptimizer(_inner(params, inner, "asgd", inner_hparams), patience=patience)


# -- public API -----------------------------------------------------------------------------


def available() -> dict[str, str]:
    """Registered and installed optimizer names and their one-line summaries."""
    from importlib.metadata import entry_points

    out = {name: entry.summary for name, entry in _REGISTRY.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, f"{ep.value} (installed)")
    return out


def register_optimizer(name: str, builder: Builder | type[Optimizer], summary: str = "") -> None:
    """Make ``name`` buildable like the built-ins (as an inner optimizer or a baseline).

    ``builder``: a function ``(params, *, lr=..., momentum=..., ...) -> Optimizer`` whose
    keyword arguments are the hyperparameters it accepts, or a ``torch.optim.Optimizer``
    subclass (then ``lr``, ``momentum`` (as ``betas[0]`` for Adam-like classes) and
    ``weight_decay`` are passed where its constructor takes them). A registration lives in this
    process only: for worker processes and other machines, name the optimizer by a reference
    (``module:Class``, ``file.py:Class``) or declare it under the ``lookbench.optimizers`` entry
    points of an installed package.
    """
    if isinstance(builder, type):
        builder = _class_builder(builder)
    elif not callable(builder):
        raise TypeError(f"register_optimizer({name!r}): give a builder function or an "
                        "Optimizer subclass")
    wraps = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _signature(builder))
    _REGISTRY[name] = OptimizerEntry(name, summary or f"{name} (your own)", builder, wraps)


def _class_builder(cls: type[Optimizer]) -> Builder:
    """A builder for an optimizer class: lookbench's names mapped onto its constructor's.

    An inner-optimizer hyperparameter of lookbench's table (``lookbench.hparams``) that the
    constructor takes under the same name (``lr``, ``weight_decay``, ``eps``, ``rho``, ...) is
    passed as is; ``momentum`` is its ``momentum``, or ``betas[0]`` (and ``beta2``
    ``betas[1]``) for an Adam-like class.
    """
    from torch.optim import Optimizer

    from lookbench.hparams import SHARED

    if not issubclass(cls, Optimizer):
        raise TypeError(f"{cls.__name__} is not a torch.optim.Optimizer subclass")
    takes = inspect.signature(cls.__init__).parameters
    direct = [n for n in SHARED if n in takes]  # (never Lookahead's own k, α: a class's
    # ``alpha``, RMSprop's say, is not Lookahead's)
    betas = "betas" in takes and "momentum" not in takes
    default_betas = takes["betas"].default if betas else None
    if not (isinstance(default_betas, tuple) and len(default_betas) == 2):
        default_betas = (0.9, 0.999)

    def build_it(params: Params, **hparams: Any) -> Optimizer:
        kwargs = {k: hparams[k] for k in direct if k in hparams}
        if betas and ("momentum" in hparams or "beta2" in hparams):
            kwargs["betas"] = (hparams.get("momentum", default_betas[0]),
                               hparams.get("beta2", default_betas[1]))
        return cls(params, **kwargs)

    accepted = direct + (["momentum", "beta2"] if betas else [])
    defaults = {n: takes[n].default for n in direct
                if takes[n].default is not inspect.Parameter.empty}
    if betas:
        defaults.update(momentum=default_betas[0], beta2=default_betas[1])
    params = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_ONLY)] + [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(n))
        for n in accepted]
    build_it.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return build_it


def wraps(name: str) -> bool:
    """Whether optimizer ``name`` wraps another (Lookahead, the averages); ``ValueError`` for
    an unknown name or a reference that does not load."""
    return _entry(name).wraps


def _entry(name: str) -> OptimizerEntry:
    """The registered optimizer ``name``; else an installed entry point of that name; else a
    ``module:Class`` / ``file.py:Class`` reference (registered under it on first use)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    from importlib.metadata import entry_points

    from lookbench._references import BadReference, is_reference, load

    installed = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    reference = installed.get(name) or (name if is_reference(name) else None)
    if reference is None:
        from lookbench._suggest import did_you_mean

        raise ValueError(
            f"unknown optimizer {name!r}{did_you_mean(name, available())}; choose one of "
            f"{', '.join(available())}, or name "
            "your own as package.module:Class or path/to/file.py:Class"
        ) from None
    try:
        obj = load(reference, "optimizer", name)
        register_optimizer(name, obj)
    except BadReference as e:
        raise ValueError(str(e)) from None
    except TypeError as e:
        raise ValueError(f"optimizer {name!r}: {e}") from None
    return _REGISTRY[name]


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
