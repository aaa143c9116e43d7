"""Workers that a cluster's scheduler starts (Slurm through submitit, Ray), not ``lookbench run``.

lookbench grows no scheduler of its own: a launched worker is the same code as a local one
(``python -m lookbench.execution.worker_main``'s ``main``), started as a job; the study's
storage (a PostgreSQL database, or the journal file on a filesystem every job sees) is what
they share, so the exactly-once and resume rules are the local ones. This module holds what
the engine needs of a launcher (:class:`Launcher`, implemented in ``lookbench.launchers``) and
the job itself (:class:`WorkerJob`), which both launchers run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

JOBS_FILE = "jobs.json"  # <study>/jobs.json: the jobs a launcher submitted (status, cancel)
LAUNCH_DIR = "jobs"  # <study>/jobs/: the launcher's own files (submitit's scripts and logs)


class Launcher(Protocol):
    """What the engine asks of a launcher: start workers, say how many still live."""

    #: the name the study's jobs file records ("slurm", "ray")
    name: str
    #: how many times the workers are submitted again when every one of them ended before the
    #: study did (preempted, out of time, killed)
    retries: int
    #: the device the workers train on ("cuda", each worker's own GPU; or "cpu")
    device: str
    #: whether the workers run on this machine (then the study's cost pass is timed here)
    local: bool
    #: whether its jobs can be found again by id after the run (recorded in the study's jobs
    #: file for ``status`` and ``cancel``: Slurm's and local jobs; not Ray's tasks)
    traceable: bool

    def jobs_for(self, trials_left: int) -> int:
        """How many workers to start for ``trials_left`` trials."""

    def submit(self, job: WorkerJob, count: int, study_dir: Path) -> list[str]:
        """Start ``count`` workers running ``job``; their job ids (recorded in the study's
        jobs file by the caller)."""

    def active(self) -> int:
        """How many of the workers submitted so far are queued or running."""

    def detached(self) -> bool:
        """Whether the workers go on when ``lookbench run`` stops (Slurm's do; Ray's are the
        run's own and end with it)."""

    def close(self) -> None:
        """Let go of what the launcher holds (Ray: the connection, and the local cluster it
        started)."""


@dataclass(frozen=True)
class WorkerJob:
    """One worker as a job: a picklable callable (submitit pickles it into its job folder, Ray
    ships it to a node) that runs the worker entry point with ``argv``.

    The storage URL is never in ``argv`` (nor in the pickle): the worker reads
    ``LOOKBENCH_STORAGE_URL`` from the job's environment, which Slurm copies from the
    submitting shell and Ray's runtime environment carries.

    Preemption and time limits (Slurm signals ``USR2`` ahead of them; submitit's handler is
    installed before this runs): the signal is turned into the worker's own interrupt, so the
    trial in training is handed back at a safe point (never in the middle of a storage write),
    with its last checkpoint; then submitit's handler runs, asks :meth:`checkpoint` for the job
    to requeue (the same worker, taking over cut-off trials first) and requeues it.
    """

    argv: tuple[str, ...]

    def __call__(self) -> int:
        from lookbench.execution.worker import main

        usr2 = getattr(signal, "SIGUSR2", None)
        previous: Any = None
        preempted: list[bool] = []
        if usr2 is not None:
            def handover(signum: int, frame: object) -> None:
                preempted.append(True)
                signal.raise_signal(signal.SIGTERM)  # the worker's interrupt (Interrupts)

            with contextlib.suppress(ValueError):  # (not the main thread: Ray's threads)
                previous = signal.signal(usr2, handover)
        try:
            code = main(list(self.argv))
        finally:
            if previous is not None:
                signal.signal(usr2, previous)  # type: ignore[arg-type]
        if preempted and callable(previous):
            previous(usr2, None)  # submitit: checkpoint() and requeue (it exits)
        if code not in (0, 130):
            raise SystemExit(code)  # a job that failed shows as failed to the scheduler
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or time-out: the job to requeue in this one's place."""
        from submitit.helpers import DelayedSubmission

        argv = self.argv if "--take-over" in self.argv else (*self.argv, "--take-over")
        return DelayedSubmission(replace(self, argv=argv))


def worker_argv(*, study_dir: Path, name: str, device: str, threads: int,
                data_dir: Path | None, grace_s: float | None, population: int | None,
                compile: bool, take_over: bool = False) -> tuple[str, ...]:
    """The worker entry point's arguments for a launched worker (the storage URL apart)."""
    argv = ["--study-dir", str(Path(study_dir).resolve()), "--name", name, "--device", device,
            "--threads", str(threads)]
    if data_dir is not None:
        argv += ["--data-dir", str(Path(data_dir).resolve())]
    if grace_s is not None:
        argv += ["--grace-s", str(grace_s)]
    if population is not None:
        argv += ["--population", str(population)]
    if compile:
        argv += ["--compile"]
    if take_over:
        argv += ["--take-over"]
    return tuple(argv)


def record_jobs(study_dir: Path, launcher: str, ids: list[str]) -> None:
    """Add ``ids`` to the study's jobs file (written atomically: ``status`` reads it)."""
    path = Path(study_dir) / JOBS_FILE
    jobs = read_jobs(study_dir)
    now = time.time()
    jobs += [{"launcher": launcher, "id": str(i), "submitted": now} for i in ids]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jobs, indent=1) + "\n")
    os.replace(tmp, path)


def read_jobs(study_dir: Path) -> list[dict[str, Any]]:
    """The jobs submitted for the study, oldest first (none: an empty list; a damaged file is
    read as none, since it only serves ``status`` and ``cancel``)."""
    try:
        jobs = json.loads((Path(study_dir) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [j for j in jobs if isinstance(j, dict) and "id" in j] if isinstance(jobs, list) else []
