"""A complete ``torch.optim.Optimizer`` that wraps another one.

Lookahead and the averaging baselines (Polyak, EMA, SWA) share one shape: run the inner
optimizer's step, then do something with an extra copy of the weights. Getting that shape right
is where the popular Lookahead implementations fail (see ``ANCHORS.md``): they skip
``Optimizer.__init__`` (missing hooks, broken pickling), keep a stale copy of ``param_groups``
(schedulers stop working after a load), or leave their extra weights out of the checkpoint.

This base class:

* calls ``Optimizer.__init__`` for real, so step/state-dict hooks, ``defaults`` and
  ``__getstate__``/``__setstate__`` behave as on any torch optimizer;
* shares the inner optimizer's ``param_groups`` *list*, so any ``lr_scheduler`` or manual change
  of ``group["lr"]`` drives the inner step, also after ``load_state_dict``;
* keeps its own per-parameter tensors in ``self.state`` under the standard index keys, and the
  inner optimizer's state beside them in the same ``state_dict()``;
* swaps the evaluation weights (slow weights, averages) into the model and back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer

from lookbench.optim import _tensor_ops

INNER_STATE_KEY = "inner_state"


def check_inner(inner: object, wrapper: str) -> Optimizer:
    """Return ``inner`` if it is an optimizer instance, else raise a ``TypeError`` saying why."""
    if isinstance(inner, type) and issubclass(inner, Optimizer):
        raise TypeError(
            f"{wrapper} wraps an optimizer instance, got the class {inner.__name__}; build it "
            f"first, e.g. {wrapper}({inner.__name__}(model.parameters(), lr=0.1))"
        )
    if not isinstance(inner, Optimizer):
        raise TypeError(
            f"{wrapper} wraps a torch.optim.Optimizer instance, got {type(inner).__name__}"
        )
    return inner


class WrappedOptimizer(Optimizer):
    """Base for optimizers that run ``inner.step()`` and keep extra weights in ``self.state``.

    Subclasses set ``eval_key`` (the state key of the tensors evaluation should run on) and
    implement ``step``.
    """

    eval_key: ClassVar[str]

    def __init__(self, inner: Optimizer, defaults: dict[str, Any]) -> None:
        check_inner(inner, type(self).__name__)
        self.inner = inner
        self._swapped = False
        # Optimizer.__init__ adopts the inner's group dicts (filling in our defaults) through
        # add_param_group below; then we share the inner's list itself, not a copy.
        super().__init__(inner.param_groups, {**inner.defaults, **defaults})
        self.param_groups = inner.param_groups

    # -- param groups ---------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer (which validates it) and give it our defaults."""
        if any(param_group is g for g in self.inner.param_groups):
            super().add_param_group(param_group)  # adopting the inner's groups in __init__
            self._check_group(param_group)
            return
        self._check_group({**self.defaults, **param_group})  # before the inner takes it
        self.inner.add_param_group(param_group)
        group = self.inner.param_groups[-1]
        for name, default in self.defaults.items():
            group.setdefault(name, default)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` if the group's wrapper-specific settings are invalid."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Delegate to the inner optimizer, which may zero gradients its own way."""
        self.inner.zero_grad(set_to_none=set_to_none)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The standard ``{"state", "param_groups"}`` dict plus the inner optimizer's state.

        ``state`` holds this wrapper's per-parameter tensors under the usual integer ids, so it
        loads into a freshly built model and optimizer whatever order they are restored in.
        """
        self._refuse_while_swapped("state_dict()")
        state_dict = super().state_dict()
        state_dict[INNER_STATE_KEY] = self.inner.state_dict()["state"]
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict made by :meth:`state_dict` into this wrapper and its inner optimizer."""
        self._refuse_while_swapped("load_state_dict()")
        if INNER_STATE_KEY not in state_dict:
            raise ValueError(
                f"not a {type(self).__name__} state dict: it has no {INNER_STATE_KEY!r} entry "
                f"(was it saved from the bare inner optimizer?)"
            )
        state_dict = dict(state_dict)
        inner_state = state_dict.pop(INNER_STATE_KEY)
        self.inner.load_state_dict(
            {"state": inner_state, "param_groups": state_dict["param_groups"]}
        )
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict installs fresh group dicts; share them again.
        self.inner.param_groups = self.param_groups

    def __getstate__(self) -> dict[str, Any]:
        self._refuse_while_swapped("pickling")
        state = super().__getstate__()
        state.update({name: self.__dict__[name] for name in self._config_attrs()})
        state["inner"] = self.inner
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._swapped = False
        # pickle and deepcopy keep the shared list shared (one memo); re-share to be sure.
        self.param_groups = self.inner.param_groups

    def _config_attrs(self) -> tuple[str, ...]:
        """Constructor settings to carry through pickling (``__getstate__``)."""
        return ()

    # -- evaluation weights ---------------------------------------------------------------

    def _eval_pairs(self, key: str | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params, evals = [], []
        for group in self.param_groups:
            for p in group["params"]:
                tensor = self.state.get(p, {}).get(key or self.eval_key)
                if tensor is not None:
                    params.append(p)
                    evals.append(tensor)
        return params, evals

    def evaluation_weights(self) -> AbstractContextManager[None]:
        """Within the block the model holds the weights to evaluate; afterwards, its own again.

        The swap is in place and exact (values are exchanged, not recomputed), so training
        continues bit-identically after the block. Stepping, checkpointing or pickling inside
        the block raises, since the model does not hold the training weights there.
        """
        return self._swapped_in(self.eval_key, "evaluation_weights()")

    def fast_weights(self) -> AbstractContextManager[None]:
        """A context in which the model holds the fast weights, the inner optimizer's own
        iterate (here: what it holds already; Lookahead: the end of its last inner loop)."""
        return nullcontext()

    @contextmanager
    def _swapped_in(self, key: str, what: str) -> Iterator[None]:
        """Swap the tensors kept under ``key`` into the model for the block (see
        ``evaluation_weights``)."""
        self._refuse_while_swapped(what)
        params, evals = self._eval_pairs(key)
        with torch.no_grad():
            _tensor_ops.swap_(params, evals)
        self._swapped = True
        try:
            yield
        finally:
            with torch.no_grad():
                _tensor_ops.swap_(params, evals)
            self._swapped = False

    def use_evaluation_weights(self) -> None:
        """Leave the model holding the evaluation weights (call once, at the end of training)."""
        self._refuse_while_swapped("use_evaluation_weights()")
        params, evals = self._eval_pairs()
        with torch.no_grad():
            _tensor_ops.copy_(params, evals, _tensor_ops.use_foreach(params, None))

    def _refuse_while_swapped(self, what: str) -> None:
        if self._swapped:
            raise RuntimeError(
                f"{what} called inside {type(self).__name__}.evaluation_weights(): the model "
                f"holds the evaluation weights there, not the training weights"
            )


def evaluation_weights(optimizer: Optimizer) -> AbstractContextManager[None]:
    """A context in which the model holds the weights ``optimizer`` should be evaluated on.

    The slow weights for Lookahead, the average for Polyak/EMA/SWA, and the parameters
    themselves (a no-op) for a plain optimizer, so one trial runner handles every optimizer.
    """
    if isinstance(optimizer, WrappedOptimizer):
        return optimizer.evaluation_weights()
    return nullcontext()


def fast_weights(optimizer: Optimizer) -> AbstractContextManager[None] | None:
    """A context in which the model holds ``optimizer``'s fast weights (the paper's Figure 10
    sets them against the slow ones), or ``None`` for a plain optimizer, whose fast weights are
    the evaluated ones."""
    if isinstance(optimizer, WrappedOptimizer):
        return optimizer.fast_weights()
    return None


def use_evaluation_weights(optimizer: Optimizer) -> None:
    """Leave the model holding the evaluation weights (a no-op for a plain optimizer)."""
    if isinstance(optimizer, WrappedOptimizer):
        optimizer.use_evaluation_weights()
