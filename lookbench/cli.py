"""The ``lookbench`` command line: a thin Typer app that parses options and delegates.

Heavy libraries (torch, optuna, plotly) are imported inside the commands that need them, so
``lookbench --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from lookbench import __version__
from lookbench.choices import SCHEDULES

# OpenMP threads that wait passively, set before torch is imported (by a command): spinning
# threads made trials 4-75x slower when the machine had other work (measured on 2 cores), and
# `lookbench run` trains in this process too (one worker, or one of several on the CPU).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Exit codes, the same for every command (the README's table; tests/test_exit_codes.py):
# 0 done (for `run`: every planned trial recorded);
# 1 failed: a trial failed, a worker stopped, or the machine gave out (a full disk, a
#   read-only or forbidden folder, a database still unreachable after the wait, the study
#   lock held too long): running the same command again can succeed once that is over;
# 2 bad input: what was given must change first (options and usage, the study file, a study
#   that exists with another definition, an unknown task or study, missing data, a storage URL
#   that is malformed or refused, a file where a folder must be, a damaged file the command
#   reads first: results, journal); nothing was changed;
# 3 not finished here: the remaining trials still run on other machines (`run` only);
# 130 interrupted (Ctrl-C or SIGTERM): finished trials are kept.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 1, 2, 3, 130
# What --inner takes, as lookbench.optim.factory.plain() lists it: written out, since the
# registry imports torch and `lookbench --help` must not (a test keeps the two the same).
INNER_NAMES = ("sgd", "adam", "adamw", "nadam", "radam", "adamax", "rmsprop", "adagrad",
               "adadelta", "adafactor")


# `run --help`'s groups (Typer's rich_help_panel), so that 40 options read at 80 columns.
SWEEP, BUDGET, WHERE, KEPT = ("What to sweep", "Each trial's budget", "Where it runs",
                              "Where results are kept")
CLUSTER = "On a cluster (docs/distributed.md)"
LAUNCHERS = ("local", "slurm", "submitit-local", "ray")
# Every command names the studies folder --runs (run, status and compact called it --out, which
# they still take; report's --out was and is its HTML folder, now also --reports).
RUNS_HELP = "Where studies live (run, status and compact also take --out, its former name)."


def _runs(runs: Path, out: Path | None) -> Path:
    """The studies folder, given as --runs or by its former name --out."""
    if out is not None and runs != Path("runs") and out != runs:
        fail(f"--runs {runs} and --out {out} name two studies folders; give one (--out is "
             f"--runs' former name)")
    return out if out is not None else runs


def _click_exception() -> type[Exception]:
    """Click's ``ClickException``, the base of its usage errors (found through Typer's public
    ``BadParameter``: recent Typers ship their own copy of Click, older ones use Click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_interrupts() -> Iterator[None]:
    """SIGTERM as Ctrl-C: it interrupts the command wherever it is, which then ends with one
    line and exit 130 (a worker's training holds both signals off around storage updates:
    ``lookbench.coordination.interrupts``). Python's default would end the process silently."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


INTERRUPTED_RUN = "interrupted: finished trials are kept; run the same command again to resume"


class Commands(TyperGroup):
    """lookbench's commands, whose every error is one line on stderr: a usage error (an
    unknown option, ``--workers 0``) as ``error: ...`` with exit 2 instead of Typer's box,
    Ctrl-C or SIGTERM anywhere as ``interrupted...`` with exit 130."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        click_exception = _click_exception()
        with _terminate_interrupts():
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except click_exception as e:
                if type(e).__name__ == "NoArgsIsHelpError":  # `lookbench` alone: its help
                    e.show()
                else:
                    typer.echo(f"error: {_usage_line(e)}", err=True)
                raise SystemExit(getattr(e, "exit_code", EXIT_BAD_INPUT)) from None
            except typer.Abort:  # (Click's answer to Ctrl-C or end of input at a prompt)
                typer.echo("interrupted", err=True)
                raise SystemExit(EXIT_INTERRUPTED) from None
        raise SystemExit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED_RUN if ctx.invoked_subcommand == "run" else "interrupted",
                       err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as e:  # a path no command foresaw (a forbidden --out, say): one line
            if e.errno == errno.EPIPE:  # (output piped to `head`: Typer ends quietly)
                raise
            typer.echo(f"error: {_os_error(e)}", err=True)
            raise typer.Exit(exit_code(e)) from None


def _usage_line(error: Any) -> str:
    """Click's message for a usage error as one line, with where to read more."""
    text = " ".join(str(error.format_message()).split()).rstrip(".")
    text = text[:1].lower() + text[1:]
    if "unexpected extra argument" in text:  # (`--lr 0.1 0.2`: the list's second value)
        text += "; a list takes commas, without spaces: --lr 0.1,0.2"
    ctx = getattr(error, "ctx", None)
    if ctx is not None:
        text += f" (see `{ctx.command_path} --help`)"
    return text


app = typer.Typer(
    name="lookbench",
    cls=Commands,
    help=(
        "Benchmark how robust the Lookahead optimizer is to its hyperparameters, "
        "against the optimizers you already use."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def console() -> Any:
    """A Rich console; piped or redirected output gets 120 columns instead of Rich's 80, so
    tables written to a file or a log are not cut (``COLUMNS`` still wins when set)."""
    import os

    from rich.console import Console  # imported late: `lookbench --help` stays fast

    c = Console()
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 120
    return c


def _seeds(seeds: str | None) -> int | str | None:
    """``--seeds N`` as a number, ``--seeds auto`` as ``"auto"`` (the spec works out what it
    starts with and its cap)."""
    if seeds is None or seeds.strip().lower() == "auto":
        return None if seeds is None else "auto"
    try:
        return int(seeds)
    except ValueError:
        fail(f"--seeds takes a number of seeds or auto, got {seeds!r}")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(error: BaseException, default: int = EXIT_BAD_INPUT) -> int:
    """The exit code of a command that ``error`` ends (see ``EXIT_*``): the first exception in
    its chain that tells what kind of trouble it is decides (a wrapper such as a status or
    report error keeps the error it wraps as its context); ``default`` otherwise.

    A full disk, a read-only or forbidden folder, a database still unreachable after the wait
    or a study lock held too long is the machine's (1: the same command can succeed later);
    a file where a folder must be, a storage that refuses us or a damaged file is the input's
    (2: something must change first)."""
    from lookbench._messages import environmental
    from lookbench.coordination.storage import BadStorage, StorageUnavailable

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, BadStorage):
            return EXIT_BAD_INPUT
        if isinstance(e, StorageUnavailable):
            return EXIT_FAILED
        if isinstance(e, OSError) and e.errno is not None:
            return EXIT_FAILED if environmental(e) is not None else EXIT_BAD_INPUT
        e = e.__cause__ or e.__context__
    return default


def _split(name: str, text: str | None) -> list[Any] | None:
    """Parse a hyperparameter's comma list like ``0.01,0.1`` (α also takes ``adaptive``), as
    the table says (``lookbench.hparams``; bounds are checked with the study, once)."""
    from lookbench.hparams import BY_NAME

    if text is None:
        return None
    h = BY_NAME[name]
    values: list[Any] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            fail(f"{h.option}: empty value in {text!r}")
        try:
            values.append(h.parse(item))
        except ValueError as e:
            fail(str(e))
    return values


def _names(option: str, text: str | None) -> list[str] | None:
    """A comma list of names (``polyak,ema``)."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        fail(f"{option}: empty name in {text!r}")
    return names


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lookbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Benchmark Lookahead's robustness to its hyperparameters against its baselines."""


@app.command()
def optimizers() -> None:
    """List the optimizers lookbench can build, with their hyperparameters and defaults."""
    from rich.table import Table

    from lookbench.optim import available, hyperparameters

    table = Table(title="optimizers", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("what it is")
    table.add_column("hyperparameters (defaults)")
    for name, summary in available().items():
        hparams = hyperparameters(name)
        table.add_row(name, summary, ", ".join(f"{k}={v!r}" for k, v in hparams.items()))
    console().print(table)


@app.command("tasks")
def list_tasks(
    references: Annotated[list[str] | None, typer.Argument(
        help="Tasks of your own to describe too (path/to/file.py:Class or module:Class).",
        show_default=False)] = None,
) -> None:
    """List the benchmark tasks: size, default budget, and the data each one needs (built-in,
    installed through the lookbench.tasks entry points, and any you name)."""
    from rich import box
    from rich.table import Table

    from lookbench import tasks

    table = Table(title="tasks", box=box.SIMPLE_HEAD,
                  caption="metric: what a study ranks by (↑ higher is better, ↓ lower); size: "
                          "train/test examples, parameters; budget: epochs × batch, schedule")
    for column in ("task", "metric", "size", "budget", "data", "what it is"):
        table.add_column(column, no_wrap=column in ("task", "budget"),
                         min_width=12 if column == "data" else None)
    for name in [*tasks.available(), *(references or [])]:
        try:
            task = tasks.get(name)
        except ValueError as e:  # a broken task of one's own: one line, not a traceback
            fail(str(e).splitlines()[0], EXIT_BAD_INPUT)
        known = _BUILTIN_SIZES.get(name)  # (a reference of one's own never has such a name)
        size = tasks.TaskSize(*known) if known is not None else task.size()
        examples = "" if size.train_examples is None else (
            f"{_si(size.train_examples)}/{_si(size.test_examples)} ex, ")
        table.add_row(
            name, f"{task.metric.removeprefix('test_')} {'↑' if task.higher_is_better else '↓'}",
            f"{examples}{_si(size.parameters)} par",
            f"{task.default_epochs}×{task.default_batch_size} {task.default_schedule}",
            task.data, task.summary,
        )
    console().print(table)


# The built-in tasks' sizes at their default options, as their size() counts them
# (tests/report/test_startup.py checks they still agree): counting builds each model on the meta
# device, seconds that `lookbench tasks` would spend on every listing.
_BUILTIN_SIZES: dict[str, tuple[int | None, int | None, int | None]] = {
    "nqm": (None, None, 25_600), "quadratic": (None, None, 50),
    "digits": (1_437, 360, 9_610),
    "cifar10": (50_000, 10_000, 11_173_962), "cifar100": (50_000, 10_000, 11_220_132),
    "imagefolder": (None, None, 11_689_512), "imagenet": (None, None, 25_557_032),
    "ptb": (None, None, 24_221_600), "wikitext2": (None, None, 33_556_078),
    "wmt14": (None, None, 63_084_544),
}


def _si(n: int | None) -> str:
    """11173962 → 11.2M (``?`` when unknown)."""
    if n is None:
        return "?"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _hyperparameter_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with one option per hyperparameter of the table (``--lr``, ``--beta2``,
    ...), inserted after ``--baselines``; their texts reach it as ``grid_text``.

    Typer reads a command's options from its signature, so a hyperparameter added to
    ``lookbench.hparams`` becomes an option here without an edit.
    """
    from lookbench.hparams import HYPERPARAMETERS

    signature = inspect.signature(command, eval_str=True)
    options = [
        inspect.Parameter(h.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, typer.Option(
                              h.option, help=h.help, metavar="LIST", rich_help_panel=SWEEP)])
        for h in HYPERPARAMETERS
    ]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in signature.parameters.values() if p.name != "grid_text"]
    at = [p.name for p in params].index("baselines") + 1

    @functools.wraps(command)
    def with_options(**kwargs: Any) -> None:
        grid_text = {h.name: kwargs.pop(h.name, None) for h in HYPERPARAMETERS}
        command(grid_text=grid_text, **kwargs)

    with_options.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params[:at] + options + params[at:])
    with_options.__annotations__ = {}  # the signature says it all (see get_type_hints)
    return with_options


@app.command()
@_hyperparameter_options
def run(
    task: Annotated[str | None, typer.Argument(help="Task to study (see `lookbench tasks`); "
                                                "optional with --spec.", metavar="TASK",
                                                show_default=False)] = None,
    inner: Annotated[str | None, typer.Option(help="Optimizer Lookahead wraps, and the "
                                              "baseline it is compared with (default: the "
                                              "task's: adam for wmt14, else sgd): "
                                              + ", ".join(INNER_NAMES) + ", or your own as "
                                              "module:Class or file.py:Class.",
                                              metavar="NAME", rich_help_panel=SWEEP)] = None,
    baselines: Annotated[str | None, typer.Option(help="Further baselines beside the inner "
                                                  "optimizer alone, e.g. polyak,ema,swa "
                                                  "(averaging its iterates) or asgd (NT-ASGD: "
                                                  "averaging once validation stops "
                                                  "improving).", metavar="LIST",
                                                  rich_help_panel=SWEEP)] = None,
    # (here: one option per hyperparameter of lookbench.hparams, added by the decorator)
    seeds: Annotated[str | None, typer.Option(
        help="Seeds per configuration (0..N-1), or auto: start with 3 (or the study file's) "
             "and add seeds to the matched settings until every verdict line is decided or "
             "--max-seeds ran.", metavar="N|auto", rich_help_panel=SWEEP)] = None,
    max_seeds: Annotated[int | None, typer.Option(
        min=1, help="With --seeds auto: the most seeds to run (default 20).", metavar="N",
        rich_help_panel=SWEEP)] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial (default: the task's).",
                                               metavar="N", rich_help_panel=BUDGET)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the task's).",
                                                   metavar="N", rich_help_panel=BUDGET)] = None,
    schedule: Annotated[str | None, typer.Option(help="Learning-rate schedule (default: the "
                                                 "task's): " + ", ".join(SCHEDULES) + ".",
                                                 metavar="NAME", rich_help_panel=BUDGET)
                        ] = None,
    sampler: Annotated[str | None, typer.Option(help="grid, random or tpe.", metavar="NAME",
                                                rich_help_panel=SWEEP)] = None,
    trials: Annotated[int | None, typer.Option(help="Configurations per optimizer for "
                                               "random/tpe.", metavar="N",
                                               rich_help_panel=SWEEP)] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: <task>-<inner>).",
                                              metavar="NAME", rich_help_panel=KEPT)] = None,
    spec: Annotated[Path | None, typer.Option(help="A TOML study file (see studies/); "
                                              "options given here override it.",
                                              metavar="FILE")] = None,
    runs: Annotated[Path, typer.Option(help=RUNS_HELP, metavar="DIR",
                                       rich_help_panel=KEPT)] = Path("runs"),
    out: Annotated[Path | None, typer.Option(hidden=True)] = None,
    devices: Annotated[str, typer.Option(help="auto, cpu, or GPU indices like 0,1.",
                                         metavar="WHERE", rich_help_panel=WHERE)] = "auto",
    workers: Annotated[int | None, typer.Option(min=1, help="Workers per device (CPU default: "
                                                "cores ÷ --threads).", metavar="N",
                                                rich_help_panel=WHERE)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads per trial on the CPU "
                                                "(default 1; part of the study's definition, "
                                                "since results depend on it).",
                                                metavar="N", rich_help_panel=WHERE)] = None,
    storage: Annotated[str | None, typer.Option(
        envvar="LOOKBENCH_STORAGE_URL", show_envvar=True,
        help="Optuna storage URL shared by several machines, e.g. postgresql://user@host/db "
             "(default: a journal file under --runs); in the environment, a password stays "
             "out of the process list.", metavar="URL", rich_help_panel=KEPT)] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the task's data files.",
                                                  metavar="DIR", rich_help_panel=WHERE)] = None,
    stale_after: Annotated[float, typer.Option(help="Seconds without a heartbeat after which "
                                               "a trial whose worker is on another machine is "
                                               "taken over (at least 60: four "
                                               "heartbeats).", metavar="SECONDS",
                                               rich_help_panel=KEPT)] = 120.0,
    model: Annotated[str | None, typer.Option(help="Task option: the model (CIFAR: resnet18, "
                                              "resnet20).", metavar="NAME",
                                              rich_help_panel=BUDGET)] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Task option "
                                                     "KEY=VALUE (repeatable).",
                                                     metavar="KEY=VALUE",
                                                     rich_help_panel=BUDGET)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run the trials recorded "
                                               "as failed again (their old rows are kept under "
                                               "<study>/retried/).", metavar="",
                                               rich_help_panel=KEPT)] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Plan a study of more than 10,000 trials "
                                      "without asking.", metavar="",
                                      rich_help_panel=KEPT)] = False,
    population: Annotated[int | None, typer.Option(min=1, help="Trials trained together as one "
                                                   "vectorised model per worker (default: as "
                                                   "many as wait and fit in memory, where the "
                                                   "task and optimizers allow; 1: one at a "
                                                   "time; part of the study's definition, "
                                                   "since results depend on it in their last "
                                                   "bits).", metavar="N",
                                                   rich_help_panel=WHERE)] = None,
    compile: Annotated[bool, typer.Option("--compile", help="Train through torch.compile "
                                          "(pays on GPUs for long trials; compiling takes "
                                          "seconds to minutes per worker).", metavar="",
                                          rich_help_panel=WHERE)] = False,
    trace_fast: Annotated[bool, typer.Option("--trace-fast", help="Also evaluate Lookahead's "
                                             "fast weights (the end of each inner loop) and the "
                                             "averaging baselines' iterates every epoch, as the "
                                             "paper's Figure 10 (fast_<metric> curves; each "
                                             "trial then trains alone).", metavar="",
                                             rich_help_panel=BUDGET)] = False,
    launcher: Annotated[str, typer.Option(help="Who starts the workers: local (this command), "
                                          "slurm (a job array), submitit-local (the Slurm "
                                          "jobs as local processes, to try a setup), ray.",
                                          metavar="NAME", rich_help_panel=CLUSTER)] = "local",
    jobs: Annotated[int | None, typer.Option(min=1, help="Workers to submit (default: one "
                                             "per trial left, at most 32 on Slurm, as many "
                                             "as fit on Ray).", metavar="N",
                                             rich_help_panel=CLUSTER)] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.", metavar="NAME",
                                                  rich_help_panel=CLUSTER)] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.", metavar="NAME",
                                                rich_help_panel=CLUSTER)] = None,
    gpus_per_job: Annotated[int, typer.Option(min=0, help="GPUs per job, one worker each "
                                              "(0: CPU workers).", metavar="N",
                                              rich_help_panel=CLUSTER)] = 1,
    time_limit: Annotated[int, typer.Option(min=1, help="A job's time limit in minutes (it "
                                            "hands its trial back before, and is requeued).",
                                            metavar="MIN", rich_help_panel=CLUSTER)] = 1440,
    sbatch: Annotated[list[str] | None, typer.Option(help="A further sbatch option, such as "
                                                     "--qos=high (repeatable).",
                                                     metavar="OPT",
                                                     rich_help_panel=CLUSTER)] = None,
    retries: Annotated[int, typer.Option(min=0, help="Times the workers are submitted again "
                                         "when all ended before the study did.", metavar="N",
                                         rich_help_panel=CLUSTER)] = 3,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster's address (default: "
                                                    "a local Ray for the run).",
                                                    metavar="ADDR",
                                                    rich_help_panel=CLUSTER)] = None,
    grid_text: dict[str, str | None] | None = None,
) -> None:
    """Sweep Lookahead and its baselines on TASK; re-run the same command to resume."""
    import atexit

    out = _runs(runs, out)
    from lookbench.coordination.heartbeat import check_stale_after
    from lookbench.study.spec import SpecError, load_spec
    from lookbench.timeline import mark

    # Everything given is checked before torch or Optuna is imported (seconds on a busy
    # machine): the task's and optimizers' classes are read without them (lookbench._lazy).
    if task is None and spec is None:
        fail("give a TASK (see `lookbench tasks`) or a study file with --spec")
    if (why := check_stale_after(stale_after)) is not None:
        fail(why)
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        fail(f"--data-dir {data_dir} is a file; give the folder that holds the task's data")
    grid: dict[str, list[Any]] = {}
    for name, text in (grid_text or {}).items():
        values = _split(name, text)
        if values is not None:
            grid[name] = values
    task_options: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--option: expected KEY=VALUE, got {item!r}")
        task_options[key] = _option_value(value)
    if model is not None:
        task_options["model"] = model
    overrides: dict[str, Any] = {"task": task, "inner": inner, "seeds": _seeds(seeds),
                                 "max_seeds": max_seeds, "epochs": epochs,
                                 "baselines": _names("--baselines", baselines),
                                 "batch_size": batch_size, "schedule": schedule,
                                 "sampler": sampler, "trials": trials,
                                 "name": study, "grid_overrides": grid, "threads": threads,
                                 "population": population,
                                 "trace_fast": True if trace_fast else None}
    if task_options:
        overrides["task_options"] = task_options
    try:
        study_spec = load_spec(spec, allow_large=yes, **overrides)
    except SpecError as e:
        fail(str(e))
    _find_data(study_spec, data_dir)
    _check_launcher(launcher, sbatch or [], storage, workers=workers,
                    cluster_options={"--jobs": jobs, "--partition": partition,
                                     "--account": account, "--ray-address": ray_address})
    mark("study checked")
    from lookbench.execution.early import EarlyWorkers, likely_workers

    # The worker processes start before this one imports torch, and import it meanwhile
    # (see lookbench.execution.early); those the run does not use are killed at the latest here.
    early = EarlyWorkers(likely_workers(devices, workers, threads)
                         if launcher == "local" else 0, threads or 1)
    atexit.register(early.close)
    from lookbench.coordination.storage import StorageUnavailable
    from lookbench.execution.engine import run_study
    from lookbench.study.definition import StudyConflict
    from lookbench.tasks import DataUnavailable

    mark("engine imported")
    out_console = console()
    try:
        cluster = _launcher(launcher, out / study_spec.study_name, storage, jobs=jobs,
                            partition=partition, account=account, gpus_per_job=gpus_per_job,
                            time_limit=time_limit, sbatch=sbatch or [],
                            ray_address=ray_address, threads=study_spec.threads or 1,
                            study=study_spec.study_name, retries=retries)
        result = run_study(study_spec, out=out, storage_url=storage, devices=devices,
                           workers=workers, data_dir=data_dir, console=out_console,
                           grace_s=stale_after, retry_failed=retry_failed,
                           population=study_spec.population, compile=compile, early=early,
                           launcher=cluster)
    except (StudyConflict, ValueError, StorageUnavailable, DataUnavailable) as e:
        fail(str(e), exit_code(e))  # (a damaged results file is a ValueError)
    except OSError as e:  # the study folder: a file in the way, full, read-only, forbidden
        fail(_os_error(e, out / study_spec.study_name), exit_code(e))
    except KeyboardInterrupt:
        result = None
    if result is not None and result.interrupted and result.jobs_left:
        typer.echo(f"stopped watching: the study's {result.jobs_left} {launcher} jobs keep "
                   f"running (run the same command again to watch them, or `lookbench cancel "
                   f"{study_spec.study_name}` to stop them)", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if result is None or result.interrupted:
        typer.echo(INTERRUPTED_RUN, err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
    for line in result.failed:
        typer.echo(f"failed: {line}", err=True)
    for line in result.errors:
        typer.echo(f"error: {line}", err=True)
    missing = result.planned - result.recorded - result.elsewhere
    if missing > 0 and not (result.errors or result.failed):
        if result.running_elsewhere:
            typer.echo(f"warning: {result.running_elsewhere} trials are still running elsewhere "
                       f"(another machine, or a worker that stopped less than --stale-after "
                       f"ago); run the same command again later to finish them", err=True)
        else:
            typer.echo(f"error: {missing} planned trials were not run; run the same command "
                       f"again", err=True)
    if result.retried:
        out_console.print(f"{result.retried} failed trials were run again (their earlier "
                          f"rows are under {out / study_spec.study_name / 'retried'})")
    elsewhere = f" ({result.elsewhere} more by other machines)" if result.elsewhere else ""
    out_console.print(f"{result.recorded} of {result.planned} trials recorded in "
                      f"{out / study_spec.study_name}{elsewhere}")
    if result.seeds_note:
        out_console.print(f"seeds: {result.seeds_note}", highlight=False)
    if result.cost is not None:
        from lookbench.execution.cost import summary

        out_console.print(summary(result.cost, study_spec.inner), highlight=False)
    _print_status(out_console, out, [study_spec.study_name], storage)
    mark("status printed")
    if result.errors or result.failed or (missing > 0 and not result.running_elsewhere):
        raise typer.Exit(EXIT_FAILED)
    if missing > 0:
        raise typer.Exit(EXIT_INCOMPLETE)


def _check_launcher(name: str, sbatch: list[str], storage: str | None, *,
                    workers: int | None = None,
                    cluster_options: dict[str, Any] | None = None) -> None:
    """``--launcher`` and its options, checked before anything heavy is imported: the name,
    its library (an optional extra), Slurm's commands, ``--sbatch``'s options, and options
    given to the wrong kind of run."""
    import importlib.util
    import shutil

    from lookbench._suggest import did_you_mean

    if name not in LAUNCHERS:
        fail(f"--launcher {name!r}{did_you_mean(name, list(LAUNCHERS))}: choose one of "
             f"{', '.join(LAUNCHERS)}")
    given = [o for o, v in (cluster_options or {}).items() if v is not None]
    if name == "local" and given:
        fail(f"{given[0]} is for a run on a cluster: add --launcher slurm (or ray)")
    if name != "local" and workers is not None:
        fail("--workers counts this machine's workers; with --launcher, --jobs says how many "
             "to submit")
    if name != "ray" and "--ray-address" in given:
        fail("--ray-address is for --launcher ray")
    needs = {"slurm": ("submitit", "slurm"), "submitit-local": ("submitit", "slurm"),
             "ray": ("ray", "ray")}.get(name)
    if needs and importlib.util.find_spec(needs[0]) is None:
        fail(f"--launcher {name} needs {needs[0]}: pip install -e '.[{needs[1]}]'")
    if name == "slurm" and (shutil.which("sbatch") is None or shutil.which("srun") is None):
        fail("--launcher slurm: no sbatch (or srun) on this machine's PATH; run it where "
             "jobs are submitted (a login node)")
    if sbatch:
        if name not in ("slurm", "submitit-local"):
            fail("--sbatch is for --launcher slurm")
        from lookbench.launchers.slurm import sbatch_options

        try:
            sbatch_options(sbatch)
        except ValueError as e:
            fail(str(e))


def _launcher(name: str, study_dir: Path, storage: str | None, **options: Any) -> Any:
    """The launcher ``--launcher`` names (None: this command starts the workers itself). A
    storage URL given on the command line reaches the jobs through the environment (Slurm
    copies the submitting shell's; Ray's runtime environment carries it), never a job's
    command line."""
    if name == "local":
        return None
    from lookbench.execution.worker import STORAGE_ENV

    if storage:
        os.environ[STORAGE_ENV] = storage
    elif not os.environ.get(STORAGE_ENV):
        typer.echo(f"note: the study's storage is the journal file under {study_dir}: every "
                   f"job must see that folder, on a filesystem whose file locks work across "
                   f"machines (NFSv4; Lustre or GPFS mounted with flock); otherwise give a "
                   f"PostgreSQL database ({STORAGE_ENV})", err=True)
    if name == "ray":
        from lookbench.launchers.ray_workers import RayLauncher

        return RayLauncher(address=options["ray_address"], jobs=options["jobs"],
                           gpus_per_worker=options["gpus_per_job"],
                           cpus_per_worker=options["threads"], retries=options["retries"])
    from lookbench.launchers.slurm import SlurmLauncher

    return SlurmLauncher(study_dir, partition=options["partition"],
                         gpus_per_job=options["gpus_per_job"],
                         time_limit_min=options["time_limit"], account=options["account"],
                         sbatch=options["sbatch"], jobs=options["jobs"],
                         cpus_per_worker=options["threads"],
                         job_name=f"lookbench-{options['study']}", retries=options["retries"],
                         cluster="local" if name == "submitit-local" else "slurm")


def _find_data(study_spec: Any, data_dir: Path | None) -> None:
    """The task's files where they must be (``Task.find_data``: quick, without torch); the
    run checks the data itself later (``Task.check_data``)."""
    from lookbench import tasks

    try:
        tasks.get(study_spec.task, **study_spec.task_options).find_data(data_dir)
    except tasks.DataUnavailable as e:
        fail(str(e), EXIT_BAD_INPUT)


def _os_error(error: OSError, where: Path | None = None) -> str:
    """One line for an error of the file system: the path, the reason, what to do. An error
    that names no file (a failed write) names ``where``, the folder being written."""
    from lookbench._messages import describe_os_error, what_to_do

    what = describe_os_error(error)
    if error.filename is None and where is not None:
        what = f"{what} in {where}"
    return f"{what}; {what_to_do(error)} (or choose another folder)"


def _option_value(text: str) -> Any:
    """KEY=VALUE values: numbers and booleans as such, anything else as a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _print_status(console: Any, out: Path, names: list[str], storage: str | None) -> None:
    """Print each study's status table; an unknown or damaged study is one line and exit 2
    (a storage or disk that fails us: 1). Trials whose curves are lost are one warning line:
    they count as done in the table until the next run runs them again."""
    from lookbench.progress.status import StatusError, status_table
    from lookbench.results import ResultsUnreadable, StudyResults

    for name in names:
        try:
            console.print(status_table(out / name, storage))
            lost = StudyResults(out / name).without_curves()
        except (StatusError, ResultsUnreadable) as e:
            fail(str(e), exit_code(e))
        if lost:
            typer.echo(f"warning: {len(lost)} trials of study {name} have no curves (a file of "
                       f"{out / name / 'curves'} deleted or lost); the next `lookbench run` "
                       f"of the study runs them again", err=True)
        from lookbench.execution.launch import JOBS_FILE

        if (out / name / JOBS_FILE).exists():  # launched: the cluster's jobs beside the trials
            from lookbench.launchers.jobs import summary

            line = summary(out / name)
            if line:
                console.print(line)


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="Study name (default: every study "
                                                "under --runs).", metavar="STUDY",
                                                show_default=False)] = None,
    runs: Annotated[Path, typer.Option(help=RUNS_HELP, metavar="DIR")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(hidden=True)] = None,
    storage: Annotated[str | None, typer.Option(envvar="LOOKBENCH_STORAGE_URL",
                                                help="Optuna storage URL, if not the "
                                                "journal file.", metavar="URL")] = None,
) -> None:
    """Progress of a study: done, running, diverged, failed, time left; the best config per
    optimizer."""
    from lookbench.progress.status import StatusError, find_studies

    out = _runs(runs, out)

    try:
        names = [study] if study else find_studies(out)
        if not names:
            fail(f"no studies under {out}/ (run `lookbench run TASK` first)")
        _print_status(console(), out, names, storage)
    except StatusError as e:
        fail(str(e), exit_code(e))


@app.command()
def cancel(
    study: Annotated[str, typer.Argument(help="Study name.", metavar="STUDY",
                                         show_default=False)],
    runs: Annotated[Path, typer.Option(help=RUNS_HELP, metavar="DIR")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Cancel the cluster jobs `run --launcher` submitted for STUDY (each worker hands its
    trial back; the same run command submits them again)."""
    out = _runs(runs, out)
    if not (out / study).is_dir():
        from lookbench._suggest import did_you_mean
        from lookbench.progress.status import find_studies

        fail(f"no study {study!r} under {out}/{did_you_mean(study, find_studies(out))}")
    from lookbench.execution.launch import JOBS_FILE

    if not (out / study / JOBS_FILE).exists():
        fail(f"study {study!r} was not run with --launcher: it has no jobs to cancel")
    from lookbench.launchers.jobs import cancel as cancel_jobs

    try:
        count = cancel_jobs(out / study)
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"could not cancel the jobs of {study!r}: {e}", 1)
    console().print(f"{count} jobs of {study} asked to stop" if count
                    else f"no job of {study} is queued or running")


@app.command()
def report(
    studies: Annotated[list[Path] | None, typer.Argument(help="Study folders (or names under "
                                                        "--runs); default: every study.",
                                                        metavar="STUDY...",
                                                        show_default=False)] = None,
    reports: Annotated[Path, typer.Option("--reports", "--out", help="Where the HTML pages "
                                          "(and each study's .json summary and -configs.csv) "
                                          "go; --out is its former name.",
                                          metavar="DIR")] = Path("reports"),
    runs: Annotated[Path, typer.Option(help="Where studies live.", metavar="DIR")] = Path("runs"),
    compare: Annotated[bool, typer.Option("--compare", help="Put two studies side by side on "
                                          "one page.", metavar="")] = False,
    within: Annotated[str | None, typer.Option(
        help="Tolerances ε a setting must come within of the best to count as good, e.g. "
             "0.005,0.02 (default 0.01,0.05: relative to the best; a loss whose start the task "
             "knows: a share of the improvement from it).", metavar="LIST")] = None,
    absolute: Annotated[bool, typer.Option(
        "--absolute", help="Read --within in the metric's own units (e.g. 0.02 of loss).",
        metavar="")] = False,
) -> None:
    """Write an offline HTML report per study: the headline and verdict (Lookahead and each
    baseline on the settings both ran, with what each seed can tell and what Lookahead costs),
    sensitivity surfaces, learning curves; plus <study>.json and <study>-configs.csv for
    scripts."""
    from lookbench.comparison.rules import parse_within
    from lookbench.progress.status import find_studies
    from lookbench.report import ReportError, build_reports

    try:
        tolerances = parse_within(within)
    except ValueError as e:
        fail(str(e), EXIT_BAD_INPUT)

    if studies:
        dirs = [s if s.is_dir() or not (runs / s).is_dir() else runs / s for s in studies]
    else:
        dirs = [runs / name for name in find_studies(runs)]
        if not dirs:
            fail(f"no studies under {runs}/ (run `lookbench run TASK` first)")
    try:
        pages = build_reports(dirs, reports, compare=compare, within=tolerances,
                              absolute=absolute)
    except ReportError as e:
        fail(str(e), exit_code(e))
    except OSError as e:  # the report folder: full, read-only, forbidden, a file in the way
        fail(_os_error(e, reports), exit_code(e))
    out_console = console()
    for path in pages:
        out_console.print(f"wrote {path}")


@app.command()
def compact(
    study: Annotated[str | None, typer.Argument(help="Study name or folder (default: every "
                                                "study under --runs).", metavar="STUDY",
                                                show_default=False)] = None,
    runs: Annotated[Path, typer.Option(help=RUNS_HELP, metavar="DIR")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Merge a study's per-trial Parquet part files into one file per table (trials, curves),
    so status, report and your own readers open two files instead of thousands. Safe while
    the study runs or is read; `lookbench run` does it when a run ends."""
    from lookbench.progress.status import find_studies
    from lookbench.results import ResultsUnreadable, StudyResults

    out = _runs(runs, out)
    if study is None:
        dirs = [out / name for name in find_studies(out)]
        if not dirs:
            fail(f"no studies under {out}/ (run `lookbench run TASK` first)")
    else:
        given = Path(study)
        dirs = [out / study if (out / study).is_dir() or not given.is_dir() else given]
        if not (dirs[0] / "trials").is_dir():
            fail(f"no study with results at {dirs[0]}")
    for study_dir in dirs:
        try:
            done = StudyResults(study_dir).compact()
        except ResultsUnreadable as e:
            fail(str(e), exit_code(e))
        except OSError as e:  # read-only, forbidden, a full disk
            fail(_os_error(e, study_dir), exit_code(e))
        if done.parts:
            typer.echo(f"{study_dir}: {done.parts} part files merged; {done.trials} trials in "
                       f"{study_dir / 'trials' / 'compacted.parquet'}")
        else:
            typer.echo(f"{study_dir}: nothing to compact ({done.trials} trials in one file)")
