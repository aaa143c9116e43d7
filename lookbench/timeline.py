"""Where a run's time goes: named moments of every process of a ``lookbench run`` (and the
one fixed cost found that way that no stage owns: the exit).

``mark(event)`` appends ``<unix time> <pid> <event>`` to the file named by the environment
variable ``LOOKBENCH_TIMELINE`` (worker processes inherit it), and does nothing where it is
unset (one global read: the engine's overhead stays negligible). ``benchmarks/study_timeline.py``
reads the file. Written here rather than with a profiler: a profiler shows where one process
spends CPU; this shows when each stage of the study happens across processes, as the user
waits for it.
"""

from __future__ import annotations

import os
import time

ENV = "LOOKBENCH_TIMELINE"
_path = os.environ.get(ENV) or None


def enabled() -> bool:
    return _path is not None


def mark(event: str) -> None:
    """Note that ``event`` happened now (one line, appended with O_APPEND: lines of several
    processes never interleave). A failed write is ignored: this is a measurement, never a
    reason for a run to fail."""
    if _path is None:
        return
    line = f"{time.time():.6f} {os.getpid()} {event}\n".encode()
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass


def skip_final_collection() -> None:
    """At exit, skip the interpreter's last full garbage collection (``gc.freeze``: every
    object left is moved where the collector never looks).

    Measured (``benchmarks/study_timeline.py``, 2 cores): after a digits study, the final
    collection of torch's, Optuna's and the results' objects took 1.3-3 s between the
    summary and the shell prompt, in the command and again in each worker process. What it
    would free is freed by the process's end anyway; lookbench writes every file it means to
    keep with an explicit close (and fsync), never from a finaliser.
    """
    import atexit
    import gc

    atexit.register(gc.freeze)


def read(path: str | os.PathLike[str]) -> list[tuple[float, int, str]]:
    """The marks of a timeline file, in the order they were written: (time, pid, event)."""
    marks = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            stamp, pid, event = line.rstrip("\n").split(" ", 2)
            marks.append((float(stamp), int(pid), event))
    return marks
