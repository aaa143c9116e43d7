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
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import optuna

JOURNAL_FILE = "optuna.journal"
LOCK_FILE = ".lock"


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
        return JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise StorageUnavailable(
            f"unsupported storage URL {url!r}: use postgresql://user@host/db (or leave "
            f"--storage out for the journal file under --out)"
        )
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=False
        )
    except ModuleNotFoundError as e:
        raise StorageUnavailable(
            f"the driver for {url.split(':', 1)[0]} is not installed ({e.name}); "
            f"pip install 'lookbench[postgres]'"
        ) from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise StorageUnavailable(f"cannot open storage {_redact(url)}: {reason}") from None


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
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"lookbench:{name}".encode()).digest()[:8], "big",
                             signed=True)
        from sqlalchemy import text

        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / LOCK_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
