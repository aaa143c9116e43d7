"""Temporary files of atomic writes (results files, checkpoints), and telling a dead writer's
from a live one's, so that what a killed write left behind can be removed safely.

A temporary file is named after the file it becomes and its writer:
``.<final name>.w<pid>-<start>-<machine>-<random>.tmp``, where ``start`` is the writer's start
time (Linux's ``/proc``; empty elsewhere) and ``machine`` a short hash of the host name, the
boot and the pid namespace: the pid means something only on the same machine, since that
boot, in the same namespace (two containers of one host may share a host name and a folder).

A temporary file is *dead* (:func:`is_dead`, removed by :func:`remove_dead`) when its writer
is known to be gone: a process of this machine that has exited (or is a zombie) or whose pid
now belongs to a later process. Where the writer cannot be checked (another machine sharing
the folder, or a name of an earlier version, ``.<final name>.<hex>.tmp``), only age tells:
a file untouched for ``MAX_AGE_S`` is dead, since a write takes seconds and a worker silent
for minutes has its trials taken over anyway. A live writer's file is never removed: its
``os.replace`` would fail, and with it the write.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path

# Age after which a temporary file whose writer cannot be checked counts as dead: far above any
# write (a checkpoint of hundreds of MB on a network folder takes seconds) and above any clock
# skew between machines sharing a folder.
MAX_AGE_S = 3600.0

_NAME = re.compile(r"^\.(?P<final>.+)\.(?:w(?P<pid>\d+)-(?P<start>\d*)-(?P<machine>[0-9a-f]{8})-"
                   r"[0-9a-f]+|[0-9a-f]+)\.tmp$")


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live writer from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` of this machine runs and is the one that started at ``start``
    (where known: a reused pid is another process). A process that exited but that its parent
    has not reaped yet (a zombie: a worker killed while ``lookbench run`` trains) still answers
    ``kill(pid, 0)``; it is dead all the same. Without ``/proc``, ``kill(pid, 0)`` decides
    alone. (The one rule for temporary files' writers, the queue's trial owners and local
    jobs.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # (someone else's process: it exists)
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # (no /proc: kill(pid, 0) decides alone)
    if fields[0] in ("Z", "X", "x"):
        return False
    return not start or len(fields) < 20 or fields[19] == start


@functools.cache
def _machine() -> str:
    """This machine, boot and pid namespace, as 8 hex digits."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            parts.append(Path(path).read_text().strip())
        except OSError:
            parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]


_tag: tuple[int, str] | None = None  # (pid, its writer tag): computed once per process


def _writer() -> str:
    global _tag
    pid = os.getpid()
    if _tag is None or _tag[0] != pid:  # (a forked child is another writer)
        _tag = (pid, f"w{pid}-{process_start(pid) or ''}-{_machine()}")
    return _tag[1]


def temp_path(final: Path) -> Path:
    """A new temporary file's path for a write of ``final`` (hidden, in the same folder)."""
    return final.with_name(f".{final.name}.{_writer()}-{uuid.uuid4().hex[:12]}.tmp")


def final_name(name: str) -> str | None:
    """The name of the file a temporary file's ``name`` was to become (``None``: not one)."""
    m = _NAME.match(name)
    return m["final"] if m else None


def held_by_live_writer(name: str) -> bool:
    """Whether ``name`` is a temporary file of a process of this machine that still runs."""
    m = _NAME.match(name)
    return bool(m and m["pid"] and m["machine"] == _machine()
                and pid_alive(int(m["pid"]), m["start"]))


def is_dead(path: Path, now: float | None = None) -> bool:
    """Whether the temporary file ``path`` was left by a writer that is gone (see the
    module's docstring); ``False`` for a name that is not a temporary file's."""
    m = _NAME.match(path.name)
    if m is None:
        return False
    if m["pid"] and m["machine"] == _machine():
        return not pid_alive(int(m["pid"]), m["start"])
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - mtime > MAX_AGE_S


def remove_dead(directory: Path, prefixes: tuple[str, ...] = (".",)) -> int:
    """Remove the dead temporary files in ``directory`` whose names start with one of
    ``prefixes``; returns how many. A folder that does not exist holds none."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    now = time.time()
    for name in names:
        if name.startswith(prefixes) and name.endswith(".tmp") and is_dead(directory / name, now):
            try:
                os.unlink(directory / name)
            except FileNotFoundError:
                continue
            removed += 1
    return removed
