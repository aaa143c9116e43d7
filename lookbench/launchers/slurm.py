"""``lookbench run … --launcher slurm``: the study's workers as a Slurm job array, through
submitit (the library Hydra's Slurm launcher is built on), so lookbench writes no sbatch script
and no scheduler of its own.

Each array task is one worker (``lookbench.execution.launch.WorkerJob``) with one GPU (or, with
``--gpus-per-job 0``, the CPU); a job with several GPUs runs one worker per GPU as Slurm tasks.
submitit writes the script, the pickled job and the logs under ``<study>/jobs/``; Slurm signals
``USR2`` 90 s before a job's time limit or at preemption, the worker hands its trial back with its
last checkpoint and the job is requeued, resuming that trial first.

``cluster="local"`` runs the same jobs as local processes (submitit's LocalExecutor: what the
tests use where there is no cluster).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Any

from lookbench.execution.launch import LAUNCH_DIR, WorkerJob
from lookbench.launchers.jobs import ENDED, slurm_states

# submitit logs each sacct call it could not make (no Slurm here, a busy controller) at
# WARNING; lookbench says what matters itself (an UNKNOWN state).
logging.getLogger("submitit").setLevel(logging.ERROR)

# Jobs submitted for a study when --jobs is not given: one per trial left, at most this many
# (a worker keeps claiming trials until none is left, so more jobs than this rarely pays for
# the scheduler's and the workers' start-up).
AUTO_MAX_JOBS = 32
SIGNAL_DELAY_S = 90  # USR2 this long before a job's time limit: the worker hands back its trial


def sbatch_options(lines: list[str]) -> dict[str, str | bool]:
    """``--sbatch`` values (``--qos=high``, ``#SBATCH --exclusive``, ``constraint=a100``) as
    sbatch's own option names and values; ``ValueError`` names one it cannot read."""
    out: dict[str, str | bool] = {}
    for line in lines:
        text = line.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        key, sep, value = text.lstrip("-").partition("=")
        key = key.strip()
        if not key or " " in key:
            raise ValueError(f"--sbatch {line!r}: expected an sbatch option such as "
                             f"--qos=high or --exclusive")
        out[key] = value.strip() if sep else True
    return out


class SlurmLauncher:
    """Workers as a Slurm job array (see the module's docstring)."""

    def __init__(self, study_dir: Path, *, partition: str | None = None,
                 gpus_per_job: int = 1, time_limit_min: int = 24 * 60,
                 account: str | None = None, sbatch: list[str] | None = None,
                 jobs: int | None = None, cpus_per_worker: int = 1, retries: int = 3,
                 job_name: str = "lookbench", cluster: str = "slurm") -> None:
        import submitit

        self.count = jobs
        self.retries = retries
        self.cluster = cluster
        self.device = "cuda" if gpus_per_job > 0 else "cpu"
        self.local = cluster == "local"
        self.traceable = True
        self.name = "submitit-local" if self.local else "slurm"
        self.folder = Path(study_dir) / LAUNCH_DIR
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params: dict[str, Any] = {"timeout_min": time_limit_min, "name": job_name,
                                  "tasks_per_node": max(1, gpus_per_job),
                                  "cpus_per_task": cpus_per_worker,
                                  "slurm_signal_delay_s": SIGNAL_DELAY_S}
        if gpus_per_job > 0:  # one GPU per worker (a Slurm task): each sees its own as cuda:0
            params["slurm_gpus_per_task"] = 1
        if partition:
            params["slurm_partition"] = partition
        if account:
            params["slurm_account"] = account
        extra = sbatch_options(sbatch or [])
        if extra:
            params["slurm_additional_parameters"] = extra
        self.executor.update_parameters(**params)
        self.jobs: list[Any] = []

    def jobs_for(self, trials_left: int) -> int:
        return self.count if self.count else max(1, min(trials_left, AUTO_MAX_JOBS))

    def submit(self, job: WorkerJob, count: int, study_dir: Path) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.executor.batch():  # one array submission (sbatch --array)
            submitted = [self.executor.submit(job) for _ in range(count)]
        self.jobs += submitted
        return [str(j.job_id) for j in submitted]

    def active(self) -> int:
        if self.local:
            return sum(1 for j in self.jobs if not _ended(j))
        states = slurm_states(self.folder, [str(j.job_id) for j in self.jobs])
        return sum(1 for s in states.values() if s.split()[0] not in ENDED)

    def detached(self) -> bool:
        return not self.local  # (local jobs are this run's processes: they stop with it)

    def close(self) -> None:
        if self.local:  # a local job still at work is stopped: its worker hands back
            for job in self.jobs:
                if not _ended(job):
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(job.job_id), signal.SIGTERM)  # (its controller passes it on)
        # (dropped now, not at the interpreter's exit, when submitit's clean-up of a local
        # job can no longer run)
        self.jobs.clear()
        gc.collect()


def _ended(job: Any) -> bool:
    with contextlib.suppress(Exception):  # (sacct not answering: counted as alive)
        if job.done():
            return True
        return str(job.state).upper().split()[0] in ENDED
    return False
