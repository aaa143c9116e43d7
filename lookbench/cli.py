"""The ``lookbench`` command line: a thin Typer app that parses options and delegates.

Heavy libraries (torch, optuna, plotly) are imported inside the commands that need them, so
``lookbench --help`` answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lookbench import __version__

app = typer.Typer(
    name="lookbench",
    help=(
        "Benchmark how robust the Lookahead optimizer is to its hyperparameters, "
        "against the optimizers you already use."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    from rich.console import Console
    from rich.table import Table

    from lookbench.optim import available, hyperparameters

    table = Table(title="optimizers", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("what it is")
    table.add_column("hyperparameters (defaults)")
    for name, summary in available().items():
        hparams = hyperparameters(name)
        table.add_row(name, summary, ", ".join(f"{k}={v!r}" for k, v in hparams.items()))
    Console().print(table)


@app.command("tasks")
def list_tasks() -> None:
    """List the benchmark tasks: size, default budget, and the data each one needs."""
    from rich.console import Console
    from rich.table import Table

    from lookbench import tasks

    table = Table(title="tasks", show_lines=True)
    for column in ("name", "what it is", "data", "train / test", "parameters",
                   "default epochs", "batch", "schedule", "metric"):
        table.add_column(column, overflow="fold")
    for name in tasks.available():
        task = tasks.get(name)
        size = task.size()
        examples = "-" if size.train_examples is None else (
            f"{size.train_examples:,} / {size.test_examples:,}")
        metric = f"{task.metric} ({'max' if task.higher_is_better else 'min'})"
        table.add_row(name, task.summary, task.data, examples, f"{size.parameters:,}",
                      str(task.default_epochs), str(task.default_batch_size),
                      task.default_schedule, metric)
    Console().print(table)
