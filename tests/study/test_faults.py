"""Faults that used to cost work or trust: a full disk recorded good trials as failed for good,
a deleted part file was never run again, the worker count changed the numbers, workers stopped
by a signal passed for success, huge grids planned without a word, the storage password sat
on the command line, and several bad paths ended in tracebacks."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.results import StudyResults

runner = CliRunner()
TINY = ["digits", "--lr", "0.03,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--devices", "cpu", "--workers", "1"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _states(study: Path) -> dict[str, str]:
    rows = StudyResults(study).trials().select(["trial", "state"]).to_pylist()
    return {r["trial"]: r["state"] for r in rows}


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/part")


@pytest.mark.parametrize("where", ["lookbench.execution.checkpoints.save_checkpoint",
                                   "lookbench.results.store._write_new"])
def test_a_full_disk_stops_the_run_and_records_nothing_as_failed(tmp_path, monkeypatch, where):
    with monkeypatch.context() as m:
        m.setattr(where, _enospc)
        result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/full/disk/part: No space left on device" in errors[0]
    assert "free some space and run the same command again" in errors[0]
    assert "Traceback" not in result.output + result.stderr
    assert "failed" not in set(_states(tmp_path / "digits-sgd").values())
    # Space is back: the same command finishes every trial, none of them failed.
    again = invoke("run", *TINY, "--out", str(tmp_path))
    assert again.exit_code == 0, again.stderr
    states = _states(tmp_path / "digits-sgd")
    assert len(states) == 4 and set(states.values()) == {"complete"}


FLAKY = '''
from pathlib import Path
from lookbench.tasks.digits import Digits


class Flaky(Digits):
    """Fails while a file named BROKEN sits in the working folder (a bug, later fixed)."""

    def workload(self, **kwargs):
        if Path("BROKEN").exists():
            raise RuntimeError("the data loader has a bug")
        return super().workload(**kwargs)
'''


def test_failed_trials_run_again_on_request(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "BROKEN").touch()
    args = ["run", "flaky.py:Flaky", *TINY[1:], "--out", "runs"]
    first = invoke(*args)
    assert first.exit_code == 1 and first.stderr.count("failed: trial") == 4
    (tmp_path / "BROKEN").unlink()  # the bug is fixed
    assert invoke(*args).exit_code == 0  # a failed result is a result: nothing runs again
    assert set(_states(tmp_path / "runs" / "flaky-sgd").values()) == {"failed"}
    retry = invoke(*args, "--retry-failed")
    assert retry.exit_code == 0, retry.stderr
    assert "4 failed trials were run again" in retry.output
    states = _states(tmp_path / "runs" / "flaky-sgd")
    assert len(states) == 4 and set(states.values()) == {"complete"}
    kept = list((tmp_path / "runs" / "flaky-sgd" / "retried" / "trials").iterdir())
    assert len(kept) == 4  # the earlier rows are kept aside, out of the table


def test_the_trials_of_a_deleted_results_file_run_again(tmp_path):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    study = tmp_path / "digits-sgd"
    lost = sorted((study / "trials").glob("*.parquet"))[0]  # (a part, a batch or compacted)
    ids = set(pq.read_table(lost, columns=["trial"])["trial"].to_pylist())
    lost.unlink()
    assert ids and not ids & StudyResults(study).recorded()
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "still running elsewhere" not in result.stderr  # (it used to say so, falsely)
    assert ids <= StudyResults(study).recorded() and "4 of 4 trials recorded" in result.output


def _final_numbers(study: Path) -> dict[str, tuple]:
    t = pq.read_table(study / "trials").to_pandas()
    return {r.trial: (r.final_train_loss, r.final_test_loss, r.final_test_acc)
            for r in t.itertuples()}


@pytest.mark.slow
def test_one_and_two_workers_give_identical_tables(tmp_path):
    args = ["digits", "--lr", "0.03,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "3",
            "--devices", "cpu"]
    one = subprocess.run([sys.executable, "-m", "lookbench", "run", *args, "--workers", "1",
                          "--out", str(tmp_path / "one")], capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "lookbench", "run", *args, "--workers", "2",
                          "--out", str(tmp_path / "two")], capture_output=True, text=True)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = _final_numbers(tmp_path / "one" / "digits-sgd"), _final_numbers(
        tmp_path / "two" / "digits-sgd")
    assert len(a) == 4 and a == b  # bit for bit: each trial uses the study's thread count
    # The thread count is part of the definition: resuming with another is refused.
    other = invoke("run", *args, "--threads", "2", "--out", str(tmp_path / "one"))
    assert other.exit_code == 2 and "threads=1, not 2" in other.stderr


def _workers_of(parent: int) -> list[int]:
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


@pytest.mark.slow
def test_a_worker_stopped_by_a_signal_fails_the_run(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookbench", "run", "digits", "--lr", "0.01,0.03,0.1,0.3,1",
         "--k", "5", "--alpha", "0.5", "--epochs", "20", "--seeds", "3", "--population", "1",
         "--devices", "cpu", "--workers", "2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # (work left for both)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while len(workers) < 1 and time.monotonic() < deadline:
        workers = _workers_of(proc.pid)  # (one: the command itself is the other worker)
        time.sleep(0.2)
    assert len(workers) == 1
    time.sleep(3)  # both are at work
    os.kill(workers[0], signal.SIGTERM)  # from outside, not from `lookbench run`
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "was stopped by a signal" in err or "worker exited with code" in err


def test_a_huge_grid_asks_before_planning(tmp_path):
    lrs = ",".join(f"{0.001 * 1.01 ** i:.6g}" for i in range(600))
    result = invoke("run", "digits", "--lr", lrs, "--k", "1,2,3,4,5,6,7,8,9,10",
                    "--out", str(tmp_path))
    assert result.exit_code == 2
    # Lookahead: 600 lr x 10 k x 2 α (the task's); SGD: 600 lr. Counted, not built.
    assert "this study plans 12,600 trials; planning takes about 25 s" in result.stderr
    assert "Add --yes" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was created


def test_the_storage_password_stays_off_the_command_line(tmp_path, monkeypatch):
    from lookbench.execution import engine
    from lookbench.execution.worker import STORAGE_ENV
    from lookbench.study.spec import load_spec

    seen = []

    class FakeWorker:
        returncode = 0

        def __init__(self, cmd, env, **kwargs):
            seen.append((cmd, env))

        def poll(self):
            return 0

    monkeypatch.setattr(engine.subprocess, "Popen", FakeWorker)
    monkeypatch.setattr(engine, "_run_here", lambda *args: None)  # (the command's own worker)
    url = "postgresql://lookbench:s3cret@db.example/lb"
    spec = load_spec(None, task="digits")
    engine._run_processes(spec, tmp_path, url, engine.placements("cpu", 3), None, None,
                          lambda: None, engine.RunResult(planned=0, recorded=0))
    assert len(seen) == 2  # three workers: two processes and the command's own
    for cmd, env in seen:
        assert not any("s3cret" in part for part in cmd)
        assert env[STORAGE_ENV] == url


def test_a_checkpoint_with_code_is_refused_without_unsafe_advice(tmp_path):
    import torch

    from lookbench.execution.checkpoints import CheckpointError, load_checkpoint

    path = tmp_path / "x.pt"
    torch.save({"trial": CheckpointError("not a tensor")}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "weights_only" not in str(e.value) and "other than tensors" in str(e.value)


@pytest.mark.parametrize(("setup", "args", "code", "match"), [
    (lambda p: (p / "f").write_text("x"), ["run", *TINY, "--out", "{p}/f"], 2,
     "a file stands where a folder must be"),
    (lambda p: (p / "f").write_text("x"), ["run", *TINY, "--out", "{p}/f/runs"], 2,
     "Not a directory"),
    (None, ["run", *TINY, "--study", "s" * 300, "--out", "{p}"], 2, "at most 200 characters"),
    (lambda p: (p / "s.toml").write_bytes(b'task = "digits"\nname = "\xff\xfe"\n'),
     ["run", "--spec", "{p}/s.toml", "--out", "{p}"], 2, "is not UTF-8 text"),
    (lambda p: (p / "s.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n"),
     ["run", "--spec", "{p}/s.toml", "--out", "{p}"], 2, "nests tables or arrays too deeply"),
    (None, ["run", "--spec", "/dev/zero", "--out", "{p}"], 2, "larger than 1 MB"),
    (lambda p: (p / "f").write_text("x"), ["report", "--runs", "{runs}", "--out", "{p}/f/r"], 2,
     "Not a directory"),
])
def test_bad_paths_are_one_line_not_a_traceback(tmp_path, setup, args, code, match):
    runs = tmp_path / "runs"
    if "{runs}" in " ".join(args):
        assert invoke("run", *TINY, "--out", str(runs)).exit_code == 0
    if setup is not None:
        setup(tmp_path)
    result = invoke(*[a.format(p=tmp_path, runs=runs) for a in args])
    assert result.exit_code == code, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines


def test_part_files_are_written_outside_the_study_lock(tmp_path, monkeypatch):
    """A slow disk must not stall every worker and machine: the study lock is free while a
    trial's part files are written."""
    import fcntl

    from lookbench.coordination.storage import LOCK_FILE

    held_during_write = []
    written = []
    original = StudyResults.write_trials

    def checking_write(self, trials):
        with open(self.root / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                held_during_write.append(False)
            except BlockingIOError:
                held_during_write.append(True)
        written.extend(row["trial"] for row, _ in trials)
        original(self, trials)

    monkeypatch.setattr(StudyResults, "write_trials", checking_write)
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    assert len(written) == 4 and not any(held_during_write)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs with about 200 kB left: a real full disk (needs root and mount rights)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        st = os.statvfs(mount)
        (mount / "filler").write_bytes(b"x" * (st.f_bavail * st.f_frsize - 200_000))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_real_full_disk_costs_no_trial(small_disk):
    args = ["run", "digits", "--lr", "0.03,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "3",
            "--devices", "cpu", "--workers", "1", "--out", str(small_disk / "runs")]
    full = subprocess.run([sys.executable, "-m", "lookbench", *args], capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 1, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert str(small_disk) in errors[0]  # names the file it could not write
    assert "failed" not in set(_states(small_disk / "runs" / "digits-sgd").values())
    (small_disk / "filler").unlink()  # space is back
    again = subprocess.run([sys.executable, "-m", "lookbench", *args], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    states = _states(small_disk / "runs" / "digits-sgd")
    assert len(states) == 4 and set(states.values()) == {"complete"}
