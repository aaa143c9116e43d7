"""The command line as a user meets it: help, version, listings, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookbench import __version__
from lookbench.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "optimizers" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lookbench {__version__}"


def test_optimizers_lists_every_registered_optimizer():
    result = runner.invoke(app, ["optimizers"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("sgd", "adam", "adamw", "lookahead", "polyak", "ema", "swa"):
        assert f" {name} " in result.output
    assert "alpha=0.5" in result.output


def test_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_module_entry_point_and_help_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['lookbench', '--help'];\n"
        "try:\n    runpy.run_module('lookbench', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'lookbench --help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_piped_tables_are_not_cut_at_80_columns():
    env = {k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "lookbench", "tasks"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    widths = {len(line) for line in proc.stdout.splitlines() if line.strip()}
    assert max(widths) > 80
    assert "noisy quadratic model (paper §3.1)" in " ".join(proc.stdout.split())
    narrow = subprocess.run([sys.executable, "-m", "lookbench", "tasks"], capture_output=True,
                            text=True, env={**env, "COLUMNS": "60"})
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60


COMMANDS = ("run", "status", "report", "compact", "tasks", "optimizers")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_at_80_columns(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=80,
                           env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output  # nothing cut
    flags = [line for line in lines if "<bool>" in line and "--help" not in line]
    assert not flags, flags  # a flag shows no placeholder
    assert "--no-" not in result.output  # one spelling per flag
    if command == "run":  # its 40 options in groups, each description a readable width
        for panel in ("What to sweep", "Each trial's budget", "Where it runs",
                      "Where results are kept"):
            assert panel in result.output
        lr = next(line for line in lines if line.startswith("│ --lr "))
        assert "Learning rates to sweep, e.g. 0.01,0.1." in lr


@pytest.mark.parametrize("command", ["run", "status", "compact", "report"])
def test_every_command_calls_the_studies_folder_runs(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=100)
    assert "--runs" in result.output


def test_the_former_spellings_still_work(tmp_path):
    from lookbench.cli import _runs

    assert _runs(Path("runs"), tmp_path) == tmp_path  # --out alone
    assert _runs(tmp_path, None) == tmp_path  # --runs alone
    for command in (["status"], ["compact"]):
        old = runner.invoke(app, [*command, "--out", str(tmp_path)])
        new = runner.invoke(app, [*command, "--runs", str(tmp_path)])
        assert old.exit_code == new.exit_code == 2
        assert old.stderr == new.stderr and f"no studies under {tmp_path}/" in old.stderr
    both = runner.invoke(app, ["status", "--runs", str(tmp_path / "a"), "--out",
                               str(tmp_path / "b")])
    assert both.exit_code == 2 and "name two studies folders" in both.stderr
    reports = runner.invoke(app, ["report", "--runs", str(tmp_path), "--out",
                                  str(tmp_path / "html")])
    assert reports.exit_code == 2 and f"no studies under {tmp_path}/" in reports.stderr
