"""``lookbench run … --launcher ray``: the study's workers as tasks of a Ray cluster (the one at
``--ray-address``, or a local Ray started for the run), each with the GPUs (``num_gpus``) and
CPUs Ray assigns it.

A task runs the same worker as a local one (``lookbench.execution.launch.WorkerJob``), so the
storage's rules hold as they are: a worker lost with its node leaves its trial to the staleness
rule (on its own host at once, elsewhere after ``--stale-after``), and the run submits workers
again when all have ended with trials left. The workers are the run's own: they end when
``lookbench run`` does (Ctrl-C included), which is Ray's rule for a driver's tasks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lookbench.execution.launch import WorkerJob
from lookbench.execution.worker import STORAGE_ENV

# How long the run's workers are given to hand their trials back when it stops, before Ray
# is shut down (which kills them; their trials are then taken over by the staleness rule).
STOP_WAIT_S = 15.0


def _run(job: WorkerJob) -> int:
    """A Ray task: one worker."""
    return job()


class RayLauncher:
    """Workers as Ray tasks (see the module's docstring)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, jobs: int | None = None,
                 gpus_per_worker: float = 1, cpus_per_worker: int = 1, retries: int = 3,
                 num_cpus: int | None = None) -> None:
        import ray

        self.ray = ray
        self.count = jobs
        self.retries = retries
        self.gpus, self.cpus = gpus_per_worker, cpus_per_worker
        self.device = "cuda" if gpus_per_worker > 0 else "cpu"
        self.local = address is None
        self.traceable = False  # (a driver's tasks end with it: nothing to find afterwards)
        env = {STORAGE_ENV: os.environ[STORAGE_ENV]} if os.environ.get(STORAGE_ENV) else {}
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if env:  # (the URL reaches the workers through Ray's runtime environment)
            options["runtime_env"] = {"env_vars": env}
        if address is None and num_cpus is not None:
            options["num_cpus"] = num_cpus
        ray.init(address=address, **options)
        self._task = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                max_retries=0)(_run)
        self.refs: list[Any] = []

    def jobs_for(self, trials_left: int) -> int:
        if self.count:
            return self.count
        resources = self.ray.cluster_resources()
        fits = (resources.get("GPU", 0) // self.gpus if self.gpus > 0
                else resources.get("CPU", 1) // max(1, self.cpus))
        return int(max(1, min(trials_left, fits)))

    def submit(self, job: WorkerJob, count: int, study_dir: Path) -> list[str]:
        refs = [self._task.remote(job) for _ in range(count)]
        self.refs += refs
        return [ref.hex() for ref in refs]

    def active(self) -> int:
        if not self.refs:
            return 0
        _, running = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return len(running)

    def detached(self) -> bool:
        return False

    def close(self) -> None:
        if self.ray.is_initialized():
            _, running = (self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
                          if self.refs else ([], []))
            for ref in running:  # (the run stops: so do its workers, handing their trials back)
                self.ray.cancel(ref)
            if running:
                self.ray.wait(running, num_returns=len(running), timeout=STOP_WAIT_S)
            self.ray.shutdown()
