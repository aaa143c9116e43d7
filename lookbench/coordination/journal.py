"""The study's Optuna journal file, made safe against kills and full disks.

Optuna's ``JournalFileBackend`` is used as it is, with two changes, both because a ``kill -9``
or a full disk in the middle of an append must not cost the study:

- its lock is a ``flock`` (``JournalFlock``), which the kernel releases when the holder dies;
  Optuna's default lock is a file whose existence is the lock, so a kill left it behind and
  the next run stalled for 30 s;
- a record cut off at the end of the file is set aside (``optuna.journal.torn-<time>``, with
  one warning) before anything is appended after it; Optuna skips such a line when reading but
  glued the next record onto it, after which the journal was unreadable for good.

``ReadOnlyJournal`` reads without creating, locking or appending anything, for ``status`` and
``report`` (they work on a read-only copy of a study).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

try:  # the lock interface JournalFileBackend takes (not re-exported by optuna.storages.journal)
    from optuna.storages.journal._file import BaseJournalFileLock
except ImportError:  # pragma: no cover - a later Optuna that moved it
    BaseJournalFileLock = object  # type: ignore[assignment,misc]

from lookbench._messages import environmental, first_line, naming
from lookbench.coordination.errors import (
    BadStorage,
    ReadOnlyStorage,
    StorageUnavailable,
)
from lookbench.coordination.flocks import close_flock, open_flock

JOURNAL_FILE = "optuna.journal"

JOURNAL_LOCK_FILE = ".journal.flock"  # our flock for appends (not Optuna's optuna.journal.lock)
TORN_SUFFIX = ".torn-"  # optuna.journal.torn-<UTC time>: partial records set aside

log = logging.getLogger(__name__)


def _unreadable(path: Path, reason: str) -> StorageUnavailable:
    return BadStorage(
        f"the study's Optuna journal {path} is unreadable ({reason}); move it "
        f"aside and run the same command again: finished trials are kept in the Parquet "
        f"results and only the others run"
    )


def open_journal(study_dir: Path, read_only: bool) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalStorage

    path = study_dir / JOURNAL_FILE
    try:
        if read_only:
            return JournalStorage(ReadOnlyJournal(path))  # replays the whole journal
        study_dir.mkdir(parents=True, exist_ok=True)
        backend = LockedJournalFile(path, JournalFlock(study_dir / JOURNAL_LOCK_FILE))
        backend.repair()
        return JournalStorage(backend)  # replays the whole journal
    except StorageUnavailable:
        raise
    except OSError as e:
        if environmental(e) is not None:  # a full disk, a forbidden folder: not the journal's
            raise                         # fault (one line naming the path, from the CLI)
        raise _unreadable(path, first_line(e)) from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise _unreadable(path, first_line(e)) from None


class JournalFlock(BaseJournalFileLock):
    """Optuna's journal lock as a ``flock`` on ``path``: the kernel drops it when its holder
    dies, so a killed writer never leaves a stale lock behind (Optuna's own locks are files
    whose existence is the lock, broken only after a 30 s grace period).

    Each ``acquire`` opens its own descriptor (kept per thread until ``release``): ``flock``
    locks belong to an open file, so this excludes threads of one process as well as processes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held = threading.local()

    def acquire(self) -> bool:
        fd = open_flock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            close_flock(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._held, "fd", None)
        if fd is None:
            raise RuntimeError(f"{self.path} is not locked by this thread")
        del self._held.fd
        close_flock(fd)  # closing the open file releases its flock

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def __getstate__(self) -> dict[str, Any]:  # JournalStorage pickles its backend
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]


class LockedJournalFile(JournalFileBackend):
    """Optuna's journal file, appended under a ``JournalFlock`` and never after a cut-off
    record: Optuna would glue the next record onto it, and the journal would then be unreadable
    from that line on (its replay stops with a JSON error in the middle)."""

    def __init__(self, path: Path, lock: JournalFlock) -> None:
        super().__init__(str(path), lock_obj=lock)
        self.path = path
        self.flock = lock

    def repair(self) -> None:
        """Before the journal is replayed: set a cut-off last record aside, and refuse a journal
        whose last complete record is unreadable (Optuna skips it, then appends after it)."""
        with self.flock.held(), open(self.path, "r+b") as f:
            end = set_aside_torn_tail(self.path, f)
            last = _last_line(f, end)
        if last:
            try:
                json.loads(last)
            except ValueError as e:
                raise _unreadable(self.path, f"its last record: {first_line(e)}") from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
        with self.flock.held():
            with open(self.path, "r+b") as f:  # a writer killed meanwhile may have cut one off
                set_aside_torn_tail(self.path, f)
            with naming(self.path), open(self.path, "ab") as f:  # (a full disk names it)
                f.write(data.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def _last_line(f: Any, end: int) -> bytes:
    """The complete line that ends at ``end`` (the file's length, just after a newline)."""
    start = _line_start(f, end - 1) if end > 0 else 0
    f.seek(start)
    return f.read(end - start)


def _line_start(f: Any, end: int, chunk: int = 1 << 16) -> int:
    """Where the line holding the bytes before ``end`` starts: after the last newline
    before ``end``, or 0."""
    pos = end
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def set_aside_torn_tail(path: Path, f: Any) -> int:
    """If the journal (open as ``f``, under its lock) does not end in a newline, append its
    partial last line to ``<journal>.torn-<UTC time>``, cut the journal back to its last
    complete record and warn. Returns the journal's length afterwards.

    The bytes are kept, in case someone wants to look at them; they are written (and synced)
    before the journal is cut, so a crash in between loses nothing.
    """
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return size
    cut = _line_start(f, size)
    f.seek(cut)
    torn = f.read(size - cut)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    side = path.with_name(f"{path.name}{TORN_SUFFIX}{stamp}")
    try:
        with open(side, "ab") as s:
            s.write(torn)
            s.flush()
            os.fsync(s.fileno())
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
        _fsync_dir(path.parent)
    except OSError as e:
        raise StorageUnavailable(
            f"the study's Optuna journal {path} ends in a record cut off by an interrupted "
            f"write, which could not be set aside in {side} ({first_line(e)}); free some "
            f"space (or make the folder writable) and run the same command again"
        ) from None
    log.warning(f"warning: the study's Optuna journal {path} ended in a record cut off by an "
                f"interrupted write ({len(torn)} bytes); set aside in {side}, the journal goes "
                f"on from its last complete record")
    return cut


def _fsync_dir(folder: Path) -> None:
    """Make a new file's name durable (the side file of a torn record)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ReadOnlyJournal(BaseJournalBackend):
    """Optuna's journal file, read without creating, locking or appending anything: for
    commands that only look, which must work on a folder they cannot write (another user's
    study, a read-only mount) and must not change the journal they report on.

    Reads as ``JournalFileBackend`` does: a last line without its newline is being written (or
    was cut off) and is skipped; an unreadable record followed by others is an error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next = (0, 0)  # (log number, byte offset) where the last read stopped

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            number, offset = self._next if self._next[0] <= log_number_from else (0, 0)
            f.seek(offset)
            bad: ValueError | None = None
            for line in f:
                if offset + len(line) > size:
                    break  # appended after we looked
                if bad is not None:
                    raise bad
                if not line.endswith(b"\n"):
                    break  # still being written, or cut off
                try:
                    entry = json.loads(line)
                except ValueError as e:
                    bad = e  # fatal unless it is the last record (then it may be half-written)
                    continue
                offset += len(line)
                number += 1
                self._next = (number, offset)
                if number > log_number_from:
                    yield entry

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise ReadOnlyStorage(f"the study's Optuna journal {self.path} was opened read-only; "
                              f"this command cannot change the study")
