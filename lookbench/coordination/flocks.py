"""File locks (``flock``) that a forked child does not keep: the study lock on the journal's
folder (``storage``) and the journal's append lock (``journal``) both take them here."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

held_flocks: set[int] = set()  # descriptors of the flocks this process holds now


def _forget_inherited_locks() -> None:
    """In a forked child (a DataLoader worker, say): close the parent's held lock files. A
    flock belongs to the open file, which the child shares; were its copy kept open, the lock
    would outlive the parent's release for as long as the child lives."""
    for fd in list(held_flocks):
        with contextlib.suppress(OSError):
            os.close(fd)
    held_flocks.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


def open_flock(path: Path) -> int:
    """A new descriptor of ``path`` (created if need be), registered for ``close_flock``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    held_flocks.add(fd)  # before the lock is taken: a fork from now on must close it
    return fd


def close_flock(fd: int) -> None:
    """Close a descriptor from ``open_flock``, which releases its lock (unless a fork already
    closed it in this process)."""
    if fd in held_flocks:
        held_flocks.discard(fd)
        os.close(fd)
