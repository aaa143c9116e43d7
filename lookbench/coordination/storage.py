"""Where a study's scheduling state lives: Optuna's own storages, and a study-wide lock.

By default an embedded journal file under ``<out>/<study>/`` (Optuna's recommendation for
several processes on one machine: SQLite locks up, #820/#4994); with ``--storage
postgresql://…`` Optuna's RDB storage, which several machines can share. Both are standard
Optuna storages, so optuna-dashboard opens them as they are.

The lock serialises the few operations that must not interleave across workers or machines
(adding the planned trials, taking over a stale one): a ``flock`` on a file beside the journal,
or a PostgreSQL advisory lock for a database.

The journal file itself, safe against kills and full disks, is ``lookbench.coordination.journal``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna

from lookbench._messages import first_line
from lookbench.coordination import interrupts
from lookbench.coordination.errors import (
    BadStorage,
    LockTimeout,
    ReadOnlyStorage,  # noqa: F401 (re-exported)
    StorageUnavailable,
)
from lookbench.coordination.flocks import close_flock, open_flock
from lookbench.coordination.journal import JOURNAL_FILE, open_journal  # noqa: F401 (re-exported)

LOCK_FILE = ".lock"
RETRY_FOR_S = 300.0  # how long a database outage is waited out before giving up
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 15.0  # exponential backoff between attempts
LOCK_TIMEOUT_ENV = "LOOKBENCH_LOCK_TIMEOUT"
LOCK_TIMEOUT_S = 600.0  # how long the study lock is waited for before giving up
LOCK_WARN_AFTER_S = 5.0  # when a wait for the study lock is worth a line on stderr
T = TypeVar("T")

log = logging.getLogger(__name__)


# Libraries whose own log lines lookbench replaces with its own: Optuna logs every trial at
# INFO, and during a database outage a multi-line warning with the SQL text of each failed
# query ("Caught an error from sqlalchemy: ..."); SQLAlchemy's pool logs each connection it
# cannot reset or close at ERROR, with a traceback. lookbench says what matters in one line:
# an outage when it starts and when it ends, an error that stops the run.
QUIET_LOGGERS = ("optuna", "sqlalchemy", "alembic")


def quiet_optuna() -> None:
    """Silence Optuna's, SQLAlchemy's and Alembic's own logs (see ``QUIET_LOGGERS``)."""
    optuna.logging.set_verbosity(optuna.logging.CRITICAL)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def open_storage(url: str | None, study_dir: Path, *, read_only: bool = False,
                 retry_for_s: float | None = None) -> optuna.storages.BaseStorage:
    """The journal file in ``study_dir`` (``url`` None) or the RDB storage at ``url``.

    ``read_only``: for commands that only look (``status``): the journal is read without
    creating, locking or appending anything, so it works on a folder this process cannot
    write. A database server that is down is waited for up to ``retry_for_s`` (default
    ``RETRY_FOR_S``), as every later call is, so a worker that starts during an outage lives.
    """
    quiet_optuna()
    if url is None:
        return open_journal(study_dir, read_only)
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise BadStorage(
            f"unsupported storage URL {url!r}: use postgresql://user@host/db (or leave "
            f"--storage out for the journal file under --out)"
        )
    redacted = _redact(url)
    # SQLite is a file, not a server that restarts: its errors are not waited out.
    deadline = 0.0 if url.startswith("sqlite") else (
        RETRY_FOR_S if retry_for_s is None else retry_for_s)

    def waiting(e: BaseException) -> str:
        return (f"warning: waiting for the database at {redacted} ({_reason(e)}); "
                f"retrying for up to {deadline:.0f} s")

    try:
        inner = retry(lambda: _create_rdb_storage(url), f"the database {redacted}", deadline,
                      waiting=waiting)
        return RetryingStorage(inner, url=redacted)
    except ModuleNotFoundError as e:
        raise BadStorage(
            f"the driver for {url.split(':', 1)[0]} is not installed ({e.name}); "
            f"pip install 'lookbench[postgres]'"
        ) from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends
        if deadline > 0 and is_transient(e):
            raise StorageUnavailable(f"cannot open storage {redacted}: still unreachable after "
                                     f"{deadline:g} s ({_reason(e)})") from None
        raise BadStorage(f"cannot open storage {redacted}: {_reason(e)}") from None


def _reason(error: BaseException) -> str:
    """The first line of the driver's own message in ``error``'s chain, else of ``error``."""
    e: BaseException | None = error
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        orig = getattr(e, "orig", None)
        if isinstance(orig, BaseException):
            return first_line(orig)
        e = e.__cause__ or e.__context__
    return first_line(error)


def _create_rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, its tables created under an advisory lock on PostgreSQL, so that
    several machines starting the same study at the same moment do not race to create them."""
    import sqlalchemy

    if url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"),
                             {"k": _lock_key("lookbench:schema")})
                try:
                    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                 {"k": _lock_key("lookbench:schema")})
                    conn.commit()
        finally:
            engine.dispose()
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


# -- waiting out a database outage -------------------------------------------------------------

# Errors that a retry cannot cure: the server answered, and refused (or there is no such host).
_PERMANENT = ("authentication failed", "no password supplied", "no pg_hba.conf entry",
              "does not exist", "not permitted to log in", "permission denied",
              "name or service not known", "nodename nor servname", "no address associated",
              "ssl was required", "does not support ssl", "access denied for user",
              "unknown database")
_PERMANENT_SQLSTATE = ("28", "3D")  # invalid authorization, invalid database name (prefixes)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# -- the journal file ---------------------------------------------------------------------------


def _permanent(error: BaseException) -> bool:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(code, str) and code.startswith(_PERMANENT_SQLSTATE):
        return True
    text = str(error).lower()
    return any(p in text for p in _PERMANENT)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the database is briefly unreachable (restart, network blip),
    not that it refuses us (wrong password, no such database or host), which waiting would
    not change."""
    import sqlalchemy.exc as sa

    seen: set[int] = set()
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:  # the driver's own error, as SQLAlchemy wraps it
        if isinstance(e, sa.DBAPIError) and isinstance(e.orig, BaseException) \
                and _permanent(e.orig):
            return False
    for e in chain:
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
    return False


class _Outage:
    """The database outage this process is in, if any, shared by every call and thread: a
    worker's main thread, its heartbeat and the progress view all wait for the same database,
    and an outage is one warning when it starts and one when it ends, not one pair per call
    that happened to be waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # when the first call failed (time.monotonic())

    def failed(self, line: Callable[[], str]) -> None:
        """A call found the database unreachable: the first since it was last reachable
        prints ``line()``."""
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                print(line(), file=sys.stderr, flush=True)

    def reachable(self, what: str) -> None:
        """A call reached the database: if an outage was on, say once that it is over."""
        if self.since is None:  # (the common case, without taking the lock)
            return
        with self._lock:
            if self.since is not None:
                print(f"warning: {what} is back (after {time.monotonic() - self.since:.0f} s)",
                      file=sys.stderr, flush=True)
                self.since = None

    def gave_up(self) -> None:
        """A call stopped waiting (its deadline passed): the outage it warned of ends with
        that error, so a later call in this process (a second ``run_study`` from a notebook,
        a test's next command) warns of its own outage again."""
        with self._lock:
            self.since = None


outage = _Outage()


def retry(call: Callable[[], T], what: str, deadline_s: float | None = None, *,
          waiting: Callable[[BaseException], str] | None = None) -> T:
    """Run ``call``, retrying with exponential backoff while the database is unreachable, for
    up to ``deadline_s`` (default ``RETRY_FOR_S``, read at the call). The process's first call
    to find it unreachable prints a warning (``what`` names the database; ``waiting`` may
    word that line itself), and the first to reach it again says it is back: one line each
    per outage, however many calls and threads waited (see :class:`_Outage`)."""
    deadline = RETRY_FOR_S if deadline_s is None else deadline_s
    wait, start = RETRY_FIRST_S, time.monotonic()
    while True:
        try:
            result = call()
        except Exception as e:
            if not is_transient(e):
                raise
            if time.monotonic() - start > deadline:
                outage.gave_up()
                raise
            outage.failed(lambda e=e: waiting(e) if waiting is not None else (
                f"warning: {what} is unreachable; retrying for up to {deadline:.0f} s "
                f"({_reason(e)})"))
            interrupts.sleep(wait)  # Ctrl-C ends the wait; nothing is half-written
            wait = min(wait * 2, RETRY_MAX_S)
            continue
        outage.reachable(what)
        return result


class RetryingStorage:
    """An Optuna storage whose every call waits out a brief loss of the database.

    Optuna's RDB storage raises on the first failed connection; workers of a long study should
    instead wait for a database restart. (Optuna accepts any object with the storage methods
    where it takes a storage, so this wrapper can be passed to ``create_study``.)
    """

    def __init__(self, inner: optuna.storages.BaseStorage, url: str) -> None:
        self._inner = inner
        self._url = url

    @property
    def inner(self) -> optuna.storages.BaseStorage:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return retry(lambda: attr(*args, **kwargs), f"the database {self._url}")

        return call


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url


# -- the study lock -----------------------------------------------------------------------------


def lock_timeout() -> float:
    """How long the study lock is waited for: ``LOOKBENCH_LOCK_TIMEOUT`` seconds, else 600."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return LOCK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise BadStorage(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, "
                                 f"not {text!r}")
    return value


class _LockWait:
    """Polls for a lock until ``timeout_s``, saying once (after ``warn_after_s``) what it waits
    for: a silent wait on another process looks like a hang."""

    def __init__(self, what: str, timeout_s: float, warn_after_s: float) -> None:
        self.what, self.timeout_s, self.warn_after_s = what, timeout_s, warn_after_s
        self.start = time.monotonic()
        self.warned = False

    def until(self, try_lock: Callable[[], bool]) -> None:
        pause = 0.005
        while not try_lock():
            waited = time.monotonic() - self.start
            if waited >= self.timeout_s:
                raise LockTimeout(
                    f"gave up after {self.timeout_s:g} s waiting for {self.what}, which "
                    f"another lookbench process has held all that time: let it finish (or stop "
                    f"it) and run the same command again, or wait longer with "
                    f"{LOCK_TIMEOUT_ENV}=SECONDS")
            if not self.warned and waited >= self.warn_after_s:
                print(f"warning: waiting for {self.what}, which another lookbench process "
                      f"holds; giving up after {self.timeout_s:g} s", file=sys.stderr,
                      flush=True)
                self.warned = True
            time.sleep(min(pause, max(0.0, self.timeout_s - waited)))
            pause = min(pause * 2, 0.2)


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_dir: Path, name: str, *,
               timeout_s: float | None = None,
               warn_after_s: float = LOCK_WARN_AFTER_S) -> Iterator[None]:
    """Hold the study-wide lock: an advisory lock in PostgreSQL, else a file lock.

    Waits for it at most ``timeout_s`` (default ``lock_timeout()``), then raises
    ``LockTimeout``; after ``warn_after_s`` of waiting it says so on stderr.
    """
    limit = lock_timeout() if timeout_s is None else timeout_s
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = _lock_key(f"lookbench:{name}")

        def acquire() -> Any:
            conn = engine.connect()
            # (timed from here, each try: a database outage between tries is not a wait for
            # the lock, and must not be reported as one)
            wait = _LockWait(f"the database advisory lock of study {name!r}", limit,
                             warn_after_s)

            def try_lock() -> bool:
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                        {"k": key}).scalar())
                if not got:
                    conn.rollback()  # not idle in a transaction while we wait
                return got

            try:
                wait.until(try_lock)
            except BaseException:
                conn.close()
                raise
            return conn

        url = _redact(engine.url.render_as_string(hide_password=False))
        conn = retry(acquire, f"the database {url}")
        try:
            yield
        finally:
            # The lock is the session's: closing the connection releases it even if the
            # unlock cannot be sent (the server restarted meanwhile).
            with contextlib.suppress(Exception):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            with contextlib.suppress(Exception):
                conn.close()
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_FILE
    fd = open_flock(path)

    def try_flock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        _LockWait(f"the study lock {path}", limit, warn_after_s).until(try_flock)
        yield
    finally:
        close_flock(fd)  # releases the lock
