"""Worker processes started as the command starts, told what to run once the study is planned.

A worker process spends its first seconds importing torch, Optuna and pyarrow and warming
torch's optimizers (about 3.5 s on 2 cores, measured by ``benchmarks/study_timeline.py``), and
``lookbench run`` spends as long importing the same and opening and planning the study. Started
before the command's own imports, the workers import on the other cores meanwhile, then wait
for one line on their standard input (``python -m lookbench.execution.worker_main
--wait-to-begin``): a JSON object with their arguments, storage URL and log file (the log
lives in the study folder, which may not exist yet and is never created for a study that
cannot be opened), or the end of the input, on which they exit without touching anything.

This module imports nothing heavy: the CLI uses it before it imports torch. Only for the CPU
(GPU workers start one by one as their memory allows, see ``GpuMemoryGate``), and only where
the command will likely want them; those it does not want are killed unused.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER_MODULE = "lookbench.execution.worker_main"
WAIT_FLAG = "--wait-to-begin"


def likely_workers(devices: str, workers: int | None, threads: int | None) -> int:
    """How many worker processes beside itself ``lookbench run`` will likely start on the CPU
    (see ``engine.placements``): none where it will use GPUs or one worker. Guessed without
    torch: ``auto`` means the CPU where no NVIDIA device node exists."""
    if devices not in ("cpu", "auto"):
        return 0
    if devices == "auto" and glob.glob("/dev/nvidia[0-9]*"):
        return 0
    n = workers or max(1, (os.cpu_count() or 1) // (threads or 1))
    return n - 1


class EarlyWorkers:
    """Worker processes started early (see the module's docstring), for CPU placements of
    ``threads`` threads."""

    def __init__(self, count: int = 0, threads: int = 1) -> None:
        self.threads = threads
        self._waiting: list[subprocess.Popen] = []
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # (as engine._worker_command says why)
        for _ in range(count):
            try:
                proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, WAIT_FLAG],
                                        env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            except OSError:  # (none can start now: the run starts its workers as usual)
                break
            self._waiting.append(proc)

    def begin(self, argv: list[str], env: dict[str, str], log: Path,
              storage: str | None) -> subprocess.Popen | None:
        """An early worker told to run ``worker_main`` with ``argv`` (its arguments after the
        module), writing to ``log``; None if none fits (then the caller starts one as usual):
        none is left, or ``env`` (the environment the worker would be started with) differs
        from theirs where it matters at a process's start."""
        fits = (env.get("OMP_NUM_THREADS") == str(self.threads)
                and "CUDA_VISIBLE_DEVICES" not in env
                and env.get("OMP_WAIT_POLICY") == os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        if not self._waiting or not fits:
            return None
        proc = self._waiting.pop(0)
        log.write_text("")
        if proc.poll() is None:
            line = json.dumps({"argv": argv, "log": str(log), "storage": storage})
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.close()
                proc.stdout.close()  # (from now on it writes to its log)
                return proc
            except OSError:  # (it ended meanwhile: a broken pipe)
                pass
        with contextlib.suppress(Exception):  # it ended before it began: its words, in its log
            before, _ = proc.communicate(timeout=30)
            log.write_bytes(before or b"")
        return proc

    def close(self) -> None:
        """Kill the workers never begun (the study could not be opened, had nothing left to
        run, wanted fewer, or the run stopped first): they have touched nothing."""
        waiting, self._waiting = self._waiting, []
        for proc in waiting:
            with contextlib.suppress(OSError):
                proc.kill()
        for proc in waiting:
            with contextlib.suppress(Exception):
                proc.communicate(timeout=30)

    def __enter__(self) -> EarlyWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_to_begin() -> tuple[list[str], str | None] | None:
    """In an early worker: warm up what every worker needs, then wait to be told what to run.
    Returns its arguments and storage URL, with standard output and error now going to its
    log; None if it was not wanted (the end of the input). A signal while it waits (SIGTERM,
    a Ctrl-C) raises ``KeyboardInterrupt``, as it would at work: a worker stopped from
    outside exits 130 and fails the run, whenever it happens."""
    from lookbench.timeline import mark

    mark("worker waiting")
    # torch's optimizers import torch._dynamo at their first use (about 1.3 s on 2 cores):
    # done here, while the command is still importing and planning.
    import torch._dynamo  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return None
    order = json.loads(line)
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return list(order["argv"]), order.get("storage")
