"""What a worker runs, in one shape or another: a trial alone, or a population of trials.

Both shapes are a :class:`Runner`, and one function drives either (:func:`drive`), so a trial
goes through the same steps whatever it is trained with:

claim
    the worker claims a trial and asks for its runner: :class:`TrialRunner` for the trial
    alone, or ``lookbench.execution.population.run.runner_for``, which claims the rest of the
    trial's population (the runner's :attr:`Runner.held`);
train, epoch by epoch
    :meth:`Runner.build` builds the model(s) and resumes them from their checkpoints;
    :meth:`Runner.epochs` trains, yielding each epoch's records;
checkpoint
    every ``checkpoint_interval_s()`` of training, :meth:`Runner.checkpoints` gives the
    states of the trials not recorded yet, written on a background thread;
record
    :meth:`Runner.record_finished` hands each trial that finished (or failed on its own) to
    the worker's recorder the moment it does; :meth:`Runner.fail` records the ones a failure of
    the whole runner ended;
hand back
    on a stop (Ctrl-C, missing data, a damaged checkpoint, a full disk) the trials not
    recorded are released to the queue, to run again; a runner that finds it cannot train its
    trials together raises :class:`RunAlone`, and each of them is driven alone instead.

The heartbeat, the checkpoint writer, the progress the other workers' displays read, the
group commit of the recorder and the handling of interrupts are :func:`drive`'s alone: a
shape owns its layout and nothing of the worker's.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookbench._messages import describe, describe_os_error, environmental, what_to_do
from lookbench.coordination.interrupts import Interrupts
from lookbench.coordination.queue import Claimed, Heartbeat, Outcome, TrialQueue
from lookbench.execution.checkpoints import (
    CheckpointError,
    CheckpointWriter,
    checkpoint_interval_s,
    checkpoint_path,
    load_checkpoint,
)
from lookbench.execution.recorder import Recorder
from lookbench.execution.records import curve_rows, trial_row, trial_state
from lookbench.execution.trial import EpochRecord, Trial
from lookbench.results import StudyResults
from lookbench.study.definition import Ranking
from lookbench.tasks import DataUnavailable
from lookbench.timeline import mark

PROGRESS_EVERY_S = 1.0  # a trial's epoch is written to the storage at most this often


class WorkerStopped(Exception):
    """The worker must stop (data missing, bad checkpoint); the message is for the user."""


class RunAlone(Exception):
    """A runner cannot train its trials together (a model or task that cannot be a population,
    checkpoints that do not make one): each of its trials not recorded runs alone instead."""


@dataclass
class WorkerReport:
    """What a worker did, for its own log (``lookbench run`` reads the tables instead)."""

    failed: list[str] = field(default_factory=list)  # one line per failed trial


@dataclass
class WorkerOptions:
    study_dir: Path
    name: str
    storage: str | None = None
    device: str = "cpu"
    data_dir: Path | None = None
    grace_s: float | None = None
    # Trials trained together as one population (lookbench.execution.population): None = as many as
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


@dataclass
class WorkerContext:
    """What a runner may use of the worker that drives it."""

    queue: TrialQueue
    results: StudyResults
    rank: Ranking
    opts: WorkerOptions
    report: WorkerReport
    interrupts: Interrupts
    recorder: Recorder

    def checkpoint_path(self, claimed: Claimed) -> Path:
        """Where ``claimed``'s checkpoint lives (a trial alone or a population's member)."""
        return checkpoint_path(self.opts.study_dir, claimed.lookbench_id)

    def warn(self, message: str) -> None:
        warn(self.opts, message)

    def record(self, claimed: Claimed, records: list[EpochRecord], error: str | None, *,
               resumes: int, batch_size: int, schedule: str, device: str,
               population: int = 1) -> None:
        """Hand a trial's outcome (its Parquet rows, Optuna's state) to the worker's recorder,
        which writes it with others finished about then (see ``lookbench.execution.recorder``)
        and then drops its checkpoint; for a trial run alone or as a member of a population
        alike."""
        rank = self.rank
        state = trial_state(records, error)
        row = trial_row(
            study=self.queue.name, trial=claimed.lookbench_id, config=claimed.config,
            metric=rank.metric, higher_is_better=rank.higher_is_better, batch_size=batch_size,
            schedule=schedule, records=records, device=device, resumes=resumes, error=error,
            population=population, directions=rank.declared,
        )
        outcome = Outcome(claimed, state, row[f"final_{rank.metric}"],
                          records[-1].epoch if records else 0, row,
                          curve_rows(claimed.lookbench_id, records), error)
        # (a population's members: recorded with the others that finished in the same epoch)
        self.recorder.add(outcome, wall_s=records[-1].wall_s if records and population == 1
                          else math.inf)


def warn(opts: WorkerOptions, message: str) -> None:
    """One warning line: to the caller's ``on_warning``, else to stderr."""
    if opts.on_warning is not None:
        opts.on_warning(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


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


class Runner(ABC):
    """One shape of a worker's work: what it holds, builds, trains, saves and records."""

    #: the word the timeline marks its build with ("trial built", "population built")
    name: str = "trial"

    @abstractmethod
    def start(self, ctx: WorkerContext) -> bool:
        """Give back the held trials that another worker recorded meanwhile; whether any
        trial is left to run."""

    @property
    @abstractmethod
    def held(self) -> list[Claimed]:
        """The trials this runner holds (its heartbeat keeps their leases)."""

    @property
    @abstractmethod
    def pending(self) -> list[Claimed]:
        """The held trials not recorded yet (what a stop hands back)."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """Whether training is over (nothing left to checkpoint or to report progress of)."""

    @property
    @abstractmethod
    def epoch(self) -> int:
        """The epochs trained so far (the progress the other workers' displays read)."""

    @abstractmethod
    def build(self, ctx: WorkerContext) -> None:
        """Build the model(s) and resume the trials that have a checkpoint."""

    @abstractmethod
    def epochs(self) -> Iterator[list[tuple[Claimed, EpochRecord]]]:
        """Train what is left, epoch by epoch; after each, yield the records it made."""

    @abstractmethod
    def checkpoints(self) -> list[tuple[Path, dict[str, Any]]]:
        """The states to save now for the pending trials (empty: nothing worth saving)."""

    @abstractmethod
    def record_finished(self, ctx: WorkerContext, ended: bool = False) -> None:
        """Record the trials that finished, or failed on their own; ``ended``: training is
        over, so what is left is recorded as it stands (if this shape can)."""

    @abstractmethod
    def fail(self, ctx: WorkerContext, error: Exception) -> None:
        """Record every pending trial as failed by ``error`` (the runner itself failed)."""


def drive(ctx: WorkerContext, runner: Runner) -> None:
    """Run ``runner``'s trials to their records (see the module's docstring for the steps);
    a stop hands back what is not recorded and re-raises (Ctrl-C) or raises
    :class:`WorkerStopped` (what the user must fix)."""
    queue, recorder, interrupts, opts = ctx.queue, ctx.recorder, ctx.interrupts, ctx.opts
    if not runner.start(ctx):
        return
    try:
        with Heartbeat(queue, [*runner.held, *recorder.claims(), *queue.claimed_ahead()]), \
                CheckpointWriter() as writer, interrupts.allowed():
            runner.build(ctx)
            mark(f"{runner.name} built")
            runner.record_finished(ctx)  # (members whose seed's workload failed)
            last_progress = last_checkpoint = time.monotonic()
            every = checkpoint_interval_s()
            for trained in runner.epochs():
                mark("epoch")
                if opts.on_epoch is not None:
                    for claimed, record in trained:
                        opts.on_epoch(claimed, record)
                runner.record_finished(ctx)
                if recorder.due():
                    # (a recorded trial's checkpoint is deleted: the save in flight, which may
                    # hold it, lands first)
                    writer.wait()
                    with interrupts.deferred():
                        recorder.flush()
                if runner.pending and not runner.done:
                    if time.monotonic() - last_checkpoint >= every:
                        states = runner.checkpoints()
                        if states:
                            writer.submit_all(states)
                            last_checkpoint = time.monotonic()
                    if time.monotonic() - last_progress > PROGRESS_EVERY_S:
                        with interrupts.deferred():
                            for claimed in runner.pending:
                                queue.progress(claimed, runner.epoch)
                        last_progress = time.monotonic()
            runner.record_finished(ctx, ended=True)
    except RunAlone:
        for claimed in runner.pending:
            drive(ctx, TrialRunner(claimed))
        return
    except WorkerStopped:  # (a result could not be written: the disk)
        for claimed in runner.pending:
            with contextlib.suppress(Exception):
                queue.release(claimed, "stopped")
        raise
    except (KeyboardInterrupt, DataUnavailable, CheckpointError) as e:
        for claimed in runner.pending:
            queue.release(claimed, "interrupted" if isinstance(e, KeyboardInterrupt)
                          else str(e))
        if isinstance(e, KeyboardInterrupt):
            raise
        raise WorkerStopped(str(e)) from None
    except Exception as e:  # the runner failed: every trial not recorded failed so (that is a
        # result, recorded as such) ... unless the machine is at fault (a full disk): then
        # nothing is recorded
        stop_if_environmental(queue, runner.pending, e)
        runner.fail(ctx, e)
    recorder.flush_if_due()
    if runner.pending:  # (every trial is recorded inside the loop; kept as a guard)
        ctx.warn(f"{len(runner.pending)} trials of a {runner.name} ended without a record")


class TrialRunner(Runner):
    """A trial trained alone."""

    name = "trial"

    def __init__(self, claimed: Claimed) -> None:
        self.claimed = claimed
        self.trial: Trial | None = None
        self.resumes = 0
        self.recorded = False
        self.ckpt: Path | None = None

    def start(self, ctx: WorkerContext) -> bool:
        why = ctx.queue.is_duplicate(self.claimed, ctx.results.recorded_view())
        if why is not None:
            ctx.queue.abandon(self.claimed, why)
            return False
        self.ckpt = ctx.checkpoint_path(self.claimed)
        return True

    @property
    def held(self) -> list[Claimed]:
        return [self.claimed]

    @property
    def pending(self) -> list[Claimed]:
        return [] if self.recorded else [self.claimed]

    @property
    def done(self) -> bool:
        return self.trial is not None and self.trial.finished

    @property
    def epoch(self) -> int:
        return self.trial.records[-1].epoch if self.trial and self.trial.records else 0

    def build(self, ctx: WorkerContext) -> None:
        claimed, ckpt, opts = self.claimed, self.ckpt, ctx.opts
        assert ckpt is not None
        self.trial = trial = Trial(claimed.config, opts.device, opts.data_dir,
                                   compile=opts.compile)
        if not ckpt.exists() and trial.analytic is None:
            cut_off = [(h, e) for h, e in ctx.queue.previous_attempts(claimed) if e > 0]
            if cut_off:
                host, epoch = max(cut_off, key=lambda he: he[1])
                ctx.warn(f"trial {claimed.lookbench_id} was cut off on {host} after epoch "
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
            self.resumes = int(state.get("resumes", 0)) + 1

    def epochs(self) -> Iterator[list[tuple[Claimed, EpochRecord]]]:
        assert self.trial is not None
        for record in self.trial.run():
            yield [(self.claimed, record)]

    def checkpoints(self) -> list[tuple[Path, dict[str, Any]]]:
        # An analytic trial (no model) is recomputed faster than it is checkpointed.
        assert self.trial is not None and self.ckpt is not None
        if self.trial.analytic is not None:
            return []
        return [(self.ckpt, {"trial": self.trial.state_dict(), "resumes": self.resumes})]

    def record_finished(self, ctx: WorkerContext, ended: bool = False) -> None:
        if self.recorded or not (ended or self.done):
            return
        self._record(ctx, None)

    def fail(self, ctx: WorkerContext, error: Exception) -> None:
        if not self.recorded:
            self._record(ctx, describe(error))

    def _record(self, ctx: WorkerContext, error: str | None) -> None:
        trial, config = self.trial, self.claimed.config
        with ctx.interrupts.deferred():  # (kept, and no longer pending: both or neither)
            ctx.record(self.claimed, trial.records if trial is not None else [], error,
                       resumes=self.resumes,
                       batch_size=trial.batch_size if trial else (config.batch_size or 0),
                       schedule=trial.schedule if trial else (config.schedule or "constant"),
                       device=str(trial.device if trial else ctx.opts.device))
            self.recorded = True
