"""``--launcher ray`` on a local Ray instance of 2 CPUs: a digits study with 2 workers, one of
them killed mid-trial (as a node lost with its worker), loses nothing, and its tables equal a
local run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tests.launchers.local_run import LOOKBENCH, assert_equals_a_local_run  # noqa: E402

STUDY = ["digits", "--lr", "0.03,0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "60",
         "--seeds", "2", "--population", "1"]


def _running_owners(study_dir: Path) -> set[int]:
    import optuna
    from optuna.trial import TrialState

    from lookbench.coordination.queue import OWNER_ATTR
    from lookbench.coordination.storage import open_storage

    storage = open_storage(None, study_dir, read_only=True)
    owners = set()
    for name in ("digits-sgd.lookahead", "digits-sgd.sgd"):
        with_trials = optuna.load_study(study_name=name, storage=storage).trials
        owners |= {int(t.system_attrs[OWNER_ATTR]["pid"]) for t in with_trials
                   if t.state == TrialState.RUNNING and OWNER_ATTR in t.system_attrs}
    return owners


@pytest.mark.slow
def test_a_ray_worker_killed_mid_trial_loses_nothing(tmp_path):
    from lookbench.results import StudyResults

    env = {**os.environ, "LOOKBENCH_POLL_S": "0.3", "RAY_num_cpus": "2"}
    proc = subprocess.Popen([str(LOOKBENCH), "run", *STUDY, "--launcher", "ray", "--jobs", "2",
                             "--gpus-per-job", "0", "--runs", str(tmp_path / "ray")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    study = tmp_path / "ray" / "digits-sgd"
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and killed is None and proc.poll() is None:
        if (study / "optuna.journal").exists() and StudyResults(study).recorded():
            owners = _running_owners(study) - {os.getpid(), proc.pid}
            if owners:
                killed = min(owners)
                os.kill(killed, signal.SIGKILL)  # a worker lost as with its node
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "no trial was seen running"
    assert proc.returncode == 0, err
    assert_equals_a_local_run(STUDY, study, tmp_path, env, 12)
