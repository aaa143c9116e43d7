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
from lookbench.study.config import TrialConfig
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


def trial_row(*, study: str, trial: str, config: TrialConfig, metric: str, batch_size: int,
              schedule: str, records: list[EpochRecord], device: str, resumes: int,
              error: str | None = None) -> dict[str, Any]:
    """One row of the trials table."""
    import torch

    good = [r for r in records if not r.diverged]
    accs = [(r.test_acc, r.epoch) for r in good if r.test_acc is not None]
    losses = [(r.test_loss, r.epoch) for r in good if _finite(r.test_loss) is not None]
    best_epoch = None
    if metric == "test_acc" and accs:
        best_epoch = max(accs)[1]
    elif losses:
        best_epoch = min(losses)[1]
    last = records[-1] if records else None
    alpha = config.alpha
    return {
        "trial": trial,
        "study": study,
        "task": config.task,
        "optimizer": config.optimizer,
        "inner": config.inner or config.optimizer,  # what a wrapper wraps; else itself
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "k": config.k,
        "alpha": alpha if isinstance(alpha, float) else None,
        "alpha_adaptive": alpha == "adaptive",
        "inner_state": config.inner_state or ("maintain" if config.optimizer == "lookahead"
                                              else None),
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": batch_size,
        "schedule": schedule,
        "task_options": json.dumps(config.task_options, sort_keys=True),
        "state": trial_state(records, error),
        "epochs_done": len(records),
        "final_test_acc": _finite(last.test_acc) if last else None,
        "final_test_loss": _finite(last.test_loss) if last else None,
        "final_train_loss": _finite(last.train_loss) if last else None,
        "best_test_acc": max(a for a, _ in accs) if accs else None,
        "best_test_loss": min(v for v, _ in losses) if losses else None,
        "best_epoch": best_epoch,
        "metric": metric,
        "wall_s": last.wall_s if last else 0.0,
        "resumes": resumes,
        "device": device,
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
        }
        for r in records
    ]
