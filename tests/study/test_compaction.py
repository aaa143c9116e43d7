"""Compaction of a study's part files, and the recorded set: what readers see while part files,
a compacted file, or both are on disk, and what concurrent writers and readers leave."""

from __future__ import annotations

import datetime
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.results import StudyResults
from lookbench.results import store as store_module
from lookbench.results.store import COMPACTED_FILE


def _row(trial: str, value: float = 0.5, **extra) -> dict:
    return {
        "trial": trial, "study": "s", "task": "digits", "optimizer": "sgd", "inner": "sgd",
        "lr": 0.1, "momentum": 0.9, "seed": 0, "epochs": 2, "batch_size": 32,
        "schedule": "constant", "task_options": "{}", "state": "complete", "epochs_done": 2,
        "final_test_acc": value, "final_test_loss": 1 - value, "metric": "test_acc",
        "higher_is_better": True, "wall_s": 1.0, "resumes": 0, "device": "cpu",
        "host": "h", "finished_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "lookbench_version": "0", "torch_version": "0", "python_version": "3", **extra,
    }


def _curve(trial: str, value: float = 0.5, epochs: int = 2, **extra) -> list[dict]:
    return [{"trial": trial, "epoch": e, "train_loss": 1.0 / e, "test_loss": 1 - value,
             "test_acc": value * e / epochs, "train_eval_loss": None, "lr": 0.1,
             "steps": 10 * e, "wall_s": float(e), "diverged": False, **extra}
            for e in range(1, epochs + 1)]


def _write(results: StudyResults, trial: str, value: float = 0.5, **extra) -> None:
    results.write_trial(_row(trial, value, **{f"final_{k}": v for k, v in extra.items()}),
                        _curve(trial, value, **extra))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(autouse=True, params=["kept", "on disk"])
def _where_parts_are_read_from(request, monkeypatch):
    """Every test twice: parts this process wrote read from memory (as at the end of a run),
    and every part read from its file (as another process reads them)."""
    if request.param == "on disk":
        monkeypatch.setattr(store_module._kept, "LIMIT", 0)
        store_module._kept._tables.clear()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    results = StudyResults(tmp_path / "s")
    for i in range(6):
        _write(results, f"t{i:02d}", 0.1 * i)
    return tmp_path / "s"


def test_compaction_merges_the_parts_into_one_file_per_table_and_changes_no_row(study):
    results = StudyResults(study)
    trials, curves = results.trials(), results.curves()
    recorded = results.recorded()
    done = results.compact()
    assert (done.trials_parts, done.curves_parts, done.trials) == (6, 6, 6)
    assert _files(study / "trials") == [COMPACTED_FILE]
    assert _files(study / "curves") == [COMPACTED_FILE]
    assert results.trials().equals(trials) and results.curves().equals(curves)
    assert StudyResults(study).trials().equals(trials)
    assert StudyResults(study).recorded() == recorded == results.recorded()
    # what other readers see: one plain Parquet file per table, every row once
    assert pd.read_parquet(study / "trials")["trial"].tolist() == [f"t{i:02d}" for i in range(6)]
    assert len(pd.read_parquet(study / "curves")) == 12
    again = results.compact()  # nothing new: nothing rewritten
    assert again.parts == 0 and again.trials == 6


def test_a_second_compaction_merges_the_compacted_file_with_the_new_parts(study):
    results = StudyResults(study)
    results.compact()
    _write(results, "t06", 0.9)
    _write(results, "t02", 0.77)  # finished again: its new rows replace the compacted ones
    _write(results, "a00", 0.3, test_perplexity=12.0)  # a metric of its own: a new column
    expected = results.trials()
    assert expected.num_rows == 8
    assert expected["trial"].to_pylist() == ["a00", *(f"t{i:02d}" for i in range(7))]
    row = expected.filter(pd.Series(expected["trial"].to_pylist()).eq("t02").to_numpy())
    assert row["final_test_acc"].to_pylist() == [0.77]
    curves = results.curves()
    assert curves.num_rows == 16 and "test_perplexity" in curves.column_names
    done = results.compact()
    assert done.trials_parts == 3 and done.trials == 8
    assert results.trials().equals(expected)
    assert results.curves().equals(curves)
    assert _files(study / "trials") == [COMPACTED_FILE]


def test_readers_count_a_trial_once_while_a_compaction_has_not_removed_its_parts(
        study, monkeypatch):
    results = StudyResults(study)
    expected = results.trials()
    # killed after the compacted file is in place and before any part is removed
    monkeypatch.setattr(store_module, "_remove_if_unchanged", lambda part, identity: None)
    results.compact()
    assert COMPACTED_FILE in _files(study / "trials") and len(_files(study / "trials")) == 7
    assert StudyResults(study).trials().equals(expected)
    assert StudyResults(study).curves().num_rows == 12
    assert StudyResults(study).recorded() == {f"t{i:02d}" for i in range(6)}
    monkeypatch.undo()
    assert StudyResults(study).compact().trials_parts == 6  # the next one finishes the job
    assert _files(study / "trials") == [COMPACTED_FILE]
    assert StudyResults(study).trials().equals(expected)


def test_a_part_written_or_replaced_during_a_compaction_is_kept(study, monkeypatch):
    results = StudyResults(study)
    writer = StudyResults(study)
    real_read = StudyResults._read

    def read_then_write(self, directory, schema, files):
        table = real_read(self, directory, schema, files)
        if directory.name == "trials":  # after the compaction listed and read the parts
            _write(writer, "t99", 0.99)  # a new trial
            _write(writer, "t03", 0.33)  # a trial finished again
        return table

    monkeypatch.setattr(StudyResults, "_read", read_then_write)
    results.compact()
    monkeypatch.undo()
    names = _files(study / "trials")
    assert "part-t99.parquet" in names and "part-t03.parquet" in names
    table = StudyResults(study).trials().to_pandas().set_index("trial")
    assert len(table) == 7 and table.index.is_unique
    assert table.loc["t03", "final_test_acc"] == 0.33 and table.loc["t99", "final_test_acc"] == 0.99
    assert StudyResults(study).recorded() == {*(f"t{i:02d}" for i in range(6)), "t99"}
    StudyResults(study).compact()
    table = StudyResults(study).trials().to_pandas().set_index("trial")
    assert len(table) == 7 and table.loc["t03", "final_test_acc"] == 0.33


def test_a_replacement_landing_while_a_part_is_removed_is_put_back(study, monkeypatch):
    """The narrowest race: the part is replaced between the check that it is the file that
    was compacted and its removal."""
    part = study / "trials" / "part-t01.parquet"
    identity = store_module._identity(os.stat(part))
    real_rename = os.rename

    def rename_after_a_replacement(src, dst):
        if Path(src) == part:
            _write(StudyResults(study), "t01", 0.11)
        return real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", rename_after_a_replacement)
    store_module._remove_if_unchanged(part, identity)
    monkeypatch.undo()
    assert part.exists()
    assert pq.read_table(part)["final_test_acc"].to_pylist() == [0.11]
    assert [n for n in _files(study / "trials") if n.startswith(".")] == []


def test_readers_and_writers_running_beside_compactions_never_lose_or_double_a_trial(study):
    stop = threading.Event()
    problems: list[str] = []
    written: list[str] = []

    def write() -> None:
        results = StudyResults(study)
        i = 0
        while not stop.is_set() and i < 60:
            _write(results, f"w{i:03d}", 0.5)
            written.append(f"w{i:03d}")
            i += 1

    def read() -> None:
        results = StudyResults(study)
        while not stop.is_set():
            before = set(written)
            ids = results.trials()["trial"].to_pylist()
            if len(ids) != len(set(ids)):
                problems.append(f"a trial counted twice: {len(ids)} rows")
            missing = (before | {f"t{i:02d}" for i in range(6)}) - set(ids)
            if missing:
                problems.append(f"missing {sorted(missing)}")
            if not (before | {f"t{i:02d}" for i in range(6)}) <= results.recorded():
                problems.append("recorded() lost a trial")

    def compact() -> None:
        results = StudyResults(study)
        while not stop.is_set():
            results.compact()

    threads = [threading.Thread(target=f) for f in (read, compact)]
    for t in threads:
        t.start()
    write()
    stop.set()
    for t in threads:
        t.join()
    assert problems == []
    StudyResults(study).compact()
    ids = StudyResults(study).trials()["trial"].to_pylist()
    assert sorted(ids) == sorted({*(f"t{i:02d}" for i in range(6)), *written})
    assert _files(study / "trials") == [COMPACTED_FILE]


def test_what_a_killed_compaction_left_is_cleaned_up(study):
    trials = study / "trials"
    part = trials / "part-t00.parquet"
    held = trials / ".part-t00.parquet.0123abcd.compacting"
    os.rename(part, held)  # killed while removing it (before the compacted file held it)
    (trials / f".{COMPACTED_FILE}.deadbeef.tmp").write_bytes(b"half a file")
    assert len(StudyResults(study).trials()) == 5  # (hidden files are not read)
    StudyResults(study).compact()
    assert _files(trials) == [COMPACTED_FILE]
    assert len(StudyResults(study).trials()) == 6


def test_set_aside_takes_a_compacted_trial_out_of_the_compacted_file(study, tmp_path):
    results = StudyResults(study)
    results.compact()
    _write(results, "t05", 0.55)  # also as a newer part
    where = study / "retried"
    results.set_aside({"t02", "t05"}, where)
    assert results.recorded() == {"t00", "t01", "t03", "t04"}
    assert sorted(results.trials()["trial"].to_pylist()) == ["t00", "t01", "t03", "t04"]
    assert "t02" not in results.curves()["trial"].to_pylist()
    kept = pq.read_table(where / "trials" / "part-t05.parquet")
    assert kept["final_test_acc"].to_pylist() == [0.55]  # the newer rows are the ones kept
    assert pq.read_table(where / "curves" / "part-t02.parquet").num_rows == 2
    _write(results, "t02", 0.2)  # the trial runs again
    assert "t02" in StudyResults(study).recorded()


def test_recorded_adds_its_own_writes_without_listing_the_folder(study, monkeypatch):
    monkeypatch.setattr(store_module, "TRUST_S", 600.0)  # (however slow the machine is)
    results = StudyResults(study)
    assert results.recorded() == {f"t{i:02d}" for i in range(6)}
    listed = []
    real = os.listdir
    monkeypatch.setattr(store_module.os, "listdir", lambda p: listed.append(p) or real(p))
    for i in range(20):
        _write(results, f"n{i:02d}", 0.5)
        assert f"n{i:02d}" in results.recorded()
    assert listed == []
    time.sleep(0.05)  # (a later tick of the file system's clock than its own last write)
    other = StudyResults(study)  # another writer (another worker, another machine)
    _write(other, "x00", 0.5)
    assert "x00" in results.recorded()  # the folder changed under it: listed again
    assert len(listed) == 1
    results.recorded()
    assert len(listed) <= 2  # from now on it lists again until the folder has settled
    assert results.has("x00") and not results.has("nope")
    results.compact()
    assert results.has("x00") and "x00" in results.recorded(refresh=True)


def test_recorded_sees_a_part_file_deleted_by_hand(study):
    results = StudyResults(study)
    assert len(results.recorded()) == 6
    (study / "trials" / "part-t03.parquet").unlink()
    assert "t03" not in StudyResults(study).recorded()
    assert "t03" not in results.recorded(refresh=True)


def test_the_compact_command(study, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["compact", "--out", str(study.parent), "s"])
    assert result.exit_code == 0, result.output
    assert "6 trials" in result.output
    assert _files(study / "trials") == [COMPACTED_FILE]
    again = runner.invoke(app, ["compact", "--out", str(study.parent)])  # every study
    assert again.exit_code == 0 and "nothing to compact" in again.output
    missing = runner.invoke(app, ["compact", "--out", str(study.parent), "nope"])
    assert missing.exit_code == 2 and "no study" in missing.output


def test_parts_read_from_memory_and_from_their_files_give_the_same_table(tmp_path, monkeypatch):
    results = StudyResults(tmp_path / "s")
    _write(results, "b", 0.2, test_perplexity=3.0)
    results.write_trial(_row("c", 0.3), _curve("c", 0.3))
    _write(results, "a", 0.1, valid_bleu=20.0, test_perplexity=2.0)
    results.compact()
    _write(results, "d", 0.4, valid_bleu=21.0)
    _write(results, "0", 0.5, other=1.0)
    kept = results.trials(), results.curves()
    monkeypatch.setattr(store_module._kept, "LIMIT", 0)
    store_module._kept._tables.clear()
    from_files = StudyResults(tmp_path / "s")
    assert from_files.trials().equals(kept[0], check_metadata=True)
    assert from_files.curves().equals(kept[1], check_metadata=True)
    # the compacted file's own metrics first, then the parts', in their names' order
    assert kept[0].column_names[-3:] == ["final_valid_bleu", "final_test_perplexity",
                                         "final_other"]
    assert kept[0]["trial"].to_pylist() == ["0", "a", "b", "c", "d"]


# -- batch files: trials recorded in one go --------------------------------------------------


def _batch(results: StudyResults, trials: dict[str, float], **extra) -> None:
    results.write_trials([(_row(t, v, **{f"final_{k}": x for k, x in extra.items()}),
                           _curve(t, v, **extra)) for t, v in trials.items()])


def _batches(directory: Path) -> list[str]:
    return [n for n in _files(directory) if n.startswith("batch-")]


def test_trials_recorded_together_are_one_batch_file_per_table_read_as_parts_are(tmp_path):
    one, many = StudyResults(tmp_path / "one"), StudyResults(tmp_path / "many")
    values = {"t03": 0.3, "t00": 0.0, "t02": 0.2, "t01": 0.1}
    for t, v in values.items():
        _write(one, t, v)
    _batch(many, values)
    study = tmp_path / "many"
    assert len(_batches(study / "trials")) == len(_batches(study / "curves")) == 1
    assert _files(study / "trials") == _batches(study / "trials")
    assert many.recorded() == StudyResults(study).recorded() == set(values)
    assert StudyResults(study).has("t02") and not StudyResults(study).has("t09")
    for reader in (many, StudyResults(study)):
        assert reader.trials().drop(["finished_at"]).equals(one.trials().drop(["finished_at"]))
        assert reader.curves().equals(one.curves())
    # other readers: plain Parquet, every row once
    assert sorted(pd.read_parquet(study / "trials")["trial"]) == sorted(values)
    with pytest.raises(ValueError, match="twice"):
        many.write_trials([(_row("x"), _curve("x")), (_row("x"), _curve("x"))])


def test_a_trial_in_several_files_is_read_from_its_part_else_its_latest_batch(tmp_path):
    results = StudyResults(tmp_path / "s")
    study = tmp_path / "s"
    _batch(results, {"a": 0.1, "b": 0.1, "c": 0.1})
    results.compact()
    _batch(results, {"b": 0.2, "c": 0.2})  # b and c finished again (a takeover, say)
    _batch(results, {"c": 0.3, "d": 0.3})  # ... and c once more
    _write(results, "d", 0.4)  # d again, alone: its part
    want = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    for reader in (results, StudyResults(study)):
        trials = reader.trials()
        assert dict(zip(trials["trial"].to_pylist(),
                        trials["final_test_acc"].to_pylist())) == want
        curves = reader.curves()
        assert len(curves) == 2 * len(want)  # each trial's curve once, from the same file
        last = {t: v for t, v in zip(curves["trial"].to_pylist(),
                                      curves["test_acc"].to_pylist())}
        assert last == want
    before = results.trials()
    done = results.compact()
    assert done.trials == 4 and _files(study / "trials") == [COMPACTED_FILE]
    assert results.trials().equals(before) and StudyResults(study).trials().equals(before)


def test_set_aside_takes_a_trial_out_of_its_batch(tmp_path):
    results = StudyResults(tmp_path / "s")
    study = tmp_path / "s"
    _batch(results, {"a": 0.1, "b": 0.2})
    _batch(results, {"c": 0.3, "d": 0.4})
    where = study / "retried"
    results.set_aside({"a", "b", "c"}, where)
    assert results.recorded() == StudyResults(study).recorded() == {"d"}
    assert results.trials()["trial"].to_pylist() == ["d"]
    assert results.curves()["trial"].to_pylist() == ["d", "d"]
    assert len(_batches(study / "trials")) == 1  # the emptied batch is gone
    assert pq.read_table(where / "trials" / "part-b.parquet")["final_test_acc"].to_pylist() \
        == [0.2]
    assert pq.read_table(where / "curves" / "part-c.parquet").num_rows == 2


def test_what_a_compaction_killed_while_removing_a_batch_left_is_cleaned_up(tmp_path):
    results = StudyResults(tmp_path / "s")
    trials = tmp_path / "s" / "trials"
    _batch(results, {"a": 0.1, "b": 0.2})
    batch = trials / _batches(trials)[0]
    os.rename(batch, trials / f".{batch.name}.0123abcd.compacting")
    assert StudyResults(tmp_path / "s").recorded() == set()
    StudyResults(tmp_path / "s").compact()
    assert _files(trials) == [COMPACTED_FILE]
    assert StudyResults(tmp_path / "s").recorded() == {"a", "b"}


def test_folders_of_two_machines_merge_as_the_distributed_guide_says(tmp_path):
    """docs/distributed.md: parts keep their names, every other file (a batch, the compacted
    file: the same names on every machine) is copied as a batch named after its machine."""
    import shutil

    machines = {"m1": {"a": 0.1, "b": 0.2, "c": 0.3}, "m2": {"d": 0.4, "e": 0.5}}
    for m, trials in machines.items():
        results = StudyResults(tmp_path / m / "s")
        _batch(results, dict(list(trials.items())[:2]))
        results.compact()
        for t, v in list(trials.items())[2:]:
            _write(results, t, v)  # recorded after the compaction: a part
    merged = tmp_path / "merged" / "s"
    for m in machines:
        for table in ("trials", "curves"):
            (merged / table).mkdir(parents=True, exist_ok=True)
            for f in (tmp_path / m / "s" / table).iterdir():
                to = f.name if f.name.startswith("part-") else f"batch-{m}-{f.name}"
                shutil.copy(f, merged / table / to)
    results = StudyResults(merged)
    want = {t: v for trials in machines.values() for t, v in trials.items()}
    rows = results.trials()
    assert dict(zip(rows["trial"].to_pylist(), rows["final_test_acc"].to_pylist())) == want
    assert len(results.curves()) == 2 * len(want) and results.recorded() == set(want)
    results.compact()
    assert _files(merged / "trials") == [COMPACTED_FILE] and results.recorded() == set(want)
