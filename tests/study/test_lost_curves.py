"""A trial counts as recorded only with its curves (issue 22, item 3): a curves file deleted
(as a damaged file's message offers) or lost used to leave the trials table claiming every
trial, so `lookbench run` never ran them again and `lookbench report` ended in a traceback."""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination.queue import ID_ATTR
from lookbench.results import StudyResults
from lookbench.results.store import COMPACTED_FILE

runner = CliRunner()
# 4 trials; lr=1000 diverges in its first epoch (a trial with one curve row)
TINY = ["digits", "--lr", "0.1,1000", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--devices", "cpu", "--workers", "1"]
NAME = "digits-sgd"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _finished_per_trial(out: Path) -> Counter:
    """How many finished Optuna trials each lookbench trial has (one per time it ran)."""
    import optuna

    from lookbench.coordination.storage import open_storage

    storage = open_storage(None, out / NAME)
    runs: Counter = Counter()
    for opt in ("lookahead", "sgd"):
        for t in optuna.load_study(study_name=f"{NAME}.{opt}", storage=storage).trials:
            if t.state.is_finished() and ID_ATTR in t.user_attrs:
                runs[t.user_attrs[ID_ATTR]] += 1
    return runs


def _complete(study: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables, checked whole: every trial once, and every trial's curve, epoch by epoch."""
    trials = StudyResults(study).trials().to_pandas()
    curves = StudyResults(study).curves().to_pandas()
    assert len(trials) == 4 and trials["trial"].is_unique
    per_trial = curves.groupby("trial")["epoch"].apply(sorted).to_dict()
    for row in trials.itertuples():
        assert per_trial.get(row.trial) == list(range(1, row.epochs_done + 1)), row.trial
    assert set(per_trial) == set(trials["trial"])
    return trials, curves


def _numbers(trials: pd.DataFrame) -> dict[str, tuple]:
    return {r.trial: (r.state, r.epochs_done, r.final_train_loss, r.final_test_acc)
            for r in trials.itertuples()}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    first = invoke("run", *TINY, "--out", str(tmp_path))
    assert first.exit_code == 0, first.stderr
    assert invoke("compact", NAME, "--out", str(tmp_path)).exit_code == 0
    return tmp_path / NAME


def test_a_deleted_curves_file_runs_its_trials_again(study):
    out = study.parent
    before, _ = _complete(study)
    (study / "curves" / COMPACTED_FILE).unlink()

    # status: the table, and one line about the lost curves
    status = invoke("status", NAME, "--out", str(out))
    assert status.exit_code == 0, status.stderr
    lines = status.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: 4 trials of study digits-sgd "
                                                   "have no curves")
    # report: one line, no traceback, bad input (the study must run again first)
    report = invoke("report", str(study), "--out", str(out / "reports"))
    assert report.exit_code == 2
    lines = report.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 4 of the 4 trials of study")
    assert "no curves" in lines[0] and "lookbench run" in lines[0]
    assert "Traceback" not in report.output + report.stderr
    assert not (out / "reports").exists() or not list((out / "reports").iterdir())

    again = invoke("run", *TINY, "--out", str(out))
    assert again.exit_code == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "4 recorded trials had no curves" in warnings[0]
    assert "4 of 4 trials recorded" in again.output
    after, _ = _complete(study)
    assert _numbers(after) == _numbers(before)  # run again, the same numbers
    # The earlier rows are kept aside, out of the tables; each trial ran twice, once counted.
    aside = pq.read_table(study / "lost-curves" / "trials").to_pandas()
    assert sorted(aside["trial"]) == sorted(before["trial"])
    assert set(_finished_per_trial(out).values()) == {2}
    assert sorted(p.name for p in (study / "curves").iterdir()) == [COMPACTED_FILE]

    # Done: the next run runs nothing, warns of nothing; the report is written.
    third = invoke("run", *TINY, "--out", str(out))
    assert third.exit_code == 0 and "warning" not in third.stderr, third.stderr
    assert set(_finished_per_trial(out).values()) == {2}
    report = invoke("report", str(study), "--out", str(out / "reports"))
    assert report.exit_code == 0, report.stderr


def _split_curves(study: Path, into_batch: set[str]) -> Path:
    """Move the curves of ``into_batch`` out of the compacted file into a batch file (as a
    batch of trials recorded together, not compacted yet, holds them); returns its path."""
    curves_dir = study / "curves"
    table = pq.read_table(curves_dir / COMPACTED_FILE)
    inside = pa.compute.is_in(table["trial"], value_set=pa.array(sorted(into_batch)))
    batch = curves_dir / "batch-00000000000000000001-0000abcd.parquet"
    pq.write_table(table.filter(inside), batch)
    pq.write_table(table.filter(pa.compute.invert(inside)), curves_dir / COMPACTED_FILE)
    return batch


def test_a_damaged_curves_batch_is_one_line_and_once_deleted_its_trials_run_again(study):
    out = study.parent
    before, _ = _complete(study)
    lost = set(sorted(before["trial"])[:2])
    batch = _split_curves(study, lost)
    assert StudyResults(study).without_curves() == set()  # moved, not lost
    batch.write_bytes(b"PAR1 not a parquet file at all")

    run = invoke("run", *TINY, "--out", str(out))
    assert run.exit_code == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and batch.name in lines[0] and "delete it" in lines[0], lines
    for command in (["status", NAME, "--out", str(out)],
                    ["report", str(study), "--out", str(out / "reports")]):
        result = invoke(*command)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert batch.name in result.stderr and "Traceback" not in result.stderr

    batch.unlink()  # as the message offers
    report = invoke("report", str(study), "--out", str(out / "reports"))
    assert report.exit_code == 2 and "2 of the 4 trials" in report.stderr
    again = invoke("run", *TINY, "--out", str(out))
    assert again.exit_code == 0, again.stderr
    assert "2 recorded trials had no curves" in again.stderr
    runs = _finished_per_trial(out)
    assert {t for t, n in runs.items() if n == 2} == lost  # exactly those ran again
    assert {t for t, n in runs.items() if n == 1} == set(before["trial"]) - lost
    after, _ = _complete(study)
    assert _numbers(after) == _numbers(before)


def _row(trial: str, epochs_done: int, state: str = "complete") -> dict:
    return {"trial": trial, "study": "s", "task": "digits", "optimizer": "sgd", "lr": 0.1,
            "seed": 0, "epochs": 2, "batch_size": 64, "schedule": "constant",
            "task_options": "{}", "state": state, "epochs_done": epochs_done,
            "final_test_acc": 0.5 if epochs_done else None, "metric": "test_acc",
            "wall_s": 1.0, "resumes": 0, "device": "cpu", "host": "h",
            "finished_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
            "lookbench_version": "0", "torch_version": "0", "python_version": "3"}


def _curve(trial: str, epochs: int) -> list[dict]:
    return [{"trial": trial, "epoch": e, "train_loss": 1.0, "test_loss": 1.0,
             "test_acc": 0.5, "lr": 0.1, "steps": 10 * e, "wall_s": 0.5 * e,
             "diverged": False} for e in range(1, epochs + 1)]


def test_a_trial_that_ended_before_its_first_epoch_needs_no_curves(tmp_path):
    results = StudyResults(tmp_path)
    results.write_trial(_row("started", 0, "failed"), [])  # failed at start: no curve rows
    results.write_trials([(_row("a", 2), _curve("a", 2)), (_row("b", 1, "diverged"),
                                                           _curve("b", 1))])
    results.write_trial(_row("c", 2), _curve("c", 2))
    assert results.without_curves() == set()
    results.compact()
    assert results.without_curves() == set()
    # The curves of a, b (a batch, then compacted) and c lost: those three, not "started".
    (tmp_path / "curves" / COMPACTED_FILE).unlink()
    assert results.without_curves() == {"a", "b", "c"}
    assert results.recorded() == {"started", "a", "b", "c"}  # (recorded() reads no curves)
    assert results.set_aside_without_curves(tmp_path / "aside") == {"a", "b", "c"}
    assert results.recorded() == {"started"} and results.without_curves() == set()
    assert sorted(p.name for p in (tmp_path / "aside" / "trials").iterdir()) == [
        "part-a.parquet", "part-b.parquet", "part-c.parquet"]


def test_curves_compacted_meanwhile_are_not_taken_for_lost(tmp_path, monkeypatch):
    """The curves folder is read after the trials folder, and a batch gone when it is read
    (a compaction merged it) sends the listing round again: nothing is reported lost."""
    from lookbench.results import store

    results = StudyResults(tmp_path)
    results.write_trials([(_row("a", 2), _curve("a", 2)), (_row("b", 2), _curve("b", 2))])
    real = store.StudyResults._file_ids
    compacted = []

    def compacting_first(self, path, known=None):
        if path.parent.name == "curves" and not compacted:
            compacted.append(True)
            StudyResults(tmp_path).compact()  # the batch it was about to read is gone
        return real(self, path, known)

    monkeypatch.setattr(store.StudyResults, "_file_ids", compacting_first)
    assert results.without_curves() == set() and compacted


def test_the_curves_are_checked_once_per_run_not_per_claim(tmp_path, monkeypatch):
    """``recorded()`` (asked before every claim) stays a listing of the trials folder."""
    from lookbench.results import store

    calls = []
    real = store.StudyResults.without_curves

    def counted(self):
        calls.append(self.root)
        return real(self)

    monkeypatch.setattr(store.StudyResults, "without_curves", counted)
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    # once where the plan is made, once for the status table the command ends with
    assert len(calls) == 2, calls
