"""Trials tables written before the ``<m>_at_best`` columns read together with rows written
after them: in part files, batch files and the compacted file, before and after a compaction."""

from __future__ import annotations

import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookbench.api import load_results
from lookbench.execution.records import curve_rows, trial_row
from lookbench.execution.trial import EpochRecord
from lookbench.results import TRIALS, StudyResults
from lookbench.results import store as store_module
from lookbench.results.store import COMPACTED_FILE, write_part
from lookbench.study.config import TrialConfig

OLD_TRIALS = pa.schema([f for f in TRIALS if not f.name.endswith("_at_best")])


def _old_row(trial: str) -> dict:
    """A row as the code before ``_at_best`` wrote it, with a metric of the task's own."""
    return {
        "trial": trial, "study": "s", "task": "wmt14", "optimizer": "sgd", "inner": "sgd",
        "lr": 0.1, "seed": 0, "epochs": 2, "batch_size": 32, "schedule": "constant",
        "task_options": "{}", "state": "complete", "epochs_done": 2, "final_test_loss": 1.0,
        "best_test_loss": 0.9, "best_epoch": 1, "metric": "test_loss",
        "higher_is_better": False, "wall_s": 1.0, "resumes": 0, "device": "cpu", "host": "h",
        "finished_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "lookbench_version": "0", "torch_version": "0", "python_version": "3",
        "final_test_bleu": 12.0, "best_test_bleu": 5.0,
    }


def _old_table(*trials: str) -> pa.Table:
    rows = [_old_row(t) for t in trials]
    schema = OLD_TRIALS.append(pa.field("final_test_bleu", pa.float64())).append(
        pa.field("best_test_bleu", pa.float64()))
    return pa.Table.from_pylist(rows, schema=schema)


def _new(trial: str) -> tuple[dict, list[dict]]:
    records = [EpochRecord(epoch=e, train_loss=1.0, test_loss=loss, test_acc=None,
                           train_eval_loss=None, lr=0.1, steps=e, wall_s=float(e),
                           extra={"test_bleu": bleu})
               for e, loss, bleu in ((1, 0.8, 10.0), (2, 0.9, 15.0))]
    config = TrialConfig(task="wmt14", optimizer="sgd", lr=0.1, epochs=2, seed=1)
    row = trial_row(study="s", trial=trial, config=config, metric="test_loss",
                    higher_is_better=False, batch_size=32, schedule="constant",
                    records=records, device="cpu", resumes=0)
    return row, curve_rows(trial, records)


def _check(frame: pd.DataFrame) -> None:
    frame = frame.set_index("trial")
    assert {"test_loss_at_best", "test_acc_at_best", "test_bleu_at_best"} <= set(frame.columns)
    for old in ("old-part", "old-compacted"):
        assert pd.isna(frame.loc[old, "test_loss_at_best"])
        assert pd.isna(frame.loc[old, "test_bleu_at_best"])
        assert frame.loc[old, "best_test_bleu"] == 5.0  # as the old code wrote it
    new = frame.loc["new"]
    assert new.best_epoch == 1 and new.test_loss_at_best == 0.8 and new.best_test_loss == 0.8
    assert new.test_bleu_at_best == 10.0 and new.best_test_bleu == 15.0
    assert new.final_test_bleu == 15.0 and pd.isna(new.test_acc_at_best)


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "on disk"])
def test_old_tables_without_at_best_read_with_new_rows(tmp_path, monkeypatch, kept):
    if not kept:
        monkeypatch.setattr(store_module._kept, "LIMIT", 0)
        store_module._kept._tables.clear()
    results = StudyResults(tmp_path)
    results.trials_dir.mkdir(parents=True)
    pq.write_table(_old_table("old-compacted"), results.trials_dir / COMPACTED_FILE)
    write_part(results.trials_dir, "old-part", _old_table("old-part"))
    results.write_trial(*_new("new"))
    _check(results.trials().to_pandas())
    _check(load_results(tmp_path)[0])
    results.compact()
    assert pq.read_schema(results.trials_dir / COMPACTED_FILE).field("test_bleu_at_best")
    _check(StudyResults(tmp_path).trials().to_pandas())
    _check(pd.read_parquet(results.trials_dir))  # a plain reader of the compacted folder
