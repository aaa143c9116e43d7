"""Running a study: prepare it and start its workers (``engine``), the worker loop
(``worker``, ``worker_main``), the two shapes it runs behind one interface (``runner``: a trial
alone, ``Trial`` in ``trial``; a population, in ``population``), checkpoints, the group commit of
results (``recorder``, ``records``), early workers, GPU memory and the timing pass (``cost``).

May import: every layer below it (``tasks``, ``optim``, ``results``, ``comparison``, ``study``,
``coordination``, ``progress``); never ``report`` or the commands.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "summary": "cost",
    "EarlyWorkers": "early",
    "likely_workers": "early",
    "JOBS_FILE": "launch",
    "LAUNCH_DIR": "launch",
    "Launcher": "launch",
    "WorkerJob": "launch",
    "read_jobs": "launch",
    "record_jobs": "launch",
    "worker_argv": "launch",
    "RunResult": "engine",
    "run_study": "engine",
    "Runner": "runner",
    "TrialRunner": "runner",
    "WorkerOptions": "runner",
    "WorkerStopped": "runner",
    "drive": "runner",
    "EpochRecord": "trial",
    "Trial": "trial",
    "run_trial": "trial",
    "STORAGE_ENV": "worker",
    "run_worker": "worker",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
