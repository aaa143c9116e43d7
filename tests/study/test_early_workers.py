"""Worker processes started before the command imports torch (``lookbench.execution.early``): used
as the run's workers once the study is planned, killed untouched when the run does not want
them, and a worker stopped from outside while it waits still fails the run."""

from __future__ import annotations

import signal
import time

import pytest
from typer.testing import CliRunner

from lookbench import timeline
from lookbench.cli import app
from lookbench.execution import early as early_module
from lookbench.execution.early import EarlyWorkers, likely_workers

TINY = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--seeds", "2", "--devices", "cpu", "--population", "1"]


def test_how_many_are_started():
    assert likely_workers("0,1", None, None) == 0  # GPUs: they start as memory allows
    assert likely_workers("cpu", 3, None) == 2  # the command itself is the third
    assert likely_workers("cpu", 1, None) == 0
    assert likely_workers("cpu", None, 10_000) == 0  # one worker of all the threads


@pytest.fixture
def started(monkeypatch):
    """Every EarlyWorkers made, to look at its processes after the command."""
    made: list[list] = []
    real = EarlyWorkers.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(list(self._waiting))

    monkeypatch.setattr(EarlyWorkers, "__init__", init)
    return made


def test_an_early_worker_does_the_runs_work(tmp_path, monkeypatch, started):
    path = tmp_path / "timeline.txt"
    monkeypatch.setenv(timeline.ENV, str(path))  # (for the worker process)
    monkeypatch.setattr(timeline, "_path", str(path))  # (for this one, the command)
    result = CliRunner().invoke(app, ["run", *TINY, "--workers", "2", "--out",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (procs,) = started
    assert len(procs) == 1 and procs[0].returncode == 0
    marks = timeline.read(path)
    worker = procs[0].pid
    events = [e for _, pid, e in marks if pid == worker]
    assert events[:3] == ["worker waiting", "worker ready", "claimed"]
    log = tmp_path / "runs" / "digits-sgd" / "logs" / "worker-0.log"
    assert log.exists() and "Traceback" not in log.read_text()


def test_workers_the_run_does_not_use_are_killed_untouched(tmp_path, started):
    runs = tmp_path / "runs"
    assert CliRunner().invoke(app, ["run", *TINY, "--workers", "1", "--out",
                                    str(runs)]).exit_code == 0
    # complete: nothing to run, and a storage that cannot be opened: no worker is begun
    for extra in ([], ["--storage", "redis://x"]):
        result = CliRunner().invoke(app, ["run", *TINY, "--workers", "3", "--out", str(runs),
                                          *extra])
        assert result.exit_code in (0, 2), result.output
    assert [len(p) for p in started] == [0, 2, 2]
    for proc in started[1] + started[2]:
        assert proc.poll() is not None  # killed, reaped
    assert not list((runs / "digits-sgd").glob("logs/worker-*.log"))  # none was begun


def test_one_that_ended_before_it_began_says_why_in_its_log(tmp_path):
    workers = EarlyWorkers(1)
    try:
        proc = workers._waiting[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        log = tmp_path / "worker-0.log"
        begun = workers.begin(["--study-dir", str(tmp_path), "--name", "x"],
                              {"OMP_NUM_THREADS": "1",
                               "OMP_WAIT_POLICY": early_module.os.environ.get(
                                   "OMP_WAIT_POLICY", "PASSIVE")}, log, None)
        assert begun is proc and begun.returncode == -signal.SIGKILL and log.exists()
    finally:
        workers.close()


def test_a_worker_stopped_while_it_waits_exits_130(tmp_path, monkeypatch):
    path = tmp_path / "timeline.txt"
    monkeypatch.setenv(timeline.ENV, str(path))
    workers = EarlyWorkers(1)
    proc = workers._waiting[0]
    try:
        deadline = time.monotonic() + 120
        # (from its "worker waiting" on, a SIGTERM is a KeyboardInterrupt, as at work)
        while time.monotonic() < deadline and not (path.exists() and path.read_text()):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        workers.close()


@pytest.mark.parametrize("others_still_work", [True, False])
def test_the_cost_pass_runs_on_the_commands_core_while_others_still_train(
        tmp_path, monkeypatch, others_still_work):
    """Once the command's own worker finds nothing left while another worker still trains,
    it measures what Lookahead costs then (a core that would idle) instead of after the
    last trial; not when every worker is done already."""
    from lookbench.execution import engine
    from lookbench.study.spec import load_spec

    class Worker:  # a worker process that ends once the command has done its part
        returncode = None
        pid = 0

        def __init__(self, cmd, env, **kwargs):
            self.polls = 0 if others_still_work else 10**6

        def poll(self):
            self.polls += 1
            if self.polls > 3 and self.returncode is None and (
                    calls or not others_still_work):
                self.returncode = 0
            return self.returncode

        def wait(self, timeout=None):
            return self.poll()

    calls: list[bool] = []
    monkeypatch.setattr(engine.subprocess, "Popen", Worker)
    monkeypatch.setattr(engine, "_run_here", lambda *a, **k: None)  # (nothing left here)
    result = engine.RunResult(planned=0, recorded=0)
    engine._run_processes(load_spec(None, task="digits"), tmp_path, None,
                          engine.placements("cpu", 2), None, None, lambda: None, result,
                          while_others_work=lambda: calls.append(True))
    assert calls == ([True] if others_still_work else [])
    assert not result.errors and not result.interrupted
