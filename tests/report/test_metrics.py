"""Robustness metrics on hand-made tables with known answers, and the intervals' coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookbench.report import load_study
from lookbench.report.metrics import (
    Scoring,
    annotate,
    config_scores,
    expected_best,
    expected_configs_to_good,
    paired_difference,
    reference_best,
    robustness,
    span_decades,
    t_interval,
    worst_value,
)


def test_config_scores_average_seeds_and_count_divergence_as_the_worst(known_study):
    data = load_study(known_study)
    scores = config_scores(data.trials, data.metric, data.maximize)
    la = scores[scores.optimizer == "lookahead"].set_index(["lr", "alpha"])["score"]
    assert la[(0.1, 0.5)] == pytest.approx(0.90)
    assert la[(0.1, 0.8)] == pytest.approx(0.80)
    assert la[(1.0, 0.5)] == pytest.approx(0.60)
    assert la[(1.0, 0.8)] == pytest.approx(0.35)  # one seed diverged: (0.7 + 0) / 2
    sgd = scores[scores.optimizer == "sgd"].set_index("lr")
    assert sgd.loc[0.1, "score"] == pytest.approx(0.895)
    assert sgd.loc[1.0, "score"] == 0.0 and sgd.loc[1.0, "diverged"] == 2


def test_whole_grid_robustness_with_counts_and_plausible_ranges(known_study):
    data = load_study(known_study)
    la, sgd = robustness(data.trials, data.metric, data.maximize)
    assert la.optimizer == "lookahead" and sgd.optimizer == "sgd"
    assert la.best == pytest.approx(0.90) and sgd.best == pytest.approx(0.895)
    assert la.median == pytest.approx(0.70)  # median of 0.90, 0.80, 0.60, 0.35
    # Study best 0.90: within 1% means ≥ 0.891; within 5% means ≥ 0.855.
    assert la.good == {"0.01": 1, "0.05": 1} and sgd.good == {"0.01": 1, "0.05": 1}
    assert la.within_1 == pytest.approx(0.25) and sgd.within_1 == pytest.approx(0.5)
    assert la.divergence_rate == pytest.approx(1 / 8) and sgd.divergence_rate == 0.5
    # Two seeds 0.89/0.91: t-interval 0.90 ± 12.71·0.01/√2·√2 = [0.773, 1.027].
    lo, hi = la.best_interval
    assert lo == pytest.approx(0.9 - 12.7062 * 0.01, abs=1e-3) and hi > 1.0
    # The best configuration is surely good (its gap is 0 whatever the interval says is only
    # optimistic); (0.1, 0.8) at 0.80 exactly (no spread) is surely not.
    assert la.good_range["0.01"][0] <= 1 <= la.good_range["0.01"][1]


def test_losses_rank_the_other_way_and_a_diverged_run_counts_as_the_worst_completed():
    trials = pd.DataFrame({
        "optimizer": ["sgd"] * 3, "inner": ["sgd"] * 3, "lr": [0.1, 0.2, 0.3],
        "momentum": [0.9] * 3, "weight_decay": [None] * 3, "k": [None] * 3,
        "alpha": [None] * 3, "alpha_adaptive": [False] * 3, "inner_state": [None] * 3,
        "state": ["complete", "complete", "diverged"],
        "final_test_loss": [1.0, 1.04, 5e88],  # the diverged run's last loss is not its score
        "finished_at": pd.Timestamp("2026-01-01"),
    })
    assert worst_value(trials, "test_loss", maximize=False) == 1.04
    assert worst_value(trials, "test_loss", maximize=False, initial=2.5) == 2.5
    (r,) = robustness(trials, "test_loss", maximize=False)
    assert r.best == 1.0 and r.median == pytest.approx(1.04)
    assert r.within_1 == pytest.approx(1 / 3)
    assert r.within_5 == pytest.approx(2 / 3)  # the diverged one never counts as good


def test_a_loss_with_a_floor_compares_the_excess_over_it():
    """The noisy quadratic's loss cannot go below ½Σaσ²: 10.2 against a best of 10.1 is twice
    the best excess over a floor of 10, not 1% worse."""
    with_floor = Scoring(maximize=False, best=10.1, floor=10.0)
    without = Scoring(maximize=False, best=10.1)
    assert with_floor.gap(10.2) == pytest.approx(1.0)
    assert without.gap(10.2) == pytest.approx(0.1 / 10.1)
    assert with_floor.gap(10.1) == 0.0
    higher = Scoring(maximize=True, best=0.9)
    assert higher.gap(0.891) == pytest.approx(0.01)
    assert Scoring(maximize=True, best=None).gap(0.5) == np.inf


def test_annotate_flags_good_sure_and_maybe():
    scores = pd.DataFrame({
        "optimizer": ["a", "a", "a", "a"], "lr": [0.1, 0.2, 0.3, 0.4],
        "score": [0.90, 0.895, 0.80, 0.95], "std": [0.0, 0.01, 0.0, 0.0],
        "seeds": [3, 3, 3, 3], "diverged": [0, 0, 0, 1],
        "ci_low": [0.90, 0.87, 0.80, 0.95], "ci_high": [0.90, 0.92, 0.80, 0.95],
    })
    best = reference_best(scores, maximize=True)
    assert best == 0.90  # the diverged configuration's 0.95 is not a reference
    a = annotate(scores, Scoring(True, best)).set_index("lr")
    assert a.loc[0.1, "good_0.01"] and a.loc[0.1, "sure_0.01"]
    assert a.loc[0.2, "good_0.01"] and a.loc[0.2, "maybe_0.01"] and not a.loc[0.2, "sure_0.01"]
    assert not a.loc[0.3, "maybe_0.05"]
    assert not a.loc[0.4, "maybe_0.01"]  # diverged in a seed: never good


def test_expected_configurations_to_good_and_span():
    assert expected_configs_to_good(6, 2) == pytest.approx(7 / 3)
    assert expected_configs_to_good(6, 6) == pytest.approx(1.0)
    assert expected_configs_to_good(6, 0) is None
    # Brute force: the mean position of the first good one over every order.
    import itertools

    flags = [1, 1, 0, 0, 0]
    firsts = [next(i for i, f in enumerate(p, 1) if f)
              for p in itertools.permutations(flags)]
    assert np.mean(firsts) == pytest.approx(expected_configs_to_good(5, 2))
    assert span_decades([0.01, 0.1, 1.0]) == pytest.approx(2.0)
    assert span_decades([0.3]) == 0.0 and span_decades([]) is None


def test_expected_best_after_n_random_configurations():
    s = np.array([0.2, 0.5, 0.9])
    curve = expected_best(s, 3, maximize=True)
    assert curve[0] == pytest.approx(s.mean())  # one draw: the mean
    # two draws with replacement: P(max = i-th) = (i/3)^2 − ((i−1)/3)^2
    assert curve[1] == pytest.approx(0.2 / 9 + 0.5 * 3 / 9 + 0.9 * 5 / 9)
    assert np.all(np.diff(curve) > 0) and curve[-1] < 0.9
    losses = expected_best(np.array([3.0, 1.0, 2.0]), 2, maximize=False)
    assert losses[0] == pytest.approx(2.0) and losses[1] == pytest.approx(
        3.0 / 9 + 2.0 * 3 / 9 + 1.0 * 5 / 9)


def test_the_95_percent_interval_of_a_configuration_holds_its_coverage_with_3_seeds():
    """2,000 configurations whose seeds are normal around a known mean: the interval the
    report prints must cover that mean in at least 90% of them (a percentile bootstrap over 3
    seeds covers about 74%)."""
    rng = np.random.default_rng(2026)
    n_cfg, seeds, mean, sd = 2000, 3, 0.9, 0.02
    values = rng.normal(mean, sd, size=(n_cfg, seeds))
    trials = pd.DataFrame({
        "optimizer": "sgd", "inner": "sgd", "lr": np.repeat(np.arange(1, n_cfg + 1) / 1e4, seeds),
        "momentum": 0.9, "weight_decay": np.nan, "k": np.nan, "alpha": np.nan,
        "alpha_adaptive": False, "inner_state": None, "seed": np.tile(np.arange(seeds), n_cfg),
        "state": "complete", "final_test_acc": values.ravel(),
        "finished_at": pd.Timestamp("2026-01-01"),
    })
    scores = config_scores(trials, "test_acc", maximize=True)
    covered = (scores["ci_low"] <= mean) & (mean <= scores["ci_high"])
    assert len(scores) == n_cfg
    assert covered.mean() >= 0.90
    assert covered.mean() <= 0.99  # and it is not trivially wide
    assert t_interval(np.array([0.5])) is None  # one seed: no interval


def test_the_paired_difference_holds_its_coverage_and_uses_the_shared_seed():
    """Seed s shifts both optimizers alike (same initialisation and data order): the paired
    interval of the difference covers the true difference ≥ 90% of the time, and is much
    narrower than treating the two as independent."""
    rng = np.random.default_rng(7)
    true_diff, covered, widths = 0.01, 0, []
    for _ in range(2000):
        seed_effect = rng.normal(0, 0.05, size=3)
        la = 0.90 + true_diff + seed_effect + rng.normal(0, 0.005, size=3)
        base = 0.90 + seed_effect + rng.normal(0, 0.005, size=3)
        d = paired_difference(la - base)
        covered += d.low <= true_diff <= d.high
        widths.append(d.high - d.low)
    assert covered / 2000 >= 0.90
    lo, hi = t_interval(np.r_[la, base])  # an unpaired width, for scale
    assert np.median(widths) < (hi - lo) / 2
    one = paired_difference(np.array([0.02]))
    assert one.low is None and one.high is None and not one.clear


def test_a_ratio_is_clear_only_when_its_interval_excludes_one():
    from lookbench.report.metrics import Difference

    assert not Difference(1.02, 0.98, 1.06, n=10, no_difference=1.0).clear
    assert Difference(1.09, 1.04, 1.14, n=10, no_difference=1.0).clear
    assert Difference(-0.02, -0.03, -0.01, n=3).clear
