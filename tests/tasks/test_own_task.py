"""A task of the user's own: a file outside the package, a module, an installed entry point;
run with worker processes, listed, reported, and a broken one refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.results import StudyResults

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "iris_task.py"
runner = CliRunner()


def _lookbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_task_file_outside_the_package_runs_with_two_workers_and_is_reported(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(EXAMPLE, work / "my_iris.py")  # the documented example, as a user's own file
    args = ["run", "my_iris.py:Iris", "--lr", "0.1,0.3", "--epochs", "2", "--seeds", "2",
            "--workers", "2", "--devices", "cpu", "--out", "runs"]
    proc = _lookbench(*args, cwd=work)
    assert proc.returncode == 0, proc.stderr
    study = work / "runs" / "iris-sgd"  # named by the class, not by the path
    definition = json.loads((study / "study.json").read_text())
    assert definition["task"] == "my_iris.py:Iris"
    status = _lookbench("status", "--out", "runs", cwd=work)
    assert status.returncode == 0, status.stderr
    assert "4/4" in status.stdout  # 2 learning rates × 2 seeds per optimizer
    report = _lookbench("report", "--runs", "runs", "--out", "reports", cwd=work)
    assert report.returncode == 0, report.stderr
    summary = json.loads((work / "reports" / "iris-sgd.json").read_text())
    assert summary["task"] == "my_iris.py:Iris" and summary["matched"]["configurations"] == 2
    import os

    listed = _lookbench("tasks", "my_iris.py:Iris", cwd=work,
                        env={**os.environ, "COLUMNS": "200"})
    assert listed.returncode == 0 and "my_iris.py:Iris" in listed.stdout


def _package(root: Path) -> None:
    """A tiny installed distribution: a module and a dist-info declaring the entry point."""
    (root / "tiny_tasks.py").write_text(EXAMPLE.read_text())
    info = root / "tiny_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lookbench.tasks]\niris = tiny_tasks:Iris\n")


def test_installed_and_module_tasks_are_found_by_name(tmp_path, monkeypatch):
    _package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from lookbench import tasks

    assert "iris" in tasks.available()
    assert tasks.task_class("iris").__name__ == "Iris"
    assert tasks.task_class("tiny_tasks:Iris") is tasks.task_class("iris")
    listed = runner.invoke(app, ["tasks"])
    assert listed.exit_code == 0 and "iris" in listed.output
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", "iris", "--lr", "0.3", "--epochs", "1", "--devices",
                                 "cpu", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert len(StudyResults(out / "iris-sgd").recorded()) == 2


@pytest.mark.parametrize("source, reference, says", [
    ("raise RuntimeError('boom')", "bad.py:Bad", "task file bad.py failed to load: "
                                                 "RuntimeError: boom"),
    ("x = 1", "bad.py:Bad", "bad.py has no Bad"),
    ("class Bad: pass", "bad.py:Bad", "Bad is not a lookbench.Task subclass"),
    (None, "missing.py:Bad", "task file missing.py does not exist"),
    (None, "no_such_module:Bad", "cannot import no_such_module"),
])
def test_a_broken_task_is_one_line_before_anything_starts(tmp_path, monkeypatch, source,
                                                           reference, says):
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / "bad.py").write_text(textwrap.dedent(source))
    result = runner.invoke(app, ["run", reference, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_writing_a_task_needs_no_torch_at_import_time():
    code = ("import sys, lookbench; assert 'torch' not in sys.modules; "
            "from lookbench import Task, Workload; assert 'torch' not in sys.modules; "
            "print('ok')")  # (a task's class is read without torch: lookbench._lazy)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_the_readme_shows_the_example_file_as_it_is():
    import re

    readme = (EXAMPLE.parents[2] / "README.md").read_text()
    section = readme[readme.index("### Your own task"):]
    block = re.search(r"```python\n(.*?)\n```", section, re.S).group(1)
    code = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert block.strip() == code
