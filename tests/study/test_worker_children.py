"""A worker process that dies (the out-of-memory killer, a kill -9) while ``lookbench run``
trains its own worker: it is reaped at once, never counted alive as a zombie, and its trials
are taken over in the same run, which ends complete with one warning line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import lookbench
from lookbench._tempfiles import pid_alive as _pid_alive
from lookbench._tempfiles import process_start as _process_start
from lookbench.coordination.queue import (
    ID_ATTR,
    OWNER_ATTR,
    owner_alive,
)
from lookbench.coordination.storage import JOURNAL_FILE, open_storage
from lookbench.execution import engine

LOOKBENCH = Path(sys.executable).with_name("lookbench")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_zombie_is_not_alive():
    proc = subprocess.Popen(["sleep", "0"])
    try:
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(proc.pid) == "Z"  # exited, not reaped: kill(pid, 0) still succeeds
        os.kill(proc.pid, 0)
        assert not _pid_alive(proc.pid)
        owner = {"host": socket.gethostname(), "pid": proc.pid,
                 "start": _process_start(proc.pid)}
        assert not owner_alive(owner, time.time(), time.time(), 120.0)
    finally:
        proc.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        owner = {"host": socket.gethostname(), "pid": live.pid, "start": _process_start(live.pid)}
        assert _pid_alive(live.pid) and owner_alive(owner, None, None, 120.0)
    finally:
        live.kill()
        live.wait()


def _sleeper(place, index, take_over):
    launched.append((index, take_over))
    return subprocess.Popen(["sleep", "60"]), Path(f"worker-{index}.log")


launched: list[tuple[int, bool]] = []


def _reaped(workers: engine._Workers) -> list:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        killed = workers.reap()
        if killed:
            return killed
        time.sleep(0.01)
    return []


def test_a_killed_worker_is_reaped_and_replaced_a_bounded_number_of_times():
    launched.clear()
    workers = engine._Workers(_sleeper)  # (reaped here, not by its thread)
    place = engine.Placement("cpu", None, 1)
    try:
        workers.start(place)
        workers.start(place)
        for n in range(engine.MAX_REPLACEMENTS + 1):
            victim = [w for w in workers.all if not w.ended and w.slot == 0][0]
            victim.proc.send_signal(signal.SIGKILL)
            assert _reaped(workers) == [victim]
            assert not _pid_alive(victim.proc.pid)  # reaped: gone
            replaced = n < engine.MAX_REPLACEMENTS
            assert victim.replaced == replaced
            assert workers.unreplaced == (0 if replaced else 1)
        # each replacement took slot 0's place and first takes over the killed one's trials
        assert launched == [(0, False), (1, False),
                            *((i + 2, True) for i in range(engine.MAX_REPLACEMENTS))]
        assert workers.check() == (1, True)
        # Not replacing (this process's own worker takes the trials over): counted.
        workers.replacing = False
        workers.all[1].proc.send_signal(signal.SIGKILL)
        assert _reaped(workers) == [workers.all[1]] and workers.unreplaced == 2
        assert len(workers.all) == 2 + engine.MAX_REPLACEMENTS
        assert workers.check() == (2, False)
        # A worker that ends otherwise (a SIGTERM from outside: it gives its trials back) is
        # reaped, not replaced, nor is one stopped by the run.
        workers.replacing = True
        workers.start(place).proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while workers.check()[1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert workers.check() == (2, False) and not workers.all[-1].replaced
        workers.start(place)
        workers.stop()
        assert not workers.reap() and workers.check() == (2, False)
        assert len(workers.all) == 4 + engine.MAX_REPLACEMENTS
    finally:
        for w in workers.all:
            w.proc.kill()
            w.proc.wait()


def test_the_reaper_thread_replaces_a_killed_worker_at_once():
    launched.clear()
    with engine._Workers(_sleeper) as workers:
        first = workers.start(engine.Placement("cpu", None, 1))
        try:
            first.proc.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while len(workers.all) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert first.ended and first.replaced and launched == [(0, False), (1, True)]
        finally:
            workers.stop()


def _children(parent: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"lookbench.execution.worker" in cmd:
            out.append(int(pid))
    return out


def _held(study_dir: Path, pid: int) -> set[str]:
    """The ids of the trials process ``pid`` holds now (RUNNING, its own)."""
    storage = open_storage(None, study_dir, read_only=True)
    held = set()
    for study in optuna.get_all_study_summaries(storage):
        trials = storage.get_all_trials(study._study_id, deepcopy=False,
                                        states=(TrialState.RUNNING,))
        held |= {t.user_attrs[ID_ATTR] for t in trials
                 if (t.system_attrs.get(OWNER_ATTR) or {}).get("pid") == pid}
    return held


def _waiting(study_dir: Path) -> int:
    storage = open_storage(None, study_dir, read_only=True)
    return sum(len(storage.get_all_trials(study._study_id, deepcopy=False,
                                          states=(TrialState.WAITING,)))
               for study in optuna.get_all_study_summaries(storage))


def _run_and_kill(tmp_path: Path, args: list[str], when, maybe: bool = False
                  ) -> subprocess.CompletedProcess | None:
    """``lookbench run digits ARGS`` with two workers, one at a time per worker; its worker
    process is killed with SIGKILL as soon as ``when(study_dir, command pid, worker pid)``
    (only while it holds a trial: the case whose trials were lost). ``maybe``: None if that
    moment never came (the run ended first)."""
    env = {**os.environ, "LOOKBENCH_COST_SECONDS": "0"}
    proc = subprocess.Popen(
        [str(LOOKBENCH), "run", "digits", *args, "--devices", "cpu", "--workers", "2",
         "--population", "1", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    study_dir = tmp_path / "digits-sgd"
    try:
        deadline = time.monotonic() + 120
        child = None
        while time.monotonic() < deadline and proc.poll() is None:
            children = _children(proc.pid)  # (one: the command itself is the other worker)
            if children and (study_dir / JOURNAL_FILE).exists():
                holding = [c for c in children if _held(study_dir, c)]
                if holding and when(study_dir, proc.pid, holding[0]):
                    child = holding[0]
                    break
            time.sleep(0.05)
        if child is None and maybe:
            proc.kill()
            proc.communicate()
            return None
        assert child is not None, "the worker process never held a trial at that moment"
        os.kill(child, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _check_complete(done: subprocess.CompletedProcess, study_dir: Path, planned: int) -> None:
    """Exit 0, every trial recorded once, and the kill one warning line, no error."""
    assert done.returncode == 0, done.stderr
    assert f"{planned} of {planned} trials recorded" in done.stdout, done.stdout
    trials, curves = lookbench.load_results(study_dir)
    assert len(trials) == planned and trials["trial"].is_unique
    assert set(trials["state"]) <= {"complete", "diverged"}
    assert len(curves) == int(trials["epochs_done"].sum())
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("error:")], done.stderr
    killed = [line for line in lines if "was killed by SIGKILL" in line]
    assert len(killed) == 1, done.stderr
    assert killed[0].startswith("warning: worker 0 was killed by SIGKILL (see ")
    assert killed[0].endswith("its trials were taken over")


@pytest.mark.slow  # (~40 s: the digits study, 30 trials, on two workers)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_worker_killed_mid_run_has_its_trials_taken_over_in_the_same_run(tmp_path):
    done = _run_and_kill(tmp_path, ["--epochs", "2"], lambda *_: True)
    _check_complete(done, tmp_path / "digits-sgd", 30)


@pytest.mark.slow  # (~20 s)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_worker_killed_after_the_commands_own_work_is_taken_over_by_the_command(tmp_path):
    """The command's own worker has nothing left to claim and holds nothing when the other
    is killed: it takes the killed one's trial over itself, from its checkpoint."""

    def idle(study_dir: Path, command: int, worker: int) -> bool:
        return (not _waiting(study_dir) and not _held(study_dir, command)
                and any((study_dir / "checkpoints" / f"{tid}.pt").exists()
                        for tid in _held(study_dir, worker)))

    # The moment needs the command to finish its share first; its worker process starts as
    # early as the command's own worker (lookbench.execution.early), so which finishes first is a
    # race: tried in fresh folders until it came (each try ~7 s; 1 in 2 comes).
    for attempt in range(8):
        out = tmp_path / f"try-{attempt}"
        done = _run_and_kill(out, ["--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5",
                                   "--epochs", "30"], idle, maybe=True)
        if done is not None:
            break
    assert done is not None, "the command never finished its share first in 8 tries"
    study_dir = out / "digits-sgd"
    _check_complete(done, study_dir, 4)
    trials, _ = lookbench.load_results(study_dir)
    assert trials["resumes"].max() == 1  # the killed one continued from its checkpoint


def test_a_killed_gpu_worker_is_replaced_by_the_main_loop(tmp_path, monkeypatch):
    """Without a worker in the command (GPUs), its main loop reaps and replaces: the memory
    gate counts the replacement as the same worker, and its memory settles again."""
    from lookbench.study.spec import load_spec

    commands: list[list[str]] = []

    class FakeWorker:
        pid = 2 ** 22 + 1  # (no such process: no start time)

        def __init__(self, cmd, env, **kwargs):
            commands.append(cmd)
            self.first = len(commands) == 1
            self.polls = 0
            self.returncode = None

        def poll(self):
            self.polls += 1
            if self.polls > 2:
                self.returncode = -signal.SIGKILL if self.first else 0
            return self.returncode

    class Gate:
        def __init__(self):
            self.calls: list[tuple[str, str]] = []
            self._readings: dict[str, list[int]] = {"0": [1]}
            self._since: dict[str, float] = {"0": 0.0}

        def clock(self):
            return 1.0

        def baseline(self, gpu):
            self.calls.append(("baseline", gpu))

        def started(self, gpu):
            self.calls.append(("started", gpu))

        def decide(self, gpu):
            return "start", None

    class NoTrialsLeft:  # (the storage as _left_over reads it: nothing held, nothing waiting)
        studies: dict = {}

    handed_back = []
    monkeypatch.setattr(engine.subprocess, "Popen", FakeWorker)
    monkeypatch.setattr(engine.time, "sleep", lambda s: None)
    gate = Gate()
    result = engine.RunResult(planned=0, recorded=0)
    engine._run_processes(load_spec(None, task="digits"), tmp_path, None,
                          [engine.Placement("cuda:0", "0", 1)], None, None, lambda: None,
                          result, gate=gate, queue=NoTrialsLeft(),
                          hand_back=lambda: handed_back.append(1))
    assert len(commands) == 2 and "--take-over" not in commands[0]
    assert commands[1][-1] == "--take-over"
    assert gate.calls == [("baseline", "0"), ("started", "0")]  # one worker, as before
    assert gate._readings["0"] == [] and gate._since["0"] == 1.0  # (settling again)
    assert handed_back == [1]
    assert not result.errors, result.errors
    assert result.warnings == [f"worker 0 was killed by SIGKILL (see {tmp_path}/logs/worker-0"
                               f".log); a new worker took its place, and its trials were "
                               f"taken over"]


HOLDER = """
import sys, time
from pathlib import Path
from lookbench.execution.worker import WorkerOptions, open_queue
queue, _ = open_queue(WorkerOptions(study_dir=Path(sys.argv[1]), name=sys.argv[2]))
claimed = queue.claim()
print(claimed.lookbench_id, flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # (~15 s)
def test_a_trial_whose_other_command_dies_after_the_workers_last_look_runs_in_this_run(
        tmp_path, monkeypatch):
    """Another command on this host (sharing the study) holds a trial and dies only after
    this run's workers found nothing left to claim: the run takes the trial over and runs it
    then, exit 0, instead of ending with 'planned trials were not run' (seen in the fault
    campaign's two machines on PostgreSQL)."""
    from typer.testing import CliRunner

    from lookbench.cli import app
    from lookbench.execution import engine
    from lookbench.study.spec import load_spec

    args = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
            "--devices", "cpu", "--workers", "1", "--population", "1"]
    spec = load_spec(None, task="digits", epochs=2, population=1,
                     grid_overrides={"lr": [0.1, 0.3], "k": [5], "alpha": [0.5]})  # (as run)
    engine.prepare(spec, tmp_path, None)  # (the study, planned)
    study_dir = tmp_path / spec.study_name
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(study_dir), spec.study_name],
                              stdout=subprocess.PIPE, text=True)
    held = holder.stdout.readline().strip()
    assert held
    real = engine._run_in_process
    rounds = []

    def run_then_the_holder_dies(*a, **k):
        real(*a, **k)
        rounds.append(1)
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    monkeypatch.setattr(engine, "_run_in_process", run_then_the_holder_dies)
    result = CliRunner().invoke(app, ["run", *args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(rounds) == 2  # the second round ran the trial the dead command held
    trials, _ = lookbench.load_results(study_dir)
    assert len(trials) == 4 and trials["trial"].is_unique and held in set(trials["trial"])
