"""The jobs a launcher submitted for a study (``<study>/jobs.json``), as ``lookbench status``
shows them and ``lookbench cancel`` stops them: Slurm's through ``sacct`` and ``scancel``,
submitit-local's (processes of this machine) through their process ids. Ray's workers end with
the ``lookbench run`` that started them, so there is nothing of theirs to show or cancel later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from lookbench._tempfiles import pid_alive
from lookbench.execution.launch import LAUNCH_DIR, read_jobs

# submitit logs each sacct call it could not make (no Slurm here, a busy controller) at
# WARNING; lookbench says what matters itself (an UNKNOWN state).
logging.getLogger("submitit").setLevel(logging.ERROR)

# Job states that are over: Slurm's, submitit's local jobs' (FINISHED, INTERRUPTED, DONE) and
# this module's own ENDED (a job squeue no longer lists, or a local job's process gone).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE", "FINISHED", "INTERRUPTED", "DONE", "ENDED"}


def states(study_dir: Path) -> dict[str, str]:
    """Each job's state by id (``RUNNING``, ``PENDING``, ``COMPLETED``, …; ``UNKNOWN`` where the
    scheduler does not say)."""
    out: dict[str, str] = {}
    jobs = read_jobs(study_dir)
    slurm = [j["id"] for j in jobs if j.get("launcher") == "slurm"]
    if slurm:
        out.update(slurm_states(Path(study_dir) / LAUNCH_DIR, slurm))
    for j in jobs:
        if j.get("launcher") == "submitit-local":
            out[j["id"]] = "RUNNING" if str(j["id"]).isdigit() and pid_alive(int(j["id"])) \
                else "ENDED"
    return out


def summary(study_dir: Path) -> str | None:
    """One line for ``status``: how many of the study's jobs are in each state (None: the
    study was never launched)."""
    jobs = read_jobs(study_dir)
    if not jobs:
        return None
    counts = Counter(s.split()[0] for s in states(study_dir).values())
    launcher = jobs[-1].get("launcher", "cluster")
    parts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    return f"{launcher} jobs: {parts}" if parts else f"{launcher} jobs: none known"


def cancel(study_dir: Path) -> int:
    """Cancel the study's jobs that have not ended (their workers hand their trials back: Slurm
    signals them; a local job's controller gets SIGTERM, which it passes to its worker); how
    many were asked to stop."""
    current = states(study_dir)
    live = [i for i, s in current.items() if s.split()[0] not in ENDED]
    by_launcher = {j["id"]: j.get("launcher") for j in read_jobs(study_dir)}
    slurm = [i for i in live if by_launcher.get(i) == "slurm"]
    if slurm:
        subprocess.run(["scancel", *slurm], check=True)
    for i in live:
        if by_launcher.get(i) == "submitit-local":
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(i), signal.SIGTERM)
    return len(live)


def slurm_states(folder: Path, ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job: ``sacct``'s (through submitit), and where it does not know
    (a cluster without accounting, whose ``sacct`` answers nothing, or a job too new for it)
    ``squeue``'s: a job it no longer lists has ``ENDED``."""
    import submitit

    out = {}
    for job_id in ids:
        try:
            out[job_id] = str(submitit.SlurmJob(folder=folder / "%j", job_id=job_id).state)
        except Exception:  # (sacct missing or not answering)
            out[job_id] = "UNKNOWN"
    unknown = [i for i, s in out.items() if s.split()[0] == "UNKNOWN"]
    if unknown:
        queued = _squeue(unknown)
        if queued is not None:
            out.update({i: queued.get(i, "ENDED") for i in unknown})
    return out


def _squeue(ids: list[str]) -> dict[str, str] | None:
    """``squeue``'s state of each listed job it still holds (array tasks one by one); None if
    it did not answer (then nothing is concluded)."""
    bases = sorted({i.split("_")[0] for i in ids})
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(bases)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # every job ended long ago (purged), or squeue failed
        return {} if "Invalid job id" in done.stderr else None
    return dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if " " in line)
