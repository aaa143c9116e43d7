"""More seeds where the verdict is undecided (``--seeds auto`` / ``max_seeds``): which trials each
stage adds, when it stops, and that the plan is a function of the recorded outcomes alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lookbench import stats
from lookbench.study import seeds
from lookbench.study.spec import SpecError, load_spec

LRS = [0.01, 0.1, 1.0]
FACTS = {"chance_level": 0.1, "loss_floor": None, "initial_loss": None, "deterministic": False}


def _spec(max_seeds: int | None = 8):
    return load_spec(None, task="digits", seeds=3, max_seeds=max_seeds, epochs=2,
                     grid={"lookahead": [{"lr": LRS, "k": [5], "alpha": [0.5]},
                                         {"lr": [0.1], "k": [10], "alpha": [0.8]}],
                           "sgd": {"lr": LRS}})


def _outcomes(planned: dict, value) -> list:
    """An outcome for every planned trial: ``value(config)`` is its final accuracy."""
    return [(c, "complete", value(c)) for c in planned.values()]


def _frame(outcomes):
    return seeds.outcomes_frame(outcomes, "test_acc")


def test_a_fixed_study_plans_its_seeds_only():
    spec = _spec(max_seeds=None)
    planned, stop = seeds.full_plan(spec, _frame([]), "test_acc", True, FACTS)
    assert len(planned) == (3 + 1 + 3) * 3 and stop is None
    assert not seeds.sequential(spec) and seeds.boundaries(spec) == [3]


def test_an_undecided_verdict_adds_seeds_to_the_matched_settings_only():
    spec = _spec()
    assert seeds.boundaries(spec) == stats.schedule(3, 8) == [3, 5, 8]
    first, stop = seeds.full_plan(spec, _frame([]), "test_acc", True, FACTS)
    assert stop is None and {c.seed for c in first.values()} == {0, 1, 2}
    # Every trial of the first stage recorded, in a way 3 seeds cannot decide (no interval is
    # possible with 3): the next stage adds seeds 3 and 4, to the 6 matched settings only.
    rng = np.random.default_rng(0)
    noisy = lambda c: 0.9 + 0.02 * rng.standard_normal()  # noqa: E731
    outcomes = _outcomes(first, noisy)
    second, stop = seeds.full_plan(spec, _frame(outcomes), "test_acc", True, FACTS)
    added = [c for tid, c in second.items() if tid not in first]
    assert stop is None and sorted({c.seed for c in added}) == [3, 4]
    assert len(added) == 2 * 6
    assert all(c.k in (None, 5) for c in added)  # the k = 10, α = 0.8 point is not matched
    # The plan depends on the outcomes only: the same outcomes plan the same trials.
    again, _ = seeds.full_plan(spec, _frame(list(reversed(outcomes))), "test_acc", True, FACTS)
    assert list(again) == list(second)


def test_a_decided_verdict_stops_and_a_cap_stops_an_undecided_one():
    spec = _spec()
    planned, _ = seeds.full_plan(spec, _frame([]), "test_acc", True, FACTS)
    # Lookahead trains well at all three learning rates in every sweep, SGD at one: decided at
    # the first look that can bracket (8 seeds: looks(3, 8) shares 95% over one look there).
    clear = lambda c: 0.95 if (c.optimizer == "lookahead" or c.lr == 0.1) else 0.5  # noqa
    outcomes = []
    for _ in range(3):
        outcomes = _outcomes(planned, clear)
        planned, stop = seeds.full_plan(spec, _frame(outcomes), "test_acc", True, FACTS)
    assert stop == "every verdict line was decided with 8 seeds"
    assert max(c.seed for c in planned.values()) == 7
    # A coin toss never decides: the cap ends it, and says so.
    rng = np.random.default_rng(1)
    coin = lambda c: 0.9 + 0.05 * rng.standard_normal()  # noqa: E731
    planned, _ = seeds.full_plan(spec, _frame([]), "test_acc", True, FACTS)
    for _ in range(3):
        planned, stop = seeds.full_plan(spec, _frame(_outcomes(planned, coin)), "test_acc",
                                        True, FACTS)
    assert stop == "the cap of 8 seeds was reached before every line was decided"


def test_seeds_auto_starts_with_the_study_files_seeds_and_caps_at_20(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('task = "digits"\nseeds = 5\n')
    spec = load_spec(study, seeds="auto")
    assert (spec.seeds, spec.max_seeds) == (5, 20)
    assert load_spec(None, task="digits", seeds="auto").seeds == 3
    assert load_spec(None, task="digits", seeds="auto", max_seeds=8).max_seeds == 8


def test_the_stage_of_a_seed_and_the_spec_checks():
    bounds = [3, 5, 8]
    assert [seeds.stage(s, bounds) for s in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(SpecError, match="max_seeds: 2 is fewer than the 3 seeds"):
        _spec(max_seeds=2)
    with pytest.raises(SpecError, match="needs the grid sampler"):
        load_spec(None, task="digits", seeds=3, max_seeds=8, sampler="random", trials=2)


def test_populations_of_a_stage_never_change_when_a_later_stage_is_planned():
    """A population's layout sets its members' last bits: the first stage's populations must be
    the same whether or not later stages exist."""
    from lookbench.coordination.queue import Claimed
    from lookbench.execution.population.run import _chunk

    spec = _spec()
    first, _ = seeds.full_plan(spec, _frame([]), "test_acc", True, FACTS)
    rng = np.random.default_rng(0)
    grown, _ = seeds.full_plan(spec, _frame(_outcomes(first, lambda c: 0.9 + 0.02 *
                                                      rng.standard_normal())),
                               "test_acc", True, FACTS)
    assert len(grown) > len(first)
    bounds = seeds.boundaries(spec)
    for tid, config in itertools.islice(first.items(), 0, None, 5):
        claimed = Claimed(lookbench_id=tid, config=config, study=None, storage_id=0, number=0)
        alone = _chunk(claimed, first, 4, bounds)
        after = _chunk(claimed, grown, 4, bounds)
        assert alone == after


@pytest.mark.slow
def test_seeds_auto_on_digits_stops_resumes_to_nothing_and_keeps_the_first_stage(tmp_path):
    """``--seeds auto`` end to end: it stops with a reason, the report says what it decided
    (or why not), a re-run adds nothing, and the seeds planned first compute exactly what a
    study of those seeds alone computes (stages are populated apart)."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from lookbench.cli import app

    runner = CliRunner()
    grid = ["digits", "--lr", "0.03,0.3,3", "--momentum", "0.9", "--k", "5", "--alpha", "0.5",
            "--epochs", "3", "--devices", "cpu", "--workers", "2", "--out", str(tmp_path)]
    auto = runner.invoke(app, ["run", *grid, "--seeds", "auto", "--max-seeds", "8",
                               "--study", "auto"])
    assert auto.exit_code == 0, auto.output + auto.stderr
    assert "seeds: " in auto.output
    trials = pd.read_parquet(tmp_path / "auto" / "trials")
    assert trials["seed"].max() >= 4  # 3 seeds bracket nothing: it had to add some
    assert trials["trial"].is_unique
    again = runner.invoke(app, ["run", *grid, "--seeds", "auto", "--max-seeds", "8",
                                "--study", "auto"])
    assert again.exit_code == 0, again.output + again.stderr
    assert len(pd.read_parquet(tmp_path / "auto" / "trials")) == len(trials)
    fixed = runner.invoke(app, ["run", *grid, "--seeds", "3", "--study", "fixed"])
    assert fixed.exit_code == 0, fixed.output + fixed.stderr
    first = trials[trials["seed"] < 3].set_index("trial")["final_test_acc"].sort_index()
    alone = pd.read_parquet(tmp_path / "fixed" / "trials").set_index("trial")[
        "final_test_acc"].sort_index()
    pd.testing.assert_series_equal(first, alone)
    report = runner.invoke(app, ["report", str(tmp_path / "auto"), "--out",
                                 str(tmp_path / "reports")])
    assert report.exit_code == 0, report.output
    js = json.loads((tmp_path / "reports" / "auto.json").read_text())
    assert js["inference"]["looks"] and js["inference"]["level"] > 0.95
    comparison = js["comparisons"][0]
    if not comparison["verdict"]["decided"]:
        assert "cannot tell" in js["verdict"]


def test_a_stage_planned_with_a_reason_to_stop_does_not_break_the_worker(tmp_path,
                                                                          monkeypatch):
    """A worker re-plans when idle; the plan's second value (why the study stopped adding
    seeds, or None) once overwrote the worker's ``stop`` event, and a plan that both added
    trials and gave a reason crashed it (``'str' object has no attribute 'is_set'``), seen on
    two machines sharing a database."""
    from typer.testing import CliRunner

    from lookbench.cli import app

    real = seeds.current_plan
    calls = []

    def current_plan(*args, **kwargs):
        planned, why = real(*args, **kwargs)
        calls.append(len(planned))
        return planned, why or "some lines were decided"

    monkeypatch.setattr(seeds, "current_plan", current_plan)
    result = CliRunner().invoke(app, [
        "run", "digits", "--lr", "0.03,0.3,3", "--momentum", "0.9", "--k", "5", "--alpha",
        "0.5", "--epochs", "2", "--seeds", "auto", "--max-seeds", "8", "--devices", "cpu",
        "--workers", "1", "--population", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(set(calls)) > 1  # (a stage was added while a reason was given)
