"""What reading a study costs before any row is read: ``status``, ``report`` and ``compact``
never import torch where they do not use it (about half of their start-up), and ``tasks``
does not build models to count their parameters. The tables that spare those imports must
agree with the task classes they stand for."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lookbench import tasks
from lookbench.cli import _BUILTIN_SIZES
from lookbench.tasks import BUILTIN_RANKING

# The command line run in a fresh interpreter; it prints whether torch was imported.
CODE = """
import sys, runpy
sys.argv = ["lookbench", *sys.argv[1:]]
try:
    runpy.run_module("lookbench", run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), f"exit code {e.code}"
print("TORCH IMPORTED" if "torch" in sys.modules else "no torch")
"""


def run_cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["status", "report", "compact"])
def test_reading_an_accuracy_study_does_not_import_torch(grid_study, tmp_path, command):
    args = {"status": ["status", grid_study.name, "--out", str(grid_study.parent)],
            "report": ["report", str(grid_study), "--out", str(tmp_path / "out")],
            "compact": ["compact", grid_study.name, "--out", str(grid_study.parent)]}[command]
    assert run_cli(*args) == "no torch"


def test_status_and_report_of_an_nqm_study_do_not_import_torch(tmp_path):
    from lookbench.execution.engine import run_study
    from lookbench.study.spec import load_spec

    spec = load_spec(None, task="nqm", task_options={"analytic": True}, epochs=2,
                     grid={"lookahead": {"lr": [0.1, 0.5], "k": [5], "alpha": [0.5]},
                           "sgd": {"lr": [0.1, 0.5]}})
    result = run_study(spec, out=tmp_path, storage_url=None, devices="cpu", workers=1,
                       data_dir=None, console=Console(file=io.StringIO()))
    assert result.recorded == 4
    assert run_cli("status", "--out", str(tmp_path)) == "no torch"
    # The report of a task that knows its loss floor and initial loss (the NQM) reads them
    # from study.json, where the run recorded the task's own values, instead of asking it.
    from lookbench.report.data import load_study

    data = load_study(tmp_path / spec.study_name)
    task = tasks.get("nqm", analytic=True)
    assert data.facts == {"loss_floor": task.loss_floor(), "initial_loss": task.initial_loss(),
                          "chance_level": None, "deterministic": True}
    assert data.loss_floor == task.loss_floor() and data.initial_loss == task.initial_loss()
    assert run_cli("report", str(tmp_path / spec.study_name), "--out",
                   str(tmp_path / "report")) == "no torch"


def test_the_built_in_rankings_are_the_task_classes_own():
    assert set(BUILTIN_RANKING) == set(tasks._REGISTRY)
    for name, (metric, higher) in BUILTIN_RANKING.items():
        cls = tasks.task_class(name)
        assert (cls.metric, cls.higher_is_better) == (metric, higher), name


def test_the_sizes_tasks_lists_are_the_tasks_own():
    assert set(_BUILTIN_SIZES) == set(tasks._REGISTRY)
    for name, size in _BUILTIN_SIZES.items():
        assert dataclasses.astuple(tasks.get(name).size()) == size, name


def test_tasks_lists_sizes_without_building_a_model(monkeypatch):
    from typer.testing import CliRunner

    from lookbench.cli import app

    built = []
    for name in tasks.available():
        monkeypatch.setattr(tasks.task_class(name), "size",
                            lambda self: built.append(self) or tasks.TaskSize(None, None, None))
    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert built == [] and "11.2M" in result.output and "25.6k" in result.output


def test_a_task_of_ones_own_is_still_sized_by_its_own_size(monkeypatch, tmp_path: Path):
    from typer.testing import CliRunner

    from lookbench.cli import app

    own = tmp_path / "own.py"
    own.write_text(
        "from lookbench import Task, TaskSize\n"
        "class Own(Task):\n"
        "    summary = 'a task of my own'\n"
        "    data = 'none'\n"
        "    def size(self):\n"
        "        return TaskSize(7, 3, 1234)\n"
        "    def workload(self, **kwargs):\n"
        "        raise NotImplementedError\n"
    )
    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["tasks", f"{own}:Own"])
    assert result.exit_code == 0, result.output
    assert "7/3 ex, 1.23k par" in result.output
