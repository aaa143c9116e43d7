"""A worker's side of population training: claim the members, train them as one, record each.

After the worker claims a trial, it claims up to M−1 further WAITING trials that can share a
network with it (same task, model, batch size, epochs and schedule; an optimizer the
population optimizer steps) and runs them as a :class:`PopulationTrial`. Each member is then an
ordinary trial everywhere else: its own Optuna trial with its own heartbeat and outcome, its
own Parquet rows (written the moment it finishes or diverges, so one member's divergence is
recorded at once and costs the others nothing), and its own checkpoint file in a single
trial's format, so a population cut off by a kill resumes as a population, or its members one
by one (``--population 1``), to the same result.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from lookbench._messages import describe, environmental
from lookbench.population.layers import NotPopulable
from lookbench.population.optim import family
from lookbench.population.trial import PopulationTrial, shared_key, why_not
from lookbench.results import StudyResults
from lookbench.study.checkpoints import CheckpointError, CheckpointWriter, load_checkpoint
from lookbench.study.definition import Ranking
from lookbench.study.interrupts import Interrupts
from lookbench.study.queue import Claimed, Heartbeat, TrialQueue
from lookbench.study.worker import (
    PROGRESS_EVERY_S,
    WorkerOptions,
    WorkerReport,
    WorkerStopped,
    _checkpoint_path,
    _record,
    _run_claimed,
    _stop_if_environmental,
    _warn,
)
from lookbench.tasks import DataUnavailable, get

# ``--population`` unset: as many members as wait, up to this many (more rarely pays: the
# per-step overhead a population saves is already small next to M members' arithmetic) ...
AUTO_MAX_MEMBERS = {"cpu": 32, "cuda": 128}
# ... and as many as fit in this share of the device's free memory, counting per member its
# weights, gradients, two optimizer states and slow weights (4 bytes each) and the
# activations (``ACTIVATION_BYTES_PER_PARAMETER`` × the parameters, a rule of thumb for
# convolutional networks at their usual batch sizes).
MEMORY_SHARE = 0.5
BYTES_PER_PARAMETER = 4 * 5
ACTIVATION_BYTES_PER_PARAMETER = 16


def free_memory(device: str) -> int:
    """Bytes free on ``device`` (CUDA: as the driver says; the CPU: MemAvailable)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def member_limit(claimed: Claimed, opts: WorkerOptions) -> int:
    """How many members a population around ``claimed`` may have: ``--population`` if given,
    else what the device's memory holds, capped at :data:`AUTO_MAX_MEMBERS`."""
    if opts.population is not None:
        return opts.population
    kind = "cuda" if opts.device.startswith("cuda") else "cpu"
    try:
        parameters = get(claimed.config.task, **claimed.config.task_options).size().parameters
    except Exception:  # a task that cannot count its parameters: no population by default
        return 1
    if not parameters:
        return 1
    per_member = parameters * (BYTES_PER_PARAMETER + ACTIVATION_BYTES_PER_PARAMETER)
    fits = int(free_memory(opts.device) * MEMORY_SHARE // per_member)
    return max(1, min(AUTO_MAX_MEMBERS[kind], fits))


# Shared keys whose task or model turned out not to be populable in this process.
_REFUSED: set[str] = set()


def gather(queue: TrialQueue, first: Claimed, opts: WorkerOptions) -> list[Claimed]:
    """``first`` and the further trials claimed to train with it (none if it cannot)."""
    if why_not(first.config) is not None or shared_key(first.config) in _REFUSED:
        return [first]
    limit = member_limit(first, opts)
    if limit <= 1:
        return [first]
    key = shared_key(first.config)
    resumed = _checkpoint_path(opts, first).exists()  # cut-off members resume together
    checkpoints = opts.study_dir / _checkpoint_path(opts, first).parent.name

    def match(config, lookbench_id: str) -> bool:
        return (shared_key(config) == key and why_not(config) is None
                and (checkpoints / f"{lookbench_id}.pt").exists() == resumed)

    return [first, *queue.claim_matching(match, limit - 1)]


def run_population(queue: TrialQueue, members: list[Claimed], results: StudyResults,
                   rank: Ranking, opts: WorkerOptions, report: WorkerReport,
                   interrupts: Interrupts) -> None:
    """Train ``members`` (claimed by this worker) as one population and record each; if the
    task or model cannot be a population, run them one at a time instead."""
    recorded_ids = results.recorded()
    live = []
    for claimed in members:
        why = queue.is_duplicate(claimed, recorded_ids)
        if why is not None:
            queue.abandon(claimed, why)
        else:
            live.append(claimed)
    # Members of one update rule side by side: the optimizer steps them as one slice.
    members = sorted(live, key=lambda c: family(c.config.optimizer, c.config.optimizer_hparams()))
    if len(members) <= 1:
        for claimed in members:
            _run_claimed(queue, claimed, results, rank, opts, report, interrupts)
        return
    paths = [_checkpoint_path(opts, c) for c in members]
    pending = set(range(len(members)))  # members not recorded yet
    pop: PopulationTrial | None = None
    try:
        with Heartbeat(queue, members), CheckpointWriter() as writer, interrupts.allowed():
            states = _load_states(paths)
            pop = PopulationTrial([c.config for c in members], opts.device, opts.data_dir)
            try:
                pop.load_state_dicts([s["trial"] if s else None for s in states])
            except ValueError as e:
                found = ", ".join(str(p) for p in paths if p.exists())
                raise CheckpointError(f"checkpoints {found} do not fit their trials ({e}); "
                                      f"delete them to restart those trials from scratch"
                                      ) from None
            resumes = [int(s.get("resumes", 0)) + 1 if s else 0 for s in states]
            last_progress = time.monotonic()
            for trained in pop.run():
                for m in trained:
                    if opts.on_epoch is not None:
                        opts.on_epoch(members[m], pop.records[m][-1])
                for m in [m for m in trained if pop.member_finished(m)]:
                    with interrupts.deferred():
                        _record_member(queue, members[m], pop, m, None, results, rank, opts,
                                       report, resumes[m])
                    pending.discard(m)
                if pending and not pop.finished:
                    writer.submit_all([(paths[m], {"trial": pop.member_state_dict(m),
                                                   "resumes": resumes[m]}) for m in pending])
                    if time.monotonic() - last_progress > PROGRESS_EVERY_S:
                        with interrupts.deferred():
                            for m in pending:
                                queue.progress(members[m], pop.epoch)
                        last_progress = time.monotonic()
    except NotPopulable:  # the model or task, found out once built: one at a time instead
        _REFUSED.add(shared_key(members[0].config))
        for m in sorted(pending):
            _run_claimed(queue, members[m], results, rank, opts, report, interrupts)
        return
    except WorkerStopped:  # (a member's result could not be written: the disk)
        for m in pending:
            with contextlib.suppress(Exception):
                queue.release(members[m], "stopped")
        raise
    except (KeyboardInterrupt, DataUnavailable, CheckpointError) as e:
        for m in pending:
            queue.release(members[m], "interrupted" if isinstance(e, KeyboardInterrupt)
                          else str(e))
        if isinstance(e, KeyboardInterrupt):
            raise
        raise WorkerStopped(str(e)) from None
    except Exception as e:  # the population failed: each member not yet recorded failed so
        if environmental(e) is not None:  # ... unless the machine is at fault
            rest = sorted(pending)
            for m in rest[1:]:
                with contextlib.suppress(Exception):
                    queue.release(members[m], "stopped")
            _stop_if_environmental(queue, members[rest[0]], e)
        error = describe(e)
        for m in sorted(pending):
            _record_member(queue, members[m], pop, m, error, results, rank, opts, report, 0)
        return
    if pending:  # (every member finishes inside the loop; kept as a guard)
        _warn(opts, f"{len(pending)} members of a population ended without a record")


def _load_states(paths: list[Path]) -> list[dict | None]:
    return [load_checkpoint(p) if p.exists() else None for p in paths]


def _record_member(queue: TrialQueue, claimed: Claimed, pop: PopulationTrial | None, m: int,
                   error: str | None, results: StudyResults, rank: Ranking,
                   opts: WorkerOptions, report: WorkerReport, resumes: int) -> None:
    records = pop.records[m] if pop is not None else []
    config = claimed.config
    _record(queue, claimed, records, error, results, rank, opts, report, resumes=resumes,
            batch_size=pop.batch_size if pop is not None else (config.batch_size or 0),
            schedule=pop.schedule if pop is not None else (config.schedule or "constant"),
            device=str(pop.device if pop is not None else opts.device))
