"""Rows of the trials and curves tables, built from a trial's config and epoch records."""

from __future__ import annotations

import json
import math
import platform
import socket
import sys
from datetime import datetime, timezone
from typing import Any

from lookbench import __version__
from lookbench.results.schema import FIXED_METRICS
from lookbench.study.config import TrialConfig, hyperparameter_columns
from lookbench.study.trial import EpochRecord


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


def trial_row(*, study: str, trial: str, config: TrialConfig, metric: str,
              higher_is_better: bool, batch_size: int, schedule: str,
              records: list[EpochRecord], device: str, resumes: int,
              error: str | None = None, population: int = 1) -> dict[str, Any]:
    """One row of the trials table: its configuration, outcome, and for every metric the
    final value and the best over the epochs (the best epoch by the ranking ``metric``)."""
    import torch

    last = records[-1] if records else None
    names = dict.fromkeys([*FIXED_METRICS, metric, *(k for r in records for k in r.extra)])
    summary: dict[str, Any] = {}
    best_epoch = None
    for name in names:
        series = metric_series(records, name)
        up = higher_is_better if name == metric else name == "test_acc"
        best = (max if up else min)(series) if series else None
        if name == metric and best is not None:
            best_epoch = best[1]
        summary[f"final_{name}"] = _finite(last.metrics().get(name)) if last else None
        summary[f"best_{name}"] = best[0] if best else None
    return {
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
        "lookbench_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version() or sys.version.split()[0],
    }


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
