"""Every command's exit codes, as the README's table gives them, and every error in one line.

0 done; 1 failed (a trial, a worker, or the machine: a full disk, a database still
unreachable after the wait); 2 bad input (usage, options, the study file, an unknown study or
task, missing data, a storage URL that is malformed or refused, a path in the way, a damaged
file); 3 not finished here (the rest runs on other machines); 130 interrupted (Ctrl-C or
SIGTERM). One test per code and command where the code can happen.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookbench.cli import app

runner = CliRunner()
TINY = ["digits", "--lr", "0.1,1000", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--seeds", "2", "--devices", "cpu", "--workers", "1"]
STUDY = "digits-sgd"
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result, code: int, starts: str = "error: ") -> str:
    """The one line a failed command printed on stderr, after checking its exit code."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    assert len(lines) == 1 and lines[0].startswith(starts), lines
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """``--out`` of a small finished study (digits-sgd, 8 trials)."""
    out = tmp_path_factory.mktemp("finished")
    result = runner.invoke(app, ["run", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture
def out(finished, tmp_path) -> Path:
    """A copy of the finished study's ``--out``, for a test to damage."""
    copy = tmp_path / "runs"
    shutil.copytree(finished, copy)
    return copy


def damage_results(out: Path) -> Path:
    """Garbage in the study's trials table (a results file a disk or a hand damaged)."""
    part = next((out / STUDY / "trials").glob("*.parquet"))
    part.write_bytes(b"not a parquet file")
    return part


def enospc_without_a_name(*args, **kwargs):
    """A full disk as a failed write reports it: no file named."""
    raise OSError(errno.ENOSPC, "No space left on device")


# -- usage errors: one line and 2, for every command ---------------------------------------------


@pytest.mark.parametrize(("args", "match"), [
    (["run", "digits", "--workers", "0"], "'--workers'"),
    (["run", "digits", "--threads", "0"], "'--threads'"),
    (["run", "digits", "--population", "0"], "'--population'"),
    (["run", "digits", "--epochs", "many"], "'--epochs'"),
    (["run", "digits", "--wrkers", "2"], "--wrkers"),
    (["status", "--bogus"], "--bogus"),
    (["report", "--within"], "--within"),
    (["compact", "a", "b"], "unexpected extra argument"),
    (["tasks", "--bogus"], "--bogus"),
    (["optimizers", "extra"], "unexpected extra argument"),
    (["frobnicate"], "frobnicate"),
])
def test_a_usage_error_is_one_line_and_2(args, match):
    line = one_line(invoke(*args), 2)
    assert match in line and "╭" not in line and "│" not in line


def test_a_usage_error_says_where_help_is():
    line = one_line(invoke("run", "digits", "--workers", "0"), 2)
    assert line.endswith("(see `lookbench run --help`)")


def test_help_and_version_still_exit_0():
    assert invoke("--help").exit_code == 0
    assert invoke("run", "--help").exit_code == 0
    assert invoke("--version").exit_code == 0


# -- run ------------------------------------------------------------------------------------------


def test_run_0_when_every_trial_is_recorded(finished):
    result = invoke("run", *TINY, "--out", finished)  # (resumed: nothing left to run)
    assert result.exit_code == 0, result.stderr
    assert "8 of 8 trials recorded" in result.output


FLAKY = '''
from lookbench.tasks.digits import Digits


class Flaky(Digits):
    """A task whose workload always fails (a bug)."""

    def workload(self, **kwargs):
        raise RuntimeError("the data loader has a bug")
'''


def test_run_1_when_a_trial_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    result = invoke("run", "flaky.py:Flaky", *TINY[1:], "--seeds", "1", "--out", "runs")
    assert result.exit_code == 1, result.stderr
    assert result.stderr.count("failed: trial") == 4  # (2 lr × lookahead and sgd)


def test_run_1_when_the_disk_is_full_while_planning_and_the_journal_is_named(tmp_path,
                                                                            monkeypatch):
    """A full disk during planning (the journal's first appends) names the journal."""
    import builtins

    from lookbench.coordination import journal

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (returned to a with)
        return FullDisk(f) if mode == "ab" else f

    monkeypatch.setattr(journal, "open", open_, raising=False)
    line = one_line(invoke("run", *TINY, "--out", tmp_path), 1)
    journal_path = tmp_path / STUDY / "optuna.journal"
    assert f"{journal_path}: No space left on device; free some space" in line


def test_a_full_disk_names_a_folder_where_the_error_names_no_file(tmp_path, monkeypatch):
    from lookbench.execution import engine

    monkeypatch.setattr(engine, "prepare", enospc_without_a_name)
    line = one_line(invoke("run", *TINY, "--out", tmp_path), 1)
    assert f"No space left on device in {tmp_path / STUDY}; free some space" in line


def test_run_1_when_the_database_stays_unreachable(tmp_path, monkeypatch):
    from lookbench.coordination import storage
    from tests.study.test_distributed import _free_port

    monkeypatch.setattr(storage, "RETRY_FOR_S", 0.5)
    url = f"postgresql://nobody@127.0.0.1:{_free_port()}/none"  # nobody listens
    result = invoke("run", *TINY, "--storage", url, "--out", tmp_path / "runs")
    waiting = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(waiting) == 1 and "waiting for the database" in waiting[0]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert "still unreachable after 0.5 s" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing created for a storage it cannot open


@pytest.mark.parametrize(("url", "match"), [
    ("redis://x", "unsupported storage URL"),
    ("postgresql://nobody@no-such-host.invalid/none", "cannot open storage"),
    ("postgresql+nodriver://nobody@localhost/none", "cannot open storage"),
])
def test_run_2_for_a_storage_url_that_cannot_be_opened_and_nothing_is_created(tmp_path, url,
                                                                               match):
    line = one_line(invoke("run", *TINY, "--storage", url, "--out", tmp_path / "runs"), 2)
    assert match in line
    assert not (tmp_path / "runs").exists()


def test_run_2_for_missing_data(tmp_path):
    (tmp_path / "nodata").mkdir()
    line = one_line(invoke("run", "cifar10", "--data-dir", tmp_path / "nodata", "--option",
                           "train_subset=8", "--out", tmp_path / "runs"), 2)
    assert "CIFAR-10 not found in" in line
    assert not (tmp_path / "runs").exists()


def test_run_2_for_a_file_in_the_way_of_out(tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_line(invoke("run", *TINY, "--out", tmp_path / "f"), 2)
    assert "a file stands where a folder must be" in line


def test_run_2_for_a_damaged_results_file(out):
    part = damage_results(out)
    assert str(part) in one_line(invoke("run", *TINY, "--out", out), 2)


def test_run_2_for_another_definition(out):
    line = one_line(invoke("run", *TINY, "--threads", "2", "--out", out), 2)
    assert "threads=1, not 2" in line


def test_run_3_when_the_rest_runs_on_other_machines(tmp_path):
    from lookbench.coordination.queue import OWNER_ATTR
    from lookbench.execution.engine import prepare
    from lookbench.study.spec import load_spec

    spec = load_spec(task="digits", seeds=2, epochs=2,
                     grid_overrides={"lr": [0.1, 1000.0], "k": [5], "alpha": [0.5]})
    queue, _, _ = prepare(spec, tmp_path, None)
    claimed = queue.claim()  # held by a live worker on another machine
    queue.storage.set_trial_system_attr(claimed.storage_id, OWNER_ATTR,
                                        {"host": "elsewhere", "pid": 1, "start": None})
    queue.heartbeat(claimed)
    result = invoke("run", *TINY, "--out", tmp_path)
    assert result.exit_code == 3, result.stderr
    assert "7 of 8 trials recorded" in result.output


# -- status ---------------------------------------------------------------------------------------


def test_status_0(finished):
    assert invoke("status", "--out", finished).exit_code == 0


def test_status_1_when_the_database_stays_unreachable(finished, monkeypatch):
    from lookbench.coordination import storage
    from tests.study.test_distributed import _free_port

    monkeypatch.setattr(storage, "RETRY_FOR_S", 0.5)
    url = f"postgresql://nobody@127.0.0.1:{_free_port()}/none"
    result = invoke("status", STUDY, "--storage", url, "--out", finished)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "still unreachable" in errors[0]


def test_status_2_for_a_damaged_results_file(out):
    part = damage_results(out)
    assert str(part) in one_line(invoke("status", "--out", out), 2)


def test_status_2_for_a_damaged_journal(out):
    journal = out / STUDY / "optuna.journal"
    journal.write_bytes(b"garbage\n" + journal.read_bytes())
    assert "optuna.journal is unreadable" in one_line(invoke("status", "--out", out), 2)


def test_status_2_for_an_unknown_study_or_an_empty_out(tmp_path, finished):
    assert "no study at" in one_line(invoke("status", "nope", "--out", finished), 2)
    assert "no studies under" in one_line(invoke("status", "--out", tmp_path / "none"), 2)


def test_status_2_for_a_storage_url_that_is_refused(finished):
    line = one_line(invoke("status", STUDY, "--storage", "redis://x", "--out", finished), 2)
    assert "unsupported storage URL" in line


# -- report ---------------------------------------------------------------------------------------


def test_report_0(finished, tmp_path):
    result = invoke("report", "--runs", finished, "--out", tmp_path / "reports")
    assert result.exit_code == 0, result.stderr


def test_report_1_when_the_disk_is_full_and_the_page_is_named(finished, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", enospc_without_a_name)
    line = one_line(invoke("report", "--runs", finished, "--out", tmp_path / "reports"), 1)
    assert f"{tmp_path / 'reports' / STUDY}.html: No space left on device" in line
    assert not list((tmp_path / "reports").glob(".*.tmp"))  # nothing half-written left


def test_report_2_for_a_damaged_results_file(out, tmp_path):
    part = damage_results(out)
    line = one_line(invoke("report", "--runs", out, "--out", tmp_path / "reports"), 2)
    assert str(part) in line


def test_report_2_for_no_studies_or_a_file_in_the_way(finished, tmp_path):
    line = one_line(invoke("report", "--runs", tmp_path / "none", "--out", tmp_path / "r"), 2)
    assert "no studies under" in line
    (tmp_path / "f").write_text("x")
    line = one_line(invoke("report", "--runs", finished, "--out", tmp_path / "f" / "r"), 2)
    assert "Not a directory" in line


# -- compact --------------------------------------------------------------------------------------


def test_compact_0(out):
    assert invoke("compact", STUDY, "--out", out).exit_code == 0


def test_compact_1_when_the_disk_is_full(out, monkeypatch):
    from lookbench.results import store

    (out / STUDY / "trials" / "compacted.parquet").rename(
        out / STUDY / "trials" / "part-0000000000000000.parquet")  # something to merge
    monkeypatch.setattr(store, "_write_atomically", enospc_without_a_name)
    line = one_line(invoke("compact", STUDY, "--out", out), 1)
    assert f"No space left on device in {out / STUDY}" in line


def test_compact_2_for_a_damaged_results_file(out):
    part = damage_results(out)
    assert str(part) in one_line(invoke("compact", STUDY, "--out", out), 2)


def test_compact_2_for_an_unknown_study_or_an_empty_out(tmp_path, finished):
    assert "no study with results" in one_line(invoke("compact", "nope", "--out", finished), 2)
    assert "no studies under" in one_line(invoke("compact", "--out", tmp_path / "none"), 2)


# -- tasks, optimizers ----------------------------------------------------------------------------


def test_tasks_0_and_2_for_an_unknown_task():
    assert invoke("tasks").exit_code == 0
    assert "unknown task 'nosuchtask'" in one_line(invoke("tasks", "nosuchtask"), 2)


def test_optimizers_0():
    assert invoke("optimizers").exit_code == 0


# -- 130: interrupted, in one line, for every command --------------------------------------------


@pytest.mark.parametrize(("command", "where"), [
    (["status"], "lookbench.progress.status.status_table"),
    (["report"], "lookbench.report.build_reports"),
    (["compact", STUDY], "lookbench.results.StudyResults.compact"),
    (["run", *TINY], "lookbench.execution.engine.prepare"),
    (["tasks"], "lookbench.tasks.available"),
    (["optimizers"], "lookbench.optim.available"),
])
def test_ctrl_c_anywhere_is_130_in_one_line(finished, tmp_path, monkeypatch, command, where):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    folder = ["--runs", finished, "--out", tmp_path / "r"] if command[0] == "report" else (
        ["--out", finished] if command[0] in ("status", "compact", "run") else [])
    line = one_line(invoke(*command, *folder), 130, starts="interrupted")
    if command[0] == "run":
        assert "run the same command again to resume" in line


SLOW_STEP = """
import sys, time
import {module} as m

def slow(*args, **kwargs):
    print("started", flush=True)
    time.sleep(120)

m.{name} = slow
from lookbench.cli import app
app(prog_name="lookbench", args=sys.argv[1:])
"""


@pytest.mark.parametrize(("command", "target"), [
    (["run", *TINY], "lookbench.execution.engine.prepare"),  # outside training: planning
    (["status"], "lookbench.progress.status.status_table"),
])
def test_sigterm_outside_training_is_130_in_one_line(finished, tmp_path, command, target):
    module, _, name = target.rpartition(".")
    code = textwrap.dedent(SLOW_STEP.format(module=module, name=name))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, *command, "--out", str(finished)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, (proc.returncode, err)
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err


def test_the_readme_table_lists_exactly_the_codes_the_commands_use():
    from lookbench import cli

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("| ")]
    codes = {int(row.split("|")[1]) for row in rows if row.split("|")[1].strip().isdigit()}
    used = {0, cli.EXIT_FAILED, cli.EXIT_BAD_INPUT, cli.EXIT_INCOMPLETE, cli.EXIT_INTERRUPTED}
    assert codes == used == {0, 1, 2, 3, 130}


def test_a_broken_pipe_still_ends_quietly(monkeypatch):
    """Output piped into `head` that closes early: no error line for a path (Typer's own
    handling, exit 1), though other OSErrors become one line."""
    def broken(*args, **kwargs):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("lookbench.optim.available", broken)
    result = invoke("optimizers")
    assert result.exit_code == 1 and result.stderr == ""
