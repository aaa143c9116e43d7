"""Weight-averaging baselines: Polyak (uniform) averaging, EMA, SWA and NT-ASGD.

They are the methods the paper compares Lookahead with (Figure 5, Appendix D.3). Each runs an
inner optimizer unchanged and keeps an average of its iterates, which is what gets evaluated,
so a trial runner treats them exactly like Lookahead: step, then evaluate inside
``evaluation_weights()``. The averaging itself is ``torch.optim.swa_utils``'s own multi-tensor
update functions (the ones ``AveragedModel`` uses), applied to the optimizer's parameter list.
NT-ASGD (:class:`NTAveragedOptimizer`) starts its average when the validation metric, which
the trial runner reports after each epoch (``observe_validation``), stops improving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.swa_utils import get_ema_multi_avg_fn, get_swa_multi_avg_fn

from lookbench.optim.wrapper import WrappedOptimizer

AVG = "avg_param"
Averaging = Literal["uniform", "ema"]


class AveragedOptimizer(WrappedOptimizer):
    """Run ``inner`` and keep an average of its iterates for evaluation.

    Args:
        inner: the optimizer whose iterates are averaged.
        averaging: ``"uniform"`` (the running mean of all averaged iterates: Polyak–Ruppert
            averaging, or SWA when it starts late) or ``"ema"`` (exponential moving average).
        decay: the EMA decay (``"ema"`` only).
        start: number of inner steps before averaging begins (0: from the first step on;
            SWA starts late in training, e.g. at 75% of the steps).
        every: average every this many steps after ``start`` (SWA averages once per epoch).

    The average starts as a copy of the iterate at the first averaging step, as in
    ``torch.optim.swa_utils.AveragedModel``. The counters live in the param groups
    (``average_step``, ``average_count``) and the average in ``self.state``, so both are in
    ``state_dict()``.
    """

    eval_key = AVG

    def __init__(
        self,
        inner: Optimizer,
        averaging: Averaging = "uniform",
        *,
        decay: float = 0.999,
        start: int = 0,
        every: int = 1,
    ) -> None:
        if averaging not in ("uniform", "ema"):
            raise ValueError(f"averaging must be 'uniform' or 'ema', got {averaging!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an integer >= 0 (steps), got {start!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (steps), got {every!r}")
        self.averaging = averaging
        self.decay = float(decay)
        self.start = start
        self.every = every
        super().__init__(inner, {"average_step": 0, "average_count": 0, **self._own_defaults()})

    def _own_defaults(self) -> dict[str, Any]:
        """Further per-group counters of a subclass (immutable values: groups share them)."""
        return {}

    def _start(self, group: dict[str, Any]) -> int | None:
        """The inner step after which ``group`` is averaged; ``None``: not yet known."""
        return self.start

    def _config_attrs(self) -> tuple[str, ...]:
        return ("averaging", "decay", "start", "every")

    def _average_fn(self) -> Callable[[list[Tensor], list[Tensor], int], None]:
        if self.averaging == "ema":
            return get_ema_multi_avg_fn(self.decay)
        return get_swa_multi_avg_fn()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step, then fold the new iterate into the average when it is due."""
        self._refuse_while_swapped("step()")
        loss = self.inner.step() if closure is None else self.inner.step(closure)
        with torch.no_grad():
            for group in self.param_groups:
                group["average_step"] += 1
                start = self._start(group)
                since = None if start is None else group["average_step"] - start
                if since is not None and since > 0 and since % self.every == 0:
                    self._fold_in(group)
        return loss

    def _fold_in(self, group: dict[str, Any]) -> None:
        params = [p.detach() for p in group["params"]]
        if not params:
            return
        if group["average_count"] == 0:
            for p in group["params"]:
                self.state[p][AVG] = p.detach().clone(memory_format=torch.preserve_format)
        else:
            averages = [self.state[p][AVG] for p in group["params"]]
            self._average_fn()(averages, params, group["average_count"])
        group["average_count"] += 1


class NTAveragedOptimizer(AveragedOptimizer):
    """NT-ASGD (Merity et al. 2018, awd-lstm-lm's ``main.py``): ``inner`` runs unchanged, and
    a uniform average of its iterates starts at the first step after the non-monotone trigger.

    After each epoch the trial runner calls :meth:`observe_validation` with the validation
    metric (lower is better). The trigger fires when a value is worse than the best of all
    values but the last ``patience`` before it, once more than ``patience`` were seen (Merity's
    ``len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono])``, nonmono 5),
    and then never again. Before it, evaluation uses the weights themselves; after it, the
    average of the iterates since (torch's ``ASGD(t0=0, lambd=0)``, which Merity switches to,
    overwrites its first averaged iterate with the second: one iterate of thousands, not
    copied).

    The learning rate is left to the runner's schedule at the trigger: Merity's switch builds
    ASGD at the initial rate, which in his default run (no ``--when``) is the rate SGD already
    had; under the paper's plateau halving a reset would undo halvings the SGD and Lookahead
    runs keep. The values seen and the trigger's step live in the param groups
    (``validations``, ``average_start``), so a checkpoint resumes identically.
    """

    def __init__(self, inner: Optimizer, *, patience: int = 5) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0 (evaluations), got {patience!r}")
        self.patience = patience
        super().__init__(inner, "uniform")

    def _config_attrs(self) -> tuple[str, ...]:
        return (*super()._config_attrs(), "patience")

    def _own_defaults(self) -> dict[str, Any]:
        return {"average_start": None, "validations": ()}

    def _start(self, group: dict[str, Any]) -> int | None:
        return group["average_start"]

    @property
    def triggered(self) -> bool:
        """Whether the average has started (or starts at the next step)."""
        return any(g["average_start"] is not None for g in self.param_groups)

    def observe_validation(self, value: float) -> bool:
        """Take one epoch's validation value (lower is better); ``True`` if the trigger fires
        now. Values after the trigger are ignored, as Merity's script stops collecting them."""
        if self.triggered:
            return False
        value = float(value)
        fired = False
        for group in self.param_groups:
            seen = group["validations"]
            older = seen[: len(seen) - self.patience]
            if len(seen) > self.patience and value > min(older):
                group["average_start"] = group["average_step"]
                fired = True
            group["validations"] = (*seen, value)  # a new tuple: never shared between groups
        return fired
