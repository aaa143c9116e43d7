"""Population training inside `lookbench run`: every member an ordinary trial with its own
rows and Optuna outcome, the same results as one trial at a time (to float tolerance), the
same bits on every run, and a population interrupted mid-way resumed as the same population."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.execution.checkpoints import (
    CheckpointWriter,
    load_checkpoint,
    save_checkpoint,
)
from lookbench.execution.engine import prepare
from lookbench.execution.population import run as population_run
from lookbench.execution.worker import WorkerOptions, run_worker
from lookbench.results import StudyResults
from lookbench.study.spec import load_spec, plan

runner = CliRunner()
GRID = ["digits", "--lr", "0.03,0.1,1000", "--k", "5,10", "--alpha", "0.5", "--seeds", "2",
        "--epochs", "3", "--devices", "cpu", "--workers", "1"]


def _trials(out, study="digits-sgd") -> pd.DataFrame:
    return (StudyResults(out / study).trials().to_pandas().set_index("trial").sort_index())


def _optuna_trials(out, study="digits-sgd") -> list:
    import optuna

    from lookbench.coordination.storage import open_storage

    storage = open_storage(None, out / study, read_only=True)
    return [t for opt in ("lookahead", "sgd")
            for t in optuna.load_study(study_name=f"{study}.{opt}", storage=storage).trials
            if t.state.is_finished() and "lookbench_superseded" not in t.user_attrs]


def _run(out, *extra: str):
    result = runner.invoke(app, ["run", *GRID, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result


def test_a_population_records_what_trials_one_at_a_time_record(tmp_path, monkeypatch):
    sizes = []
    real = population_run.PopulationTrial

    def spy(configs, *args, **kwargs):
        sizes.append(len(configs))
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(population_run, "PopulationTrial", spy)
    _run(tmp_path / "pop", "--population", "8")
    assert sizes == [6, 6, 6]  # 18 trials, at most 8 together: three equal populations ...
    _run(tmp_path / "one", "--population", "1")
    assert len(sizes) == 3  # ... and none when asked for one at a time
    pop, one = _trials(tmp_path / "pop"), _trials(tmp_path / "one")
    assert len(pop) == len(one) == 18 and list(pop.index) == list(one.index)
    assert (pop["state"] == one["state"]).all()
    assert set(pop["state"]) == {"complete", "diverged"}
    done = pop["state"] == "complete"
    for column in ("final_test_loss", "final_test_acc", "final_train_loss", "best_test_acc"):
        assert pop.loc[done, column].to_numpy() == pytest.approx(
            one.loc[done, column].to_numpy(), rel=1e-4, abs=1e-5), column
    assert (pop["epochs_done"] == one["epochs_done"]).all()
    assert set(pop["population"]) == {6} and set(one["population"]) == {1}
    # One configuration id for its seeds, however it ran (9 configurations, 2 seeds each).
    assert (pop["config"] == one["config"]).all()
    assert pop.groupby("config").size().tolist() == [2] * 9
    # In Optuna (optuna-dashboard), a member's duration is its own share, its wall_s, not the
    # population's; a trial alone keeps its own.
    for run, frame in (("pop", pop), ("one", one)):
        assert len(finished := _optuna_trials(tmp_path / run)) == 18
        for t in finished:
            share = t.user_attrs.get("member_wall_s")
            if run == "one":
                assert share is None
                continue
            wall = frame.loc[t.user_attrs["lookbench_id"], "wall_s"]
            assert share == pytest.approx(wall)
            assert t.duration.total_seconds() == pytest.approx(wall, abs=2e-3)
    # A member's wall time is its share of the population's: what Lookahead costs comes from
    # the study's timing pass (here none: tests turn it off), never from the trials' times, so
    # both runs say the same about it.
    for run in ("pop", "one"):
        report = runner.invoke(app, ["report", "--runs", str(tmp_path / run), "--out",
                                     str(tmp_path / f"report-{run}")])
        assert report.exit_code == 0, report.output
        summary = json.loads((tmp_path / f"report-{run}" / "digits-sgd.json").read_text())
        assert "what it costs was not measured" in summary["verdict"].lower()
        assert "time per epoch" not in summary["verdict"]
    curves = StudyResults(tmp_path / "pop" / "digits-sgd").curves().to_pandas()
    assert len(curves) == int(pop["epochs_done"].sum())


def test_every_run_computes_the_same_bits(tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    a, b = _trials(tmp_path / "a"), _trials(tmp_path / "b")
    for column in ("final_test_loss", "final_train_loss", "final_test_acc"):
        assert a[column].fillna(-1).tolist() == b[column].fillna(-1).tolist()


def test_an_interrupted_population_resumes_as_itself_to_the_same_bits(tmp_path):
    _run(tmp_path / "straight")
    out = tmp_path / "cut"
    # Prepare the study, then run a worker that is interrupted after its 20th member-epoch
    # (one population of all 18 with one worker: it is cut off in its second epoch).
    spec = load_spec(None, task="digits", grid_overrides={
        "lr": [0.03, 0.1, 1000.0], "k": [5, 10], "alpha": [0.5]}, seeds=2, epochs=3)
    prepare(spec, out, None, None, False)
    seen = []

    def cut_off(claimed, record):
        seen.append(record.epoch)
        if len(seen) == 20:
            raise KeyboardInterrupt

    opts = WorkerOptions(study_dir=out / spec.study_name, name=spec.study_name,
                         device="cpu", on_epoch=cut_off)
    with pytest.raises(KeyboardInterrupt):
        run_worker(opts)
    study = out / spec.study_name
    cut = {p.stem for p in (study / "checkpoints").glob("*.pt")}
    assert cut and len(StudyResults(study).recorded()) < 18
    result = runner.invoke(app, ["run", *GRID, "--out", str(out)])
    assert result.exit_code == 0, result.output
    a, b = _trials(tmp_path / "straight"), _trials(out)
    assert list(a.index) == list(b.index)
    for column in ("final_test_loss", "final_train_loss", "final_test_acc", "state"):
        assert a[column].fillna(-1).tolist() == b[column].fillna(-1).tolist(), column
    assert (b.loc[sorted(cut), "resumes"] >= 1).all()  # they continued from their checkpoints
    assert not list((study / "checkpoints").glob("*.pt"))


def test_the_population_size_follows_the_option_and_else_the_memory(monkeypatch, tmp_path):
    from lookbench.coordination.queue import Claimed

    first = plan(load_spec(None, task="digits", epochs=1))[0]
    claimed = Claimed(None, 0, 0, "x", first)  # type: ignore[arg-type]
    opts = WorkerOptions(study_dir=tmp_path, name="s", device="cpu")
    digits_parameters = 64 * 128 + 128 + 128 * 10 + 10
    per_member = digits_parameters * (population_run.BYTES_PER_PARAMETER
                                      + population_run.ACTIVATION_BYTES_PER_PARAMETER)
    monkeypatch.setattr(population_run, "free_memory", lambda device: 10 * per_member * 2)
    assert population_run.member_limit(claimed, opts) == 8  # 10 fit in half: a power of two
    monkeypatch.setattr(population_run, "free_memory", lambda device: 10**12)
    assert population_run.member_limit(claimed, opts) == population_run.AUTO_MAX_MEMBERS["cpu"]
    monkeypatch.setattr(population_run, "free_memory", lambda device: per_member)
    assert population_run.member_limit(claimed, opts) == 1  # none fits twice: one at a time
    opts.population = 5
    assert population_run.member_limit(claimed, opts) == 5  # the option wins


def test_a_kill_between_a_populations_checkpoint_writes_resumes_to_the_same_bits(
        tmp_path, monkeypatch):
    """A SIGKILL while a population's checkpoint files are being written leaves some members
    a save ahead of the others: the population resumes at the earliest, the members ahead
    wait for it, and every result has the bits of an uninterrupted run."""
    _run(tmp_path / "straight")
    out = tmp_path / "cut"
    spec = load_spec(None, task="digits", grid_overrides={
        "lr": [0.03, 0.1, 1000.0], "k": [5, 10], "alpha": [0.5]}, seeds=2, epochs=3)
    prepare(spec, out, None, None, False)
    saves: list[list[tuple[Path, dict]]] = []
    real_submit_all = CheckpointWriter.submit_all

    def keep(self, items):  # every save of the population, as it was submitted
        saves.append([(path, state) for path, state in items])
        real_submit_all(self, items)

    monkeypatch.setattr(CheckpointWriter, "submit_all", keep)
    seen = []

    def cut_off(claimed, record):
        seen.append(record.epoch)
        if len(seen) == 38:  # in the third epoch, after the second epoch's save
            raise KeyboardInterrupt

    opts = WorkerOptions(study_dir=out / spec.study_name, name=spec.study_name,
                         device="cpu", on_epoch=cut_off)
    with pytest.raises(KeyboardInterrupt):
        run_worker(opts)
    monkeypatch.undo()
    assert len(saves) == 2
    # As a kill in the middle of the second save would leave them: half still at the first.
    older = {path: state for path, state in saves[0]}
    behind = sorted(older)[::2]
    for path in behind:
        assert path.exists()
        save_checkpoint(path, older[path])
    epochs = {int(load_checkpoint(p)["trial"]["epoch"]) for p in older}
    assert epochs == {1, 2}
    result = runner.invoke(app, ["run", *GRID, "--out", str(out)])
    assert result.exit_code == 0, result.output
    a, b = _trials(tmp_path / "straight"), _trials(out)
    assert list(a.index) == list(b.index)
    assert set(b["population"]) == {18}  # not one at a time
    for column in ("final_test_loss", "final_train_loss", "final_test_acc", "state"):
        assert a[column].fillna(-1).tolist() == b[column].fillna(-1).tolist(), column
