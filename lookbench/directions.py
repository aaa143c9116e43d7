"""Which way each metric is better: higher (``True``), lower (``False``), or unknown (``None``).

A trial's ``best_<m>`` is the best of metric ``m`` over its epochs, so it needs ``m``'s
direction: the minimum of an accuracy or a BLEU score is no "best". Torch-free, so readers of
results (and ``lookbench.results``) can use it without importing any task.

A metric's direction is, in this order: the ranking metric's, as its task declares it
(``Task.higher_is_better``); the task's own declaration (``Task.directions``); the direction of
the same name without ``fast_`` (an evaluation on the fast weights); the names every built-in
task reports (:data:`KNOWN`); else the name's words (:func:`by_name`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The per-epoch metrics of the built-in tasks (tests/study/test_directions.py checks each
# task's names are here or follow the rule).
KNOWN: dict[str, bool] = {
    "test_acc": True, "test_acc_top5": True, "test_bleu": True,
    "test_loss": False, "valid_loss": False, "train_loss": False, "train_eval_loss": False,
    "test_perplexity": False, "valid_perplexity": False, "train_perplexity": False,
}

FAST_PREFIX = "fast_"  # a metric measured on the fast weights: as the same without it

# Words of a metric's name ('_'-separated) that say its direction.
_UP = re.compile(r"acc\d*|accuracy|bleu")  # acc, acc1, acc5, accuracy, bleu
_DOWN = frozenset({"loss", "perplexity", "ppl", "nll", "error", "err", "mse", "rmse", "mae"})

# How study.json writes a direction (Optuna's words).
WORDS = {True: "max", False: "min"}


def by_name(name: str) -> bool | None:
    """``name``'s direction from :data:`KNOWN`, else its words (``…acc…``, ``accuracy``,
    ``bleu``: higher; ``loss``, ``perplexity``, ``error``, ``mse``, ...: lower); ``None`` where
    they say nothing, or say both."""
    if name in KNOWN:
        return KNOWN[name]
    words = name.lower().split("_")
    up = any(_UP.fullmatch(w) for w in words)
    down = any(w in _DOWN for w in words)
    return None if up == down else up


def resolve(name: str, declared: Mapping[str, bool] | None = None, *,
            metric: str | None = None, higher_is_better: bool | None = None) -> bool | None:
    """The direction of metric ``name`` for a task that ranks by ``metric`` in direction
    ``higher_is_better`` and declares ``declared`` (its ``directions``); ``None``: unknown."""
    declared = declared or {}
    if metric is not None and higher_is_better is not None and name == metric:
        return bool(higher_is_better)
    if name in declared:
        return bool(declared[name])
    if name.startswith(FAST_PREFIX) and len(name) > len(FAST_PREFIX):
        return resolve(name[len(FAST_PREFIX):], declared, metric=metric,
                       higher_is_better=higher_is_better)
    return by_name(name)


def to_words(directions: Mapping[str, bool]) -> dict[str, str]:
    """``{metric: "max" | "min"}``, as study.json stores directions."""
    return {name: WORDS[bool(up)] for name, up in sorted(directions.items())}


def from_words(stored: Any) -> dict[str, bool]:
    """The directions study.json stores (``"max"``/``"min"`` or booleans); entries it cannot
    read, and a file without any (written before directions were stored), give nothing."""
    if not isinstance(stored, Mapping):
        return {}
    out = {}
    for name, value in stored.items():
        if isinstance(value, bool):
            out[str(name)] = value
        elif isinstance(value, str) and value.lower() in ("max", "maximize", "min", "minimize"):
            out[str(name)] = value.lower().startswith("max")
    return out
