"""The worker process runs its module once: an exception raised by code that imports
``lookbench.execution.worker`` (the population's) is the class the worker's ``except`` names, so a
corrupt population checkpoint is one line in the worker's log, not a traceback."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from lookbench.coordination.queue import ID_ATTR
from lookbench.coordination.storage import open_storage
from lookbench.execution import engine
from lookbench.execution.engine import prepare
from lookbench.execution.worker import WorkerOptions, run_worker
from lookbench.study.spec import load_spec


def _first_claimed(spec, study_dir) -> str:
    """The id a fresh worker claims first: the first optimizer's first waiting trial."""
    storage = open_storage(None, study_dir)
    for opt in spec.optimizers:
        study = optuna.load_study(study_name=f"{spec.study_name}.{opt}", storage=storage)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            return min(waiting, key=lambda t: t._trial_id).user_attrs[ID_ATTR]
    raise AssertionError("nothing waiting")


def test_the_worker_process_runs_the_entry_module():
    cmd, _ = engine._worker_command(load_spec(None, task="digits"), engine.Path("s"), None,
                                    engine.Placement("cpu", None, 1), None, None, None, False)
    assert cmd[1:3] == ["-m", "lookbench.execution.worker_main"]


@pytest.mark.slow  # (~20 s: a population cut off, then a worker process)
def test_a_corrupt_population_checkpoint_is_one_line_in_the_worker_log(tmp_path):
    spec = load_spec(None, task="digits", grid_overrides={
        "lr": [0.03, 0.1], "k": [5], "alpha": [0.5]}, seeds=1, epochs=3)
    prepare(spec, tmp_path, None, None, False)
    study = tmp_path / spec.study_name
    seen = []

    def cut_off(claimed, record):  # one population of all 4: cut off in its second epoch
        seen.append(record.epoch)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(WorkerOptions(study_dir=study, name=spec.study_name, device="cpu",
                                 on_epoch=cut_off))
    checkpoints = sorted((study / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 4
    first = _first_claimed(spec, study)
    for path in checkpoints:  # the population comes back from the first one's checkpoint,
        if path.stem != first:  # and its members' checkpoints are unreadable
            path.write_bytes(b"not a checkpoint")

    cmd, env = engine._worker_command(spec, study, None, engine.Placement("cpu", None, 1),
                                      None, None, None, False)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert "is unreadable" in errors[0] and "delete it to restart" in errors[0]
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output
