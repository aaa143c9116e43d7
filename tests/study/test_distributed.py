"""Several machines on one study, and hard faults, tested for real.

A throwaway PostgreSQL server (Debian's packages; `.ci/run` installs them) runs in a temporary
directory; "machines" are independent `lookbench run` processes, each with its own `--out`
unless the test shares it. They are killed with SIGKILL, and the database is restarted under
them. Every planned trial must end up in the tables exactly once, with the same results as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from lookbench.results import StudyResults

pytestmark = pytest.mark.slow
REQUIRE_POSTGRES = os.environ.get("LOOKBENCH_REQUIRE_POSTGRES") == "1"
GRID = ["digits", "--lr", "0.03,0.1,0.3", "--k", "5,10", "--alpha", "0.5", "--seeds", "2",
        "--epochs", "15", "--devices", "cpu", "--workers", "1", "--study", "shared",
        "--population", "6"]  # three populations: some recorded while the next is mid-way
PLANNED = (3 * 2 + 3) * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir),
                        *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        root = self.datadir.parent
        self.ctl("-o", f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1",
                 "-l", str(root / "server.log"), "-w", "start")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"lb_{uuid.uuid4().hex[:10]}"
        subprocess.run([*self.as_user, str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", "postgres", name], check=True, timeout=60)
        return self.url(name)


@contextlib.contextmanager
def postgres_server(password: str | None = None) -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on a free port: trusting every local connection, or
    checking ``password`` over TCP. Skips (fails, in CI) where PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL's server is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL's server is not installed")
    bindir = Path(found[-1]).parent
    # Not under pytest's private temp folder: the server's own user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="lookbench-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    auth = ["-A", "trust"]
    if password is not None:
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if as_user:
            shutil.chown(pwfile, "postgres")
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    datadir = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(datadir), *auth,
                    "-U", "postgres"], check=True, capture_output=True, timeout=120)
    server = Postgres(bindir, datadir, _free_port(), as_user)
    server.start()
    try:
        yield server
    finally:
        server.ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lookbench", "run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def checkpoints(out: Path) -> list[Path]:
    folder = out / "shared" / "checkpoints"
    return list(folder.glob("*.pt")) if folder.exists() else []


def union(*outs: Path) -> pd.DataFrame:
    frames = [StudyResults(o / "shared").trials().to_pandas() for o in outs]
    return pd.concat([f for f in frames if len(f)], ignore_index=True)


def results_of(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["trial", "state", "epochs_done", "final_test_acc", "final_test_loss"]
    return frame[cols].sort_values("trial").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The same grid run without interruption, on the journal storage."""
    out = tmp_path_factory.mktemp("reference")
    proc = start(*GRID, "--out", str(out), cwd=out)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    return results_of(union(out))


def finish(proc: subprocess.Popen) -> str:
    """Wait for a machine: done (0), or done with its share while trials still run on
    another machine (3)."""
    _, err = proc.communicate(timeout=900)
    assert proc.returncode in (0, 3), err
    return err


@pytest.mark.parametrize("storage", ["postgres", "journal"])
def test_two_machines_start_together_and_one_is_killed_midway(storage, postgres, tmp_path,
                                                              reference):
    """Race-free start, a dead machine's trial taken over, every grid point exactly once."""
    if storage == "postgres":
        url = postgres.new_database()
        a_out, b_out = tmp_path / "a", tmp_path / "b"  # two machines, nothing shared but the DB
        extra = ["--storage", url]
    else:
        a_out = b_out = tmp_path / "shared-out"  # the journal lives under --out: one machine
        extra = []
    a = start(*GRID, *extra, "--out", str(a_out), cwd=tmp_path)
    b = start(*GRID, *extra, "--out", str(b_out), cwd=tmp_path)  # at the same moment
    wait_for(lambda: bool(checkpoints(a_out)) and a.poll() is None)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    cut_off = {p.stem for p in checkpoints(a_out)} - StudyResults(a_out / "shared").recorded()
    assert cut_off  # a really died in the middle of a trial
    err = finish(b)
    if len(union(*{a_out, b_out})) < PLANNED:  # b ran out of work while a still held one
        err += finish(start(*GRID, *extra, "--out", str(b_out), cwd=tmp_path))
    trials = union(*{a_out, b_out})
    assert len(trials) == PLANNED and trials["trial"].is_unique
    pd.testing.assert_frame_equal(results_of(trials), reference)
    assert cut_off <= StudyResults(b_out / "shared").recorded()  # taken over by b
    assert "Traceback" not in err


def test_a_shared_out_resumes_a_dead_machines_trial_from_its_checkpoint(postgres, tmp_path,
                                                                       reference):
    url = postgres.new_database()
    out = tmp_path / "nfs"  # --out on storage both machines see
    a = start(*GRID, "--storage", url, "--out", str(out), cwd=tmp_path)
    wait_for(lambda: bool(checkpoints(out)) and a.poll() is None)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    cut_off = {p.stem for p in checkpoints(out)}
    b = start(*GRID, "--storage", url, "--out", str(out), cwd=tmp_path)
    finish(b)
    trials = union(out)
    assert len(trials) == PLANNED and trials["trial"].is_unique
    pd.testing.assert_frame_equal(results_of(trials), reference)
    resumed = trials.set_index("trial").loc[sorted(cut_off), "resumes"]
    assert (resumed >= 1).all()


def test_a_database_restart_mid_study_loses_no_trial(postgres, tmp_path, reference):
    url = postgres.new_database()
    out = tmp_path / "out"
    proc = start(*GRID, "--storage", url, "--out", str(out), cwd=tmp_path)
    wait_for(lambda: len(StudyResults(out / "shared").recorded()) >= 2)
    postgres.ctl("-m", "fast", "stop")
    time.sleep(3)  # workers keep training; their next database call waits
    postgres.ctl("-o", f"-p {postgres.port} -k {postgres.datadir.parent} "
                       f"-c listen_addresses=127.0.0.1",
                 "-l", str(postgres.datadir.parent / "server.log"), "-w", "start")
    err = finish(proc)
    trials = union(out)
    assert len(trials) == PLANNED and trials["trial"].is_unique
    pd.testing.assert_frame_equal(results_of(trials), reference)
    assert "is unreachable; retrying" in err and "is back" in err  # it waited the outage out
    assert "Traceback" not in err


def test_a_task_and_an_optimizer_of_ones_own_on_two_machines(postgres, tmp_path):
    """The references travel with the study's definition: each machine loads the same files
    from its own working folder (here two folders, as two machines would have)."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "examples"
    args = ["my_task.py:Iris", "--inner", "my_opt.py:HeavyBall", "--lr", "0.03,0.1,0.3",
            "--momentum", "0.9", "--seeds", "2", "--epochs", "3", "--devices", "cpu",
            "--workers", "1", "--storage", postgres.new_database(), "--out", "runs"]
    machines = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(docs / "iris_task.py", home / "my_task.py")
        shutil.copy(docs / "my_optimizer.py", home / "my_opt.py")
        machines.append(home)
    procs = [start(*args, cwd=home) for home in machines]
    for proc in procs:
        assert "Traceback" not in finish(proc)
    outs = [home / "runs" / "iris-heavyball" for home in machines]
    trials = pd.concat([StudyResults(o).trials().to_pandas() for o in outs if o.exists()],
                       ignore_index=True)
    assert len(trials) == 2 * 3 * 2 and trials["trial"].is_unique  # 2 optimizers × 3 lr × 2
    assert set(trials["task"]) == {"my_task.py:Iris"}
    assert set(trials["state"]) == {"complete"}


def test_a_machine_whose_trials_were_all_recorded_elsewhere_is_done(postgres, tmp_path):
    """Machine b comes late: every trial is recorded in a's folder. b runs nothing, says so,
    and exits 0 (it used to warn that they were "still running elsewhere")."""
    url = postgres.new_database()
    args = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
            "--devices", "cpu", "--workers", "1", "--study", "shared", "--storage", url]
    assert "Traceback" not in finish(start(*args, "--out", str(tmp_path / "a"), cwd=tmp_path))
    late = start(*args, "--out", str(tmp_path / "b"), cwd=tmp_path)
    out, err = late.communicate(timeout=300)
    assert late.returncode == 0, err
    out = " ".join(out.split())  # (Rich wraps long lines)
    assert "0 of 4 trials recorded" in out and "(4 more by other machines)" in out
    assert "still running elsewhere" not in err
    assert not StudyResults(tmp_path / "b" / "shared").recorded()


def test_seeds_auto_on_two_machines_plans_each_stage_once(postgres, tmp_path):
    """``--seeds auto`` on a shared database: both machines read the outcomes from it, so they
    plan the same stages; every trial is recorded exactly once between their two folders, and
    a third run of either plans nothing more."""
    url = postgres.new_database()
    args = ["digits", "--lr", "0.03,0.3,3", "--momentum", "0.9", "--k", "5", "--alpha", "0.5",
            "--epochs", "2", "--seeds", "auto", "--max-seeds", "8", "--devices", "cpu",
            "--workers", "1", "--study", "shared", "--storage", url, "--population", "1"]
    procs = [start(*args, "--out", str(tmp_path / name), cwd=tmp_path) for name in ("a", "b")]
    for proc in procs:
        assert "Traceback" not in finish(proc)
    trials = union(tmp_path / "a", tmp_path / "b")
    assert trials["trial"].is_unique and trials["seed"].max() >= 4  # a stage was added
    again = start(*args, "--out", str(tmp_path / "a"), cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(union(tmp_path / "a", tmp_path / "b")) == len(trials)
    assert "seeds: " in " ".join(out.split())
