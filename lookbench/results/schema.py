"""The Arrow schemas of a study's two tables: one row per trial, one row per trial per epoch.

Both are plain Parquet with documented column types (README, "Results"), so pandas, polars and
DuckDB read them without lookbench. Nullable columns are null where a field does not apply
(``k`` and ``alpha`` for a baseline, ``test_acc`` for the quadratics).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

TRIAL_STATES = ("complete", "diverged", "failed")


def study_metric(task: str, recorded: Sequence[str] = ()) -> str:
    """The metric a study of ``task`` ranks by: the task's own (its class says), else the one
    most rows recorded. Rows are not trusted alone: results written by earlier versions hold
    ``test_acc`` for a trial that failed before its task was built, whatever the task."""
    from lookbench.tasks import task_class  # the registry imports no task module until asked

    try:
        return task_class(task).metric
    except ValueError:  # a task this version does not know: go by the rows
        return max(set(recorded), key=list(recorded).count) if recorded else "test_acc"


def higher_is_better(task: str, metric: str) -> bool:
    """The direction a study ranks by: its task's, where this version knows the task; else
    the metric's name says (accuracy up, anything else down)."""
    from lookbench.tasks import task_class

    try:
        return bool(task_class(task).higher_is_better)
    except ValueError:
        return metric == "test_acc"


TRIALS = pa.schema(
    [
        pa.field("trial", pa.string(), nullable=False),  # stable id: hash of the config
        pa.field("study", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("optimizer", pa.string(), nullable=False),  # lookahead, sgd, adam, ...
        pa.field("inner", pa.string()),  # what lookahead wraps; the baseline's own name else
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("momentum", pa.float64()),
        pa.field("weight_decay", pa.float64()),
        pa.field("k", pa.int64()),
        pa.field("alpha", pa.float64()),  # null for baselines and for adaptive α
        pa.field("alpha_adaptive", pa.bool_()),
        pa.field("inner_state", pa.string()),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("epochs", pa.int64(), nullable=False),
        pa.field("batch_size", pa.int64(), nullable=False),
        pa.field("schedule", pa.string(), nullable=False),
        pa.field("task_options", pa.string(), nullable=False),  # JSON
        pa.field("state", pa.string(), nullable=False),  # complete | diverged | failed
        pa.field("epochs_done", pa.int64(), nullable=False),
        pa.field("final_test_acc", pa.float64()),
        pa.field("final_test_loss", pa.float64()),
        pa.field("final_train_loss", pa.float64()),
        pa.field("best_test_acc", pa.float64()),
        pa.field("best_test_loss", pa.float64()),
        pa.field("best_epoch", pa.int64()),
        pa.field("metric", pa.string(), nullable=False),  # the task's ranking metric
        pa.field("wall_s", pa.float64(), nullable=False),
        pa.field("resumes", pa.int64(), nullable=False),  # times it continued from a checkpoint
        pa.field("device", pa.string(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("error", pa.string()),  # one line, for failed trials
        pa.field("lookbench_version", pa.string(), nullable=False),
        pa.field("torch_version", pa.string(), nullable=False),
        pa.field("python_version", pa.string(), nullable=False),
    ]
)

CURVES = pa.schema(
    [
        pa.field("trial", pa.string(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("train_loss", pa.float64()),
        pa.field("test_loss", pa.float64()),
        pa.field("test_acc", pa.float64()),
        pa.field("train_eval_loss", pa.float64()),
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("steps", pa.int64(), nullable=False),
        pa.field("wall_s", pa.float64(), nullable=False),
        pa.field("diverged", pa.bool_(), nullable=False),
    ]
)
