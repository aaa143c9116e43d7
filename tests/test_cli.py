"""The command line as a user meets it: help, version, listings, exit codes."""

from __future__ import annotations

import subprocess
import sys

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
