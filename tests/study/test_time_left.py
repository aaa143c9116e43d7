"""The time a study has left: from its own finished trials' cost per epoch, per optimizer and
device, over the trials that run at once (``lookbench.progress.time_left``), as ``run``'s progress
line and ``status``'s title show it."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.progress.time_left import estimate, format_duration, observed_parallel

T0 = pd.Timestamp("2026-12-07 12:00", tz="UTC")


def rows(*specs: tuple[str, float, int, float, str]) -> pd.DataFrame:
    """(optimizer, wall_s, epochs_done, finished seconds after T0, device) per trial."""
    return pd.DataFrame([
        {"trial": f"t{i}", "optimizer": o, "state": "complete", "wall_s": w, "epochs_done": e,
         "finished_at": T0 + pd.Timedelta(seconds=s), "device": d}
        for i, (o, w, e, s, d) in enumerate(specs)])


def test_each_optimizer_is_charged_its_own_cost_per_epoch():
    trials = rows(("lookahead", 20.0, 10, 20, "cpu"), ("lookahead", 22.0, 10, 42, "cpu"),
                  ("sgd", 10.0, 10, 52, "cpu"), ("sgd", 10.0, 10, 62, "cpu"))
    # lookahead: 2.1 s/epoch (median of 2.0 and 2.2); sgd: 1.0 s/epoch
    left = estimate(trials, {"lookahead": 30, "sgd": 40}, parallel=2)
    assert left is not None
    assert left.seconds == pytest.approx((30 * 2.1 + 40 * 1.0) / 2)
    assert left.based_on == 4


def test_an_optimizer_not_seen_yet_costs_what_an_epoch_costs_overall():
    trials = rows(("sgd", 10.0, 10, 10, "cpu"), ("sgd", 30.0, 10, 40, "cpu"))
    left = estimate(trials, {"lookahead": 10}, parallel=1)
    assert left is not None and left.seconds == pytest.approx(10 * 2.0)


def test_epochs_on_another_device_do_not_count_where_this_one_has_its_own():
    trials = rows(("sgd", 100.0, 10, 10, "cpu"), ("sgd", 100.0, 10, 20, "cpu"),
                  ("sgd", 1.0, 10, 30, "cuda:0"), ("sgd", 1.0, 10, 40, "cuda:0"))
    gpu = estimate(trials, {"sgd": 100}, parallel=1, devices={"cuda:0"})
    cpu = estimate(trials, {"sgd": 100}, parallel=1, devices={"cpu"})
    assert gpu is not None and cpu is not None
    assert gpu.seconds == pytest.approx(10.0) and cpu.seconds == pytest.approx(1000.0)


def test_too_few_finished_trials_give_no_estimate_and_failures_do_not_count():
    assert estimate(pd.DataFrame(), {"sgd": 10}, parallel=1) is None
    one = rows(("sgd", 10.0, 10, 10, "cpu"))
    assert estimate(one, {"sgd": 10}, parallel=1) is None
    failed = rows(("sgd", 10.0, 10, 10, "cpu"), ("sgd", 0.1, 1, 20, "cpu"))
    failed.loc[1, "state"] = "failed"
    assert estimate(failed, {"sgd": 10}, parallel=1) is None


def test_a_finished_study_has_nothing_left():
    trials = rows(("sgd", 10.0, 10, 10, "cpu"), ("sgd", 10.0, 10, 20, "cpu"))
    left = estimate(trials, {"sgd": 0}, parallel=1)
    assert left is not None and left.seconds == 0


def test_how_many_ran_at_once_is_read_from_when_they_finished():
    # two at a time, each 10 s: two finish every 10 s
    two = rows(*[("sgd", 10.0, 5, 10 * (i // 2 + 1), "cpu") for i in range(10)])
    assert observed_parallel(two) == pytest.approx(2.0, rel=0.15)
    one = rows(*[("sgd", 10.0, 5, 10 * (i + 1), "cpu") for i in range(10)])
    assert observed_parallel(one) == pytest.approx(1.0, rel=0.15)
    # one population's members all finish at one moment: nothing to read from
    burst = rows(*[("sgd", 2.0, 5, 30, "cpu") for _ in range(8)])
    assert observed_parallel(burst) is None
    left = estimate(burst, {"sgd": 10}, parallel=None)
    assert left is not None and left.parallel == 1.0


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (42, "42 s"), (150, "2 min"),
                                            (3600, "1 h"), (4800, "1 h 20 min"),
                                            (3 * 86400, "3.0 days")])
def test_durations_read_as_an_estimate_should(seconds, text):
    assert format_duration(seconds) == text


def test_status_says_how_long_an_unfinished_study_has_left(tmp_path):
    runner = CliRunner()
    tiny = ["digits", "--lr", "0.1,0.2", "--k", "5", "--alpha", "0.5", "--epochs", "2",
            "--seeds", "2", "--devices", "cpu", "--workers", "1", "--out", str(tmp_path)]
    assert runner.invoke(app, ["run", *tiny]).exit_code == 0
    done = runner.invoke(app, ["status", "--out", str(tmp_path)], terminal_width=200)
    assert done.exit_code == 0 and "left" not in done.output
    # Half of the trials lose their rows: the study is unfinished again, and not running.
    compacted = tmp_path / "digits-sgd" / "trials" / "compacted.parquet"
    table = pq.read_table(compacted)
    pq.write_table(table.slice(0, 4), compacted)
    half = runner.invoke(app, ["status", "--out", str(tmp_path)], terminal_width=200)
    assert half.exit_code == 0, half.output
    assert "not running (about" in half.output and "left at its last pace" in half.output


def test_the_progress_line_of_run_estimates_from_the_recorded_trials(tmp_path):
    from lookbench.execution.engine import Placement, _time_left
    from lookbench.results import StudyResults
    from lookbench.study.spec import load_spec, lookbench_id, plan

    runner = CliRunner()
    tiny = ["digits", "--lr", "0.1,0.2", "--k", "5", "--alpha", "0.5", "--epochs", "2",
            "--seeds", "2", "--devices", "cpu", "--workers", "1", "--out", str(tmp_path)]
    assert runner.invoke(app, ["run", *tiny]).exit_code == 0
    spec = load_spec(None, task="digits", grid_overrides={"lr": [0.1, 0.2, 0.4], "k": [5],
                                                          "alpha": [0.5]}, epochs=2, seeds=2)
    planned = {lookbench_id(c): c for c in plan(spec)}  # 4 of its 12 trials not run yet
    results = StudyResults(tmp_path / "digits-sgd")
    trials = results.trials().to_pandas()
    one = [Placement("cpu", None, 1)]
    text = _time_left(results, planned, len(planned), 2, one)
    assert text.startswith("about ") and text.endswith(" left")
    # 4 trials of 2 epochs left, at the median cost per epoch of each optimizer, one at a time
    per_epoch = (trials["wall_s"] / trials["epochs_done"]).groupby(trials["optimizer"]).median()
    expected = 2 * 2 * (per_epoch["lookahead"] + per_epoch["sgd"])
    from lookbench.progress.time_left import format_duration
    assert text == f"about {format_duration(expected)} left"
    two = _time_left(results, planned, len(planned), 2, one * 2)
    assert two == f"about {format_duration(expected / 2)} left"


def test_status_writes_scores_in_the_reports_units(tmp_path):
    """An accuracy in % with its spread in percentage points, as the report page writes it."""
    runner = CliRunner()
    tiny = ["digits", "--lr", "0.1", "--k", "5", "--alpha", "0.5", "--epochs", "1",
            "--seeds", "2", "--devices", "cpu", "--workers", "1", "--runs", str(tmp_path)]
    assert runner.invoke(app, ["run", *tiny]).exit_code == 0
    shown = runner.invoke(app, ["status", "--runs", str(tmp_path)], terminal_width=200).output
    line = next(t for t in shown.splitlines() if t.strip().startswith("sgd"))
    import re
    assert re.search(r"\d+\.\d\d%±\d+\.\d\d pp n=2", line), line
