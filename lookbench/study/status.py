"""``lookbench status``: where a study stands, from its Parquet tables and its queue."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from rich import box
from rich.table import Table

from lookbench.hparams import columns, format_config
from lookbench.results import ResultsUnreadable, StudyResults, higher_is_better, study_metric
from lookbench.study.storage import JOURNAL_FILE, StorageUnavailable, open_storage


CONFIG_COLUMNS = columns()  # a configuration's key: its hyperparameter columns


class StatusError(Exception):
    """The study cannot be found or read; one line for the user."""


def find_studies(out: Path) -> list[str]:
    """Names of the studies under ``out`` (folders with results or a journal)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir()
                  if p.is_dir() and ((p / "trials").is_dir() or (p / JOURNAL_FILE).exists()))


def _queue_counts(study_dir: Path, storage_url: str | None) -> tuple[dict, dict, str | None]:
    """Planned and running trials per optimizer, from the study's storage (if readable)."""
    from lookbench.study.queue import TrialQueue
    from lookbench.study.spec import planned_runs
    from lookbench.study.definition import stored_spec

    if storage_url is None and not (study_dir / JOURNAL_FILE).exists():
        return {}, {}, None
    try:
        storage = open_storage(storage_url, study_dir)
    except StorageUnavailable as e:
        raise StatusError(str(e)) from None
    spec = stored_spec(storage, study_dir.name)
    if spec is None:
        return {}, {}, None
    planned = planned_runs(spec)
    queue = TrialQueue(storage, spec.study_name, spec.optimizers, "maximize", study_dir)
    running: dict[str, int] = defaultdict(int)
    for config, _ in queue.running():
        running[config.optimizer] += 1
    return planned, running, spec.task


def status_table(study_dir: Path, storage_url: str | None = None) -> Table:
    """A table with one row per optimizer of the study."""
    if not study_dir.is_dir() and storage_url is None:
        raise StatusError(f"no study at {study_dir}")
    planned, running, _ = _queue_counts(study_dir, storage_url)
    if not planned and not study_dir.is_dir():
        raise StatusError(f"no study {study_dir.name!r} in the storage or at {study_dir}")
    try:
        rows = StudyResults(study_dir).trials().to_pylist()
    except ResultsUnreadable as e:
        raise StatusError(str(e)) from None
    metric = study_metric(rows[0]["task"], [r["metric"] for r in rows]) if rows else "test_acc"
    maximize = higher_is_better(rows[0]["task"], metric) if rows else True
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    finals: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    spoiled: set[tuple] = set()  # configurations with a diverged or failed seed
    for r in rows:
        opt = r["optimizer"]
        counts[opt][r["state"]] += 1
        value = r["final_" + metric]
        key = tuple(r.get(c) for c in CONFIG_COLUMNS)
        if r["state"] == "complete" and value is not None:
            finals[opt][key].append(value)
        else:  # as in the report: a configuration that lost a seed is not a best one
            spoiled.add((opt, key))
    for opt, key in spoiled:
        finals[opt].pop(key, None)
    table = Table(title=f"study {study_dir.name}", box=box.SIMPLE_HEAD,
                  caption=f"done/planned trials, running, diverged, failed; best: final {metric} "
                          f"of the best configuration (mean±sd over its n seeds, none of which "
                          f"diverged or failed)")
    for col in ("optimizer", "done", "run", "div", "fail", "best", "configuration"):
        table.add_column(col, justify="left" if col in ("optimizer", "configuration")
                         else "right", no_wrap=col != "configuration")
    for opt in sorted(set(counts) | set(planned) | set(running),
                      key=lambda o: (o != "lookahead", o)):
        c = counts[opt]
        done = c["complete"] + c["diverged"] + c["failed"]
        best, config = "-", "-"
        if finals[opt]:
            means = {key: sum(v) / len(v) for key, v in finals[opt].items()}
            key = (max if maximize else min)(means, key=means.get)
            vals = finals[opt][key]
            if len(vals) > 1:
                sd = math.sqrt(sum((v - means[key]) ** 2 for v in vals) / (len(vals) - 1))
                best = f"{means[key]:.4f}±{sd:.4f} n={len(vals)}"
            else:  # one seed has no spread to show: no "±0.0000"
                best = f"{means[key]:.4f} n=1"
            config = format_config(dict(zip(CONFIG_COLUMNS, key)))
        table.add_row(opt, f"{done}/{planned.get(opt, '?')}", str(running.get(opt, 0)),
                      str(c["diverged"]), str(c["failed"]), best, config)
    return table
