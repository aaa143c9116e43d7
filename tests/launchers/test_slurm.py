"""``--launcher slurm`` without a cluster: the sbatch script checked through stand-in Slurm
commands, and whole studies run through submitit's LocalExecutor (``--launcher
submitit-local``), whose jobs are real processes running the same job function."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from lookbench.launchers.slurm import sbatch_options
from tests.launchers.local_run import LOOKBENCH, assert_equals_a_local_run

pytest.importorskip("submitit")

STUDY = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "3",
         "--seeds", "2", "--gpus-per-job", "0"]


def test_sbatch_options_read_the_forms_users_write():
    assert sbatch_options(["--qos=high", "#SBATCH --exclusive", "constraint=a100",
                           "--mail-type= END "]) == {
        "qos": "high", "exclusive": True, "constraint": "a100", "mail-type": "END"}
    with pytest.raises(ValueError, match="expected an sbatch option"):
        sbatch_options(["--not an option"])


FAKE_SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM" | grep -c '^script')
cp "$1" "$FAKE_SLURM/script-$n.sh"
echo "Submitted batch job $((4242 + n))"
"""
# Every job the stand-in controller is asked about has completed (without recording a trial):
# the launcher must see them end and submit again, as many times as --retries allows.
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then
    for i in 0 1 2 3 4 5 6 7; do echo "$2_$i|${FAKE_STATE:-COMPLETED}|node1"; done
    shift
  fi
  shift
done
"""


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    bin_dir, record = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\n"),
                       ("scancel", "#!/bin/sh\necho \"$@\" >> \"$FAKE_SLURM/cancelled\"\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_SLURM": str(record), "LOOKBENCH_POLL_S": "0.2"}


def test_the_sbatch_script_carries_the_options_given_and_ended_jobs_are_resubmitted(tmp_path):
    env = _fake_slurm(tmp_path)
    proc = subprocess.run(
        [str(LOOKBENCH), "run", *STUDY, "--launcher", "slurm", "--partition", "gpu",
         "--account", "proj42", "--gpus-per-job", "2", "--time-limit", "90",
         "--sbatch=--qos=high", "--sbatch", "#SBATCH --exclusive", "--jobs", "3",
         "--retries", "1", "--runs", str(tmp_path / "runs")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    scripts = sorted((tmp_path / "submitted").glob("script-*.sh"))
    assert len(scripts) == 2, proc.stderr  # the first submission and one retry
    first = scripts[0].read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj42", "#SBATCH --time=90",
                 "#SBATCH --qos=high", "#SBATCH --exclusive", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --array=0-2%3",
                 "#SBATCH --signal=USR2@90", "#SBATCH --job-name=lookbench-digits-sgd"):
        assert line in first.splitlines(), (line, first)
    assert "postgresql" not in first and "LOOKBENCH_STORAGE_URL" not in first
    # Every job ended (the stand-in says so) with the study not done: one resubmission, then
    # one line, exit 1.
    assert proc.returncode == 1, proc.stderr
    assert "every slurm job ended with 8 trials not done, 1 times" in proc.stderr
    assert "Traceback" not in proc.stderr
    jobs = (tmp_path / "runs" / "digits-sgd" / "jobs.json").read_text()
    assert '"4242_0"' in jobs and '"4243_2"' in jobs
    # status shows the jobs' states next to the trials'; cancel asks Slurm for the live ones
    status = subprocess.run([str(LOOKBENCH), "status", "--runs", str(tmp_path / "runs")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "slurm jobs: 6 completed" in status.stdout


def test_ctrl_c_stops_watching_and_says_the_jobs_go_on_and_cancel_stops_them(tmp_path):
    env = {**_fake_slurm(tmp_path), "FAKE_STATE": "RUNNING"}
    proc = subprocess.Popen([str(LOOKBENCH), "run", *STUDY, "--launcher", "slurm", "--jobs", "2",
                             "--runs", str(tmp_path / "runs")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs = tmp_path / "runs" / "digits-sgd" / "jobs.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not jobs.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "the study's 2 slurm jobs keep running" in err and "lookbench cancel digits-sgd" in err
    assert "Traceback" not in err
    cancelled = subprocess.run([str(LOOKBENCH), "cancel", "digits-sgd", "--runs",
                                str(tmp_path / "runs")], env=env, capture_output=True,
                               text=True, timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "2 jobs of digits-sgd asked to stop" in cancelled.stdout
    assert (tmp_path / "submitted" / "cancelled").read_text().split() == ["4242_0", "4242_1"]


def test_a_study_through_local_jobs_records_every_trial_once_as_a_local_run(tmp_path):
    """Two jobs (submitit's LocalExecutor: real processes) run the study; its tables equal
    those of a local run of the same study."""
    env = {**os.environ, "LOOKBENCH_POLL_S": "0.2"}
    launched = subprocess.run(
        [str(LOOKBENCH), "run", *STUDY, "--launcher", "submitit-local", "--jobs", "2",
         "--runs", str(tmp_path / "launched")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr
    assert "Traceback" not in launched.stderr
    a = assert_equals_a_local_run(STUDY, tmp_path / "launched" / "digits-sgd", tmp_path, env, 8)
    # every trial once in Optuna too: complete or pruned, none running or given back twice
    import optuna

    from lookbench.coordination.storage import open_storage

    storage = open_storage(None, tmp_path / "launched" / "digits-sgd", read_only=True)
    finished = [t for name in ("digits-sgd.lookahead", "digits-sgd.sgd")
                for t in optuna.load_study(study_name=name, storage=storage).trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(t.user_attrs["lookbench_id"] for t in finished) == sorted(a["trial"])


def _launched_in_thread(tmp_path: Path, epochs: int, monkeypatch):
    """A two-trial study run through one submitit-local job from a thread (the test acts on
    the job meanwhile), checkpointing every epoch; returns, once a checkpoint is written, the
    thread, the launcher, the spec and the result list."""
    monkeypatch.setenv("LOOKBENCH_CHECKPOINT_EVERY_S", "0")
    monkeypatch.setenv("LOOKBENCH_POLL_S", "0.2")
    from rich.console import Console

    from lookbench.execution.engine import run_study
    from lookbench.launchers.slurm import SlurmLauncher
    from lookbench.study.spec import load_spec

    spec = load_spec(None, task="digits", epochs=epochs, seeds=1, population=1,
                     grid_overrides={"lr": [0.1], "k": [5], "alpha": [0.5]})
    launcher = SlurmLauncher(tmp_path / "runs" / spec.study_name, gpus_per_job=0, jobs=1,
                             cluster="local")
    done: list[object] = []
    runner = threading.Thread(target=lambda: done.append(run_study(
        spec, out=tmp_path / "runs", storage_url=None, devices="cpu", workers=1,
        data_dir=None, console=Console(quiet=True), launcher=launcher)))
    runner.start()
    checkpoints = tmp_path / "runs" / spec.study_name / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(checkpoints.glob("*.pt")):
        time.sleep(0.05)
    assert list(checkpoints.glob("*.pt")), "no checkpoint was written"
    return runner, launcher, spec, done


def _job_task(launcher) -> int:
    """The worker process of the launcher's first job (a child of submitit's controller)."""
    controller = int(launcher.jobs[0].job_id)
    return int(Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0])


@pytest.mark.slow
def test_a_job_killed_mid_trial_is_resubmitted_and_its_trial_resumes(tmp_path, monkeypatch):
    """A job killed outright (no warning: a node lost) ends; the run submits a worker again,
    which takes the cut-off trial over and continues it from its checkpoint."""
    runner, launcher, spec, done = _launched_in_thread(tmp_path, 40, monkeypatch)
    os.kill(_job_task(launcher), signal.SIGKILL)
    runner.join(timeout=600)
    assert done and not done[0].errors, done
    trials = pd.read_parquet(tmp_path / "runs" / spec.study_name / "trials")
    assert len(trials) == 2 and trials["trial"].is_unique
    assert (trials["state"] == "complete").all() and (trials["epochs_done"] == 40).all()
    assert trials["resumes"].max() >= 1
    from lookbench.execution.launch import read_jobs

    submitted = read_jobs(tmp_path / "runs" / spec.study_name)
    assert len(submitted) == 2  # the first job, and the one submitted in its place


@pytest.mark.slow
def test_a_job_preempted_mid_trial_is_requeued_and_its_trial_resumes(tmp_path, monkeypatch):
    """Preemption as Slurm does it (USR2 to the job): the worker hands its trial back at once,
    submitit requeues the job, and the trial continues from its checkpoint; every trial is
    recorded once, by the one job."""
    runner, launcher, spec, done = _launched_in_thread(tmp_path, 40, monkeypatch)
    os.kill(_job_task(launcher), signal.SIGUSR2)  # what Slurm sends ahead of a preemption
    runner.join(timeout=600)
    assert done and not done[0].errors, done
    from lookbench.execution.launch import read_jobs

    assert len(read_jobs(tmp_path / "runs" / spec.study_name)) == 1  # requeued, not resubmitted
    trials = pd.read_parquet(tmp_path / "runs" / spec.study_name / "trials")
    assert len(trials) == 2 and trials["trial"].is_unique
    assert (trials["state"] == "complete").all() and (trials["epochs_done"] == 40).all()
    assert trials["resumes"].max() >= 1  # the preempted trial continued from its checkpoint


def _slurm_up() -> bool:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mix", "alloc"))


@pytest.mark.slow
def test_a_study_on_a_real_slurm_cluster_records_every_trial_once(tmp_path):
    """Debian's slurmctld and slurmd on this machine (.ci/slurm-up; CI requires them): real
    sbatch, srun and squeue, without accounting (sacct answers nothing, so the jobs' states
    come from squeue). Two array tasks run the study; its tables equal a local run's."""
    if not _slurm_up():
        if os.environ.get("LOOKBENCH_REQUIRE_SLURM"):
            pytest.fail("no Slurm cluster answers here (sinfo), and LOOKBENCH_REQUIRE_SLURM "
                        "is set: run .ci/slurm-up")
        pytest.skip("no Slurm cluster here (.ci/slurm-up starts one)")
    env = {**os.environ, "LOOKBENCH_POLL_S": "0.5"}
    launched = subprocess.run(
        [str(LOOKBENCH), "run", *STUDY, "--launcher", "slurm", "--jobs", "2",
         "--time-limit", "30", "--runs", str(tmp_path / "slurm")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert launched.returncode == 0, launched.stderr
    assert "Traceback" not in launched.stderr
    assert_equals_a_local_run(STUDY, tmp_path / "slurm" / "digits-sgd", tmp_path, env, 8)
    status = subprocess.run([str(LOOKBENCH), "status", "--runs", str(tmp_path / "slurm")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "slurm jobs: 2 ended" in status.stdout, status.stdout


@pytest.mark.slow
def test_a_launched_study_on_postgresql_keeps_the_password_out_of_the_jobs_files(tmp_path):
    """The storage URL reaches the jobs through their environment only: no file submitit
    writes for them (scripts, pickled jobs, logs) holds the password, and the study's trials
    are all in the database."""
    import optuna
    from optuna.trial import TrialState

    from tests.study.test_distributed import postgres_server

    password = "pw-4f1c9e"
    with postgres_server(password=password) as server:
        url = f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres"
        env = {**os.environ, "LOOKBENCH_POLL_S": "0.2"}
        env.pop("LOOKBENCH_STORAGE_URL", None)
        done = subprocess.run(
            [str(LOOKBENCH), "run", *STUDY, "--launcher", "submitit-local", "--jobs", "2",
             "--storage", url, "--runs", str(tmp_path / "runs")],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
        assert any(p.suffix == ".pkl" for p in files)  # (the pickled jobs were looked at)
        leaking = [p for p in files if password.encode() in p.read_bytes()]
        assert leaking == []
        storage = optuna.storages.RDBStorage(url)
        complete = [t for name in ("digits-sgd.lookahead", "digits-sgd.sgd")
                    for t in optuna.load_study(study_name=name, storage=storage).trials
                    if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(complete) == 8
