"""Lookahead and the baseline optimizers it is compared with, behind one factory.

``Lookahead(inner, k=5, alpha=0.5, inner_state="maintain")`` wraps any optimizer instance;
``build(name, params, **hparams)`` builds any of ``available()`` by name; and
``evaluation_weights(opt)`` / ``use_evaluation_weights(opt)`` evaluate every optimizer on the
weights it should be judged by (slow weights, averages, or the weights themselves).

May import: the base modules only.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and its module, imported on first use (PEP 562): the factory's names and
# defaults are read to check a study before torch is imported (lookbench._lazy says why).
_WHERE = {
    "AveragedOptimizer": "averaging", "NTAveragedOptimizer": "averaging",
    "available": "factory", "build": "factory", "hyperparameters": "factory",
    "plain": "factory", "register_optimizer": "factory", "wraps": "factory",
    "INNER_STATE_POLICIES": "lookahead", "Lookahead": "lookahead", "adaptive_alpha": "lookahead",
    "WrappedOptimizer": "wrapper", "evaluation_weights": "wrapper", "fast_weights": "wrapper",
    "use_evaluation_weights": "wrapper",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lookbench.optim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lookbench.optim.{_WHERE[name]}"), name)


__all__ = [
    "INNER_STATE_POLICIES",
    "AveragedOptimizer",
    "Lookahead",
    "NTAveragedOptimizer",
    "WrappedOptimizer",
    "adaptive_alpha",
    "available",
    "build",
    "evaluation_weights",
    "fast_weights",
    "hyperparameters",
    "plain",
    "register_optimizer",
    "use_evaluation_weights",
    "wraps",
]
