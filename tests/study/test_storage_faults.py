"""The study's storage under faults: a journal record cut off by a kill or a full disk, a
read-only study folder, a database that is down when a worker starts, a lock left by a killed
process, and a study lock held for too long.

Kills are real (SIGKILL of a forked child in the middle of its appends); the database is a
throwaway PostgreSQL server with password authentication, started in a temporary folder as
tests/study/test_distributed.py starts its own.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination import journal as journal_mod
from lookbench.coordination import storage as storage_mod
from lookbench.coordination.queue import TrialQueue
from lookbench.coordination.storage import (
    JOURNAL_FILE,
    LOCK_FILE,
    LockTimeout,
    ReadOnlyStorage,
    StorageUnavailable,
    open_storage,
    study_lock,
)
from tests.study.test_distributed import Postgres, _free_port, postgres_server

runner = CliRunner()
TINY = ["digits", "--lr", "0.1,1000", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--seeds", "2", "--devices", "cpu", "--workers", "1"]


# -- helpers ------------------------------------------------------------------------------------


def make_study(study_dir: Path, trials: int = 3, name: str = "s.lookahead") -> None:
    """A journal with one study and ``trials`` finished trials."""
    study = optuna.create_study(storage=open_storage(None, study_dir), study_name=name,
                                load_if_exists=True)
    for i in range(trials):
        trial = study.ask()
        study.tell(trial, float(i))


def n_trials(study_dir: Path, name: str = "s.lookahead") -> int:
    """Trials as a fresh process would read them (a new storage replays the whole journal)."""
    return len(optuna.load_study(study_name=name,
                                 storage=open_storage(None, study_dir)).trials)


def add_trial(study_dir: Path, name: str = "s.lookahead") -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(None, study_dir))
    trial = study.ask()
    study.tell(trial, 1.0)


def assert_every_line_is_a_record(journal: Path) -> int:
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    lines = data.splitlines()
    for line in lines:
        json.loads(line)
    return len(lines)


def digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) and, for files, its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


class Background:
    """``call`` run in a daemon thread; ``result(timeout)`` is (finished, its result or error)."""

    def __init__(self, call) -> None:
        self.out: list[object] = []
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.out.append(call())
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            self.out.append(e)

    def result(self, timeout: float) -> tuple[bool, object]:
        self.thread.join(timeout)
        return not self.thread.is_alive(), self.out[0] if self.out else None


def in_thread(call, timeout: float) -> tuple[bool, object]:
    """Run ``call`` in a daemon thread; (finished within ``timeout``, its result or error)."""
    return Background(call).result(timeout)


def fork(child) -> int:
    """Run ``child()`` in a forked process that never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    return pid


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


# -- 1. a record cut off at the end of the journal ----------------------------------------------


@pytest.mark.parametrize("tail", [
    b'{"op_',  # killed in the middle of an append
    b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_start":null}',  # all but its newline
    b"\0" * 4096,  # a crash after the file grew but before its data reached the disk
])
def test_a_record_cut_off_at_the_end_is_set_aside_and_the_study_goes_on(tmp_path, caplog, tail):
    make_study(tmp_path, 3)
    journal = tmp_path / JOURNAL_FILE
    complete = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(tail)
    storage = open_storage(None, tmp_path)
    # One warning line, naming what was set aside and where.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    sides = list(tmp_path.glob(f"{JOURNAL_FILE}.torn-*"))
    assert len(sides) == 1 and sides[0].read_bytes() == tail
    assert str(sides[0]) in one_line(warnings[0]) and f"{len(tail)} bytes" in warnings[0]
    assert journal.read_bytes() == complete  # cut back to the last complete record
    # The queue works on it (TrialQueue's create_study appends), and so does a fresh reader.
    TrialQueue(storage, "s", ["lookahead", "sgd"], "maximize", tmp_path)
    study = optuna.load_study(study_name="s.lookahead", storage=storage)
    assert len(study.trials) == 3
    trial = study.ask()
    study.tell(trial, 9.0)
    assert n_trials(tmp_path) == 4
    assert_every_line_is_a_record(journal)


def test_a_journal_that_is_one_cut_off_record_starts_empty(tmp_path):
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(b'{"op_code":0,"wor')  # killed during the very first append
    make_study(tmp_path, 2)
    assert n_trials(tmp_path) == 2
    assert len(list(tmp_path.glob(f"{JOURNAL_FILE}.torn-*"))) == 1


def test_a_record_cut_off_by_another_process_while_we_run_is_never_appended_after(tmp_path):
    """A writer killed mid-append after this process opened the journal: this process's next
    append sets the fragment aside first (it would otherwise glue its record onto it)."""
    make_study(tmp_path, 1)
    study = optuna.load_study(study_name="s.lookahead", storage=open_storage(None, tmp_path))
    with open(tmp_path / JOURNAL_FILE, "ab") as f:
        f.write(b'{"op_code":9,"worker_id":"dead","trial_id":0,"system_a')
    trial = study.ask()
    study.tell(trial, 2.0)
    assert len(study.trials) == 2
    assert n_trials(tmp_path) == 2
    assert_every_line_is_a_record(tmp_path / JOURNAL_FILE)


def test_a_journal_corrupt_in_the_middle_is_still_one_line_and_left_as_it_is(tmp_path):
    make_study(tmp_path, 3)
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2] + [b'{"op_code":4,"wor\n'] + lines[2:])
    journal.write_bytes(damaged)
    for read_only in (False, True):
        with pytest.raises(StorageUnavailable) as e:
            open_storage(None, tmp_path, read_only=read_only)
        assert "is unreadable" in one_line(str(e.value)) and "move it aside" in str(e.value)
        assert journal.read_bytes() == damaged  # nothing in the middle is dropped
    assert not list(tmp_path.glob(f"{JOURNAL_FILE}.torn-*"))


def test_an_unreadable_last_record_is_refused_not_appended_after(tmp_path):
    """Optuna skips an unreadable last line and appends after it, which makes the journal
    unreadable from there on: refuse it at once instead (it is not a cut-off record)."""
    make_study(tmp_path, 2)
    journal = tmp_path / JOURNAL_FILE
    with open(journal, "ab") as f:
        f.write(b"garbage\n")
    damaged = journal.read_bytes()
    with pytest.raises(StorageUnavailable) as e:
        open_storage(None, tmp_path)
    assert "is unreadable" in one_line(str(e.value))
    assert journal.read_bytes() == damaged


@pytest.mark.parametrize("room", [1, 40, 100, 333])
def test_a_disk_that_fills_up_mid_append_costs_only_the_cut_off_record(tmp_path, room):
    """A real partial write: the writer's file size limit (RLIMIT_FSIZE, which fails a write
    as a full disk does) is reached ``room`` bytes into its appends. The writer itself goes on
    once there is space again, and so does a fresh process; every finished trial is kept."""
    import resource

    make_study(tmp_path, 1)
    journal = tmp_path / JOURNAL_FILE
    read, write = os.pipe()

    def child() -> None:
        study = optuna.load_study(study_name="s.lookahead", storage=open_storage(None, tmp_path))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a dead writer
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (journal.stat().st_size + room, hard))
        done = 0
        try:
            while True:
                study.tell(study.ask(), 1.0)
                done += 1
        except OSError:  # EFBIG, as ENOSPC would be
            pass
        torn = not journal.read_bytes().endswith(b"\n")
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
        study.tell(study.ask(), 2.0)
        os.write(write, json.dumps([done + 1, torn]).encode())

    pid = fork(child)
    os.close(write)
    with os.fdopen(read) as f:
        done, torn = json.loads(f.read())
    assert os.waitpid(pid, 0)[1] == 0
    assert torn  # the write really was cut off
    sides = list(tmp_path.glob(f"{JOURNAL_FILE}.torn-*"))
    assert len(sides) == 1 and not sides[0].read_bytes().endswith(b"\n")
    assert_every_line_is_a_record(journal)
    study = optuna.load_study(study_name="s.lookahead", storage=open_storage(None, tmp_path))
    trials = study.trials
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 1 + done
    add_trial(tmp_path)
    assert n_trials(tmp_path) == len(trials) + 1


def test_appends_killed_at_random_moments_never_leave_an_unreadable_or_locked_journal(tmp_path):
    """Twenty writers killed with SIGKILL at random moments of their appends: each time the
    next process opens the journal and writes within two seconds, and the journal is whole."""
    make_study(tmp_path, 1)
    rng = random.Random(0)
    torn = 0
    for _ in range(20):
        read, write = os.pipe()

        def child(write: int = write) -> None:
            study = optuna.load_study(study_name="s.lookahead",
                                      storage=open_storage(None, tmp_path))
            os.write(write, b"x")
            while True:
                study.tell(study.ask(), 1.0)

        pid = fork(child)
        os.read(read, 1)
        os.close(read)
        os.close(write)
        time.sleep(rng.uniform(0, 0.05))
        kill(pid)
        torn += not (tmp_path / JOURNAL_FILE).read_bytes().endswith(b"\n")
        before = n_trials(tmp_path)
        done, error = in_thread(lambda: add_trial(tmp_path), timeout=2)
        assert done and error is None, error
        assert n_trials(tmp_path) == before + 1
        assert_every_line_is_a_record(tmp_path / JOURNAL_FILE)
    print(f"{torn} of 20 kills cut a record off")


# -- 2. read-only commands ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """``--out`` of a small finished study (digits-sgd)."""
    out = tmp_path_factory.mktemp("finished")
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def test_status_changes_nothing_in_the_study_folder(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    study = out / "digits-sgd"
    for lock in study.glob(".*flock"):  # the journal's lock file: status must not create it
        lock.unlink()
    before = digest(study)
    result = runner.invoke(app, ["status", "digits-sgd", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "4/4" in result.output  # it did read the study
    assert digest(study) == before  # the journal byte for byte, and no new file (no lock)


def test_status_works_where_nothing_can_be_written(finished, tmp_path, monkeypatch):
    """A read-only file system, simulated: every open for writing, every new file or folder
    under the study folder fails as EROFS would."""
    out = copy_of(finished, tmp_path)
    root = str(out)
    writes = []

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(what: str, path) -> None:
        writes.append((what, str(path)))
        raise OSError(30, "Read-only file system", str(path))

    real_open, real_os_open = builtins.open, os.open

    def fake_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse("open", file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
                                    | os.O_TRUNC):
            refuse("os.open", path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_path_op(name):
        real = getattr(os, name)

        def op(path, *args, **kwargs):
            if under(path):
                refuse(name, path)
            return real(path, *args, **kwargs)

        return op

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "symlink", "link", "rename", "replace", "unlink", "truncate"):
        monkeypatch.setattr(os, name, fake_path_op(name))
    result = runner.invoke(app, ["status", "digits-sgd", "--out", str(out)])
    assert result.exit_code == 0, (result.output + result.stderr, writes, result.exception)
    assert "4/4" in result.output
    assert writes == []


def test_a_read_only_storage_reads_everything_and_writes_nothing(tmp_path):
    make_study(tmp_path, 3)
    journal = tmp_path / JOURNAL_FILE
    (tmp_path / journal_mod.JOURNAL_LOCK_FILE).unlink()
    before = digest(tmp_path)
    storage = open_storage(None, tmp_path, read_only=True)
    assert len(optuna.load_study(study_name="s.lookahead", storage=storage).trials) == 3
    with pytest.raises(ReadOnlyStorage) as e:
        optuna.create_study(storage=storage, study_name="s.sgd", load_if_exists=True)
    assert str(journal) in one_line(str(e.value)) and "read-only" in str(e.value)
    assert digest(tmp_path) == before
    # It follows what writers append later, as Optuna's own reader does.
    add_trial(tmp_path)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":4,"wor')  # an append in progress is not read yet
    assert len(optuna.load_study(study_name="s.lookahead", storage=storage).trials) == 4
    assert journal.read_bytes().endswith(b'{"op_code":4,"wor')  # and is left alone
    # A folder that does not exist is not created.
    missing = tmp_path / "nothing-here"
    assert optuna.get_all_study_names(open_storage(None, missing, read_only=True)) == []
    assert not missing.exists()


# -- 3. a database that is down when the storage is opened --------------------------------------

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server that checks passwords (the shared one trusts anyone)."""
    with postgres_server(PASSWORD) as server:
        yield server


def start_server(server: Postgres) -> None:
    server.start()


def url_of(server: Postgres, database: str, password: str = PASSWORD, user: str = "postgres",
           host: str = "127.0.0.1") -> str:
    return f"postgresql://{user}:{password}@{host}:{server.port}/{database}"


def new_database(server: Postgres) -> str:
    import sqlalchemy

    name = f"lb_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(url_of(server, "postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return name


def test_a_worker_that_starts_while_the_database_is_down_waits_for_it(pg, tmp_path, capsys):
    database = new_database(pg)
    url = url_of(pg, database)
    pg.ctl("-m", "fast", "stop")
    try:
        started = time.monotonic()
        opening = Background(lambda: open_storage(url, tmp_path, retry_for_s=60))
        done, storage = opening.result(3)
        assert not done, storage  # still waiting, not failed
        start_server(pg)
        done, storage = opening.result(60)
    finally:
        if subprocess.run([*pg.as_user, str(pg.bindir / "pg_ctl"), "-D", str(pg.datadir),
                           "status"], check=False, capture_output=True).returncode != 0:
            start_server(pg)
    assert done and not isinstance(storage, BaseException), storage
    study = optuna.create_study(storage=storage, study_name="s.lookahead")
    study.tell(study.ask(), 1.0)
    assert len(optuna.load_study(study_name="s.lookahead", storage=url).trials) == 1
    err = capsys.readouterr().err
    waiting = [line for line in err.splitlines() if "waiting for the database" in line]
    redacted = f"postgresql://postgres@127.0.0.1:{pg.port}/{database}"
    assert len(waiting) == 1 and waiting[0].startswith(f"warning: waiting for the database at "
                                                       f"{redacted} (")
    assert "retrying for up to 60 s" in waiting[0]
    assert PASSWORD not in err and "Traceback" not in err
    assert time.monotonic() - started < 60


def test_a_database_that_stays_down_gives_up_after_the_limit_in_one_line(tmp_path, capsys):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{_free_port()}/none"  # nobody listens
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as e:
        open_storage(url, tmp_path, retry_for_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    message = one_line(str(e.value))
    assert message.startswith("cannot open storage postgresql://postgres@127.0.0.1:")
    assert "still unreachable after 1.5 s" in message and PASSWORD not in message
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "waiting for the database" in line]) == 1


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "no such database",
                                  "unknown host", "bad driver"])
def test_a_database_that_refuses_us_fails_at_once_in_one_line(pg, tmp_path, capsys, case):
    database = new_database(pg)
    url, reason = {
        "wrong password": (url_of(pg, database, password="wrong"), "password authentication"),
        "unknown user": (url_of(pg, database, user="nobody"), "password authentication"),
        "no such database": (url_of(pg, "nodb"), 'database "nodb" does not exist'),
        "unknown host": (url_of(pg, database, host="no-such-host.invalid"), "no-such-host"),
        "bad driver": (url_of(pg, database).replace("postgresql", "postgresql+nodriver"),
                       "nodriver"),
    }[case]
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as e:
        open_storage(url, tmp_path, retry_for_s=60)
    assert time.monotonic() - started < 5
    message = one_line(str(e.value))
    assert reason in message and "wrong" not in message and PASSWORD not in message
    assert "waiting" not in capsys.readouterr().err


def test_read_only_opens_a_database_as_before(pg, tmp_path):
    url = url_of(pg, new_database(pg))
    study = optuna.create_study(storage=open_storage(url, tmp_path), study_name="s.lookahead")
    study.tell(study.ask(), 1.0)
    storage = open_storage(url, tmp_path, read_only=True)
    assert len(optuna.load_study(study_name="s.lookahead", storage=storage).trials) == 1
    assert not list(tmp_path.iterdir())


# -- 4. lock files left behind ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_leftover_optuna_lock_file_does_not_stall_the_next_run(tmp_path, kind):
    """What a kill -9 during an append left with Optuna's own locks (and older lookbench)."""
    make_study(tmp_path, 1)
    leftover = tmp_path / f"{JOURNAL_FILE}.lock"
    if kind == "symlink":
        os.symlink(tmp_path / JOURNAL_FILE, leftover)  # JournalFileSymlinkLock
    else:
        leftover.touch()  # JournalFileOpenLock
    done, error = in_thread(lambda: add_trial(tmp_path), timeout=2)
    assert done and error is None, error
    assert n_trials(tmp_path) == 2


def test_a_lock_held_by_a_killed_writer_is_free_at_once(tmp_path, caplog):
    """A writer SIGKILLed while it holds the journal's lock, half-way through its record."""
    make_study(tmp_path, 1)
    read, write = os.pipe()

    def child() -> None:
        backend = open_storage(None, tmp_path)._backend
        backend._lock.acquire()
        with open(tmp_path / JOURNAL_FILE, "ab") as f:
            f.write(b'{"op_code":4,"worker_')
        os.write(write, b"x")
        time.sleep(60)

    pid = fork(child)
    os.read(read, 1)
    os.close(read)
    os.close(write)
    kill(pid)
    done, error = in_thread(lambda: add_trial(tmp_path), timeout=2)
    assert done and error is None, error
    assert n_trials(tmp_path) == 2
    assert len(list(tmp_path.glob(f"{JOURNAL_FILE}.torn-*"))) == 1


def test_the_journal_lock_excludes_threads_and_processes(tmp_path):
    lock = journal_mod.JournalFlock(tmp_path / "x.flock")
    go_read, go_write = os.pipe()
    got_read, got_write = os.pipe()

    def child() -> None:
        os.read(go_read, 1)
        other = journal_mod.JournalFlock(tmp_path / "x.flock")
        other.acquire()
        os.write(got_write, b"x")

    pid = fork(child)  # before we hold the lock (a fork's child must not inherit it)
    lock.acquire()
    thread = Background(lambda: lock.acquire() and lock.release())
    os.write(go_write, b"x")
    done, _ = thread.result(0.3)
    assert not done  # another thread of this process waits
    os.set_blocking(got_read, False)
    with pytest.raises(BlockingIOError):
        os.read(got_read, 1)  # another process waits too
    lock.release()
    assert os.waitpid(pid, 0)[1] == 0  # the child took it (its exit released it)
    done, error = thread.result(2)  # and so did the thread
    assert done and error is None, error


def test_a_forked_child_does_not_keep_the_journal_lock(tmp_path):
    """A child forked while the lock is held (a DataLoader worker forked by a trial while the
    heartbeat thread appends) shares the locked open file; it must not hold the lock on."""
    lock = journal_mod.JournalFlock(tmp_path / "x.flock")
    lock.acquire()
    pid = fork(lambda: time.sleep(60))
    try:
        lock.release()
        done, error = in_thread(lambda: lock.acquire() and lock.release(), timeout=2)
        assert done and error is None, error
    finally:
        kill(pid)


def test_concurrent_writers_in_threads_and_processes_keep_the_journal_whole(tmp_path):
    make_study(tmp_path, 0)

    def write_trials(n: int) -> None:
        study = optuna.load_study(study_name="s.lookahead", storage=open_storage(None, tmp_path))
        for _ in range(n):
            study.tell(study.ask(), 1.0)

    pids = [fork(lambda: write_trials(15)) for _ in range(2)]
    threads = [threading.Thread(target=write_trials, args=(15,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert n_trials(tmp_path) == 60
    assert_every_line_is_a_record(tmp_path / JOURNAL_FILE)


# -- 5. waiting for the study lock ----------------------------------------------------------------


def hold_study_lock(study_dir: Path) -> subprocess.Popen:
    """Another process that holds the study lock until it is killed."""
    code = ("import fcntl, sys, time\n"
            f"f = open({str(study_dir / LOCK_FILE)!r}, 'a+')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_waiting_for_the_study_lock_says_so_and_gives_up_clearly(tmp_path, capsys):
    storage = open_storage(None, tmp_path)
    holder = hold_study_lock(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as e, \
                study_lock(storage, tmp_path, "s", timeout_s=1.5, warn_after_s=0.5):
            pass
        assert 1.5 <= time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(e.value, StorageUnavailable)
    message = one_line(str(e.value))
    assert str(tmp_path / LOCK_FILE) in message and "another lookbench process" in message
    assert "LOOKBENCH_LOCK_TIMEOUT" in message
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: waiting for the study lock ")
    assert str(tmp_path / LOCK_FILE) in err[0] and "another lookbench process holds" in err[0]
    # Once its holder is gone (here killed), the lock is taken at once, without a word.
    with study_lock(storage, tmp_path, "s", timeout_s=1, warn_after_s=0.5):
        pass
    assert capsys.readouterr().err == ""


def test_the_lock_timeout_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    storage = open_storage(None, tmp_path)
    holder = hold_study_lock(tmp_path)
    try:
        monkeypatch.setenv("LOOKBENCH_LOCK_TIMEOUT", "0.5")
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="gave up after 0.5 s"), \
                study_lock(storage, tmp_path, "s"):
            pass
        assert time.monotonic() - started < 3
        assert capsys.readouterr().err == ""  # under the default 5 s before saying anything
        monkeypatch.setenv("LOOKBENCH_LOCK_TIMEOUT", "soon")
        with pytest.raises(StorageUnavailable, match="LOOKBENCH_LOCK_TIMEOUT must be a number"), \
                study_lock(storage, tmp_path, "s"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_short_wait_for_the_study_lock_is_silent(tmp_path, capsys):
    storage = open_storage(None, tmp_path)
    holder = hold_study_lock(tmp_path)
    threading.Timer(0.3, holder.kill).start()
    with study_lock(storage, tmp_path, "s", timeout_s=10, warn_after_s=2):
        pass
    holder.wait()
    assert capsys.readouterr().err == ""


def test_waiting_for_the_database_advisory_lock_says_so_and_gives_up(pg, tmp_path, capsys):
    import sqlalchemy

    url = url_of(pg, new_database(pg))
    storage = open_storage(url, tmp_path)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as other:  # another session: another lookbench process
        other.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"),
                      {"k": storage_mod._lock_key("lookbench:s")})
        with pytest.raises(LockTimeout) as e, \
                study_lock(storage, tmp_path, "s", timeout_s=1.5, warn_after_s=0.5):
            pass
        other.execute(sqlalchemy.text("SELECT pg_advisory_unlock_all()"))
    engine.dispose()
    message = one_line(str(e.value))
    assert "the database advisory lock of study 's'" in message
    assert "another lookbench process" in message and PASSWORD not in message
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "waiting for the database advisory lock of study 's'" in err[0]
    with study_lock(storage, tmp_path, "s", timeout_s=5):  # free again
        pass
