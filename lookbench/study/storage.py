"""Where a study's scheduling state lives: Optuna's own storages, and a study-wide lock.

By default an embedded journal file under ``<out>/<study>/`` (Optuna's recommendation for
several processes on one machine: SQLite locks up, #820/#4994); with ``--storage
postgresql://…`` Optuna's RDB storage, which several machines can share. Both are standard
Optuna storages, so optuna-dashboard opens them as they are.

The lock serialises the few operations that must not interleave across workers or machines
(adding the planned trials, taking over a stale one): a ``flock`` on a file beside the journal,
or a PostgreSQL advisory lock for a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna

from lookbench._messages import first_line
from lookbench.study import interrupts

JOURNAL_FILE = "optuna.journal"
LOCK_FILE = ".lock"
RETRY_FOR_S = 300.0  # how long a database outage is waited out before giving up
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 15.0  # exponential backoff between attempts
T = TypeVar("T")


class StorageUnavailable(Exception):
    """The storage URL cannot be used; the message says why, in one line."""


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; lookbench shows its own progress instead."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)


def open_storage(url: str | None, study_dir: Path) -> optuna.storages.BaseStorage:
    """The journal file in ``study_dir`` (``url`` None) or the RDB storage at ``url``."""
    quiet_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        study_dir.mkdir(parents=True, exist_ok=True)
        path = study_dir / JOURNAL_FILE
        try:
            return JournalStorage(JournalFileBackend(str(path)))  # replays the whole journal
        except (ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
            raise StorageUnavailable(
                f"the study's Optuna journal {path} is unreadable ({first_line(e)}); move it "
                f"aside and run the same command again: finished trials are kept in the Parquet "
                f"results and only the others run"
            ) from None
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise StorageUnavailable(
            f"unsupported storage URL {url!r}: use postgresql://user@host/db (or leave "
            f"--storage out for the journal file under --out)"
        )
    try:
        return RetryingStorage(_create_rdb_storage(url), url=_redact(url))
    except ModuleNotFoundError as e:
        raise StorageUnavailable(
            f"the driver for {url.split(':', 1)[0]} is not installed ({e.name}); "
            f"pip install 'lookbench[postgres]'"
        ) from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends
        reason = first_line(getattr(e, "orig", None) or e)
        raise StorageUnavailable(f"cannot open storage {_redact(url)}: {reason}") from None


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


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the database is briefly unreachable (restart, network blip)."""
    import sqlalchemy.exc as sa

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def retry(call: Callable[[], T], what: str, deadline_s: float = RETRY_FOR_S) -> T:
    """Run ``call``, retrying with exponential backoff while the database is unreachable
    (``what`` names it in the warning printed while waiting)."""
    wait, start, warned = RETRY_FIRST_S, time.monotonic(), False
    while True:
        try:
            result = call()
        except Exception as e:
            if not is_transient(e) or time.monotonic() - start > deadline_s:
                raise
            if not warned:
                print(f"warning: {what} is unreachable; retrying for up to "
                      f"{deadline_s:.0f} s", file=sys.stderr, flush=True)
                warned = True
            interrupts.sleep(wait)  # Ctrl-C ends the wait; nothing is half-written
            wait = min(wait * 2, RETRY_MAX_S)
            continue
        if warned:
            print(f"warning: {what} is back", file=sys.stderr, flush=True)
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


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_dir: Path, name: str) -> Iterator[None]:
    """Hold the study-wide lock: an advisory lock in PostgreSQL, else a file lock."""
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = _lock_key(f"lookbench:{name}")

        def acquire() -> Any:
            conn = engine.connect()
            try:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            except Exception:
                conn.close()
                raise
            return conn

        conn = retry(acquire, "the database (for the study lock)")
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
    with open(study_dir / LOCK_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
