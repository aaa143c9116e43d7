"""Short trials recorded together and claimed several at a time (``lookbench.execution.recorder``,
``TrialQueue.claim(ahead=...)``): every trial still recorded once, with its outcome in Optuna's
journal as plain Optuna reads it; trials kept unrecorded when a kill comes run again to the same
results; trials claimed ahead and not started are given back when a worker stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination.queue import ID_ATTR, RECORDED_IN_ATTR, TrialQueue
from lookbench.coordination.storage import JOURNAL_FILE, open_storage
from lookbench.execution import recorder as recorder_module
from lookbench.execution.engine import prepare
from lookbench.execution.worker import WorkerOptions, claim_ahead, run_worker
from lookbench.results import StudyResults
from lookbench.results.store import COMPACTED_FILE
from lookbench.study.spec import load_spec

runner = CliRunner()
STUDY = Path(__file__).parents[2] / "studies" / "nqm-analytic.toml"  # 120 trials, ~ms each
RUN = ["run", "--spec", str(STUDY), "--devices", "cpu", "--workers", "1"]


def _journal_trials(study_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as plain Optuna (optuna-dashboard) reads its journal."""
    storage = JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    out = []
    for opt in ("lookahead", "sgd"):
        out += optuna.load_study(study_name=f"{name}.{opt}", storage=storage).trials
    return out


def test_short_trials_are_recorded_together_and_optuna_knows_each_outcome(tmp_path,
                                                                           monkeypatch):
    writes, takes = [], []
    real_write, real_take = StudyResults.write_trials, TrialQueue._take_many
    monkeypatch.setattr(StudyResults, "write_trials",
                        lambda self, trials: writes.append(len(trials)) or real_write(self, trials))
    monkeypatch.setattr(TrialQueue, "_take_many",
                        lambda self, study, ids: takes.append(len(ids))
                        or real_take(self, study, ids))
    result = runner.invoke(app, [*RUN, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    study = tmp_path / "nqm-analytic"
    assert sum(writes) == 120 and len(writes) < 60  # many trials per write ...
    assert takes and max(takes) > 1  # ... and per claim
    rows = StudyResults(study).trials().to_pylist()
    assert len(rows) == 120 and len({r["trial"] for r in rows}) == 120
    assert sorted(p.name for p in (study / "trials").iterdir()) == [COMPACTED_FILE]  # compacted
    final = {r["trial"]: r["final_test_loss"] for r in rows}
    states = {r["trial"]: r["state"] for r in rows}
    trials = _journal_trials(study, "nqm-analytic")
    assert len(trials) == 120
    for t in trials:
        tid = t.user_attrs[ID_ATTR]
        assert t.system_attrs[RECORDED_IN_ATTR].endswith(str(study.resolve()))
        assert t.datetime_start is not None and t.datetime_complete is not None
        if states[tid] == "complete":
            assert t.state == TrialState.COMPLETE and t.values == [final[tid]]
        else:
            assert t.state == TrialState.PRUNED
    again = runner.invoke(app, [*RUN, "--out", str(tmp_path)])
    assert again.exit_code == 0 and "120 of 120" in again.output


def test_how_many_trials_are_claimed_at_a_time():
    assert claim_ahead(0.001) == 16 and claim_ahead(0.05) == 5
    assert claim_ahead(0.25) == claim_ahead(3.0) == 1 and claim_ahead(0.0) == 16


def test_a_stopped_worker_gives_back_what_it_claimed_ahead_and_records_what_it_finished(
        tmp_path, monkeypatch):
    monkeypatch.setenv(recorder_module.RECORD_EVERY_ENV, "0")  # each trial recorded at once
    spec = load_spec(STUDY)
    prepare(spec, tmp_path, None, None, False)
    study = tmp_path / spec.study_name
    stop = threading.Event()
    finished = []

    def on_trial(claimed, state):
        finished.append(claimed.lookbench_id)
        if len(finished) >= 20:
            stop.set()

    opts = WorkerOptions(study_dir=study, name=spec.study_name, device="cpu", on_trial=on_trial)
    run_worker(opts, stop)
    recorded = StudyResults(study).recorded()
    assert 20 <= len(recorded) < 120 and set(finished) == recorded
    storage = open_storage(None, study, read_only=True)
    trials = [t for s in storage.get_all_studies()
              for t in storage.get_all_trials(s._study_id)]
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # none held by anyone
    result = runner.invoke(app, [*RUN, "--out", str(tmp_path)])
    assert result.exit_code == 0 and "120 of 120" in result.output, result.output


def test_the_record_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(recorder_module.RECORD_EVERY_ENV, "0")
    assert recorder_module.record_interval_s() == 0
    for bad in ("-1", "nan", "soon"):
        monkeypatch.setenv(recorder_module.RECORD_EVERY_ENV, bad)
        assert recorder_module.record_interval_s() == recorder_module.RECORD_EVERY_S


DIGITS = ["digits", "--lr", "0.03,0.1,0.3", "--k", "5,10", "--alpha", "0.5", "--epochs", "1",
          "--seeds", "2", "--devices", "cpu", "--workers", "1", "--population", "1"]


def _lookbench(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lookbench", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


@pytest.mark.slow
def test_trials_kept_unrecorded_when_a_kill_comes_run_again_to_the_same_results(tmp_path):
    straight = _lookbench(*DIGITS, "--out", str(tmp_path / "straight"))
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    # Keep every finished trial unrecorded (an hour), and kill the run once several are.
    killed = _lookbench(*DIGITS, "--out", str(tmp_path / "killed"),
                        env={recorder_module.RECORD_EVERY_ENV: "3600"})
    study = tmp_path / "killed" / "digits-sgd"
    deadline = time.monotonic() + 300

    def claimed() -> int:  # trials claimed so far (one at a time: these trials take ~0.3 s)
        if not (study / JOURNAL_FILE).exists():
            return 0
        storage = open_storage(None, study, read_only=True)
        return sum(t.state == TrialState.RUNNING for s in storage.get_all_studies()
                   for t in storage.get_all_trials(s._study_id))

    while time.monotonic() < deadline and claimed() < 5 and killed.poll() is None:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert claimed() >= 5 and StudyResults(study).recorded() == set()  # finished, not recorded
    again = _lookbench(*DIGITS, "--out", str(tmp_path / "killed"))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    a = StudyResults(tmp_path / "straight" / "digits-sgd").trials().to_pandas()
    b = StudyResults(study).trials().to_pandas()
    columns = ["trial", "state", "final_test_loss", "final_train_loss", "final_test_acc"]
    assert a[columns].sort_values("trial").reset_index(drop=True).equals(
        b[columns].sort_values("trial").reset_index(drop=True))
