"""The Lookahead optimizer (Zhang, Lucas, Hinton, Ba, 2019), exactly as Algorithm 1 states it.

Slow weights φ start as a copy of the initial parameters; after every k inner steps
φ ← φ + α(θ − φ) and θ ← φ. The first copy is taken at the first ``step()``, before the inner
step, so a model moved to another device or loaded from pretrained weights *after* the
optimizer was built is not pulled back toward stale weights at the first sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from lookbench.choices import INNER_STATE_POLICIES, InnerStatePolicy
from lookbench.optim import _tensor_ops
from lookbench.optim import inner_state as families
from lookbench.optim.wrapper import WrappedOptimizer, check_inner
from lookbench.theory import check_alpha, check_k, lookahead_args  # noqa: F401 (re-exported)

ADAPTIVE = "adaptive"

SLOW = "slow_param"
FAST = "fast_param"  # θ_{t,k}: the last inner loop's end, kept when ``trace_fast``
OWN_SQ_AVG = "lookahead_sq_avg"  # second moment kept for adaptive α when the inner has none


def adaptive_alpha(
    slow: Sequence[Tensor],
    fast: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    curvature: Sequence[Tensor | None],
    alpha_low: float,
    curvature_divisors: Sequence[float] | None = None,
) -> float:
    """Section 2.1's step size α̂, clipped to ``[alpha_low, 1]``.

    ``curvature`` is the diagonal Â per parameter (divided by ``curvature_divisors``, e.g.
    Adam's bias correction, if given). With d = θ_{t,0} − θ_{t,k} (slow minus fast) and the
    approximate optimum θ* ≈ θ_{t,k} − Â⁻¹g, Proposition 1's ratio (θ_{t,0} − θ*)ᵀÂd / dᵀÂd
    simplifies to 1 + gᵀd / dᵀÂd, which needs no inverse and, computed one tensor at a time,
    no temporary of the whole model. Parameters without a gradient or curvature estimate are
    left out of both sums; if the weights did not move (dᵀÂd = 0) the step is the full one.
    """
    divisors = curvature_divisors or [1.0] * len(slow)
    sums: dict[torch.device, Tensor] = {}  # per device [gᵀd, dᵀÂd], read back once at the end
    for s, f, g, a, div in zip(slow, fast, grads, curvature, divisors):
        if g is None or a is None:
            continue
        d = (s - f).double().flatten()
        terms = torch.stack(
            [torch.dot(g.double().flatten(), d), torch.dot(a.double().flatten() * d, d) / div]
        )
        sums[d.device] = sums[d.device] + terms if d.device in sums else terms
    if not sums:
        return 1.0
    dot_gd, d_a_d = (float(x) for x in sum(t.cpu() for t in sums.values()))
    if not (math.isfinite(dot_gd) and math.isfinite(d_a_d)) or d_a_d <= 0.0:
        return 1.0
    return min(1.0, max(alpha_low, 1.0 + dot_gd / d_a_d))


class Lookahead(WrappedOptimizer):
    """Lookahead around any ``torch.optim.Optimizer`` instance.

    Args:
        inner: the optimizer A of Algorithm 1 (SGD, Adam, ... or another wrapper).
        k: inner steps per synchronisation (``lookahead_k`` in each param group).
        alpha: slow-weights step size in (0, 1] (``lookahead_alpha`` per group; a scheduler may
            change it), or ``"adaptive"`` for section 2.1's α̂ computed at every sync. The
            paper takes the gradient at the last fast weights θ_{t,k}: given a closure,
            ``step`` evaluates it there once per sync; without one, the last minibatch gradient
            (taken one inner step earlier, at θ_{t,k−1}) stands in for it, which moves α̂ by
            1–9% on a quadratic with momentum (tests/optim/test_adaptive_alpha_gradient.py).
        inner_state: what happens to the inner optimizer's momentum-like state at a sync
            (Appendix D.1): ``"maintain"`` keeps it, ``"reset"`` zeroes it (SGD's momentum
            buffer, Adam's first moment), ``"interpolate"`` gives it its own slow copy that is
            interpolated and written back exactly like the weights.
        alpha_low: lower clip of adaptive α (the paper's α_low).
        beta2: decay of the squared-gradient average kept for adaptive α when the inner
            optimizer keeps none (SGD); Adam-family and RMSprop estimates are reused instead.
        momentum_keys: state keys of the momentum-like state, for an inner optimizer family
            that ``lookbench.optim.inner_state`` does not know.
        foreach: use the multi-tensor kernels for the sync (default: yes, where they apply).
        fused: run the sync of large CPU tensors as one compiled pass over memory (see
            ``lookbench.optim._fused``): ``None`` (default) when the model is large enough to
            repay compiling, ``True`` for every eligible CPU tensor, ``False`` never. It
            falls back to the eager sync, with a warning, where compiling is impossible.

    ``param_groups`` *is* the inner optimizer's list, so learning-rate schedulers work on
    either object. ``state_dict()`` carries the slow weights, the inner state and the step
    counters; loading it into a freshly built model and optimizer continues bit-identically.
    Evaluate on the slow weights (as the paper does, Appendix C.1) with
    ``with opt.evaluation_weights(): ...``; ``opt.use_evaluation_weights()`` leaves them in the
    model at the end of training.
    """

    eval_key = SLOW

    def __init__(
        self,
        inner: Optimizer,
        k: int = 5,
        alpha: float | Literal["adaptive"] = 0.5,
        inner_state: InnerStatePolicy = "maintain",
        *,
        alpha_low: float = 0.5,
        beta2: float = 0.999,
        momentum_keys: Sequence[str] | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        trace_fast: bool = False,
    ) -> None:
        check_inner(inner, "Lookahead")
        check_k(k)
        if alpha != ADAPTIVE:
            check_alpha(alpha)
        check_alpha(alpha_low, "alpha_low")
        if not 0 <= beta2 < 1:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
        if inner_state not in INNER_STATE_POLICIES:
            raise ValueError(
                f"inner_state must be one of {', '.join(INNER_STATE_POLICIES)}; got {inner_state!r}"
            )
        self.inner_state = inner_state
        self.alpha_low = float(alpha_low)
        self.beta2 = float(beta2)
        self.foreach = foreach
        self.fused = fused
        self.trace_fast = trace_fast
        self._momentum_keys: tuple[str, ...] = (
            ()
            if inner_state == "maintain"
            else families.momentum_keys(inner, None if momentum_keys is None else tuple(momentum_keys))
        )
        self._second_moment: families.SecondMoment | None = families.second_moment(inner)
        self._chunk_plans = _tensor_ops.ChunkPlans()  # not state: rebuilt when needed
        super().__init__(
            inner, {"lookahead_k": k, "lookahead_alpha": alpha, "lookahead_step": 0}
        )

    def _config_attrs(self) -> tuple[str, ...]:
        return ("inner_state", "alpha_low", "beta2", "foreach", "fused", "trace_fast",
                "_momentum_keys", "_second_moment")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("fused", None)  # pickled before the options existed
        self.__dict__.setdefault("trace_fast", False)
        self._chunk_plans = _tensor_ops.ChunkPlans()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as ``WrappedOptimizer`` does; views of the replaced slow weights are dropped."""
        self._chunk_plans.clear()
        super().load_state_dict(state_dict)

    def fast_weights(self) -> AbstractContextManager[None]:
        """A context in which the model holds θ_{t,k}, the fast weights at the end of the last
        inner loop just before its slow step (kept when ``trace_fast``; before the first sync,
        the weights the model holds): the paper's Figure 10 sets their accuracy against the
        slow weights'."""
        return self._swapped_in(FAST, "fast_weights()")

    def _check_group(self, group: dict[str, Any]) -> None:
        check_k(group["lookahead_k"])
        if group["lookahead_alpha"] != ADAPTIVE:
            check_alpha(group["lookahead_alpha"])

    @property
    def k(self) -> int:
        """The default synchronisation period (groups may override ``lookahead_k``)."""
        return self.defaults["lookahead_k"]

    @property
    def alpha(self) -> float | str:
        """The default slow step size (groups may override ``lookahead_alpha``)."""
        return self.defaults["lookahead_alpha"]

    def _needs_own_sq_avg(self) -> bool:
        return self._second_moment is None and any(
            g["lookahead_alpha"] == ADAPTIVE for g in self.param_groups
        )

    # -- the algorithm --------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every ``k``-th step of a group also does the outer update."""
        self._refuse_while_swapped("step()")
        for group in self.param_groups:
            if group["lookahead_step"] == 0:
                self._capture_slow(group)  # φ0 from θ before the group's first inner step
        loss = self.inner.step() if closure is None else self.inner.step(closure)
        with torch.no_grad():
            if self._needs_own_sq_avg():
                self._update_own_sq_avg()
            due = []
            for group in self.param_groups:
                group["lookahead_step"] += 1
                if group["lookahead_step"] % group["lookahead_k"] == 0:
                    due.append(group)
            if closure is not None and any(g["lookahead_alpha"] == ADAPTIVE for g in due):
                # Section 2.1 takes the gradient at the last fast weights θ_{t,k}; a closure
                # lets us evaluate it there (one more forward/backward per k steps). Without
                # one, the last minibatch gradient (taken at θ_{t,k−1}) stands in for it.
                with torch.enable_grad():
                    closure()
            for group in due:
                self._outer_update(group)
        return loss

    def sync(self) -> None:
        """Do the outer update now, for every group, and start a new cycle of k steps.

        Not part of Algorithm 1: for users who want fast and slow weights to agree at a point
        they choose (Ranger#24). ``evaluation_weights()`` evaluates the slow weights without
        changing the trajectory and is what lookbench itself uses.
        """
        self._refuse_while_swapped("sync()")
        with torch.no_grad():
            for group in self.param_groups:
                if group["lookahead_step"] % group["lookahead_k"] != 0:
                    self._outer_update(group)
                    group["lookahead_step"] = 0

    def _capture_slow(self, group: dict[str, Any]) -> None:
        with torch.no_grad():
            for p in group["params"]:
                state = self.state[p]
                if SLOW not in state:
                    state[SLOW] = p.detach().clone(memory_format=torch.preserve_format)

    def _outer_update(self, group: dict[str, Any]) -> None:
        params: list[Tensor] = group["params"]  # written in place under no_grad, like torch.optim
        if not params:
            return
        slow = []
        for p in params:
            state = self.state[p]
            s = state.get(SLOW)
            if s is None:  # only a parameter added to the group since the cycle began lacks φ
                s = state[SLOW] = p.detach().clone(memory_format=torch.preserve_format)
            slow.append(s)
        foreach = _tensor_ops.use_foreach(params, self.foreach)
        alpha = group["lookahead_alpha"]
        if alpha == ADAPTIVE:
            curvature, divisors = self._curvature(params)
            grads = [p.grad for p in params]
            alpha = adaptive_alpha(slow, params, grads, curvature, self.alpha_low, divisors)
            group["lookahead_last_alpha"] = alpha
        if self.trace_fast:  # keep θ_{t,k} before the slow step pulls it back
            for p in params:
                fast = self.state[p].get(FAST)
                if fast is None:
                    self.state[p][FAST] = p.detach().clone(memory_format=torch.preserve_format)
                else:
                    fast.copy_(p.detach())
        if self.inner_state == "interpolate":
            self._interpolate_momentum(params, alpha, foreach, slot=(id(group), "momentum"))
        # φ ← φ + α(θ − φ); θ ← φ
        _tensor_ops.interpolate_and_copy_back_(slow, params, alpha, foreach, self._chunk_plans,
                                               slot=id(group), fused=self.fused)
        if self.inner_state == "reset":
            _tensor_ops.zero_(self._momentum_tensors(params)[1], foreach)

    def _momentum_tensors(self, params: list[Tensor]) -> tuple[list[tuple[Tensor, str]], list[Tensor]]:
        """(param, key) and tensor of every momentum-like state the inner optimizer holds now."""
        inner_state = families.innermost(self.inner).state
        owners, tensors = [], []
        for p in params:
            state = inner_state.get(p)
            if not state:
                continue
            for key in self._momentum_keys:
                buf = state.get(key)
                if isinstance(buf, Tensor):
                    owners.append((p, key))
                    tensors.append(buf)
        return owners, tensors

    def _interpolate_momentum(self, params: list[Tensor], alpha: float, foreach: bool,
                              slot: tuple[int, str]) -> None:
        owners, live = self._momentum_tensors(params)
        slow = []
        for (p, key), buf in zip(owners, live):
            # The inner state starts at zero, so its slow copy does too; a copy, never an alias
            # of the live buffer (the paper code's aliasing turns this into plain damping).
            slow.append(self.state[p].setdefault(f"slow_{key}", torch.zeros_like(buf)))
        _tensor_ops.interpolate_and_copy_back_(slow, live, alpha, foreach, self._chunk_plans,
                                               slot=slot, fused=self.fused)

    # -- adaptive α -----------------------------------------------------------------------

    def _curvature(self, params: list[Tensor]) -> tuple[list[Tensor | None], list[float]]:
        """Â per parameter and its bias-correction divisor: the inner optimizer's second
        moment where it keeps one (Adam family, RMSprop), else the one kept here."""
        curvature: list[Tensor | None] = []
        divisors: list[float] = []
        if self._second_moment is None:
            for p in params:
                state = self.state[p]
                n = state.get("lookahead_sq_steps", 0)
                curvature.append(state.get(OWN_SQ_AVG) if n else None)
                divisors.append(1 - self.beta2**n if n else 1.0)
            return curvature, divisors
        spec = self._second_moment
        inner = families.innermost(self.inner)
        group_of = {id(p): g for g in inner.param_groups for p in g["params"]}
        for p in params:
            state = inner.state.get(p) or {}
            curvature.append(state.get(spec.key))
            divisor = 1.0
            if spec.beta_key is not None and "step" in state:
                beta = group_of[id(p)][spec.beta_key]
                if spec.beta_index is not None:
                    beta = beta[spec.beta_index]
                divisor = 1 - float(beta) ** float(state["step"])
            divisors.append(divisor if divisor > 0 else 1.0)
        return curvature, divisors

    def _update_own_sq_avg(self) -> None:
        squares, grads = [], []
        for group in self.param_groups:
            if group["lookahead_alpha"] != ADAPTIVE:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if OWN_SQ_AVG not in state:
                    state[OWN_SQ_AVG] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["lookahead_sq_steps"] = 0
                state["lookahead_sq_steps"] += 1
                squares.append(state[OWN_SQ_AVG])
                grads.append(p.grad)
        if squares:
            torch._foreach_mul_(squares, self.beta2)
            torch._foreach_addcmul_(squares, grads, grads, 1 - self.beta2)
