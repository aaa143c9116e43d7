"""The trials table's ``config`` column: one id per configuration without its seed, so scripts
group seeds by one column (grouping by the hyperparameter columns drops every baseline row,
whose ``k`` and ``alpha`` are null). Written with every new row, computed on read for tables
written before the column, and written into an old compacted file by the next compaction."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from lookbench.execution.records import curve_rows, trial_row
from lookbench.execution.trial import EpochRecord
from lookbench.results import TRIALS, StudyResults
from lookbench.results import store as store_module
from lookbench.results.schema import config_id, with_config
from lookbench.results.store import COMPACTED_FILE, write_part
from lookbench.study.config import TrialConfig

# The trials table as the version before the column wrote it.
OLD_TRIALS = pa.schema([f for f in TRIALS if f.name != "config"])


def _row(trial: str, **config) -> dict:
    config = TrialConfig(**{"task": "digits", "epochs": 2, **config})
    records = [EpochRecord(epoch=1, train_loss=1.0, test_loss=0.5, test_acc=0.8,
                           train_eval_loss=None, lr=0.1, steps=10, wall_s=0.5)]
    return trial_row(study="s", trial=trial, config=config, metric="test_acc",
                     higher_is_better=True, batch_size=32, schedule="constant",
                     records=records, device="cpu", resumes=0)


SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}
LOOKAHEAD = {"optimizer": "lookahead", "inner": "sgd", "lr": 0.1, "momentum": 0.9, "k": 5,
             "alpha": 0.5}


def _old_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{k: v for k, v in r.items() if k != "config"} for r in rows],
                                schema=OLD_TRIALS)


def test_one_id_per_configuration_whatever_the_seed():
    rows = [_row(f"t{seed}{i}", seed=seed, **c)
            for seed in (0, 1, 2) for i, c in enumerate((SGD, LOOKAHEAD))]
    ids = {(r["optimizer"], r["seed"]): r["config"] for r in rows}
    assert ids[("sgd", 0)] == ids[("sgd", 1)] == ids[("sgd", 2)]
    assert ids[("lookahead", 0)] == ids[("lookahead", 1)] == ids[("lookahead", 2)]
    assert ids[("sgd", 0)] != ids[("lookahead", 0)]
    # Pinned: the same id on every machine and in every later version (computed from the
    # row's own columns; a hyperparameter added to the table later is left out while unset).
    assert ids[("sgd", 0)] == "3ea6663f7624aca1"
    assert ids[("lookahead", 0)] == "3464bb1901a8e3b1"
    # What the script did: grouping by the hyperparameters dropped every baseline row.
    frame = pa.Table.from_pylist(rows, schema=TRIALS).to_pandas()
    assert frame.groupby(["optimizer", "lr", "momentum", "k", "alpha"]).ngroups == 1
    assert frame.groupby("config").size().tolist() == [3, 3]


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"lr": 1}, {"lr": 1.0}, True),  # a whole-number rate given as an int
    ({"lr": 0.1}, {"lr": 0.1 + 1e-12}, False),  # rates drawn at random: exact, not rounded
    ({"momentum": 0.9}, {"momentum": 0.0}, False),
    ({"weight_decay": 1e-4}, {}, False),
    ({"epochs": 2}, {"epochs": 3}, False),  # another budget: another configuration
    ({"task_options": {"hidden": 64}}, {}, False),
])
def test_what_makes_two_configurations_one(a, b, same):
    x, y = _row("x", **{**SGD, **a}), _row("y", **{**SGD, **b}, seed=1)
    assert (x["config"] == y["config"]) is same


def test_lookaheads_own_settings_are_part_of_it():
    base = _row("a", **LOOKAHEAD)["config"]
    assert _row("b", **{**LOOKAHEAD, "alpha": "adaptive"})["config"] != base
    assert _row("c", **{**LOOKAHEAD, "k": 10})["config"] != base
    assert _row("d", **{**LOOKAHEAD, "inner_state": "reset"})["config"] != base
    # an unset policy is the default one, as the row says (maintain)
    assert _row("e", **{**LOOKAHEAD, "inner_state": "maintain"})["config"] == base


def test_rows_of_older_versions_get_the_same_id():
    """Computed from a row as the Parquet file holds it (also a pandas row, and a row of a
    version before ``inner_state``): the id its trial would get today."""
    new = [_row("a", **SGD), _row("b", **LOOKAHEAD), _row("c", **{**LOOKAHEAD,
                                                                 "alpha": "adaptive"})]
    old = _old_table(new)
    assert with_config(old)["config"].to_pylist() == [r["config"] for r in new]
    frame = pa.Table.from_pylist(new, schema=TRIALS).to_pandas()
    assert [config_id(r) for _, r in frame.iterrows()] == [r["config"] for r in new]
    before_inner_state = old.drop_columns(["inner_state"])
    assert with_config(before_inner_state)["config"].to_pylist() == [r["config"] for r in new]


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "on disk"])
def test_old_and_new_files_read_and_compact_together(tmp_path, monkeypatch, kept):
    """A study folder of the version before the column (its compacted file and a part),
    resumed by this one (a part and a batch with the column): read as one table with the
    column filled everywhere, and compacted into one plain Parquet file that holds it."""
    if not kept:
        monkeypatch.setattr(store_module._kept, "LIMIT", 0)
        store_module._kept._tables.clear()
    results = StudyResults(tmp_path)
    results.trials_dir.mkdir(parents=True)
    olds = [_row("old-compacted", **SGD), _row("old-part", **SGD, seed=1)]
    pq.write_table(_old_table(olds[:1]), results.trials_dir / COMPACTED_FILE)
    write_part(results.trials_dir, "old-part", _old_table(olds[1:]))
    news = [_row("new-part", **SGD, seed=2), _row("new-batch-1", **LOOKAHEAD),
            _row("new-batch-2", **LOOKAHEAD, seed=1)]
    results.write_trial(news[0], [])
    results.write_trials([(r, []) for r in news[1:]])
    expected = {r["trial"]: r["config"] for r in olds + news}

    def check(table: pa.Table) -> None:
        assert table["config"].null_count == 0
        assert dict(zip(table["trial"].to_pylist(), table["config"].to_pylist())) == expected

    check(results.trials())
    assert results.compact().trials == 5
    check(results.trials())
    compacted = pq.read_table(results.trials_dir / COMPACTED_FILE)  # any reader: plain Parquet
    check(compacted)
    check(ds.dataset(results.trials_dir).to_table())


def test_a_compaction_writes_the_column_into_an_old_study(tmp_path):
    """A finished study of the version before the column: nothing to merge, but its compacted
    file is rewritten with the column, so readers other than lookbench's have it too."""
    results = StudyResults(tmp_path)
    results.trials_dir.mkdir(parents=True)
    rows = [_row("a", **SGD), _row("b", **SGD, seed=1), _row("c", **LOOKAHEAD)]
    pq.write_table(_old_table(rows), results.trials_dir / COMPACTED_FILE)
    assert "config" in results.trials().column_names  # computed on read
    results.compact()
    table = pq.read_table(results.trials_dir / COMPACTED_FILE)
    assert table["config"].to_pylist() == [r["config"] for r in rows]
    assert table.drop_columns(["config"]).equals(
        _old_table(rows).select(table.drop_columns(["config"]).column_names))
    mtime = (results.trials_dir / COMPACTED_FILE).stat().st_mtime_ns
    results.compact()  # (once written, left alone)
    assert (results.trials_dir / COMPACTED_FILE).stat().st_mtime_ns == mtime


def test_a_row_written_without_it_gets_it(tmp_path):
    """A row given to the store without the column (a script's own) is written with it."""
    row = _row("a", **SGD)
    expected = row.pop("config")
    row["finished_at"] = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    results = StudyResults(tmp_path)
    results.write_trial(row, curve_rows("a", []))
    table = pq.read_table(results.trials_dir / "part-a.parquet")
    assert table["config"].to_pylist() == [expected]
