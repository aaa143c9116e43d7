"""The Arrow schemas of a study's two tables: one row per trial, one row per trial per epoch.

Both are plain Parquet with documented column types (README, "Results"), so pandas, polars and
DuckDB read them without lookbench. Nullable columns are null where a field does not apply
(``k`` and ``alpha`` for a baseline, ``test_acc`` for the quadratics).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from lookbench.directions import by_name
from lookbench.hparams import HYPERPARAMETERS

TRIAL_STATES = ("complete", "diverged", "failed")


def study_metric(declared: tuple[str, bool] | None, recorded: Sequence[str] = ()) -> str:
    """The metric a study ranks by: ``declared``, the task's own ((metric, higher is better),
    ``lookbench.tasks.declared_ranking``; None for a task this version does not know), else the
    one most rows recorded. Rows are not trusted alone: results written by earlier versions hold
    ``test_acc`` for a trial that failed before its task was built, whatever the task. (The
    caller asks the task: this layer reads tables and imports no task.)"""
    if declared is not None:
        return declared[0]
    return max(set(recorded), key=list(recorded).count) if recorded else "test_acc"


def higher_is_better(declared: tuple[str, bool] | None, metric: str,
                     recorded: Sequence[bool | None] = ()) -> bool:
    """The direction a study ranks by: as its rows recorded it (the task declared it when the
    trial ran); for rows of earlier versions, ``declared`` (the task's, where this version
    knows the task); else the metric's name (``lookbench.directions``: accuracy, BLEU up;
    anything else down)."""
    stored = [bool(v) for v in recorded if v is not None]
    if stored:
        return max(set(stored), key=stored.count)
    if declared is not None:
        return declared[1]
    return by_name(metric) is True


def _hyperparameter_fields() -> list[pa.Field]:
    """The hyperparameter columns, from ``lookbench.hparams`` (null where a field does not
    apply; a number's words, α's ``adaptive``, as boolean columns ``<name>_<word>``)."""
    types = {"float": pa.float64(), "int": pa.int64(), "choice": pa.string()}
    fields = []
    for h in HYPERPARAMETERS:
        fields.append(pa.field(h.name, types[h.kind], nullable=h.name != "lr"))
        fields.extend(pa.field(c, pa.bool_()) for c in h.columns()[1:])
    return fields


# Per-epoch metrics every task has columns for; any other a task reports gets its own.
FIXED_METRICS = ("test_loss", "test_acc")

CONFIG = "config"  # the trials table's configuration id (config_id)


TRIALS = pa.schema(
    [
        pa.field("trial", pa.string(), nullable=False),  # stable id: hash of the config
        # the configuration without its seed (config_id): what a script groups seeds by;
        # never null as lookbench reads it (computed for rows written before the column)
        pa.field(CONFIG, pa.string()),
        pa.field("study", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("optimizer", pa.string(), nullable=False),  # lookahead, sgd, adam, ...
        pa.field("inner", pa.string()),  # what lookahead wraps; the baseline's own name else
        *_hyperparameter_fields(),
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
        # best over the epochs in the metric's own direction (lookbench.directions)
        pa.field("best_test_acc", pa.float64()),
        pa.field("best_test_loss", pa.float64()),
        pa.field("best_epoch", pa.int64()),  # where the ranking metric was best
        # at best_epoch (null in tables written before these columns)
        pa.field("test_acc_at_best", pa.float64()),
        pa.field("test_loss_at_best", pa.float64()),
        pa.field("metric", pa.string(), nullable=False),  # the task's ranking metric
        pa.field("higher_is_better", pa.bool_()),  # its direction, as the task declared it
        pa.field("wall_s", pa.float64(), nullable=False),
        pa.field("resumes", pa.int64(), nullable=False),  # times it continued from a checkpoint
        pa.field("device", pa.string(), nullable=False),
        # Trials trained together with it as one population (1: alone; null in tables written
        # before populations, which ran alone): its wall_s is then its share of their time.
        pa.field("population", pa.int64()),
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

CURVE_COLUMNS = frozenset(CURVES.names)


def with_metrics(schema: pa.Schema, rows: Iterable[dict]) -> pa.Schema:
    """``schema`` plus a float column for each further metric the rows hold (a task's own
    metrics: ``final_<m>``/``best_<m>``/``<m>_at_best`` in the trials table, ``<m>`` in the
    curves table)."""
    known = set(schema.names)
    names = dict.fromkeys(k for row in rows for k in row if k not in known)
    return _append(schema, [pa.field(n, pa.float64()) for n in names])


def _append(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    for f in fields:
        if f.name not in schema.names:
            schema = schema.append(f)
    return schema


def check_metric_name(name: str) -> str | None:
    """Why ``name`` cannot be a per-epoch metric's column (``None`` if it can)."""
    if not name or not name.replace("_", "").isalnum() or not name.isascii():
        return f"metric {name!r}: use letters, digits and '_'"
    if name in CURVE_COLUMNS and name not in FIXED_METRICS:
        return f"metric {name!r} would overwrite the curves table's own column of that name"
    return None


# -- the configuration id ---------------------------------------------------------------------

# The columns besides the hyperparameters that define a configuration: everything a trial's id
# hashes but its seed (and the flags that do not change its results: ``deterministic`` is on in
# every study, ``trace_fast`` only adds evaluations).
CONFIG_FIELDS = ("task", "optimizer", "inner", "epochs", "batch_size", "schedule",
                 "task_options")


def config_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`config_id` hashes, from a trials-table row (a dict, an Arrow row, a pandas
    row): the task, the optimizer and what it wraps, the budget (epochs, batch size,
    schedule, task options) and every hyperparameter that is set, each as its column's type
    (a float as a float, so ``lr`` 1 and 1.0 are one configuration; α's ``adaptive`` as the
    word). Unset hyperparameters are left out, so a hyperparameter added to the table later
    changes no id; an unset one that means a value for Lookahead (``inner_state``:
    ``maintain``) takes that value, as :func:`lookbench.study.config.hyperparameter_columns`
    writes it, so rows of versions before that column get the same id."""
    def get(name: str) -> Any:
        v = row.get(name) if hasattr(row, "get") else row[name]
        if v is not None and hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()  # a numpy scalar (a pandas row)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    optimizer = get("optimizer")
    fields: dict[str, Any] = {"task": get("task"), "optimizer": optimizer,
                              "inner": get("inner") or optimizer}
    for name in ("epochs", "batch_size"):
        v = get(name)
        fields[name] = None if v is None else int(v)
    fields["schedule"] = get("schedule")
    options = get("task_options")
    try:
        fields["task_options"] = json.loads(options) if options else {}
    except (TypeError, ValueError):
        fields["task_options"] = options
    for h in HYPERPARAMETERS:
        v = get(h.name)
        for word in h.words if h.numeric else ():
            if get(f"{h.name}_{word}") in (True, 1):  # (a missing flag is None)
                v = word
        if v is None and h.unset is not None and h.role == "lookahead" == optimizer:
            v = h.unset
        if v is None:
            continue
        if isinstance(v, str):
            fields[h.name] = v
        else:
            fields[h.name] = int(v) if h.kind == "int" else float(v)
    return fields


def config_id(row: Mapping[str, Any]) -> str:
    """The id of a row's configuration without its seed (the ``config`` column): the first
    16 hex digits of the SHA-256 of :func:`config_fields` as canonical JSON. The same for
    every seed of a configuration and on every machine, population or version (it is
    computed from the row's own columns, never from how the trial ran); different for any
    two configurations, also of two studies that differ in budget or task options. A hash,
    not a readable label: learning rates drawn at random differ in their last digits, and
    the id must join the trials table, the report's ``-configs.csv`` and other studies'
    tables exactly; the row's own columns say what it is."""
    canonical = json.dumps(config_fields(row), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_source_columns() -> list[str]:
    """The trials-table columns :func:`config_fields` reads."""
    return [*CONFIG_FIELDS, *(c for h in HYPERPARAMETERS for c in h.columns())]


def with_config(table: pa.Table) -> pa.Table:
    """``table`` (rows of the trials table) with its ``config`` column filled where it is
    null or missing: rows of tables written before the column get it on read, and rows
    written without it get it when written. Rows that have one keep it."""
    present = CONFIG in table.column_names
    if present and table.column(CONFIG).null_count == 0:
        return table
    names = [c for c in config_source_columns() if c in table.column_names]
    rows = table.select(names).to_pylist()
    known = table.column(CONFIG).to_pylist() if present else [None] * table.num_rows
    memo: dict[tuple, str] = {}
    ids = []
    for row, given in zip(rows, known):
        if given is None:
            key = tuple(row.values())
            given = memo.get(key)
            if given is None:
                given = memo[key] = config_id(row)
        ids.append(given)
    column = pa.array(ids, pa.string())
    if present:
        i = table.column_names.index(CONFIG)
        return table.set_column(i, table.schema.field(i), column)
    return table.append_column(TRIALS.field(CONFIG), column)
