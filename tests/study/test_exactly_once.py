"""Exactly once across machines that write their rows into folders of their own (issue 22,
item 5): a trial's outcome reaches the storage before its rows are written anywhere, so no
ordering of kills, takeovers and full disks leaves a trial's rows in two folders.

Two "machines" here are two ``TrialQueue`` objects on one storage (what a shared database is
to them), each with its own study folder; the worker of machine A is made to look like a
process on another host whose heartbeat stopped, or like a process of this host that died.
The same with real processes on PostgreSQL is in ``test_two_machines_with_a_kill_at_a_batch``.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination import queue as queue_module
from lookbench.coordination.queue import (
    HEARTBEAT_ATTR,
    ID_ATTR,
    OWNER_ATTR,
    RECORDED_IN_ATTR,
    SUPERSEDED_ATTR,
    Outcome,
    TrialQueue,
)
from lookbench.coordination.storage import open_storage
from lookbench.execution.records import curve_rows, trial_row
from lookbench.execution.trial import EpochRecord
from lookbench.results import StudyResults
from lookbench.study.config import TrialConfig
from lookbench.study.spec import lookbench_id
from tests.study.test_distributed import (
    GRID,
    PLANNED,
    finish,
    postgres_server,
    results_of,
    start,
    union,
)

CONFIG = TrialConfig(task="digits", optimizer="sgd", lr=0.1, momentum=0.9, epochs=2)
TID = lookbench_id(CONFIG)
PLAN = {TID: CONFIG}


def machines(tmp_path: Path) -> tuple[TrialQueue, TrialQueue]:
    """Machines A and B: one storage (a journal standing for the shared database, not their
    own: ``local=False``), a study folder each; the trial planned."""
    storage = open_storage(None, tmp_path / "db")
    a, b = (TrialQueue(storage, "s", ["sgd"], "maximize", tmp_path / name, grace_s=60.0)
            for name in ("a", "b"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a.replan(PLAN, set())
    return a, b


def outcome(claimed) -> Outcome:
    records = [EpochRecord(epoch=e, train_loss=1.0 / e, test_loss=1.0 / e, test_acc=0.5 + e / 10,
                           train_eval_loss=None, lr=0.1, steps=10 * e, wall_s=0.1 * e)
               for e in (1, 2)]
    row = trial_row(study="s", trial=claimed.lookbench_id, config=claimed.config,
                    metric="test_acc", higher_is_better=True, batch_size=32,
                    schedule="constant", records=records, device="cpu", resumes=0)
    return Outcome(claimed, "complete", row["final_test_acc"], 2, row,
                   curve_rows(claimed.lookbench_id, records))


def write(folder: Path):
    return lambda mine: StudyResults(folder).write_trials([(o.row, o.curves) for o in mine])


def on_another_host_gone_quiet(q: TrialQueue, storage_id: int) -> None:
    """The trial's worker: a process on another host whose last heartbeat is long past."""
    q.storage.set_trial_system_attr(storage_id, OWNER_ATTR,
                                    {"host": "machine-a", "pid": 1, "start": None})
    q.storage.set_trial_system_attr(storage_id, HEARTBEAT_ATTR, time.time() - 3600)


def dead_here(q: TrialQueue, storage_id: int) -> None:
    """The trial's worker: a process of this host that has exited (killed)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    owner = dict(q.storage.get_trial(storage_id).system_attrs[OWNER_ATTR])
    owner["pid"] = gone.pid
    q.storage.set_trial_system_attr(storage_id, OWNER_ATTR, owner)


def trials_of(q: TrialQueue) -> list:
    return q.storage.get_all_trials(q.studies["sgd"]._study_id)


def test_a_takeover_while_the_rows_are_written_leaves_them_in_one_folder(tmp_path):
    """Machine A is presumed dead (its heartbeat is old) just as it records its trial; B looks
    for stale trials while A writes the rows. Before, A wrote its rows and then found its trial
    taken over, so B ran it again: the trial ended in both folders."""
    a, b = machines(tmp_path)
    claimed = a.claim()
    on_another_host_gone_quiet(a, claimed.storage_id)
    taken: list[int] = []

    def record(mine):
        taken.append(b.replan(PLAN, StudyResults(tmp_path / "b").recorded()))
        write(tmp_path / "a")(mine)

    why = a.finish_many([outcome(claimed)], record)
    in_a = TID in StudyResults(tmp_path / "a").recorded()
    assert taken == [0] and in_a and why == [None]  # B took nothing over; A recorded it
    assert b.claim() is None and TID in b.finished_ids(set())  # done, for B too
    (t,) = trials_of(a)
    assert t.state == TrialState.COMPLETE
    assert t.system_attrs[RECORDED_IN_ATTR].endswith(str((tmp_path / "a").resolve()))


def test_a_trial_taken_over_before_its_worker_records_it_writes_no_rows(tmp_path):
    a, b = machines(tmp_path)
    claimed = a.claim()
    on_another_host_gone_quiet(a, claimed.storage_id)
    assert b.replan(PLAN, set()) == 1  # B takes it over: A was silent too long
    written = []
    why = a.finish_many([outcome(claimed)], lambda mine: written.extend(mine))
    assert why == ["taken over by another worker while this one was presumed dead"]
    assert written == [] and not StudyResults(tmp_path / "a").recorded()


@pytest.mark.parametrize("rows", ["written", "not written"])
def test_a_kill_between_the_commit_and_the_finish(tmp_path, monkeypatch, rows):
    """Killed after the outcome reached the storage: before the rows were written, or after.
    Other machines count the trial as done either way and never run it; A's own folder puts
    it right: finished from the commit when the rows are there, else run again there."""
    a, b = machines(tmp_path)
    claimed = a.claim()

    class Killed(BaseException):
        pass

    def record(mine):
        if rows == "written":
            write(tmp_path / "a")(mine)
        raise Killed

    monkeypatch.setattr(TrialQueue, "_take_back", lambda self, outcomes: None)  # (killed)
    with pytest.raises(Killed):
        a.finish_many([outcome(claimed)], record)
    monkeypatch.undo()
    dead_here(a, claimed.storage_id)
    assert b.replan(PLAN, set()) == 0 and b.claim() is None
    assert TID in b.finished_ids(set())  # done, in A's folder
    again = TrialQueue(a.storage, "s", ["sgd"], "maximize", tmp_path / "a")  # A's next run
    recorded = StudyResults(tmp_path / "a").recorded()
    added = again.replan(PLAN, recorded)
    (first, *rest) = trials_of(a)
    if rows == "written":
        assert added == 0 and first.state == TrialState.COMPLETE and not rest
    else:
        assert added == 1 and first.state == TrialState.FAIL
        assert SUPERSEDED_ATTR in first.user_attrs and rest[0].state == TrialState.WAITING
        assert again.claim() is not None  # A runs it again; B still does not
        assert b.claim() is None


def test_a_row_whose_outcome_never_reached_the_storage_is_recorded_from_the_row(tmp_path):
    """A run of an earlier version wrote the rows, then was killed before the outcome went to
    the storage. The next run here records the outcome from the row, at once (before, it
    only skipped the trial, and every other machine ran it again)."""
    a, b = machines(tmp_path)
    claimed = a.claim()
    write(tmp_path / "a")([outcome(claimed)])  # ... and killed
    dead_here(a, claimed.storage_id)
    recorded = StudyResults(tmp_path / "a").recorded()
    assert a.replan(PLAN, recorded) == 0
    assert b.replan(PLAN, set()) == 0 and b.claim() is None
    done = [t for t in trials_of(a) if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].user_attrs[ID_ATTR] == TID
    assert done[0].values == [outcome(claimed).value]


def test_a_claimed_trial_whose_row_is_here_takes_its_outcome_from_the_row(tmp_path):
    a, b = machines(tmp_path)
    claimed = a.claim()
    write(tmp_path / "a")([outcome(claimed)])  # its row, from a run whose outcome was lost
    assert a.is_duplicate(claimed, StudyResults(tmp_path / "a").recorded()) == "already recorded"
    a.abandon(claimed, "already recorded")
    assert a.storage.get_trial(claimed.storage_id).state == TrialState.COMPLETE
    assert b.replan(PLAN, set()) == 0 and TID in b.finished_ids(set())


def test_rows_that_cannot_be_written_give_the_trial_back_to_every_machine(tmp_path):
    a, b = machines(tmp_path)
    claimed = a.claim()

    def full(mine):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a" / "trials"))

    with pytest.raises(OSError):
        a.finish_many([outcome(claimed)], full)
    assert TID not in b.finished_ids(set())
    assert b.replan(PLAN, set()) == 1 and b.claim() is not None  # another machine runs it


def test_of_two_trials_of_one_id_running_on_two_machines_the_first_recorded_wins(tmp_path):
    """Two trials of one id running at once (claims racing an id planned twice): the one that
    commits second is discarded, its rows never written."""
    a, b = machines(tmp_path)
    first = a.claim()
    b._enqueue(b.studies["sgd"], TID, CONFIG, dict(a.storage.get_trial(first.storage_id)
                                                   .distributions))
    second = b.claim()
    assert second is not None and second.storage_id != first.storage_id
    assert a.finish_many([outcome(first)], write(tmp_path / "a")) == [None]
    written = []
    assert b.finish_many([outcome(second)], lambda mine: written.extend(mine)) == [
        f"already recorded as trial {a.storage.get_trial(first.storage_id).number}"]
    assert written == []
    assert SUPERSEDED_ATTR in b.storage.get_trial(second.storage_id).user_attrs


@pytest.mark.parametrize("value", ["-5", "nan", "0", "inf", "59"])
def test_stale_after_is_refused_below_four_heartbeats(tmp_path, value):
    result = CliRunner().invoke(app, ["run", "digits", "--stale-after", value, "--lr", "0.1",
                                      "--epochs", "1", "--devices", "cpu",
                                      "--out", str(tmp_path)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --stale-after") and "at least 60" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing created
    assert queue_module.check_stale_after(60.0) is None


# -- real processes on PostgreSQL -------------------------------------------------------------

# `lookbench run` with its first batch write (trials recorded together: a population's members
# that finished in the same epoch) followed, or preceded, by a SIGKILL of the whole run.
KILLED_AT_A_BATCH = """
import os, signal, sys
from lookbench.results import StudyResults
when, real = sys.argv.pop(1), StudyResults.write_trials
def write_trials(self, trials):
    if len(trials) > 1 and when == "before":
        os.killpg(0, signal.SIGKILL)
    real(self, trials)
    if len(trials) > 1 and when == "after":
        os.killpg(0, signal.SIGKILL)
StudyResults.write_trials = write_trials
from lookbench.cli import app
app(prog_name="lookbench", args=sys.argv[1:])
"""


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after", "before"])
def test_two_machines_with_a_kill_at_a_batch_write_record_each_trial_once(postgres, tmp_path,
                                                                         when):
    """Machines A and B share a database, each with its own --out. A is killed right after
    (or right before) its first batch of rows; B finishes the study, then A runs again. Every
    trial is in exactly one folder, once, with the results of an uninterrupted run. Before,
    killed right after the batch, A's rows had no outcome in the database, B ran those trials
    again, and they were in both folders."""
    reference = tmp_path / "reference"
    finish(start(*GRID, "--out", str(reference), cwd=tmp_path))
    url = postgres.new_database()
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    a = subprocess.Popen([sys.executable, "-c", KILLED_AT_A_BATCH, when, "run", *GRID,
                          "--storage", url, "--out", str(a_out)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    b = start(*GRID, "--storage", url, "--out", str(b_out), cwd=tmp_path)
    _, a_err = a.communicate(timeout=900)
    assert a.returncode == -signal.SIGKILL, a_err  # it was killed at a batch, as planned
    errors = finish(b)
    errors += finish(start(*GRID, "--storage", url, "--out", str(a_out), cwd=tmp_path))
    in_a = StudyResults(a_out / "shared").recorded()
    in_b = StudyResults(b_out / "shared").recorded()
    assert not in_a & in_b and in_a  # no trial in both folders
    # The merged folder as pandas reads it (no lookbench precedence): one row per trial.
    merged = pd.concat([pd.read_parquet(o / "shared" / "trials") for o in (a_out, b_out)],
                       ignore_index=True)
    assert len(merged) == PLANNED and merged["trial"].is_unique
    pd.testing.assert_frame_equal(results_of(union(a_out, b_out)),
                                  results_of(union(reference)))
    assert "Traceback" not in errors
