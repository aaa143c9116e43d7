"""Lookahead and the baseline optimizers it is compared with, behind one factory.

``Lookahead(inner, k=5, alpha=0.5, inner_state="maintain")`` wraps any optimizer instance;
``build(name, params, **hparams)`` builds any of ``available()`` by name; and
``evaluation_weights(opt)`` / ``use_evaluation_weights(opt)`` evaluate every optimizer on the
weights it should be judged by (slow weights, averages, or the weights themselves).
"""

from lookbench.optim.averaging import AveragedOptimizer, NTAveragedOptimizer
from lookbench.optim.factory import (
    available,
    build,
    hyperparameters,
    register_optimizer,
)
from lookbench.optim.lookahead import INNER_STATE_POLICIES, Lookahead, adaptive_alpha
from lookbench.optim.wrapper import (
    WrappedOptimizer,
    evaluation_weights,
    fast_weights,
    use_evaluation_weights,
)

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
    "register_optimizer",
    "use_evaluation_weights",
]
