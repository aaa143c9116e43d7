"""``lookbench run``: prepare a study once, then run its workers across the devices.

Preparing (validate, store the definition, plan every trial in the queue) happens once, in the
command's own process and under the study lock; then one worker per device (or ``--workers``
per device) claims trials until none is left. Re-running the same command continues the study:
recorded trials are kept, interrupted ones resume from their checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lookbench.results import DEFINITION_FILE, StudyResults
from lookbench.study.checkpoints import CHECKPOINTS_DIR, remove_recorded
from lookbench.study.queue import TrialQueue
from lookbench.study.spec import StudySpec, grid_tables, plan, planned_runs, trial_id
from lookbench.study.storage import open_storage, study_lock
from lookbench.study.worker import (
    SPEC_ATTR,
    WorkerOptions,
    WorkerReport,
    WorkerStopped,
    run_worker,
    stored_spec,
)

# Everything that defines a study: re-running it with other values would mix two studies.
DEFINING_FIELDS = ("task", "inner", "baselines", "epochs", "seeds", "sampler", "trials",
                   "batch_size", "schedule", "task_options", "grid")


class StudyConflict(ValueError):
    """The study exists with another budget; the message says what differs."""


@dataclass
class Placement:
    """Where one worker runs."""

    device: str  # "cpu" or "cuda:0" as the worker sees it
    visible: str | None  # CUDA_VISIBLE_DEVICES for the worker, or None for the CPU
    threads: int


@dataclass
class RunResult:
    planned: int
    recorded: int
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False


def placements(devices: str, workers: int | None) -> list[Placement]:
    """Workers for ``--devices`` (auto, cpu, or GPU indices "0,1") and ``--workers``."""
    cores = os.cpu_count() or 1
    if devices == "auto":
        devices = ",".join(str(i) for i in range(torch.cuda.device_count())) or "cpu"
    if devices == "cpu":
        n = workers or cores
        return [Placement("cpu", None, max(1, cores // n)) for _ in range(n)]
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


def _grid_difference(old: dict, new: dict) -> tuple[str, object, object] | None:
    """The first grid entry in which two definitions differ: (its name, old, new)."""
    for opt in sorted(set(old) | set(new)):
        a, b = old.get(opt, {}), new.get(opt, {})
        if a == b:
            continue
        ta, tb = grid_tables(a), grid_tables(b)
        if len(ta) != len(tb):
            return f"grid.{opt}", a, b
        for i, (va, vb) in enumerate(zip(ta, tb)):
            where = f"grid.{opt}" if len(ta) == 1 else f"grid.{opt}[{i}]"
            for name in sorted(set(va) | set(vb)):
                if va.get(name) != vb.get(name):
                    return f"{where}.{name}", va.get(name), vb.get(name)
    return None


def _check_same_definition(old: StudySpec, new: StudySpec) -> None:
    for f in DEFINING_FIELDS:
        a, b = getattr(old, f), getattr(new, f)
        if f == "grid":
            diff = _grid_difference(a, b)
            if diff is None:
                continue
            f, a, b = diff
        if a != b:
            raise StudyConflict(
                f"study {new.study_name!r} already exists with {f}={a!r}, not {b!r}; run it "
                f"with the options it was created with, or give another --study name"
            )


def _write_definition(study_dir: Path, spec: StudySpec) -> None:
    """The study's definition as ``study.json`` beside its tables, so a report (which reads the
    folder only, never Optuna) knows how the trials were chosen (grid, random or TPE)."""
    path = study_dir / DEFINITION_FILE
    text = json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") == text:
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def prepare(spec: StudySpec, out: Path, storage_url: str | None,
            data_dir: Path | None = None) -> tuple[TrialQueue, dict]:
    """Create or reopen the study and plan its trials; returns the queue and the plan."""
    from lookbench import tasks

    study_dir = out / spec.study_name
    tasks.get(spec.task, **spec.task_options).check_data(data_dir)  # before creating anything
    storage = open_storage(storage_url, study_dir)
    with study_lock(storage, study_dir, spec.study_name):
        old = stored_spec(storage, spec.study_name)
        if old is not None:
            _check_same_definition(old, spec)
        direction = "maximize" if tasks.task_class(spec.task).higher_is_better else "minimize"
        queue = TrialQueue(storage, spec.study_name, spec.optimizers, direction, study_dir)
        if old is None:
            for study in queue.studies.values():
                study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
        _write_definition(study_dir, old or spec)
    planned = {trial_id(c): c for c in plan(spec)} if spec.sampler != "tpe" else {}
    recorded = StudyResults(study_dir).recorded()
    queue.sync(planned, recorded)
    remove_recorded(study_dir / CHECKPOINTS_DIR, recorded)  # left by a worker killed at the end
    return queue, planned


def _describe(config) -> str:
    parts = [config.optimizer if config.optimizer != "lookahead" else f"lookahead({config.inner})",
             f"lr={config.lr:g}"]
    if config.momentum is not None:
        parts.append(f"mom={config.momentum:g}")
    if config.weight_decay:
        parts.append(f"wd={config.weight_decay:g}")
    if config.k is not None:
        parts.append(f"k={config.k}")
    if config.alpha is not None:
        parts.append(f"α={config.alpha if isinstance(config.alpha, str) else f'{config.alpha:g}'}")
    parts.append(f"seed {config.seed}")
    return " ".join(parts)


class ProgressView:
    """Rich progress: trials recorded of planned, and the epoch of each running trial."""

    def __init__(self, console: Console, total: int, epochs: int) -> None:
        self.total = total
        self.epochs = epochs
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.bar = self.progress.add_task("trials", total=total)
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

    def update(self, recorded: int, running: list[str]) -> None:
        self.progress.update(self.bar, completed=min(recorded, self.total))
        self.running = running
        self.live.update(self._render())


def run_study(spec: StudySpec, *, out: Path, storage_url: str | None, devices: str,
              workers: int | None, data_dir: Path | None, console: Console,
              grace_s: float | None = None) -> RunResult:
    """Run (or continue) the study to the end; Ctrl-C stops it cleanly."""
    where = placements(devices, workers)  # checked before anything is created or changed
    queue, planned = prepare(spec, out, storage_url, data_dir)
    study_dir = out / spec.study_name
    results = StudyResults(study_dir)
    total = len(planned) if planned else sum(planned_runs(spec).values())  # TPE: no plan

    def recorded_now() -> int:
        return len(results.recorded() & set(planned)) if planned else len(results.recorded())

    result = RunResult(planned=total, recorded=recorded_now())
    if result.recorded >= total:
        return result

    view = ProgressView(console, total, spec.epochs or 0)

    def refresh() -> None:
        done = recorded_now()
        running = [f"{_describe(c)}: epoch {e or 0}/{c.epochs}" for c, e in queue.running()]
        view.update(done, running)

    with view.live:
        refresh()
        if len(where) == 1:
            _run_in_process(spec, study_dir, storage_url, where[0], data_dir, grace_s, refresh,
                            result)
        else:
            _run_processes(spec, study_dir, storage_url, where, data_dir, grace_s, refresh,
                           result)
        refresh()
    if not console.is_terminal:
        console.print()  # a non-terminal Live leaves its last frame without a newline
    result.recorded = recorded_now()
    return result


def _run_in_process(spec: StudySpec, study_dir: Path, storage_url: str | None, place: Placement,
                    data_dir: Path | None, grace_s: float | None, refresh, result: RunResult
                    ) -> None:
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
                         device=device, data_dir=data_dir, grace_s=grace_s, on_epoch=tick,
                         on_trial=tick, on_warning=result.warnings.append)
    try:
        report: WorkerReport = run_worker(opts)
    except KeyboardInterrupt:
        result.interrupted = True
        return
    except WorkerStopped as e:
        result.errors.append(str(e))
        return
    result.failed.extend(report.failed)


def _run_processes(spec: StudySpec, study_dir: Path, storage_url: str | None,
                   where: list[Placement], data_dir: Path | None, grace_s: float | None,
                   refresh, result: RunResult) -> None:
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    log_dir = study_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for i, place in enumerate(where):
        env = dict(os.environ)
        if place.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = place.visible
        env["OMP_NUM_THREADS"] = str(place.threads)
        cmd = [sys.executable, "-m", "lookbench.study.worker", "--study-dir", str(study_dir),
               "--name", spec.study_name, "--device", place.device,
               "--threads", str(place.threads)]
        if storage_url:
            cmd += ["--storage", storage_url]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        if grace_s is not None:
            cmd += ["--grace-s", str(grace_s)]
        log = log_dir / f"worker-{i}.log"
        logs.append(log)
        with open(log, "w") as f:
            procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT))
    try:
        while any(p.poll() is None for p in procs):
            refresh()
            time.sleep(0.5)
    except KeyboardInterrupt:
        result.interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        return
    for p, log in zip(procs, logs):
        text = log.read_text(errors="replace").splitlines()
        result.failed.extend(line[len("failed: "):] for line in text if line.startswith("failed: "))
        errors = [line[len("error: "):] for line in text if line.startswith("error: ")]
        result.warnings.extend(line[len("warning: "):] for line in text
                               if line.startswith("warning: ") and "database" not in line)
        if p.returncode not in (0, 130) and not errors:
            tail = next((line for line in reversed(text) if line.strip()), "no output")
            errors = [f"worker exited with code {p.returncode}: {tail} (see {log})"]
        for e in errors:
            if e not in result.errors:
                result.errors.append(e)

