"""A worker: claim a planned trial, run it with per-epoch checkpoints, record it, repeat.

One worker runs per device (``python -m lookbench.execution.worker_main``, started by ``lookbench
run``), or inside ``lookbench run`` itself when there is a single one. A trial that was cut
off continues from its last checkpoint (``<study>/checkpoints/<id>.pt``, written atomically
every few seconds of training, in the background); a trial whose result is written is never
run again.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from lookbench._messages import (
    describe_os_error,
    environmental,
    first_line,
    what_to_do,
)
from lookbench.coordination.interrupts import Interrupts, sleep
from lookbench.coordination.queue import Claimed, Outcome, TrialQueue
from lookbench.coordination.storage import BadStorage, StorageUnavailable, open_storage
from lookbench.execution.checkpoints import CHECKPOINTS_DIR, checkpoint_path
from lookbench.execution.early import WAIT_FLAG, wait_to_begin
from lookbench.execution.recorder import Recorder
from lookbench.execution.runner import (  # noqa: F401 (WorkerReport, PROGRESS_EVERY_S: re-exported)
    PROGRESS_EVERY_S,
    Runner,
    TrialRunner,
    WorkerContext,
    WorkerOptions,
    WorkerReport,
    WorkerStopped,
    drive,
    stop_if_environmental,
    warn,
)
from lookbench.results import ResultsUnreadable, StudyResults
from lookbench.study.definition import StudyConflict, ranking, stored_spec
from lookbench.study.spec import (
    StudySpec,
    config_from_point,
    lookbench_id,
    search_space,
)
from lookbench.tasks import DataUnavailable, TaskNotFound
from lookbench.timeline import mark

STORAGE_ENV = "LOOKBENCH_STORAGE_URL"  # how `lookbench run` hands its workers the storage URL


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
    from lookbench.study.seeds import boundaries, current_plan, sequential

    planned = (current_plan(spec, queue, opts.study_dir, results.recorded())[0]
               if spec.sampler != "tpe" else {})
    stages = boundaries(spec)  # a study that adds seeds grows its plan by stages
    report = WorkerReport()
    recorder = _recorder(queue, results, opts, report)
    ahead = 1  # trials claimed at a time (more when they are very short)
    resume_first = opts.take_over and spec.sampler != "tpe"
    with Interrupts() as interrupts:  # Ctrl-C stops training at once, never a storage update
        ctx = WorkerContext(queue, results, rank, opts, report, interrupts, recorder)
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
                    if sequential(spec):  # a finished stage may ask for more seeds
                        grown, why_ended = current_plan(spec, queue, opts.study_dir,
                                                         results.recorded())
                        if set(grown) - set(planned):
                            planned = grown
                            continue
                        if why_ended is None and queue.running():  # the stage ends elsewhere
                            sleep(STAGE_POLL_S)
                            continue
                    break  # nothing waiting, nothing stale: done (others may still run)
                runner: Runner = TrialRunner(claimed)
                if spec.sampler != "tpe" and opts.population != 1:
                    from lookbench.execution.population.run import runner_for

                    runner = runner_for(ctx, claimed, planned, stages)
                started = time.monotonic()
                drive(ctx, runner)
                if spec.sampler != "tpe" and isinstance(runner, TrialRunner):
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
        checkpoint_path(opts.study_dir, outcome.claimed.lookbench_id).unlink(missing_ok=True)
        if outcome.error is not None:
            report.failed.append(f"trial {outcome.claimed.lookbench_id}: {outcome.error}")
        if opts.on_trial is not None:
            opts.on_trial(outcome.claimed, outcome.state)

    def lost(outcome: Outcome, why: str) -> None:
        warn(opts, f"trial {outcome.claimed.lookbench_id} was {why}; its result here is "
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
    parser = argparse.ArgumentParser(prog="python -m lookbench.execution.worker_main")
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
    # instead (see lookbench.execution.worker_main), so every class exists once.
    import importlib

    sys.exit(importlib.import_module("lookbench.execution.worker").main())
