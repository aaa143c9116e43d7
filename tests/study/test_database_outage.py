"""A database outage is one warning when it starts and one when it ends, however many calls and
threads wait for it; Optuna's and SQLAlchemy's own logs (SQL text, tracebacks) stay silent."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import sqlalchemy.exc

from lookbench.coordination import storage
from lookbench.coordination.storage import RetryingStorage, retry


def refused() -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises while PostgreSQL is down (a restart, a network blip)."""
    return sqlalchemy.exc.OperationalError(
        "SELECT trials.trial_id FROM trials WHERE trials.study_id = %(study_id)s", {},
        Exception('connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
                  "\tIs the server running on that host and accepting TCP/IP connections?"))


class Database:
    """A stand-in for a storage whose every call fails while the database is down."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def get_all_studies(self) -> list:
        if self.down.is_set():
            raise refused()
        return []


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(storage, "RETRY_FIRST_S", 0.02)
    monkeypatch.setattr(storage, "RETRY_MAX_S", 0.05)
    if hasattr(storage, "_Outage"):  # (no outage left over by another test)
        monkeypatch.setattr(storage, "outage", storage._Outage())


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_an_outage_that_several_threads_wait_out_is_one_warning_and_one_when_it_ends(capsys):
    db = Database()
    wrapped = RetryingStorage(db, url="postgresql://lb@db/study")
    db.down.set()
    threads = [threading.Thread(target=wrapped.get_all_studies) for _ in range(5)]
    for t in threads:  # the worker, its heartbeat, the progress view, ...
        t.start()
    time.sleep(0.5)
    db.down.clear()
    for t in threads:
        t.join(10)
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2, lines
    assert lines[0].startswith("warning: the database postgresql://lb@db/study is unreachable; "
                               "retrying for up to 300 s (connection to server at")
    assert lines[1].startswith("warning: the database postgresql://lb@db/study is back (after")


def test_calls_one_after_another_in_one_outage_warn_once(capsys):
    db = Database()
    wrapped = RetryingStorage(db, url="postgresql://lb@db/study")
    db.down.set()
    done = []
    caller = threading.Thread(target=lambda: done.append(wrapped.get_all_studies()))
    caller.start()
    time.sleep(0.2)
    # Another call (the study lock's, say) starts while the outage goes on: no second warning.
    other = threading.Thread(target=lambda: retry(db.get_all_studies, "the database X"))
    other.start()
    time.sleep(0.2)
    db.down.clear()
    caller.join(10)
    other.join(10)
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2 and "unreachable" in lines[0] and "is back" in lines[1], lines
    # A second outage later is a new pair.
    db.down.set()
    threading.Timer(0.2, db.down.clear).start()
    wrapped.get_all_studies()
    assert len(warnings_in(capsys.readouterr().err)) == 2


def test_optuna_and_sqlalchemy_logs_are_silenced_once_a_storage_is_opened(tmp_path):
    storage.open_storage(None, tmp_path)
    for name in ("optuna.storages._rdb.storage", "sqlalchemy.pool.impl.QueuePool",
                 "sqlalchemy.engine.Engine", "alembic.runtime.migration"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.WARNING), name
        assert not logger.isEnabledFor(logging.ERROR), name  # (the pool's tracebacks)


@pytest.mark.slow
def test_a_database_outage_during_a_run_is_two_warning_lines(tmp_path):
    """The real thing: PostgreSQL stopped for a few seconds while two workers train (about a
    minute on two cores)."""
    import os
    import subprocess
    import sys

    from lookbench.results import StudyResults
    from tests.study.test_distributed import postgres_server

    with postgres_server() as pg:
        url = pg.new_database()
        args = ["run", "digits", "--lr", "0.01,0.03,0.1,0.3", "--k", "5", "--alpha", "0.5",
                "--epochs", "15", "--seeds", "2", "--devices", "cpu", "--workers", "2",
                "--population", "1", "--out", str(tmp_path), "--storage", url]
        proc = subprocess.Popen([sys.executable, "-m", "lookbench", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "LOOKBENCH_COST_SECONDS": "0"})
        deadline = time.monotonic() + 300
        study = tmp_path / "digits-sgd"
        while time.monotonic() < deadline and len(StudyResults(study).recorded()) < 2:
            time.sleep(0.2)
        pg.ctl("-m", "fast", "stop")
        time.sleep(6)
        pg.start()
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    lines = warnings_in(err)
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0] or "waiting for the database" in lines[0]
    assert "is back" in lines[1]
    assert "SQL" not in err and "Traceback" not in err


def test_a_call_that_gives_up_ends_its_outage_so_the_next_one_warns_again(capsys):
    db = Database()
    wrapped = RetryingStorage(db, url="postgresql://lb@db/study")
    db.down.set()
    for _ in range(2):  # two commands in one process (a notebook; a test suite's CliRunner)
        with pytest.raises(sqlalchemy.exc.OperationalError):
            retry(wrapped.inner.get_all_studies, "the database db", 0.1)
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2 and all("unreachable" in line for line in lines), lines
    assert storage.outage.since is None


class _Engine:
    """A stand-in for SQLAlchemy's engine on PostgreSQL: unreachable for the first
    ``down_s`` seconds, then a session whose advisory lock another process holds a moment
    more (its first try fails, as under ordinary contention)."""

    class dialect:  # noqa: N801 (SQLAlchemy's attribute)
        name = "postgresql"

    class url:  # noqa: N801
        @staticmethod
        def render_as_string(hide_password: bool = True) -> str:
            return "postgresql://lb@db/study"

    def __init__(self, down_s: float) -> None:
        self.up_at = time.monotonic() + down_s

    def connect(self):
        if time.monotonic() < self.up_at:
            raise refused()

        tries = []

        class Conn:
            def execute(self, *args, **kwargs):
                tries.append(1)

                class Result:
                    @staticmethod
                    def scalar():
                        return len(tries) > 1
                return Result()

            def rollback(self): ...
            def commit(self): ...
            def close(self): ...

        return Conn()


def test_an_outage_before_the_study_lock_is_not_reported_as_waiting_for_the_lock(
        tmp_path, capsys):
    """A database down for longer than the lock's warning delay, then a lock held a moment
    more: the outage's two lines, and no claim that another process has held the lock that long
    (CI once saw that third line: the lock's wait was timed from before the outage)."""
    class Storage:
        engine = _Engine(down_s=0.6)

    with storage.study_lock(Storage(), tmp_path, "s", timeout_s=5, warn_after_s=0.3):
        pass
    err = capsys.readouterr().err
    assert "unreachable" in err and "is back" in err
    assert "advisory lock" not in err, err
