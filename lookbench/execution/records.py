"""Rows of the trials and curves tables, built from a trial's config and epoch records."""

from __future__ import annotations

import json
import math
import platform
import socket
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from lookbench._version import version
from lookbench.directions import resolve
from lookbench.execution.trial import EpochRecord
from lookbench.results.schema import CONFIG, FIXED_METRICS, config_id
from lookbench.study.config import TrialConfig, hyperparameter_columns


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def trial_state(records: list[EpochRecord], error: str | None) -> str:
    """``failed`` (an error), ``diverged`` (the last epoch diverged) or ``complete``."""
    if error is not None:
        return "failed"
    if records and records[-1].diverged:
        return "diverged"
    return "complete"


def metric_series(records: list[EpochRecord], name: str) -> list[tuple[float, int]]:
    """(value, epoch) of metric ``name`` in the epochs that did not diverge."""
    out = []
    for r in records:
        if not r.diverged:
            v = _finite(r.metrics().get(name))
            if v is not None:
                out.append((v, r.epoch))
    return out


def _best(series: list[tuple[float, int]], up: bool | None) -> tuple[float, int] | None:
    """The best (value, epoch) of ``series`` in direction ``up`` (the earliest epoch of a
    tie, as early stopping keeps it); ``None`` for no values or no direction."""
    if not series or up is None:
        return None
    return max(series, key=lambda ve: (ve[0] if up else -ve[0], -ve[1]))


def trial_row(*, study: str, trial: str, config: TrialConfig, metric: str,
              higher_is_better: bool, batch_size: int, schedule: str,
              records: list[EpochRecord], device: str, resumes: int,
              error: str | None = None, population: int = 1,
              directions: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """One row of the trials table: its configuration, outcome, and for every metric ``m``
    its final value, its best over the epochs in its own direction (``best_<m>``; null where
    neither ``directions``, the task's declaration, nor the name tells it), and its value at
    the epoch where the ranking ``metric`` was best (``<m>_at_best``: what early stopping on
    that metric reports, e.g. test perplexity at the best validation perplexity); and its
    configuration's id without the seed (``config``: ``lookbench.results.schema.config_id``)."""
    import torch

    last = records[-1] if records else None
    names = dict.fromkeys([*FIXED_METRICS, metric, *(k for r in records for k in r.extra)])
    ranked = _best(metric_series(records, metric), higher_is_better)
    best_epoch = ranked[1] if ranked else None
    at_best = next((r.metrics() for r in records if r.epoch == best_epoch), {})
    summary: dict[str, Any] = {}
    for name in names:
        up = resolve(name, directions, metric=metric, higher_is_better=higher_is_better)
        best = _best(metric_series(records, name), up)
        summary[f"final_{name}"] = _finite(last.metrics().get(name)) if last else None
        summary[f"best_{name}"] = best[0] if best else None
        summary[f"{name}_at_best"] = _finite(at_best.get(name))
    row = {
        "trial": trial,
        "study": study,
        "task": config.task,
        "optimizer": config.optimizer,
        "inner": config.inner or config.optimizer,  # what a wrapper wraps; else itself
        **hyperparameter_columns(config),
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": batch_size,
        "schedule": schedule,
        "task_options": json.dumps(config.task_options, sort_keys=True),
        "state": trial_state(records, error),
        "epochs_done": len(records),
        "final_train_loss": _finite(last.train_loss) if last else None,
        **summary,
        "best_epoch": best_epoch,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "wall_s": last.wall_s if last else 0.0,
        "resumes": resumes,
        "device": device,
        "population": population,
        "host": socket.gethostname(),
        "finished_at": datetime.now(timezone.utc),
        "error": error,
        "lookbench_version": version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version() or sys.version.split()[0],
    }
    row[CONFIG] = config_id(row)  # (what a script groups a configuration's seeds by)
    return row


def curve_rows(trial: str, records: list[EpochRecord]) -> list[dict[str, Any]]:
    """The trial's rows of the curves table, one per epoch."""
    return [
        {
            "trial": trial,
            "epoch": r.epoch,
            "train_loss": _finite(r.train_loss),
            "test_loss": _finite(r.test_loss),
            "test_acc": _finite(r.test_acc),
            "train_eval_loss": _finite(r.train_eval_loss),
            "lr": r.lr,
            "steps": r.steps,
            "wall_s": r.wall_s,
            "diverged": r.diverged,
            **{k: _finite(v) for k, v in r.extra.items()},
        }
        for r in records
    ]
