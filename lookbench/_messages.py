"""Turning exceptions into the one-line messages lookbench prints instead of tracebacks."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe(error: BaseException) -> str:
    """``Type: first line`` of ``error``, or just its type name when the message is empty."""
    name = type(error).__name__
    return f"{name}: {first_line(error)}" if str(error).strip() else name


# Errors of the machine, not of a trial: a full disk, a read-only or forbidden folder, too
# many open files. A trial they interrupt is not an outcome: it runs again once they are fixed.
_ENVIRONMENTAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EMFILE, errno.ENFILE, errno.EIO}
_WHAT_TO_DO = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
               errno.EROFS: "make it writable", errno.EACCES: "fix its permissions",
               errno.EPERM: "fix its permissions", errno.ENOTDIR: "a file stands where a "
               "folder must be", errno.EEXIST: "a file stands where a folder must be",
               errno.ENAMETOOLONG: "use a shorter name"}


def environmental(error: BaseException) -> OSError | None:
    """The OSError of the machine (see ``_ENVIRONMENTAL``) behind ``error``, if any."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ENVIRONMENTAL:
            return e
        e = e.__cause__ or e.__context__
    return None


def describe_os_error(error: OSError) -> str:
    """``/path: No space left on device`` (the path where the error names one)."""
    reason = error.strerror or first_line(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def what_to_do(error: OSError) -> str:
    """What the user can do about an environmental error, in a few words."""
    return _WHAT_TO_DO.get(error.errno or 0, "fix it")


@contextlib.contextmanager
def naming(path: Path | str) -> Iterator[None]:
    """An OSError inside names ``path`` where it names no file: a failed ``write``, ``flush``
    or ``fsync`` on an open file (a full disk) gives none, and "No space left on device"
    alone does not say which disk."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
