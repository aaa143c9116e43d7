"""``lookbench status``: where a study stands, from its Parquet tables and its queue."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd
from rich import box
from rich.table import Table

from lookbench.coordination.storage import (
    JOURNAL_FILE,
    StorageUnavailable,
    open_storage,
)
from lookbench.hparams import columns, format_config
from lookbench.results import (
    ResultsUnreadable,
    StudyResults,
    higher_is_better,
    study_metric,
)
from lookbench.tasks import declared_ranking
from lookbench.units import Units, is_fraction

CONFIG_COLUMNS = columns()  # a configuration's key: its hyperparameter columns


class StatusError(Exception):
    """The study cannot be found or read; one line for the user."""


def find_studies(out: Path) -> list[str]:
    """Names of the studies under ``out`` (folders with results or a journal)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir()
                  if p.is_dir() and ((p / "trials").is_dir() or (p / JOURNAL_FILE).exists()))


def _queue_counts(study_dir: Path, storage_url: str | None
                  ) -> tuple[dict, dict, str | None, int]:
    """Planned and running trials per optimizer, from the study's storage (if readable), and
    the study's task and epochs per trial.

    Read-only: a status must not change the study it reports on, and must work where it cannot
    write (so no ``TrialQueue``, whose ``create_study(load_if_exists=True)`` appends to the
    journal); the queue's studies are read through the storage directly.
    """
    from optuna.trial import TrialState

    from lookbench.coordination.queue import (
        CONFIG_ATTR,
        GRACE_S,
        HEARTBEAT_ATTR,
        ID_ATTR,
        OWNER_ATTR,
        owner_alive,
    )
    from lookbench.study.definition import stored_spec
    from lookbench.study.spec import planned_runs

    if storage_url is None and not (study_dir / JOURNAL_FILE).exists():
        return {}, {}, None, 0
    try:
        storage = open_storage(storage_url, study_dir, read_only=True)
        spec = stored_spec(storage, study_dir.name, check_inner=False)
        if spec is None:
            return {}, {}, None, 0
        running: dict[str, int] = defaultdict(int)
        planned = planned_runs(spec)
        for opt in spec.optimizers:
            try:
                study_id = storage.get_study_id_from_name(f"{spec.study_name}.{opt}")
            except KeyError:  # not created yet
                continue
            if spec.max_seeds is not None:  # it adds seeds by stages: what is queued so far
                ids = {t.user_attrs.get(ID_ATTR) for t in storage.get_all_trials(
                    study_id, deepcopy=False)}
                planned[opt] = max(planned.get(opt, 0), len(ids - {None}))
            for t in storage.get_all_trials(study_id, deepcopy=False,
                                            states=(TrialState.RUNNING,)):
                started = t.datetime_start.timestamp() if t.datetime_start else None
                if CONFIG_ATTR in t.user_attrs and owner_alive(
                        t.system_attrs.get(OWNER_ATTR), t.system_attrs.get(HEARTBEAT_ATTR),
                        started, GRACE_S):
                    running[opt] += 1
    except StorageUnavailable as e:
        raise StatusError(str(e)) from None
    return planned, running, spec.task, spec.epochs or 0


def status_table(study_dir: Path, storage_url: str | None = None) -> Table:
    """A table with one row per optimizer of the study."""
    if not study_dir.is_dir() and storage_url is None:
        raise StatusError(f"no study at {study_dir}")
    planned, running, _, epochs = _queue_counts(study_dir, storage_url)
    if not planned and not study_dir.is_dir():
        raise StatusError(f"no study {study_dir.name!r} in the storage or at {study_dir}")
    try:
        trials = StudyResults(study_dir).trials().to_pandas()
    except ResultsUnreadable as e:
        raise StatusError(str(e)) from None
    metric, maximize = _ranking(study_dir, trials)
    best_of = _best_configurations(trials, metric, maximize)
    units = _units(trials, metric, maximize)
    counts = trials.groupby(["optimizer", "state"]).size() if len(trials) else None
    left = _time_left(trials, planned, running, epochs)
    table = Table(title=f"study {study_dir.name}{left}", box=box.SIMPLE_HEAD,
                  caption=f"done/planned trials, running, diverged, failed; best: final {metric} "
                          f"of the best configuration (mean ± sd over its n seeds, none of which "
                          f"diverged or failed)")
    for col in ("optimizer", "done", "run", "div", "fail", "best", "configuration"):
        table.add_column(col, justify="left" if col in ("optimizer", "configuration")
                         else "right", no_wrap=col != "configuration")
    optimizers = set(trials["optimizer"]) | set(planned) | set(running)
    for opt in sorted(optimizers, key=lambda o: (o != "lookahead", o)):
        c = {s: int(counts.get((opt, s), 0)) if counts is not None else 0
             for s in ("complete", "diverged", "failed")}
        best, config = "-", "-"
        row = best_of.get(opt)
        if row is not None:
            n = int(row["seeds"])
            # one seed has no spread to show: no "±0"
            best = f"{units.score(row['score'])}±{units.magnitude(row['std'])} n={n}" \
                if n > 1 else f"{units.score(row['score'])} n=1"
            config = format_config({c: row.get(c) for c in CONFIG_COLUMNS})
        table.add_row(opt, f"{sum(c.values())}/{planned.get(opt, '?')}",
                      str(running.get(opt, 0)), str(c["diverged"]), str(c["failed"]), best,
                      config)
    return table


def _time_left(trials: pd.DataFrame, planned: dict, running: dict, epochs: int) -> str:
    """``: about 3 min left`` for the title of an unfinished study, at the pace its trials ran
    lately (nothing for a finished study, or before two trials finished)."""
    from lookbench.progress.time_left import estimate

    done = trials.groupby("optimizer").size() if len(trials) else {}
    remaining = {opt: max(0, n - int(done.get(opt, 0))) * epochs for opt, n in planned.items()
                 if isinstance(n, int)}
    if not epochs or sum(remaining.values()) == 0:
        return ""
    left = estimate(trials, remaining, parallel=None)
    if left is None:
        return ": time left known once two trials have finished"
    if not any(running.values()):
        return f": not running ({left} at its last pace)"
    return f": {left}"


def _units(trials: pd.DataFrame, metric: str, maximize: bool) -> Units:
    """The report's units (``lookbench.units``): an accuracy in % (its spread in percentage
    points), a loss in its own units."""
    values = trials[f"final_{metric}"].dropna() if f"final_{metric}" in trials else []
    return Units(fraction=is_fraction(values, maximize))


def _ranking(study_dir: Path, trials: pd.DataFrame) -> tuple[str, bool]:
    """The metric and direction: as the study's definition file says, else as its rows do."""
    from lookbench.study.definition import read_file

    stored = read_file(study_dir)
    if "metric" in stored and "higher_is_better" in stored:
        return str(stored["metric"]), bool(stored["higher_is_better"])
    if trials.empty:
        return "test_acc", True
    task = str(trials["task"].iloc[0])
    declared = declared_ranking(task)
    metric = study_metric(declared, trials["metric"].astype(str).tolist())
    recorded = [None if pd.isna(v) else bool(v) for v in trials.get("higher_is_better", [])]
    return metric, higher_is_better(declared, metric, recorded)


def _best_configurations(trials: pd.DataFrame, metric: str, maximize: bool
                         ) -> dict[str, pd.Series]:
    """Each optimizer's best configuration, scored as the report scores (``config_scores``:
    the mean over seeds), among those none of whose seeds diverged or failed."""
    from lookbench.comparison.metrics import config_scores
    from lookbench.comparison.rules import Rules

    if trials.empty or f"final_{metric}" not in trials:
        return {}
    scores = config_scores(trials, metric, Rules(maximize))
    clean = scores[scores["diverged"] == 0]
    out = {}
    for opt, group in clean.groupby("optimizer"):
        out[str(opt)] = group.loc[group["score"].idxmax() if maximize
                                  else group["score"].idxmin()]
    return out
