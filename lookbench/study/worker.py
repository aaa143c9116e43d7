"""A worker: claim a planned trial, run it with per-epoch checkpoints, record it, repeat.

One worker runs per device (``python -m lookbench.study.worker_main``, started by ``lookbench
run``), or inside ``lookbench run`` itself when there is a single one. A trial that was cut
off continues from its last checkpoint (``<study>/checkpoints/<id>.pt``, written atomically
every few seconds of training, in the background); a trial whose result is written is never
run again.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lookbench._messages import (
    describe,
    describe_os_error,
    environmental,
    first_line,
    what_to_do,
)
from lookbench.results import ResultsUnreadable, StudyResults
from lookbench.study.checkpoints import (
    CHECKPOINTS_DIR,
    CheckpointError,
    CheckpointWriter,
    checkpoint_interval_s,
    load_checkpoint,
)
from lookbench.study.definition import Ranking, StudyConflict, ranking, stored_spec
from lookbench.study.early import WAIT_FLAG, wait_to_begin
from lookbench.study.interrupts import Interrupts, sleep
from lookbench.study.queue import Claimed, Heartbeat, Outcome, TrialQueue
from lookbench.study.recorder import Recorder
from lookbench.study.records import curve_rows, trial_row, trial_state
from lookbench.study.spec import (
    StudySpec,
    config_from_point,
    lookbench_id,
    search_space,
)
from lookbench.study.storage import BadStorage, StorageUnavailable, open_storage
from lookbench.study.trial import EpochRecord, Trial
from lookbench.tasks import DataUnavailable, TaskNotFound
from lookbench.timeline import mark

PROGRESS_EVERY_S = 1.0  # a trial's epoch is written to the storage at most this often
STORAGE_ENV = "LOOKBENCH_STORAGE_URL"  # how `lookbench run` hands its workers the storage URL


class WorkerStopped(Exception):
    """The worker must stop (data missing, bad checkpoint); the message is for the user."""


@dataclass
class WorkerReport:
    """What a worker did, for its own log (``lookbench run`` reads the tables instead)."""

    failed: list[str] = field(default_factory=list)  # one line per failed trial


def _warn(opts: WorkerOptions, message: str) -> None:
    if opts.on_warning is not None:
        opts.on_warning(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class WorkerOptions:
    study_dir: Path
    name: str
    storage: str | None = None
    device: str = "cpu"
    data_dir: Path | None = None
    grace_s: float | None = None
    # Trials trained together as one population (lookbench.population): None = as many as
    # wait and fit in memory, 1 = one trial at a time.
    population: int | None = None
    compile: bool = False  # train through torch.compile (--compile)
    # Take over the trials of dead workers before claiming anything, and resume the trials that
    # were cut off (those with a checkpoint) first: a worker started in the place of one that
    # was killed continues its trials at once, not when the queue is empty.
    take_over: bool = False
    on_epoch: Callable[[Claimed, EpochRecord], None] | None = None
    on_trial: Callable[[Claimed, str], None] | None = None
    on_warning: Callable[[str], None] | None = None


def open_queue(opts: WorkerOptions, spec: StudySpec | None = None) -> tuple[TrialQueue, StudySpec]:
    """The study's queue; its definition is read from the storage unless given."""
    storage = open_storage(opts.storage, opts.study_dir)
    if spec is None:
        spec = stored_spec(storage, opts.name)
        if spec is None:
            raise WorkerStopped(f"study {opts.name!r} has no definition in its storage")
    kwargs = {} if opts.grace_s is None else {"grace_s": opts.grace_s}
    rank = ranking(spec)
    queue = TrialQueue(storage, opts.name, spec.optimizers, rank.direction,
                       opts.study_dir, local=opts.storage is None, metric=rank.metric, **kwargs)
    return queue, spec


def run_worker(opts: WorkerOptions, stop: threading.Event | None = None) -> WorkerReport:
    """Run planned trials until none is left (or ``stop`` is set)."""
    queue, spec = open_queue(opts)
    mark("worker ready")
    rank = ranking(spec)
    results = StudyResults(opts.study_dir)
    from lookbench.study import seeds

    planned = (seeds.current_plan(spec, queue, opts.study_dir, results.recorded())[0]
               if spec.sampler != "tpe" else {})
    stages = seeds.boundaries(spec)  # a study that adds seeds grows its plan by stages
    report = WorkerReport()
    recorder = _recorder(queue, results, opts, report)
    ahead = 1  # trials claimed at a time (more when they are very short)
    resume_first = opts.take_over and spec.sampler != "tpe"
    with Interrupts() as interrupts:  # Ctrl-C stops training at once, never a storage update
        try:
            if opts.take_over:  # (under Interrupts: a signal waits until the queue is written)
                queue.replan(planned, results.recorded())
            while stop is None or not stop.is_set():
                interrupts.check()
                recorder.flush_if_due()
                claimed = _claim_cut_off(queue, opts) if resume_first else None
                resume_first = claimed is not None
                if claimed is None:
                    claimed = queue.claim(ahead)
                mark("claimed")
                if claimed is None and spec.sampler == "tpe":
                    recorder.flush()  # (TPE proposes from the outcomes recorded so far)
                    claimed = _propose(queue, spec)
                if claimed is None:
                    recorder.flush()
                    if queue.replan(planned, results.recorded()) > 0:
                        continue
                    if seeds.sequential(spec):  # a finished stage may ask for more seeds
                        grown, why_ended = seeds.current_plan(spec, queue, opts.study_dir,
                                                         results.recorded())
                        if set(grown) - set(planned):
                            planned = grown
                            continue
                        if why_ended is None and queue.running():  # the stage ends elsewhere
                            sleep(STAGE_POLL_S)
                            continue
                    break  # nothing waiting, nothing stale: done (others may still run)
                if spec.sampler != "tpe" and opts.population != 1:
                    from lookbench.population.run import gather, run_population

                    gathered = gather(queue, claimed, opts, planned, stages)
                    if len(gathered.layout) > 1:
                        run_population(queue, gathered, results, rank, opts, report, interrupts,
                                       recorder)
                        continue
                started = time.monotonic()
                _run_claimed(queue, claimed, results, rank, opts, report, interrupts, recorder)
                if spec.sampler != "tpe":
                    ahead = claim_ahead(time.monotonic() - started)
        finally:  # (stopped, interrupted or done: what finished is recorded, the rest given back)
            try:
                recorder.flush()
            finally:
                with contextlib.suppress(Exception):
                    queue.release_ahead("stopped before it started")
    return report


def _claim_cut_off(queue: TrialQueue, opts: WorkerOptions) -> Claimed | None:
    """A waiting trial that was cut off with a checkpoint (a dead worker's, given back), to
    resume before the trials that have not started; None if there is none."""
    folder = opts.study_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    cut_off = {p.stem for p in folder.glob("*.pt")}
    if not cut_off:
        return None
    claimed = queue.claim_matching(lambda config, tid: tid in cut_off, 1)
    return claimed[0] if claimed else None


# A worker of a study that adds seeds, with nothing to claim while other workers finish a
# stage, looks again this often: the next stage may then be planned.
STAGE_POLL_S = 0.5

# Trials that take this long or less are claimed several at a time: claiming one costs two
# journal appends (fsynced) and a hold of the study lock, ~1 ms, which would otherwise be a
# good part of a trial of the analytic quadratic.
AHEAD_WINDOW_S = 0.25
MAX_AHEAD = 16


def claim_ahead(trial_s: float) -> int:
    """How many trials to claim at a time after one that took ``trial_s`` seconds: as many
    as take about :data:`AHEAD_WINDOW_S` (at most :data:`MAX_AHEAD`), so a worker holds a
    quarter of a second of work it has not started, whatever the trials' length."""
    return max(1, min(MAX_AHEAD, int(AHEAD_WINDOW_S / max(trial_s, 1e-6))))


def _recorder(queue: TrialQueue, results: StudyResults, opts: WorkerOptions,
              report: WorkerReport) -> Recorder:
    """The worker's :class:`Recorder`, and what it does once a trial is recorded."""

    def recorded(outcome: Outcome) -> None:
        _checkpoint_path(opts, outcome.claimed).unlink(missing_ok=True)
        if outcome.error is not None:
            report.failed.append(f"trial {outcome.claimed.lookbench_id}: {outcome.error}")
        if opts.on_trial is not None:
            opts.on_trial(outcome.claimed, outcome.state)

    def lost(outcome: Outcome, why: str) -> None:
        _warn(opts, f"trial {outcome.claimed.lookbench_id} was {why}; its result here is "
                    f"discarded")

    def failed(outcomes: list[Outcome], error: BaseException) -> None:
        if isinstance(error, OSError):  # the results could not be written: not outcomes yet
            stop_if_environmental(queue, [o.claimed for o in outcomes], error)

    return Recorder(queue, results, recorded=recorded, lost=lost, failed=failed)


def _propose(queue: TrialQueue, spec: StudySpec) -> Claimed | None:
    """TPE: a new configuration from the sampler of the optimizer with fewer proposals."""
    for opt in spec.optimizers:
        claimed = queue.propose(
            opt, search_space(spec, opt), spec.seeds, spec.trials or 0,
            lambda point, seed, opt=opt: config_from_point(spec, opt, point, seed), lookbench_id,
        )
        if claimed is not None:
            return claimed
    return None


def stop_if_environmental(queue: TrialQueue, claimed: list[Claimed], error: BaseException
                          ) -> None:
    """A full disk, a read-only or forbidden folder: the machine is at fault, not the trials.
    The trials in ``claimed`` (one, or a population's members not recorded yet; possibly none,
    when only a last checkpoint failed to be written) are handed back (they run again on the
    next invocation) and the worker stops with one line naming the path; nothing is recorded
    as their outcome."""
    cause = environmental(error)
    if cause is None:
        return
    for c in claimed:
        with contextlib.suppress(Exception):  # the journal may sit on the same full disk:
            queue.release(c, f"stopped: {describe_os_error(cause)}")  # it goes stale instead
    raise WorkerStopped(f"{describe_os_error(cause)}; {what_to_do(cause)} and run the same "
                        f"command again: no trial it interrupted was recorded, and they run "
                        f"again") from None


def _run_claimed(queue: TrialQueue, claimed: Claimed, results: StudyResults, rank: Ranking,
                 opts: WorkerOptions, report: WorkerReport, interrupts: Interrupts,
                 recorder: Recorder) -> None:
    why = queue.is_duplicate(claimed, results.recorded_view())
    if why is not None:
        queue.abandon(claimed, why)
        return
    ckpt = _checkpoint_path(opts, claimed)
    config = claimed.config
    error = None
    records: list[EpochRecord] = []
    resumes = 0
    trial: Trial | None = None
    try:
        with Heartbeat(queue, [claimed, *recorder.claims(), *queue.claimed_ahead()]), \
                CheckpointWriter() as writer, interrupts.allowed():
            trial = Trial(config, opts.device, opts.data_dir, compile=opts.compile)
            mark("trial built")
            if not ckpt.exists() and trial.analytic is None:
                cut_off = [(h, e) for h, e in queue.previous_attempts(claimed) if e > 0]
                if cut_off:
                    host, epoch = max(cut_off, key=lambda he: he[1])
                    _warn(opts, f"trial {claimed.lookbench_id} was cut off on {host} after epoch "
                                f"{epoch} and its checkpoint is not in {opts.study_dir} (is "
                                f"--out shared between machines?); it restarts from scratch")
            if ckpt.exists():
                state = load_checkpoint(ckpt)
                try:
                    trial.load_state_dict(state["trial"])
                except Exception as e:
                    raise CheckpointError(
                        f"checkpoint {ckpt} does not fit trial {claimed.lookbench_id} ({e}); "
                        f"delete it to restart that trial from scratch"
                    ) from None
                resumes = int(state.get("resumes", 0)) + 1
            last_progress = last_checkpoint = time.monotonic()
            every = checkpoint_interval_s()
            for record in trial.run():
                # An analytic trial (no model) is recomputed faster than it is checkpointed.
                if (not trial.finished and trial.analytic is None
                        and time.monotonic() - last_checkpoint >= every):
                    writer.submit(ckpt, {"trial": trial.state_dict(), "resumes": resumes})
                    last_checkpoint = time.monotonic()
                if not trial.finished and time.monotonic() - last_progress > PROGRESS_EVERY_S:
                    with interrupts.deferred():
                        queue.progress(claimed, record.epoch)  # for `run`'s display of others
                    last_progress = time.monotonic()
                if recorder.due():  # (trials finished before this one, kept a while)
                    with interrupts.deferred():
                        recorder.flush()
                if opts.on_epoch is not None:
                    opts.on_epoch(claimed, record)
                mark("epoch")
            records = trial.records
    except (KeyboardInterrupt, DataUnavailable, CheckpointError) as e:
        queue.release(claimed, "interrupted" if isinstance(e, KeyboardInterrupt) else str(e))
        if isinstance(e, KeyboardInterrupt):
            raise
        raise WorkerStopped(str(e)) from None
    except Exception as e:  # the trial itself failed: that is a result, recorded as such
        stop_if_environmental(queue, [claimed], e)
        error = describe(e)
        records = trial.records if trial is not None else []
    _record(queue, claimed, records, error, rank, recorder, resumes=resumes,
            batch_size=trial.batch_size if trial else (config.batch_size or 0),
            schedule=trial.schedule if trial else (config.schedule or "constant"),
            device=str(trial.device if trial else opts.device))
    recorder.flush_if_due()


def _checkpoint_path(opts: WorkerOptions, claimed: Claimed) -> Path:
    return opts.study_dir / CHECKPOINTS_DIR / f"{claimed.lookbench_id}.pt"


def _record(queue: TrialQueue, claimed: Claimed, records: list[EpochRecord], error: str | None,
            rank: Ranking, recorder: Recorder, *, resumes: int, batch_size: int, schedule: str,
            device: str, population: int = 1) -> None:
    """Hand a trial's outcome (its Parquet rows, Optuna's state) to the worker's recorder,
    which writes it with others finished about then (see ``lookbench.study.recorder``) and
    then drops its checkpoint; for a trial run alone or as a member of a population alike."""
    state = trial_state(records, error)
    row = trial_row(
        study=queue.name, trial=claimed.lookbench_id, config=claimed.config, metric=rank.metric,
        higher_is_better=rank.higher_is_better, batch_size=batch_size, schedule=schedule,
        records=records, device=device, resumes=resumes, error=error, population=population,
        directions=rank.declared,
    )
    outcome = Outcome(claimed, state, row[f"final_{rank.metric}"],
                      records[-1].epoch if records else 0, row,
                      curve_rows(claimed.lookbench_id, records), error)
    # (a population's members: recorded with the others that finished in the same epoch)
    recorder.add(outcome, wall_s=records[-1].wall_s if records and population == 1
                 else math.inf)


# -- the worker process ---------------------------------------------------------------------


def _exit_with_parent() -> None:
    """End this worker when the ``lookbench run`` that started it dies, however it dies."""
    parent = os.getppid()
    with contextlib.suppress(Exception):  # Linux: the kernel signals us when the parent exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def watch() -> None:  # elsewhere (and as a backstop): poll for re-parenting
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="lookbench-parent-watch").start()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    told_storage, early = None, argv == [WAIT_FLAG]
    if early:  # started early: told what to run once the study is planned
        _exit_with_parent()
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            order = wait_to_begin()
        except KeyboardInterrupt:  # (stopped from outside before it began)
            return 130
        if order is None:
            return 0
        argv, told_storage = order
    parser = argparse.ArgumentParser(prog="python -m lookbench.study.worker_main")
    parser.add_argument("--study-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--storage", help=f"(or the environment variable {STORAGE_ENV}, "
                        "which keeps a password out of the process list)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--grace-s", type=float)
    parser.add_argument("--population", type=int)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--take-over", action="store_true",
                        help="first take over the trials of workers that died")
    args = parser.parse_args(argv)
    if not early:
        _exit_with_parent()
        signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.threads:
        torch.set_num_threads(args.threads)
    storage = args.storage or told_storage or os.environ.get(STORAGE_ENV) or None
    opts = WorkerOptions(study_dir=args.study_dir, name=args.name, storage=storage,
                         device=args.device, data_dir=args.data_dir, grace_s=args.grace_s,
                         population=args.population, compile=args.compile,
                         take_over=args.take_over)
    # Every way the worker stops is one line for `lookbench run` to read, never a traceback;
    # the codes are the README's (1: failed, the machine included; 2: bad input).
    try:
        report = run_worker(opts)
    except KeyboardInterrupt:
        return 130
    except (WorkerStopped, StorageUnavailable) as e:  # (a lock timeout, a database gone for good)
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, BadStorage) else 1
    except (TaskNotFound, DataUnavailable, ResultsUnreadable, StudyConflict) as e:
        # (the study's task or optimizer cannot be loaded here; a damaged results file)
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # outside a trial (claiming on a full disk): the machine's
        cause = environmental(e) or e
        hint = f"; {what_to_do(cause)} and run the same command again" \
            if environmental(e) is not None else ""
        print(f"error: {describe_os_error(cause)}{hint}", file=sys.stderr)
        return 1 if environmental(e) is not None else 2
    for line in report.failed:
        print(f"failed: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Run as a script, this file is a second copy of the module: the importable one runs
    # instead (see lookbench.study.worker_main), so every class exists once.
    import importlib

    sys.exit(importlib.import_module("lookbench.study.worker").main())
