"""``lookbench run``: prepare a study once, then run its workers across the devices.

Preparing (validate, store the definition, plan every trial in the queue) happens once, in the
command's own process and under the study lock; then one worker per device (or ``--workers``
per device) claims trials until none is left. Re-running the same command continues the study:
recorded trials are kept, interrupted ones resume from their checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lookbench import _tempfiles
from lookbench._messages import describe_os_error, first_line
from lookbench._tempfiles import process_start
from lookbench.coordination.queue import TrialQueue
from lookbench.coordination.storage import open_storage, study_lock
from lookbench.execution.checkpoints import (
    CHECKPOINTS_DIR,
    remove_dead_temps,
    remove_recorded,
)
from lookbench.execution.cost import COST_FILE
from lookbench.execution.early import EarlyWorkers
from lookbench.execution.gpu_memory import GpuMemoryGate
from lookbench.execution.launch import (
    LAUNCH_DIR,
    Launcher,
    WorkerJob,
    record_jobs,
    worker_argv,
)
from lookbench.execution.worker import (
    STORAGE_ENV,
    WorkerOptions,
    WorkerStopped,
    run_worker,
)
from lookbench.hparams import format_config
from lookbench.results import ResultsUnreadable, StudyResults
from lookbench.study.definition import (
    StudyConflict,
    check_same_definition,
    ranking,
    store_spec,
    stored_spec,
    task_facts,
    write_file,
)
from lookbench.study.seeds import boundaries, current_plan, sequential
from lookbench.study.spec import StudySpec, planned_runs
from lookbench.timeline import mark

__all__ = ["RunResult", "StudyConflict", "prepare", "run_study"]

@dataclass
class Placement:
    """Where one worker runs."""

    device: str  # "cpu" or "cuda:0" as the worker sees it
    visible: str | None  # CUDA_VISIBLE_DEVICES for the worker, or None for the CPU
    threads: int


@dataclass
class RunResult:
    """What a run did. ``recorded``: trials with a row in this study folder; ``elsewhere``:
    trials other machines finished and recorded in theirs; ``running_elsewhere``: trials that
    live workers elsewhere still hold. The run is complete when recorded + elsewhere reach
    ``planned``."""

    planned: int
    recorded: int
    elsewhere: int = 0
    running_elsewhere: int = 0
    retried: int = 0
    seeds_note: str | None = None  # a study that adds seeds: why it stopped adding them
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    cost: dict | None = None  # what this run's cost pass wrote to cost.json (None: no pass)
    study_dir: Path | None = None  # the study's folder (<out>/<study>): lookbench.load_results
    jobs_left: int = 0  # launched workers (Slurm) still queued or running when the run stopped


def placements(devices: str, workers: int | None, threads: int = 1) -> list[Placement]:
    """Workers for ``--devices`` (auto, cpu, or GPU indices "0,1") and ``--workers``.

    On the CPU every trial uses the study's ``threads`` whatever the number of workers (a
    result depends on it: a matmul split over more threads sums in another order), and the
    default is as many workers as the cores hold at that count.
    """
    cores = os.cpu_count() or 1
    if devices == "auto":
        devices = ",".join(str(i) for i in range(torch.cuda.device_count())) or "cpu"
    if devices == "cpu":
        n = workers or max(1, cores // threads)
        return [Placement("cpu", None, threads) for _ in range(n)]
    indices = [d.strip() for d in devices.split(",") if d.strip()]
    if not indices or not all(d.isdigit() for d in indices):
        raise ValueError(f"--devices takes auto, cpu, or GPU indices like 0,1; got {devices!r}")
    available = torch.cuda.device_count()
    missing = [d for d in indices if int(d) >= available]
    if missing:
        raise ValueError(f"no CUDA device {', '.join(missing)} here ({available} available)")
    per = workers or 1
    threads = max(1, cores // (per * len(indices)))
    return [Placement("cuda:0", d, threads) for d in indices for _ in range(per)]


def prepare(spec: StudySpec, out: Path, storage_url: str | None,
            data_dir: Path | None = None, retry_failed: bool = False,
            warnings: list[str] | None = None) -> tuple[TrialQueue, dict, int]:
    """Create or reopen the study and plan its trials; returns the queue, the plan, and how
    many failed trials were set to run again (``retry_failed``). Recorded trials whose curves
    are lost run again too (``_set_lost_aside``), with a line for ``warnings``."""
    from lookbench import tasks

    mark("prepare")
    study_dir = out / spec.study_name
    task = tasks.get(spec.task, **spec.task_options)
    task.check_data(data_dir)  # before creating anything
    # A database first: a URL that cannot be opened creates nothing (the journal, by default,
    # lives in the study folder).
    storage = open_storage(storage_url, study_dir) if storage_url is not None else None
    study_dir.mkdir(parents=True, exist_ok=True)  # (a file in the way: one line, from the CLI)
    if storage is None:
        storage = open_storage(None, study_dir)
    with study_lock(storage, study_dir, spec.study_name):
        old = stored_spec(storage, spec.study_name)
        if old is not None:
            check_same_definition(old, spec)
        rank = ranking(spec)
        queue = TrialQueue(storage, spec.study_name, spec.optimizers, rank.direction, study_dir,
                           local=storage_url is None, metric=rank.metric)
        if old is None:
            store_spec(queue.studies.values(), spec)
        write_file(study_dir, old or spec, task_facts(task))
    mark("definition stored")
    results = StudyResults(study_dir)
    lost = _set_lost_aside(queue, results)
    if lost and warnings is not None:
        warnings.append(f"{lost} recorded trials had no curves (a file of {results.curves_dir} "
                        f"deleted or lost), so they run again; their earlier rows are under "
                        f"{results.root / LOST_CURVES_DIR}")
    retried = _set_failed_aside(queue, results) if retry_failed else 0
    recorded = results.recorded()
    # (a study that adds seeds plans the stages its recorded outcomes asked for: seeds.py)
    planned = current_plan(spec, queue, study_dir, recorded)[0] \
        if spec.sampler != "tpe" else {}
    queue.replan(planned, recorded)
    remove_recorded(study_dir / CHECKPOINTS_DIR, recorded)  # left by a worker killed at the end
    _remove_dead_temps(study_dir)
    mark("plan queued")
    return queue, planned, retried


RETRIED_DIR = "retried"  # failed results set aside by --retry-failed
LOST_CURVES_DIR = "lost-curves"  # rows of trials whose curves were lost, set aside


def _set_lost_aside(queue: TrialQueue, results: StudyResults) -> int:
    """A trial counts as recorded only with its curves (where it trained an epoch at least):
    the rows of those whose curves are lost (``StudyResults.without_curves``: a curves file
    deleted, as a damaged file's message offers, or lost with a disk) move to
    ``<study>/lost-curves/`` and their Optuna trials are voided, as ``--retry-failed`` does,
    so they are planned again, here and on every machine sharing the study, and recorded
    anew. Set aside rather than deleted: the row is the trial's only record of its outcome
    until it runs again, and out of the tables' folders and voided it is counted nowhere
    (no reader of ``trials/`` sees it, no machine counts the Optuna trial as done). Voided
    first: a kill before the rows move leaves them found again by the next run. Checked once
    per run, here where the plan is made, not at each claim: ``recorded()`` stays a listing
    of the trials folder. Returns how many."""
    lost = results.without_curves()
    if not lost:
        return 0
    queue.void(lost)
    moved = results.set_aside_without_curves(results.root / LOST_CURVES_DIR)
    if moved - lost:  # (found lost in the moment between the two looks)
        queue.void(moved - lost)
    return len(moved | lost)


def _remove_dead_temps(study_dir: Path) -> int:
    """The temporary files of writes killed midway, outside the tables' folders (which each
    compaction cleans): checkpoints, and the rows set aside. A live writer's stay (see
    ``lookbench._tempfiles``). Returns how many were removed."""
    removed = remove_dead_temps(study_dir / CHECKPOINTS_DIR)
    for where in (RETRIED_DIR, LOST_CURVES_DIR):
        for table in ("trials", "curves"):
            removed += _tempfiles.remove_dead(study_dir / where / table)
    return removed


def _set_failed_aside(queue: TrialQueue, results: StudyResults) -> int:
    """``--retry-failed``: the trials recorded as ``failed`` run again. Their part files move
    to ``<study>/retried/`` (kept, out of the tables' folders) and their Optuna trials are
    voided, so every worker and machine plans them again. Returns how many."""
    failed = {r["trial"] for r in results.trials().select(["trial", "state"]).to_pylist()
              if r["state"] == "failed"}
    results.set_aside(failed, results.root / RETRIED_DIR)  # one call: one rewrite at most
    queue.void(failed)
    return len(failed)


def _describe(config) -> str:
    """``lookahead(sgd) lr=0.1 momentum=0.9 k=5 alpha=0.5 seed 0``: one running trial."""
    who = f"{config.optimizer}({config.inner})" if config.inner else config.optimizer
    return f"{who} {format_config(config.hyperparameters())} seed {config.seed}"


class ProgressView:
    """Rich progress: trials recorded of planned, and the epoch of each running trial."""

    def __init__(self, console: Console, total: int, epochs: int) -> None:
        self.total = total
        self.epochs = epochs
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[left]}"), console=console)
        self.bar = self.progress.add_task("trials", total=total, left="")
        self.running: list[str] = []
        self.live = Live(self._render(), console=console, refresh_per_second=4,
                         transient=False)

    def _render(self) -> Table:
        grid = Table.grid()
        grid.add_row(self.progress)
        for line in self.running[:12]:
            grid.add_row(f"  [dim]{line}[/dim]")
        if len(self.running) > 12:
            grid.add_row(f"  [dim]… and {len(self.running) - 12} more running[/dim]")
        return grid

    def update(self, recorded: int, running: list[str], left: str | None = None) -> None:
        self.progress.update(self.bar, completed=min(recorded, self.total))
        if left is not None:
            self.progress.update(self.bar, left=left)
        self.running = running
        self.live.update(self._render())


def _time_left(results: StudyResults, planned: dict, total: int, epochs: int,
               where: list[Placement]) -> str:
    """``about 3 min left`` for the progress line (``""`` until two trials have finished)."""
    from lookbench.progress.time_left import estimate

    try:
        trials = results.trials().select(
            ["trial", "optimizer", "state", "epochs_done", "wall_s", "device"]).to_pandas()
    except Exception:  # (a table being compacted, a part half-written: the next round says)
        return ""
    recorded = set(trials["trial"])
    remaining: dict[str, float] = {}
    if planned:
        for tid, config in planned.items():
            if tid not in recorded:
                remaining[config.optimizer] = remaining.get(config.optimizer, 0) + config.epochs
    else:  # (random and TPE samplers: no plan, only a count)
        remaining[""] = max(0, total - len(recorded)) * epochs
    left = estimate(trials, remaining, parallel=len(where), devices={p.device for p in where})
    return "" if left is None else str(left)


def run_study(spec: StudySpec, *, out: Path, storage_url: str | None, devices: str,
              workers: int | None, data_dir: Path | None, console: Console,
              grace_s: float | None = None, retry_failed: bool = False,
              population: int | None = None, compile: bool = False,
              early: EarlyWorkers | None = None, launcher: Launcher | None = None
              ) -> RunResult:
    """Run (or continue) the study to the end; Ctrl-C stops it cleanly. ``retry_failed``:
    trials recorded as failed run again. ``population``: trials trained together as one
    model per worker (``None``: as many as fit; 1: one at a time). ``compile``: train
    through ``torch.compile``. ``early``: worker processes the caller started before it
    imported torch (``lookbench.execution.early``), used for the first workers it starts; those
    not used are killed before this returns. ``launcher``: the workers are jobs of a cluster
    (``lookbench.launchers``: Slurm, Ray), submitted and then watched through the storage."""
    try:
        return _run_study(spec, out=out, storage_url=storage_url, devices=devices,
                          workers=workers, data_dir=data_dir, console=console, grace_s=grace_s,
                          retry_failed=retry_failed, population=population, compile=compile,
                          early=early, launcher=launcher)
    finally:
        if early is not None:
            early.close()
        if launcher is not None:
            launcher.close()


def _run_study(spec: StudySpec, *, out: Path, storage_url: str | None, devices: str,
               workers: int | None, data_dir: Path | None, console: Console,
               grace_s: float | None, retry_failed: bool, population: int | None,
               compile: bool, early: EarlyWorkers | None,
               launcher: Launcher | None = None) -> RunResult:
    """:func:`run_study`, its early workers closed by the caller."""
    where = placements(devices, workers, spec.threads)  # checked before anything is created
    population = spec.population if population is None else population  # (the definition's)
    warnings: list[str] = []
    queue, planned, retried = prepare(spec, out, storage_url, data_dir, retry_failed, warnings)
    study_dir = out / spec.study_name
    results = StudyResults(study_dir)
    total = len(planned) if planned else sum(planned_runs(spec).values())  # TPE: no plan

    def recorded_now() -> int:
        return len(results.recorded() & set(planned)) if planned else len(results.recorded())

    grown = [time.monotonic()]

    def grow() -> None:
        """A study that adds seeds: its workers plan each stage as the one before ends; the
        count follows (at most every 2 s: it reads every outcome in the storage)."""
        nonlocal planned, total
        if not sequential(spec) or time.monotonic() - grown[0] < 2.0:
            return
        grown[0] = time.monotonic()
        planned, result.seeds_note = current_plan(spec, queue, study_dir,
                                                        results.recorded())
        total = result.planned = len(planned)

    result = RunResult(planned=total, recorded=recorded_now(), retried=retried,
                       warnings=warnings, study_dir=study_dir)
    grown[0] = 0.0
    grow()  # (a study that adds seeds: why it stopped, if it has)
    _account(result, queue, results, planned)
    if result.recorded + result.elsewhere >= total:
        # (nothing to run, but what an earlier run left is merged and cleaned all the same:
        # parts and batches of a run killed before its compaction, temporary files)
        _compact(results, result)
        _cost_pass(spec, study_dir, where[0], data_dir, console, result, launcher)
        return result
    before = results.recorded()

    view = ProgressView(console, total, spec.epochs or 0)

    def hand_back() -> None:
        """The trials of a worker that was killed go back to the queue (called by the thread
        that reaps the worker processes; its own reader of the tables)."""
        queue.replan(planned, StudyResults(study_dir).recorded())

    estimated = [0.0, -1]  # when the time left was last estimated, and at how many recorded

    def time_left(done: int) -> str | None:
        """The time left, from the study's finished trials (again at most every 5 s, and
        only once a trial more has finished: it reads the trials table)."""
        if done >= total:
            return ""
        if done == estimated[1] or time.monotonic() - estimated[0] < 5.0:
            return None
        estimated[:] = [time.monotonic(), done]
        return _time_left(results, planned, total, spec.epochs or 0, where)

    def refresh() -> None:
        grow()
        view.total = total
        view.progress.update(view.bar, total=total)
        done = recorded_now()
        running = [f"{_describe(c)}: epoch {e or 0}/{c.epochs}" for c, e in queue.running()]
        view.update(done, running, time_left(done))

    with view.live:
        refresh()
        stages, taken_over = len(boundaries(spec)) + 1, 0
        while stages > 0:
            if launcher is not None:
                _run_launched(launcher, spec, study_dir, where[0], data_dir, grace_s, refresh,
                              result, population, compile, queue, planned_now=lambda: planned)
            elif len(where) == 1:
                _run_in_process(spec, study_dir, storage_url, where[0], data_dir, grace_s,
                                refresh, result, population, compile)
            else:
                _run_processes(spec, study_dir, storage_url, where, data_dir, grace_s,
                               refresh, result, population, compile, queue=queue,
                               hand_back=hand_back, early=early,
                               while_others_work=lambda: _measure_cost(
                                   spec, study_dir, where[0], data_dir, console, result,
                                   show=False))
            if result.interrupted or result.errors:
                break
            # Trials whose worker elsewhere on this host (another command on a shared
            # storage) died after this run's workers last looked: taken over now, not left to
            # a later run (at most 3 times, so a trial that kills every process stops).
            if taken_over < MAX_REPLACEMENTS and queue.replan(planned, results.recorded()) > 0:
                taken_over += 1
                continue
            stages -= 1
            if not sequential(spec):
                break
            # The workers stop when nothing is left that they know of; a stage another
            # machine finished just after may have asked for more seeds since: run them too.
            grown[0] = 0.0
            grow()
            if not (set(planned) - results.recorded() - queue.finished_ids(results.recorded())):
                break
            queue.replan(planned, results.recorded())
        refresh()
    if not console.is_terminal:
        console.print()  # a non-terminal Live leaves its last frame without a newline
    result.recorded = recorded_now()
    result.failed = _failed_since(results, before)
    _account(result, queue, results, planned)
    _compact(results, result)
    mark("compacted")
    if not result.interrupted and result.recorded + result.elsewhere >= total:
        _cost_pass(spec, study_dir, where[0], data_dir, console, result, launcher)
    return result


def _cost_pass(spec: StudySpec, study_dir: Path, place: Placement, data_dir: Path | None,
               console: Console, result: RunResult, launcher: Launcher | None) -> None:
    """The study's timing pass here, unless its workers ran on a cluster: this machine (a
    login node) is not theirs, and its timings would not be what Lookahead costs there."""
    if launcher is None or launcher.local:
        _measure_cost(spec, study_dir, place, data_dir, console, result)
        mark("cost measured")
    elif not (study_dir / COST_FILE).exists():
        result.warnings.append(
            "what Lookahead costs was not measured: the workers ran on the cluster, not "
            "here; run the same command without --launcher on a machine like theirs (it "
            "trains nothing, the study being complete) to measure it")


def _measure_cost(spec: StudySpec, study_dir: Path, place: Placement, data_dir: Path | None,
                  console: Console, result: RunResult, show: bool = True) -> None:
    """Once a study is complete and has no ``cost.json``, measure what Lookahead costs on the
    study's device, in this process (``lookbench.execution.cost``); a study measured before costs
    nothing more. Not writing the file is a warning (the next run measures again); Ctrl-C
    interrupts the run and writes nothing. ``show``: say so on the console (not while the
    progress view is up: Rich shows one live display at a time)."""
    from lookbench.execution import cost

    if (study_dir / cost.COST_FILE).exists():
        return
    try:
        trials = StudyResults(study_dir).trials().select(["wall_s"]).column("wall_s")
        study_s = float(sum(v for v in trials.to_pylist() if v is not None))
    except (OSError, ResultsUnreadable, KeyError):
        study_s = None
    budget = cost.budget_seconds(study_s=study_s)
    if budget <= 0:
        return
    device = "cpu" if place.visible is None else f"cuda:{place.visible}"
    try:
        with console.status("measuring what Lookahead costs…") if show \
                else contextlib.nullcontext():
            result.cost = cost.measure_cost(spec, study_dir, device, spec.threads, data_dir,
                                            budget)
    except KeyboardInterrupt:
        result.interrupted = True
    except OSError as e:
        result.warnings.append(f"what Lookahead costs was not measured "
                               f"({describe_os_error(e)}); "
                               f"the next `lookbench run` of the study measures it")


def _compact(results: StudyResults, result: RunResult) -> None:
    """Merge the part and batch files the run wrote (and any an earlier run left) into one
    file per table (readers of a study of thousands of trials open two files instead of
    thousands), and remove the temporary files of writes killed midway, there (the
    compaction) and among the checkpoints. Every run ends so, also one with nothing to run.
    The results are safe without it, so a failure is a warning, and the next run or
    ``lookbench compact`` does it."""
    try:
        results.compact()
    except (OSError, ResultsUnreadable) as e:
        why = describe_os_error(e) if isinstance(e, OSError) else first_line(e)
        result.warnings.append(f"the results were not compacted ({why}); "
                               f"`lookbench compact` does it later")
    with contextlib.suppress(OSError):  # (a leftover stays for the next run: no harm)
        _remove_dead_temps(results.root)


def _account(result: RunResult, queue: TrialQueue, results: StudyResults, planned: dict) -> None:
    """How many trials other machines recorded, and how many live workers still hold."""
    here = results.recorded()
    done = queue.finished_ids(here) - here
    result.elsewhere = len(done & set(planned)) if planned else len(done)
    result.running_elsewhere = len(queue.running())


def _failed_since(results: StudyResults, before: set[str]) -> list[str]:
    """The trials recorded as failed by this run, from the trials table (the record every
    worker writes, on any machine), one line each: ``trial <id>: <error>``."""
    new = results.recorded() - before
    if not new:
        return []
    rows = results.trials().select(["trial", "state", "error"]).to_pylist()
    return [f"trial {r['trial']}: {r['error']}" for r in sorted(rows, key=lambda r: r["trial"])
            if r["trial"] in new and r["state"] == "failed"]


def _run_in_process(spec: StudySpec, study_dir: Path, storage_url: str | None, place: Placement,
                    data_dir: Path | None, grace_s: float | None, refresh, result: RunResult,
                    population: int | None = None, compile: bool = False,
                    take_over: bool = False) -> None:
    if place.visible is not None:
        torch.cuda.set_device(int(place.visible))
        device = f"cuda:{place.visible}"
    else:
        device = "cpu"
        torch.set_num_threads(place.threads)
    last = [0.0]

    def tick(*_: object) -> None:
        now = time.monotonic()
        if now - last[0] > 0.25:
            last[0] = now
            refresh()

    opts = WorkerOptions(study_dir=study_dir, name=spec.study_name, storage=storage_url,
                         device=device, data_dir=data_dir, grace_s=grace_s,
                         population=population, compile=compile, take_over=take_over,
                         on_epoch=tick, on_trial=tick, on_warning=result.warnings.append)
    try:
        run_worker(opts)  # its failed trials are read from the tables, as for worker processes
    except KeyboardInterrupt:
        result.interrupted = True
        return
    except WorkerStopped as e:
        result.errors.append(str(e))
        return


# How often a launched study's storage (and its jobs' states) is read while it runs
# (LOOKBENCH_POLL_S sets it: tests, or a scheduler that asks to be asked less often).
POLL_S = 2.0


def poll_s() -> float:
    try:
        return max(0.05, float(os.environ.get("LOOKBENCH_POLL_S", POLL_S)))
    except ValueError:
        return POLL_S


def _run_launched(launcher: Launcher, spec: StudySpec, study_dir: Path, place: Placement,
                  data_dir: Path | None, grace_s: float | None, refresh, result: RunResult,
                  population: int | None, compile: bool, queue: TrialQueue,
                  planned_now) -> None:
    """The workers as a cluster's jobs: submitted, then watched through the storage until every
    planned trial is done (by any job); when every job ended before that (preempted, out of
    time, killed), the trials they held go back to the queue and workers are submitted again,
    at most ``launcher.retries`` times. Ctrl-C stops the watching: Slurm's jobs go on (counted
    in ``result.jobs_left``), Ray's end with the run."""
    base = worker_argv(study_dir=study_dir, name=spec.study_name, device=launcher.device,
                       threads=place.threads, data_dir=data_dir, grace_s=grace_s,
                       population=population, compile=compile)
    results = StudyResults(study_dir)

    def outstanding() -> tuple[int, bool]:
        """(trials not done in the storage, whether any planned trial lacks its rows here),
        from one read of the tables. A worker records an outcome in the storage before it
        writes the rows (docs/distributed.md, "Exactly once"): the study is over here once
        the rows are too, or, with folders apart, once the workers have all ended."""
        recorded, planned = results.recorded(), set(planned_now())
        return len(planned - recorded - queue.finished_ids(recorded)), bool(planned - recorded)

    def submit(take_over: bool, left: int) -> None:
        argv = (*base, "--take-over") if take_over else base
        ids = launcher.submit(WorkerJob(argv), launcher.jobs_for(left), study_dir)
        if launcher.traceable:  # (status and cancel find them by id)
            record_jobs(study_dir, launcher.name, ids)

    resubmitted = 0
    try:
        submit(False, outstanding()[0])
        while True:
            refresh()
            left, rows_missing = outstanding()
            active = launcher.active()
            if left == 0 and not (rows_missing and active > 0):
                break
            if left > 0 and active == 0:
                if resubmitted >= launcher.retries:
                    result.errors.append(
                        f"every {launcher.name} job ended with {left} trials not done, "
                        f"{resubmitted} times; see the jobs' logs under "
                        f"{study_dir / LAUNCH_DIR}, then run the same command again")
                    break
                queue.replan(planned_now(), results.recorded())  # (their trials, given back)
                resubmitted += 1
                submit(True, left)
            time.sleep(poll_s())
    except KeyboardInterrupt:
        result.interrupted = True
        if launcher.detached():
            result.jobs_left = launcher.active()


def _worker_command(spec: StudySpec, study_dir: Path, storage_url: str | None,
                    place: Placement, data_dir: Path | None, grace_s: float | None,
                    population: int | None, compile: bool, take_over: bool = False
                    ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one worker process (``take_over``: one started in
    the place of a killed worker, which first takes over its trials)."""
    env = dict(os.environ)
    if place.visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = place.visible
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the numbering nvidia-smi uses (gpu_memory)
    env["OMP_NUM_THREADS"] = str(place.threads)
    # Threads that wait passively: spinning OpenMP threads made trials 4-75x slower when
    # the machine had other work (measured on 2 cores with 2 threads per trial).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # (the entry module, not lookbench.execution.worker itself: run as __main__, that module would
    # exist twice in the process, and so would every exception class it defines)
    cmd = [sys.executable, "-m", "lookbench.execution.worker_main", "--study-dir", str(study_dir),
           "--name", spec.study_name, "--device", place.device, "--threads", str(place.threads)]
    if storage_url:  # in the environment, not argv: a password stays out of `ps`
        env[STORAGE_ENV] = storage_url
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if grace_s is not None:
        cmd += ["--grace-s", str(grace_s)]
    if population is not None:
        cmd += ["--population", str(population)]
    if compile:
        cmd += ["--compile"]
    if take_over:
        cmd += ["--take-over"]
    return cmd, env


def _runs_here(where: list[Placement]) -> bool:
    """Whether this process runs the first worker itself (see _run_processes): on the CPU,
    where its OpenMP threads wait passively as the workers' do (see _worker_command)."""
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    return all(p.visible is None for p in where) and (
        passive or all(p.threads == 1 for p in where))


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    """Ask the worker processes to stop (they give their trials back), then kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def _run_here(spec: StudySpec, study_dir: Path, storage_url: str | None, place: Placement,
              data_dir: Path | None, grace_s: float | None, refresh, result: RunResult,
              population: int | None, compile: bool, take_over: bool = False) -> None:
    """One worker in this process, in the main thread (it takes Ctrl-C there), while a
    thread keeps the progress view up to date (the only one that draws it). ``take_over``:
    again, after a worker process was killed (see ``WorkerOptions.take_over``)."""
    done = threading.Event()

    def keep_drawing() -> None:
        while not done.wait(0.5):
            with contextlib.suppress(Exception):  # (a storage hiccup: the next round draws)
                refresh()

    drawer = threading.Thread(target=keep_drawing, daemon=True, name="lookbench-progress")
    drawer.start()
    try:
        _run_in_process(spec, study_dir, storage_url, place, data_dir, grace_s, lambda: None,
                        result, population, compile, take_over)
    finally:
        done.set()
        drawer.join(timeout=5)


# A worker process killed outright (SIGKILL: the out-of-memory killer, a kill -9) is replaced
# by a new one on its placement, which first takes over the trials it held; at most this many
# times per placement in a run, so that a trial that kills every worker that runs it (one that
# always runs out of memory) does not restart workers forever.
MAX_REPLACEMENTS = 3
REAP_EVERY_S = 0.2  # how often the worker processes are reaped while this process trains


@dataclass
class _Worker:
    """One worker process of a run."""

    place: Placement
    proc: subprocess.Popen
    log: Path
    slot: int  # the placement it runs for (a replacement keeps its predecessor's)
    started: str | None = None  # its process's start time (lookbench._tempfiles.process_start)
    ended: bool = False  # reaped (see _Workers.reap)
    replaced: bool = False  # killed, and a new worker took its place


class _Workers:
    """The worker processes of one run: started, reaped as they end, and replaced when killed.

    A worker that dies stays a zombie until it is reaped, and a zombie is a process as far
    as ``kill(pid, 0)`` goes: the trials it held looked alive and were never taken over while
    this process trained. So, used as a context manager, a thread reaps them as they end
    (also while this process trains a worker of its own), and replaces a killed one at once.
    A thread polling ``Popen.poll()``, not a ``SIGCHLD`` handler: a handler runs in the main
    thread between the training's bytecodes, where the worker's own signal handling
    (``Interrupts``) lives and where a long C call (a training step) delays it; it interrupts
    the training's system calls; and ``waitpid(-1)`` in it would take the exit status of
    every other child of this process (a data loader's, a compiler's ``subprocess.run``)
    from its owner. ``Popen.poll()`` waits for its own pid only and is safe from any thread.
    The thread lives until every worker has ended: a worker exits when the thread that
    started it does (``PR_SET_PDEATHSIG`` is per thread, see ``worker._exit_with_parent``).
    """

    def __init__(self, launch, replacing: bool = True, hand_back=None,
                 thread: bool = True) -> None:
        self._launch = launch  # (place, index, take_over) -> (Popen, log path)
        # Whether a thread reaps (and replaces) while the block runs: needed while this
        # process trains a worker itself (on the CPU); otherwise its main loop reaps often
        # enough, and only it starts workers (the GPU memory gate is not shared with threads).
        self._reaps_in_thread = thread
        # Called once killed workers are reaped: gives their trials back to the queue (the
        # study's replan), so the next worker to claim takes them over, whichever it is.
        self._hand_back = hand_back
        self.lock = threading.RLock()
        self.all: list[_Worker] = []
        self.stopping = False
        # Whether a killed worker is replaced by a new process; if not (or no more: at most
        # MAX_REPLACEMENTS per placement), it counts in ``unreplaced``, and this process's
        # own worker takes its trials over (see _run_processes).
        self.replacing = replacing
        self.unreplaced = 0
        self._replacements: dict[int, int] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, place: Placement, slot: int | None = None, take_over: bool = False
              ) -> _Worker | None:
        with self.lock:
            if self.stopping:
                return None
            index = len(self.all)
            proc, log = self._launch(place, index, take_over)
            worker = _Worker(place, proc, log, index if slot is None else slot,
                             process_start(proc.pid) if hasattr(proc, "pid") else None)
            self.all.append(worker)
            return worker

    def reap(self) -> list[_Worker]:
        """Reap the workers that ended since the last call, and return those killed (see
        ``_killed``) other than by this run: their trials are handed back (``hand_back``), and
        each is replaced (see ``replacing``) by a worker that first takes over trials of the
        dead."""
        with self.lock:
            ended = [w for w in self.all if not w.ended and w.proc.poll() is not None]
            for w in ended:
                w.ended = True
            killed = [w for w in ended if _killed(w.proc) and not self.stopping]
            for w in killed:
                if self.replacing and self._replacements.get(w.slot, 0) < MAX_REPLACEMENTS:
                    self._replacements[w.slot] = self._replacements.get(w.slot, 0) + 1
                    try:
                        w.replaced = self.start(w.place, w.slot, take_over=True) is not None
                    except OSError:  # (no process could be started: the others take over)
                        pass
                if not w.replaced:
                    self.unreplaced += 1
        if killed and self._hand_back is not None:
            with contextlib.suppress(Exception):  # (a storage hiccup: the replacement, or
                self._hand_back()  # any worker out of work, takes them over instead)
        return killed

    def check(self) -> tuple[int, bool]:
        """Reap; then how many killed workers were not replaced so far, and whether any
        worker is still at work (one that ended is only counted so once reaped)."""
        with self.lock:
            self.reap()
            return self.unreplaced, any(not w.ended for w in self.all)

    def wait_for_an_end(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less once a worker ends (the run's last worker exiting is
        what the user waits for: measured 0.25 s lost on average to a plain 0.5 s sleep)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if any(not w.ended and w.proc.poll() is not None for w in self.all):
                    return
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop every worker (see ``_stop_workers``); none is started or replaced after."""
        with self.lock:
            self.stopping = True
            procs = [w.proc for w in self.all]
        _stop_workers(procs)

    def _reap_until_done(self) -> None:
        while not self._done.wait(REAP_EVERY_S):
            with contextlib.suppress(Exception):  # (the next round tries again)
                self.reap()

    def __enter__(self) -> _Workers:
        if self._reaps_in_thread:
            self._thread = threading.Thread(target=self._reap_until_done, daemon=True,
                                            name="lookbench-reaper")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _left_over(queue: TrialQueue | None, worker: _Worker) -> int | None:
    """How many trials a killed worker's end left unfinished: those its process still holds
    (RUNNING, not taken over), and those waiting when no worker is left to run them (its
    trials, handed back, when no worker took them); None if that cannot be told."""
    if queue is None:
        return None
    from optuna.trial import TrialState

    from lookbench.coordination.queue import OWNER_ATTR

    host, pid, start = socket.gethostname(), worker.proc.pid, worker.started

    def its(owner: dict) -> bool:
        return owner.get("host") == host and owner.get("pid") == pid and (
            start is None or owner.get("start") in (None, start))

    try:
        return sum(1 for study in queue.studies.values()
                   for t in queue.storage.get_all_trials(
                       study._study_id, deepcopy=False,
                       states=(TrialState.RUNNING, TrialState.WAITING))
                   if t.state == TrialState.WAITING or its(t.system_attrs.get(OWNER_ATTR) or {}))
    except Exception:  # (a storage hiccup: the worker's end is reported as an error)
        return None


def _killed(proc: subprocess.Popen) -> bool:
    """Whether a worker that ended was killed outright (SIGKILL: the out-of-memory killer, a
    ``kill -9``), which no worker can answer by handing its trials back. Any other signal
    (a SIGTERM from outside) ends the run with an error, as a worker's own error does."""
    return proc.returncode == -signal.SIGKILL


def _run_processes(spec: StudySpec, study_dir: Path, storage_url: str | None,
                   where: list[Placement], data_dir: Path | None, grace_s: float | None,
                   refresh, result: RunResult, population: int | None = None,
                   compile: bool = False, gate: GpuMemoryGate | None = None,
                   queue: TrialQueue | None = None, hand_back=None,
                   early: EarlyWorkers | None = None, while_others_work=None) -> None:
    """Run the workers of ``where`` until none is left at work: one in this process on the
    CPU, the others as processes. A worker process killed (SIGKILL) is reaped at once and
    its trials are handed back at once (``hand_back``: the study's replan) and taken over in
    this run, by the next worker that claims, a worker started in its place, or this
    process's own; ``queue`` (the study's) tells, at the end, whether it held any still.
    ``while_others_work``: what this process does once its own worker found nothing left to
    claim while other workers still train (the cost pass: on a core that would idle, instead
    of after the last trial, while the user waits)."""
    log_dir = study_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    gate = gate or GpuMemoryGate()
    waiting: list[Placement] = []  # further workers of a GPU, started as its memory allows
    on_gpu: set[str] = set()

    def launch(place: Placement, index: int, take_over: bool
               ) -> tuple[subprocess.Popen, Path]:
        cmd, env = _worker_command(spec, study_dir, storage_url, place, data_dir, grace_s,
                                   population, compile, take_over=take_over)
        log = log_dir / f"worker-{index}.log"
        proc = early.begin(cmd[3:], env, log, storage_url) \
            if early is not None and not take_over and place.visible is None else None
        if proc is not None:
            return proc, log
        if place.visible is not None and not take_over:
            gate.baseline(place.visible)
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if place.visible is not None:
            if not take_over:
                gate.started(place.visible)
            else:  # in a killed worker's place: as many workers as before, whose memory
                gate._readings[place.visible] = []  # settles again before the gate decides
                gate._since[place.visible] = gate.clock()  # on a further one
        return proc, log

    # On the CPU this process runs one of the workers itself: it has imported torch and
    # Optuna already, so that worker starts at once instead of paying a new process's start
    # (about 4 s on 2 cores) while the others start. (Not on GPUs: a worker's memory there
    # is counted per process, see GpuMemoryGate.)
    # (Its OpenMP threads must wait passively, as the workers' do: see _worker_command.)
    here = where[0] if _runs_here(where) else None
    # A killed worker is replaced by a new process while this one trains; once this one is
    # done with its own work, it takes the killed one's trials over itself, at once.
    with _Workers(launch, replacing=True, hand_back=hand_back,
                  thread=here is not None) as workers:
        for place in where[1:] if here is not None else where:
            if place.visible is not None and place.visible in on_gpu:
                waiting.append(place)
                continue
            if place.visible is not None:
                on_gpu.add(place.visible)
            workers.start(place)
        if early is not None:
            early.close()  # (those not wanted now never will be: replacements start anew)

        def train_here(take_over: bool) -> bool:
            """This process's worker, until nothing is left to claim; again if a worker
            was killed meanwhile and none took its place (it may have held trials after
            this one's last look). ``take_over``: after a kill (the worker resumes cut-off
            trials first). False: the run stops (interrupted)."""
            while True:
                killed, errors = workers.unreplaced, len(result.errors)
                workers.replacing = True
                try:
                    _run_here(spec, study_dir, storage_url, here, data_dir, grace_s, refresh,
                              result, population, compile, take_over)
                except BaseException:  # (the storage or the data gone: the others stop too)
                    workers.stop()
                    raise
                finally:
                    workers.replacing = False
                if result.interrupted:
                    workers.stop()
                    return False
                if workers.unreplaced == killed or len(result.errors) > errors:
                    return True
                take_over = True

        if here is not None and not train_here(False):
            return
        if here is not None and while_others_work is not None and workers.check()[1]:
            try:
                while_others_work()
            except KeyboardInterrupt:
                result.interrupted = True
            if result.interrupted:
                workers.stop()
                return
        handled = workers.unreplaced
        try:
            while True:
                # The next waiting worker of each GPU (one per round: a new worker's memory
                # must settle before the one after it is decided).
                for gpu in dict.fromkeys(w.visible for w in waiting):
                    place = next(w for w in waiting if w.visible == gpu)
                    decision, why = gate.decide(gpu)  # type: ignore[arg-type]
                    if decision == "start":
                        waiting.remove(place)
                        workers.start(place)
                    elif decision == "stop":
                        waiting = [w for w in waiting if w.visible != gpu]
                        result.warnings.append(why or "")
                unreplaced, running = workers.check()
                if here is not None and unreplaced > handled:
                    if not train_here(True):
                        return
                    handled = workers.unreplaced
                    continue
                if not running:
                    break
                refresh()
                workers.wait_for_an_end(0.5)
        except KeyboardInterrupt:
            result.interrupted = True
            workers.stop()
            return
    for w in workers.all:
        p, log = w.proc, w.log
        text = log.read_text(errors="replace").splitlines()
        # (failed trials are read from the tables; a worker's log says why it stopped)
        errors = [line[len("error: "):] for line in text if line.startswith("error: ")]
        result.warnings.extend(line[len("warning: "):] for line in text
                               if line.startswith("warning: ") and "database" not in line)
        name = f"worker {log.stem.split('-')[-1]}"
        if _killed(p) and not errors:  # the OOM killer, a kill -9
            how = f"{name} was killed by SIGKILL (see {log})"
            left = _left_over(queue, w)
            if left == 0:  # every trial it held was taken over (recorded, or running elsewhere)
                instead = "a new worker took its place, and " if w.replaced else ""
                result.warnings.append(f"{how}; {instead}its trials were taken over")
                continue
            errors = [f"{how}, and {left} trials it held were not run again; run the same "
                      f"command again to finish them" if left else
                      f"worker exited with code {p.returncode}: {how}"]
        elif p.returncode == 130 and not errors:  # a signal this command did not send
            errors = [f"{name} was stopped by a signal before the study finished (see "
                      f"{log}); run the same command again to finish it"]
        elif p.returncode != 0 and not errors:
            tail = next((line for line in reversed(text) if line.strip()), "no output")
            errors = [f"worker exited with code {p.returncode}: {tail} (see {log})"]
        for e in errors:
            if e not in result.errors:
                result.errors.append(e)
