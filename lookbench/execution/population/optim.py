"""One optimizer for a population: M members' stacked parameters stepped at once, each member
with its own hyperparameters, each ending where its single-trial optimizer would.

The population model (``lookbench.execution.population.layers``) keeps every member's block of a
parameter contiguous along dim 0: member m's tensor is ``p.view(M, -1)[m]`` reshaped to the
single model's shape. :class:`PopulationOptimizer` works on those ``(M, n)`` views with the
members' hyperparameters as ``(M, 1)`` columns that broadcast over the rows, so a step costs a
fixed number of multi-tensor (``torch._foreach_*``) calls per family, whatever M is. Nothing
in a step mixes rows, so a diverged member cannot touch the others.

Supported: ``sgd`` (momentum, dampening, Nesterov, weight decay), ``adam`` and ``adamw`` (lr,
betas as ``momentum``/``beta2``, eps, weight decay) and ``lookahead`` around any of the three
with a numeric α, any k and each ``inner_state`` policy. :func:`why_not` says why anything else
is refused (averaging baselines, adaptive α, amsgrad, other optimizers).

Mixed populations (an SGD baseline, Lookahead(SGD), Adam, AdamW, ... side by side) are
handled here: members are split into two *families* by update rule, SGD and Adam (AdamW is
Adam with its decay moved: one family), each stepped with its own multi-tensor calls on its
own rows; a baseline member is one whose Lookahead sync never runs. A family's rows are a plain
slice of the ``(M, n)`` views when its members are contiguous, else they are gathered and
scattered back (correct, a little slower): put members of one :func:`family` next to each
other for the fast path.

The update rules follow ``torch.optim``'s single-tensor code (its CPU default) op for op,
with the per-member scalars computed in float64 as Python computes them there and rounded once
to the parameters' dtype: on the CPU most members come out bit-identical to their single
optimizer, and where a column product cannot round as torch's fused ``add(..., alpha=a)`` does
(SGD with weight decay and Nesterov, say) they differ in the last bits. On CUDA, torch's
default foreach kernels round differently again: equal to float tolerance
(tests/population/test_population_optim.py states it).

Parameters may be channels-last (any dense layout with dim 0 outermost): every row holds one
member's elements in the parameter's memory order, and the state tensors share that layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lookbench.optim import build, hyperparameters

__all__ = ["FAMILIES", "PopulationOptimizer", "family", "why_not"]

# Optimizer (or Lookahead's inner optimizer) → family of update rule.
FAMILIES = {"sgd": "sgd", "adam": "adam", "adamw": "adam"}
_POLICIES = ("maintain", "reset", "interpolate")
_MOMENTUM_KEY = {"sgd": "momentum_buffer", "adam": "exp_avg"}
_SLOW = "slow_param"  # lookbench.optim.lookahead.SLOW


class _Unsupported(ValueError):
    pass


@dataclass(frozen=True)
class _Settings:
    """One member's optimizer, with every hyperparameter resolved (given or default)."""

    name: str
    hparams: dict[str, Any]  # as given, ``None`` values dropped: what ``build`` is called with
    inner: str
    lookahead: bool
    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    beta2: float
    eps: float
    k: int
    alpha: float
    inner_state: str

    @property
    def family(self) -> str:
        return FAMILIES[self.inner]


def _settings(optimizer: str, hparams: dict[str, Any]) -> _Settings:
    """Resolve a member's optimizer; ``_Unsupported`` (a ValueError) saying why not."""
    items = tuple(sorted((k, v) for k, v in hparams.items() if v is not None))
    return _resolved(optimizer, items)


@functools.lru_cache(maxsize=4096)
def _resolved(optimizer: str, items: tuple[tuple[str, Any], ...]) -> _Settings:
    """:func:`_settings`, once per distinct configuration: a worker asks it of every planned
    trial whenever it forms a population, and each answer builds the real optimizer."""
    hp = dict(items)
    lookahead = optimizer == "lookahead"
    if lookahead:
        inner = hp.get("inner", hyperparameters("lookahead")["inner"])
        if isinstance(hp.get("alpha"), str):
            raise _Unsupported(f"Lookahead with alpha={hp['alpha']!r} (adaptive α needs a "
                               "whole-model reduction per member at each sync); give a number")
        if inner not in FAMILIES:
            raise _Unsupported(f"Lookahead around {inner!r} (the population optimizer steps "
                               f"{', '.join(FAMILIES)})")
    elif optimizer in FAMILIES:
        inner = optimizer
    elif optimizer == "asgd":
        raise _Unsupported("asgd (its average starts when the trial's own validation stops "
                           "improving, a per-trial decision: it trains alone)")
    else:
        raise _Unsupported(f"optimizer {optimizer!r} (the population optimizer steps "
                           f"{', '.join(FAMILIES)} and lookahead around them)")
    for flag in ("amsgrad", "maximize", "capturable", "differentiable"):
        if hp.get(flag):
            raise _Unsupported(f"{flag}=True")
    try:  # the factory's own checks: unknown names, out-of-range values
        build(optimizer, [torch.zeros(1, requires_grad=True)], **hp)
    except (ValueError, TypeError) as e:
        raise _Unsupported(str(e)) from None
    full = {**hyperparameters(optimizer, inner if lookahead else None), **hp}
    return _Settings(
        name=optimizer, hparams=hp, inner=inner, lookahead=lookahead, lr=float(full["lr"]),
        momentum=float(full["momentum"]), dampening=float(full.get("dampening", 0.0)),
        nesterov=bool(full.get("nesterov", False)), weight_decay=float(full["weight_decay"]),
        beta2=float(full.get("beta2", 0.999)), eps=float(full.get("eps", 1e-8)),
        k=int(full["k"]) if lookahead else 1,
        alpha=float(full["alpha"]) if lookahead else 1.0,
        inner_state=str(full["inner_state"]) if lookahead else "maintain",
    )


def why_not(optimizer: str, hparams: dict[str, Any]) -> str | None:
    """``None`` if :class:`PopulationOptimizer` can step a member with this optimizer, else
    a short reason (an out-of-range value is a reason too)."""
    try:
        _settings(optimizer, hparams)
    except _Unsupported as e:
        return f"not supported by population training: {e}"
    return None


def family(optimizer: str, hparams: dict[str, Any]) -> str:
    """The update-rule family (``"sgd"`` or ``"adam"``) a member is stepped with; members of
    one family placed next to each other are stepped without a gather (see the module's
    docstring). ``ValueError`` if the optimizer is not supported."""
    return _settings(optimizer, hparams).family


# -- layout ---------------------------------------------------------------------------------


class _Layout:
    """How one population parameter maps onto ``(M, n)`` rows and the members' own shapes."""

    def __init__(self, p: Tensor, members: int, shape: torch.Size, index: int) -> None:
        if p.dim() == 0 or p.shape[0] % members or p.numel() != members * math.prod(shape):
            raise ValueError(f"parameter {index} of shape {tuple(p.shape)} does not hold "
                             f"{members} members of shape {tuple(shape)} along dim 0")
        order = sorted(range(1, p.dim()), key=lambda d: -p.stride(d))  # memory order
        self.perm = (0, *order)
        if not p.permute(self.perm).is_contiguous():
            raise ValueError(f"parameter {index} is not dense with the members outermost "
                             f"(strides {p.stride()})")
        self.identity = self.perm == tuple(range(p.dim()))
        self.inv = tuple(int(i) for i in np.argsort(self.perm))
        self.members = members
        self.strides = p.stride()
        self.shape = torch.Size(shape)
        block = (p.shape[0] // members, *p.shape[1:])  # a member's block, logical order
        self.block = block
        self.block_mem = tuple(block[d] for d in self.perm)  # the same in memory order
        self.numel = math.prod(shape)

    def rows(self, t: Tensor) -> Tensor:
        """``(M, n)`` view of a tensor laid out like the parameter (a copy if it is not)."""
        if t.stride() == self.strides:
            return (t if self.identity else t.permute(self.perm)).view(self.members, -1)
        return t.permute(self.perm).reshape(self.members, -1)

    def to_member(self, row: Tensor) -> Tensor:
        """A row as a new tensor of the member's shape."""
        return row.reshape(self.block_mem).permute(self.inv).reshape(self.shape).clone()

    def to_row(self, value: Tensor) -> Tensor:
        """A member-shaped tensor as one row (memory order)."""
        return value.reshape(self.block).permute(self.perm).reshape(-1)


class _Rows:
    """Some rows of ``(M, n)`` tensors: a slice where they are consecutive, else an index
    (gathered with ``index_select`` and written back with ``index_copy_``)."""

    def __init__(self, rows: np.ndarray, device: torch.device) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.size = len(rows)
        if self.size and bool((np.diff(rows) == 1).all()):
            self.slice: slice | None = slice(int(rows[0]), int(rows[-1]) + 1)
            self.index: Tensor | None = None
        else:
            self.slice = None
            self.index = torch.as_tensor(rows, device=device)

    def take(self, t: Tensor) -> Tensor:
        return t[self.slice] if self.index is None else t.index_select(0, self.index)

    def put(self, t: Tensor, value: Tensor) -> None:
        """Write back what ``take`` gathered (a no-op for a slice: it was a view)."""
        if self.index is not None:
            t.index_copy_(0, self.index, value)

    def zero_(self, t: Tensor) -> None:
        if self.index is None:
            t[self.slice].zero_()
        else:
            t.index_fill_(0, self.index, 0)


# -- families -------------------------------------------------------------------------------


class _Family:
    """The members stepped by one update rule, with their state as ``(G, n)`` tensors."""

    def __init__(self, kind: str, members: np.ndarray, settings: list[_Settings],
                 sizes: list[int], opt: PopulationOptimizer) -> None:
        self.kind = kind
        self.members = members  # global member indices, ascending
        self.rows = _Rows(members, opt._device)
        self.opt = opt
        g, n_params = len(members), len(sizes)
        mine = [settings[m] for m in members]
        self.momentum = np.array([s.momentum for s in mine])
        self.weight_decay = np.array([s.weight_decay for s in mine])
        col = opt._col
        zeros = [lambda n=n: torch.zeros(g, n, device=opt._device, dtype=opt._dtype)
                 for n in sizes]
        if kind == "sgd":
            self.dampening = np.array([s.dampening for s in mine])
            nesterov = np.array([s.nesterov for s in mine])
            self.has_momentum = self.momentum != 0  # SGD keeps a buffer only then
            self.any_momentum = bool(self.has_momentum.any())
            self.any_nesterov = bool(nesterov.any())
            self.any_wd = bool((self.weight_decay != 0).any())
            self.t_wd = col(self.weight_decay)
            # Steady state (every buffer exists): buf = μ·buf + (1 − dampening)·g; members
            # without momentum keep buf = g (μ 0, factor 1), which is their update.
            self.t_mom = col(self.momentum)
            self.t_damp = col(np.where(self.has_momentum, 1 - self.dampening, 1.0))
            # Nesterov: update = g + μ·buf, else buf: a·g + b·buf.
            self.t_nest_a = col(np.where(nesterov, 1.0, 0.0))
            self.t_nest_b = col(np.where(nesterov, self.momentum, 1.0))
            self.state = {"momentum_buffer": [z() for z in zeros] if self.any_momentum else []}
        else:
            adamw = np.array([s.inner == "adamw" for s in mine])
            self.beta1 = self.momentum
            self.beta2 = np.array([s.beta2 for s in mine])
            self.has_momentum = np.ones(g, dtype=bool)
            self.wd_l2 = np.where(adamw, 0.0, self.weight_decay)
            self.wd_decoupled = np.where(adamw, self.weight_decay, 0.0)
            self.any_l2 = bool((self.wd_l2 != 0).any())
            self.any_decoupled = bool((self.wd_decoupled != 0).any())
            self.t_l2 = col(self.wd_l2)
            self.t_one_minus_beta1 = col(1 - self.beta1)
            self.t_beta2 = col(self.beta2)
            self.t_one_minus_beta2 = col(1 - self.beta2)
            self.t_eps = col(np.array([s.eps for s in mine]))
            self.state = {"exp_avg": [z() for z in zeros], "exp_avg_sq": [z() for z in zeros]}
        self.key = _MOMENTUM_KEY[kind]
        # Per parameter and member: the single optimizer's state exists (SGD: the buffer;
        # Adam: its step count, 0 = no state yet).
        self.has_state = np.zeros((n_params, g), dtype=bool)
        self.count = np.zeros((n_params, g), dtype=np.int64)
        self._zeros = zeros
        self.slow_momentum: list[Tensor] | None = None  # Lookahead "interpolate"
        self.has_slow_momentum = np.zeros((n_params, g), dtype=bool)

    def momentum_tensors(self) -> list[Tensor]:
        return self.state[self.key]

    def slow_momentum_tensors(self) -> list[Tensor]:
        if self.slow_momentum is None:
            self.slow_momentum = [z() for z in self._zeros]
        return self.slow_momentum

    def all_state(self) -> list[Tensor]:
        tensors = [t for ts in self.state.values() for t in ts]
        return tensors + (self.slow_momentum or [])

    def _per_param(self, values: np.ndarray) -> list[Tensor]:
        """Columns for a ``(params, G)`` array: one shared column when the rows agree."""
        if (values == values[0]).all():
            return [self.opt._col(values[0])] * len(values)
        return list(self.opt._col(values.reshape(-1)).view(len(values), -1, 1).unbind(0))

    def step(self, idx: list[int], params: list[Tensor], grads: list[Tensor],
             lr: np.ndarray, active: np.ndarray) -> None:
        if self.kind == "sgd":
            self._sgd(idx, params, grads, lr, active)
        else:
            self._adam(idx, params, grads, lr, active)

    def _sgd(self, idx: list[int], params: list[Tensor], grads: list[Tensor],
             lr: np.ndarray, active: np.ndarray) -> None:
        n = len(idx)
        if self.any_wd:  # grad = grad + wd·param
            grads = torch._foreach_addcmul(grads, params, [self.t_wd] * n)
        update = grads
        if self.any_momentum:
            bufs = [self.state["momentum_buffer"][i] for i in idx]
            has = self.has_state[idx]
            if (has | ~self.has_momentum | ~active).all():
                mom, damp = [self.t_mom] * n, [self.t_damp] * n
            else:  # a first step: buf = grad (0·buf + 1·grad, buf being 0 then)
                mom = self._per_param(np.where(has, self.momentum, 0.0))
                damp = self._per_param(np.where(has & self.has_momentum,
                                                1 - self.dampening, 1.0))
            torch._foreach_mul_(bufs, mom)
            torch._foreach_addcmul_(bufs, grads, damp)
            self.has_state[np.ix_(idx, np.flatnonzero(active & self.has_momentum))] = True
            update = bufs
            if self.any_nesterov:
                update = torch._foreach_mul(bufs, [self.t_nest_b] * n)
                torch._foreach_addcmul_(update, grads, [self.t_nest_a] * n)
        torch._foreach_addcmul_(params, update, [self.opt._col(-lr)] * n)

    def _adam(self, idx: list[int], params: list[Tensor], grads: list[Tensor],
              lr: np.ndarray, active: np.ndarray) -> None:
        n = len(idx)
        self.count[np.ix_(idx, np.flatnonzero(active))] += 1
        self.has_state[idx] = self.count[idx] > 0
        steps = np.maximum(self.count[idx], 1).astype(np.float64)  # (n, G); a frozen member
        # may have none: 1 keeps its (unused) factors finite
        if self.any_decoupled:  # AdamW: param·(1 − lr·wd)
            torch._foreach_mul_(params, [self.opt._col(1 - lr * self.wd_decoupled)] * n)
        if self.any_l2:  # Adam: grad = grad + wd·param
            grads = torch._foreach_addcmul(grads, params, [self.t_l2] * n)
        exp_avg = [self.state["exp_avg"][i] for i in idx]
        exp_avg_sq = [self.state["exp_avg_sq"][i] for i in idx]
        torch._foreach_lerp_(exp_avg, grads, [self.t_one_minus_beta1] * n)
        torch._foreach_mul_(exp_avg_sq, [self.t_beta2] * n)
        # (1 − β2)·g·g as torch's addcmul rounds it: the product with the scalar first
        scaled = torch._foreach_mul(grads, [self.t_one_minus_beta2] * n)
        torch._foreach_addcmul_(exp_avg_sq, scaled, grads)
        bias_correction1 = 1 - np.power(self.beta1, steps)
        bias_correction2_sqrt = np.power(1 - np.power(self.beta2, steps), 0.5)
        neg_step_size = -(lr / bias_correction1)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, self._per_param(bias_correction2_sqrt))
        torch._foreach_add_(denom, [self.t_eps] * n)
        # param += (−step_size·exp_avg) / denom, as addcdiv_(value=−step_size) rounds it
        update = torch._foreach_mul(exp_avg, self._per_param(neg_step_size))
        torch._foreach_addcdiv_(params, update, denom)


# -- the optimizer --------------------------------------------------------------------------


class PopulationOptimizer:
    """Steps M members' stacked parameters at once, each as its own single-trial optimizer.

    Args:
        params: the population model's parameters; each holds the M members' blocks along
            dim 0 (member m's is ``p.view(M, -1)[m]``), gradients in ``p.grad`` alike.
        member_shapes: for each parameter, the single model's shape.
        members: per member, ``(optimizer name, hyperparameters)`` as
            ``TrialConfig.optimizer_hparams()`` gives them (missing ones take the factory's
            defaults); :func:`why_not` must accept each.

    ``member_state_dict(m)`` is exactly the state dict of ``lookbench.optim.build(name,
    member_params, **hparams)`` after the same steps, and ``load_member_state_dict`` takes
    one, so a member resumes alone and a single trial resumes in a population. The
    learning-rate schedule is shared: :meth:`set_lr_factor`. A diverged member is
    :meth:`freeze`-d: its parameters and state are zeroed and stay zero (its gradients are
    zeroed in place before each step), and the others are not touched.
    """

    def __init__(self, params: list[Tensor], member_shapes: Sequence[torch.Size],
                 members: Sequence[tuple[str, dict[str, Any]]]) -> None:
        params = list(params)
        if not members:
            raise ValueError("a population needs at least one member")
        if len(member_shapes) != len(params):
            raise ValueError(f"{len(params)} parameters but {len(member_shapes)} member shapes")
        if not params:
            raise ValueError("no parameters to optimize")
        kinds = {(p.device, p.dtype) for p in params}
        if len(kinds) > 1:
            raise ValueError(f"parameters on several devices or dtypes: {sorted(map(str, kinds))}")
        self._device, self._dtype = next(iter(kinds))
        self.size = M = len(members)
        self.params = params
        self._layouts = [_Layout(p, M, torch.Size(s), i)
                         for i, (p, s) in enumerate(zip(params, member_shapes))]
        self._settings: list[_Settings] = []
        for m, (name, hp) in enumerate(members):
            try:
                self._settings.append(_settings(name, dict(hp)))
            except _Unsupported as e:
                raise ValueError(f"member {m}: not supported by population training: {e}"
                                 ) from None
        s = self._settings
        self._base_lr = np.array([x.lr for x in s])
        self._factor = 1.0
        self._frozen = np.zeros(M, dtype=bool)
        self._frozen_index: Tensor | None = None
        self._lookahead = np.array([x.lookahead for x in s])
        self._k = np.array([x.k for x in s], dtype=np.int64)
        self._alpha = np.array([x.alpha for x in s])
        self._policy = np.array([_POLICIES.index(x.inner_state) for x in s])
        self._lookahead_step = np.zeros(M, dtype=np.int64)
        self._captured = np.zeros(M, dtype=bool)  # slow weights taken (at the first step)
        self._swapped = False
        sizes = [lay.numel for lay in self._layouts]
        self._slow: list[Tensor] = ([self._layouts[i].rows(torch.zeros_like(p))
                                     for i, p in enumerate(params)]
                                    if self._lookahead.any() else [])
        kinds_of = np.array([x.family for x in s])
        self._families: list[_Family] = []
        self._family_of = np.zeros(M, dtype=np.int64)
        self._local_of = np.zeros(M, dtype=np.int64)
        for kind in ("sgd", "adam"):
            rows = np.flatnonzero(kinds_of == kind)
            if rows.size:
                self._family_of[rows] = len(self._families)
                self._local_of[rows] = np.arange(rows.size)
                self._families.append(_Family(kind, rows, s, sizes, self))

    # -- small helpers ------------------------------------------------------------------

    def _col(self, values: np.ndarray) -> Tensor:
        """Per-member float64 values as a ``(len, 1)`` column in the parameters' dtype."""
        t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        return t.to(device=self._device, dtype=self._dtype).view(-1, 1)

    def _param_rows(self) -> list[Tensor]:
        return [lay.rows(p.detach()) for lay, p in zip(self._layouts, self.params)]

    def _check_member(self, m: int) -> int:
        if not 0 <= m < self.size:
            raise IndexError(f"member {m} of a population of {self.size}")
        return int(m)

    def _refuse_while_swapped(self, what: str) -> None:
        if self._swapped:
            raise RuntimeError(f"{what} called inside PopulationOptimizer.evaluation_weights(): "
                               "the parameters hold the slow weights there")

    # -- learning rate --------------------------------------------------------------------

    def set_lr_factor(self, factor: float) -> None:
        """Every member's lr becomes its base lr × ``factor`` (the shared schedule)."""
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(f"lr factor must be a finite number >= 0, got {factor!r}")
        self._factor = float(factor)

    def lr(self, m: int) -> float:
        """Member ``m``'s current lr (as its single optimizer's ``group["lr"]`` would read;
        a frozen member's too, though it no longer moves)."""
        return float(self._base_lr[self._check_member(m)] * self._factor)

    # -- stepping -------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One step of every member that is not frozen (gradients from ``p.grad``)."""
        self._refuse_while_swapped("step()")
        active = ~self._frozen
        prows = self._param_rows()
        first = np.flatnonzero(self._lookahead & active & ~self._captured)
        if first.size:  # φ0 from θ before the member's first inner step (Algorithm 1)
            rows = _Rows(first, self._device)
            for slow, p in zip(self._slow, prows):
                if rows.index is None:
                    rows.take(slow).copy_(rows.take(p))
                else:
                    rows.put(slow, rows.take(p))
            self._captured[first] = True
        grows: list[Tensor | None] = [
            None if p.grad is None else lay.rows(p.grad) for lay, p in zip(self._layouts,
                                                                            self.params)]
        if self._frozen_index is not None:
            for g in grows:
                if g is not None:
                    g.index_fill_(0, self._frozen_index, 0)
        idx = [i for i, g in enumerate(grows) if g is not None]
        lr = self._base_lr * self._factor
        for fam in self._families:
            rows = fam.rows
            ps = [rows.take(prows[i]) for i in idx]
            gs = [rows.take(grows[i]) for i in idx]  # type: ignore[arg-type]
            if ps:
                fam.step(idx, ps, gs, lr[fam.members], active[fam.members])
            if rows.index is not None:
                for i, pr in zip(idx, ps):
                    rows.put(prows[i], pr)
        stepping = self._lookahead & active
        self._lookahead_step[stepping] += 1
        due = np.flatnonzero(stepping & (self._lookahead_step % self._k == 0))
        if due.size:
            self._sync(due, prows)
        if self._frozen_index is not None:  # stays exactly 0 whatever its settings (eps=0)
            for p in prows:
                p.index_fill_(0, self._frozen_index, 0)

    def _sync(self, due: np.ndarray, prows: list[Tensor]) -> None:
        """Lookahead's outer update for the members ``due`` (as ``Lookahead._outer_update``:
        the momentum policy, then φ ← φ + α(θ − φ), θ ← φ)."""
        for f, fam in enumerate(self._families):
            mine = due[self._family_of[due] == f]
            mine = mine[fam.has_momentum[self._local_of[mine]]]
            interpolate = mine[self._policy[mine] == _POLICIES.index("interpolate")]
            if interpolate.size:
                local = self._local_of[interpolate]
                self._interpolate_and_copy_back(fam.slow_momentum_tensors(),
                                                fam.momentum_tensors(), local,
                                                self._alpha[interpolate])
                fam.has_slow_momentum[:, local] |= fam.has_state[:, local]
            reset = mine[self._policy[mine] == _POLICIES.index("reset")]
            if reset.size:
                rows = _Rows(self._local_of[reset], self._device)
                for t in fam.momentum_tensors():
                    rows.zero_(t)
        self._interpolate_and_copy_back(self._slow, prows, due, self._alpha[due])

    def _interpolate_and_copy_back(self, slow: list[Tensor], fast: list[Tensor],
                                   rows: np.ndarray, alpha: np.ndarray) -> None:
        """For the given rows of ``(R, n)`` tensors: ``slow += α(fast − slow)``, then
        ``fast = slow``. Consecutive rows are a slice; rows spread over a quarter or more of
        the tensors are done on every row with α 0 (``lerp`` by 0 leaves a finite row
        exactly as it is, by 1 copies: two multi-tensor calls in all); a few spread rows are
        gathered and written back."""
        total = slow[0].shape[0]
        picked = _Rows(rows, self._device)
        if picked.index is not None and 4 * len(rows) >= total:
            weight, mask = np.zeros(total), np.zeros(total)
            weight[rows], mask[rows] = alpha, 1.0
            torch._foreach_lerp_(slow, fast, [self._col(weight)] * len(slow))
            torch._foreach_lerp_(fast, slow, [self._col(mask)] * len(slow))
            return
        s = [picked.take(t) for t in slow]
        f = [picked.take(t) for t in fast]
        torch._foreach_lerp_(s, f, [self._col(alpha)] * len(s))
        if picked.index is None:
            torch._foreach_copy_(f, s)
            return
        for st, ft, new in zip(slow, fast, s):
            st.index_copy_(0, picked.index, new)
            ft.index_copy_(0, picked.index, new)

    # -- divergence -----------------------------------------------------------------------

    @torch.no_grad()
    def freeze(self, m: int) -> None:
        """Member ``m`` diverged: zero its parameters and state, and keep them zero (its
        gradients are zeroed in place at every step); the other members are not touched."""
        m = self._check_member(m)
        self._refuse_while_swapped("freeze()")
        self._frozen[m] = True
        self._frozen_index = torch.as_tensor(np.flatnonzero(self._frozen), device=self._device)
        for t in self._param_rows() + self._slow:
            t[m].zero_()
        fam = self._families[self._family_of[m]]
        for t in fam.all_state():
            t[self._local_of[m]].zero_()

    def is_frozen(self, m: int) -> bool:
        return bool(self._frozen[self._check_member(m)])

    # -- evaluation -----------------------------------------------------------------------

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Within the block every Lookahead member's parameters hold its slow weights (the
        others keep theirs); afterwards exactly the training weights again. Stepping,
        freezing or reading state inside the block raises."""
        self._refuse_while_swapped("evaluation_weights()")
        members = np.flatnonzero(self._lookahead & self._captured)
        rows = _Rows(members, self._device) if members.size else None
        if rows is not None:
            with torch.no_grad():
                _swap(self._param_rows(), self._slow, rows)
        self._swapped = True
        try:
            yield
        finally:
            if rows is not None:
                with torch.no_grad():
                    _swap(self._param_rows(), self._slow, rows)
            self._swapped = False

    # -- checkpoints: a single optimizer's state dict per member --------------------------

    def _single(self, m: int) -> tuple[torch.optim.Optimizer, list[Tensor]]:
        """Member ``m``'s own optimizer, built over copies of its parameters."""
        params = [lay.to_member(rows[m]) for lay, rows in zip(self._layouts,
                                                               self._param_rows())]
        s = self._settings[m]
        return build(s.name, params, **s.hparams), params

    @torch.no_grad()
    def member_state_dict(self, m: int) -> dict[str, Any]:
        """Member ``m``'s optimizer state, as ``lookbench.optim.build(name, params,
        **hparams).state_dict()`` would have it after the same steps."""
        m = self._check_member(m)
        self._refuse_while_swapped("member_state_dict()")
        opt, params = self._single(m)
        s = self._settings[m]
        fam = self._families[self._family_of[m]]
        g = int(self._local_of[m])
        inner = opt.inner if s.lookahead else opt  # type: ignore[attr-defined]
        for i, (lay, p) in enumerate(zip(self._layouts, params)):
            if fam.has_state[i, g] and fam.has_momentum[g]:
                if fam.kind == "sgd":
                    inner.state[p] = {"momentum_buffer": lay.to_member(
                        fam.state["momentum_buffer"][i][g])}
                else:
                    inner.state[p] = {
                        "step": torch.tensor(float(fam.count[i, g]), dtype=_step_dtype()),
                        "exp_avg": lay.to_member(fam.state["exp_avg"][i][g]),
                        "exp_avg_sq": lay.to_member(fam.state["exp_avg_sq"][i][g])}
            if s.lookahead and self._captured[m]:
                outer = {_SLOW: lay.to_member(self._slow[i][m])}
                if fam.has_slow_momentum[i, g]:
                    outer[f"slow_{fam.key}"] = lay.to_member(fam.slow_momentum_tensors()[i][g])
                opt.state[p] = outer
        group = opt.param_groups[0]
        group["lr"] = self.lr(m)
        if s.lookahead:
            group["lookahead_step"] = int(self._lookahead_step[m])
        return opt.state_dict()

    @torch.no_grad()
    def load_member_state_dict(self, m: int, state: dict[str, Any]) -> None:
        """Put a single optimizer's ``state_dict()`` (the member's optimizer, built with its
        hyperparameters) into member ``m``'s slots; a frozen member is active again. The lr
        in it is not taken: the population's schedule sets it (:meth:`set_lr_factor`); every
        other hyperparameter must be the member's, else ``ValueError``."""
        m = self._check_member(m)
        self._refuse_while_swapped("load_member_state_dict()")
        opt, params = self._single(m)
        expected = dict(opt.param_groups[0])
        opt.load_state_dict(state)  # torch's checks and casts
        got = opt.param_groups[0]
        # lr follows the population's schedule; foreach/fused choose kernels, not the rule
        skip = {"params", "lr", "initial_lr", "lookahead_step", "lookahead_last_alpha",
                "foreach", "fused"}
        differ = sorted(k for k in set(expected) | set(got)
                        if k not in skip and _plain(expected.get(k)) != _plain(got.get(k)))
        if differ:
            raise ValueError(f"member {m}: the state dict's {', '.join(differ)} differ from "
                             "the member's configuration")
        s = self._settings[m]
        fam = self._families[self._family_of[m]]
        g = int(self._local_of[m])
        inner = opt.inner if s.lookahead else opt  # type: ignore[attr-defined]
        captured = s.lookahead and any(_SLOW in opt.state.get(p, {}) for p in params)
        prows = self._param_rows()
        for i, (lay, p) in enumerate(zip(self._layouts, params)):
            st = inner.state.get(p, {})
            for key, tensors in fam.state.items():
                value = st.get(key)
                if value is None:
                    tensors[i][g].zero_()
                else:
                    tensors[i][g].copy_(lay.to_row(value))
            if fam.kind == "sgd":
                fam.has_state[i, g] = st.get("momentum_buffer") is not None
            else:
                fam.count[i, g] = int(st["step"]) if "step" in st else 0
                fam.has_state[i, g] = fam.count[i, g] > 0
            outer = opt.state.get(p, {}) if s.lookahead else {}
            slow_momentum = outer.get(f"slow_{fam.key}")
            fam.has_slow_momentum[i, g] = slow_momentum is not None
            if slow_momentum is not None:
                fam.slow_momentum_tensors()[i][g].copy_(lay.to_row(slow_momentum))
            elif fam.slow_momentum is not None:
                fam.slow_momentum[i][g].zero_()
            if self._slow:
                slow = outer.get(_SLOW)
                # a parameter without φ in a captured member: as Lookahead, φ = θ
                self._slow[i][m].copy_(lay.to_row(slow) if slow is not None else prows[i][m])
        self._captured[m] = captured
        self._lookahead_step[m] = int(got.get("lookahead_step", 0))
        self._frozen[m] = False
        frozen = np.flatnonzero(self._frozen)
        self._frozen_index = (torch.as_tensor(frozen, device=self._device) if frozen.size
                              else None)


def _plain(value: Any) -> Any:
    """A group value as compared: a list (a checkpoint through JSON, say) as a tuple."""
    return tuple(value) if isinstance(value, list) else value


def _step_dtype() -> torch.dtype:
    """The dtype torch.optim's Adam keeps ``step`` in (its ``_get_scalar_dtype``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _swap(a: list[Tensor], b: list[Tensor], rows: _Rows) -> None:
    """Exchange the given rows of each pair exactly."""
    for x, y in zip(a, b):
        xr, yr = rows.take(x), rows.take(y)
        if rows.index is None:
            tmp = xr.clone()
            xr.copy_(yr)
            yr.copy_(tmp)
        else:  # gathered copies: write each into the other
            x.index_copy_(0, rows.index, yr)
            y.index_copy_(0, rows.index, xr)
