"""What Optuna's own tools (optuna-dashboard, ``trials_dataframe``) show of a lookbench study:
the objective named after the task's metric instead of "Objective 0", and a population
member's duration its own share of the population's time (``member_wall_s``) instead of the
whole population's, on the journal file and on an RDB storage alike."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from lookbench.coordination.queue import MEMBER_WALL_ATTR, Outcome, TrialQueue
from lookbench.coordination.storage import open_storage
from lookbench.execution.records import curve_rows, trial_row
from lookbench.execution.trial import EpochRecord
from lookbench.study.config import TrialConfig
from lookbench.study.spec import lookbench_id

CONFIGS = [TrialConfig(task="digits", optimizer="sgd", lr=lr, momentum=0.9, epochs=1)
           for lr in (0.03, 0.1, 0.3)]
PLAN = {lookbench_id(c): c for c in CONFIGS}


@contextlib.contextmanager
def _storage(kind: str, tmp_path: Path) -> Iterator[tuple[str | None, object]]:
    """(URL, storage): the study folder's journal, SQLite, or a throwaway PostgreSQL."""
    if kind == "journal":
        yield None, open_storage(None, tmp_path)
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
        yield url, open_storage(url, tmp_path)
    else:
        from tests.study.test_distributed import postgres_server

        with postgres_server() as server:
            url = server.new_database()
            yield url, open_storage(url, tmp_path)


KINDS = ["journal", "sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


def _outcome(claimed, wall_s: float, population: int) -> Outcome:
    records = [EpochRecord(epoch=1, train_loss=1.0, test_loss=0.5, test_acc=0.9,
                           train_eval_loss=None, lr=0.1, steps=10, wall_s=wall_s)]
    row = trial_row(study="s", trial=claimed.lookbench_id, config=claimed.config,
                    metric="test_acc", higher_is_better=True, batch_size=32,
                    schedule="constant", records=records, device="cpu", resumes=0,
                    population=population)
    return Outcome(claimed, "complete", row["final_test_acc"], 1, row,
                   curve_rows(claimed.lookbench_id, records))


def _reader(url: str | None, tmp_path: Path):
    """The storage as another process (optuna-dashboard) reads it."""
    if url is None:
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
    return url


@pytest.mark.parametrize("kind", KINDS)
def test_the_objective_is_named_after_the_tasks_metric(kind, tmp_path):
    with _storage(kind, tmp_path) as (url, storage):
        TrialQueue(storage, "s", ["lookahead", "sgd"], "maximize", tmp_path, metric="test_acc")
        for name in ("s.lookahead", "s.sgd"):
            study = optuna.load_study(study_name=name, storage=_reader(url, tmp_path))
            assert study.metric_names == ["test_acc"]
        if url is None:  # named once: reopening the study (every worker does) names nothing
            journal = tmp_path / "optuna.journal"
            TrialQueue(storage, "s", ["lookahead", "sgd"], "maximize", tmp_path,
                       metric="test_acc")
            assert journal.read_text().count("study:metric_names") == 2  # one per study


@pytest.mark.parametrize("kind", KINDS)
def test_a_population_members_duration_is_its_own_share(kind, tmp_path):
    """Three members of a population and a trial alone: each member's Optuna duration is its
    own wall_s (its share), however long the population took (here 0.4 s, slept); a trial
    alone keeps its real duration and gets no attribute."""
    with _storage(kind, tmp_path) as (url, storage):
        queue = TrialQueue(storage, "s", ["sgd"], "maximize", tmp_path, metric="test_acc")
        queue.replan(PLAN, set())
        members = [queue.claim() for _ in range(2)]
        alone = queue.claim()
        time.sleep(0.4)  # the population trains
        shares = [0.05, 0.125]
        why = queue.finish_many(
            [*(_outcome(c, s, population=3) for c, s in zip(members, shares)),
             _outcome(alone, 0.01, population=1)], lambda mine: None)
        assert why == [None, None, None]
        study = optuna.load_study(study_name="s.sgd", storage=_reader(url, tmp_path))
        by_id = {t._trial_id: t for t in study.trials}
        for claimed, share in zip(members, shares):
            t = by_id[claimed.storage_id]
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.9
            assert t.user_attrs[MEMBER_WALL_ATTR] == pytest.approx(share)
            assert t.duration.total_seconds() == pytest.approx(share, abs=2e-3)
        t = by_id[alone.storage_id]
        assert MEMBER_WALL_ATTR not in t.user_attrs
        assert t.duration.total_seconds() >= 0.4
