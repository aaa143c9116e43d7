"""The report's rules and descriptive figures on hand-made tables with known answers, and the
order-statistic arithmetic every interval rests on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lookbench import stats
from lookbench.comparison.metrics import (
    annotate,
    best_score,
    config_scores,
    expected_best,
    expected_configs_to_good,
    robustness_by_optimizer,
    span_decades,
)
from lookbench.comparison.rules import Rules, parse_within
from lookbench.report import load_study


def test_config_scores_average_seeds_and_count_divergence_at_the_stand_in(known_study):
    data = load_study(known_study)
    scores = config_scores(data.trials, data.metric, Rules(maximize=True))
    la = scores[scores.optimizer == "lookahead"].set_index(["lr", "alpha"])
    assert la.loc[(0.1, 0.5), "score"] == pytest.approx(0.90)
    assert la.loc[(0.1, 0.8), "score"] == pytest.approx(0.80)
    assert la.loc[(1.0, 0.5), "score"] == pytest.approx(0.60)
    # One seed diverged: it stands in at the worst completed run (0.55) without a chance level.
    assert la.loc[(1.0, 0.8), "score"] == pytest.approx((0.7 + 0.55) / 2)
    assert la.loc[(0.1, 0.5), "seed_min"] == pytest.approx(0.89)
    assert la.loc[(0.1, 0.5), "seed_max"] == pytest.approx(0.91)
    sgd = scores[scores.optimizer == "sgd"].set_index("lr")
    assert sgd.loc[0.1, "score"] == pytest.approx(0.895)
    assert sgd.loc[1.0, "diverged"] == 2
    # With the task's chance level, a diverged run scores exactly chance.
    chance = config_scores(data.trials, data.metric, Rules(maximize=True, chance=0.1))
    assert chance.set_index(["optimizer", "lr"]).loc[("sgd", 1.0), "score"].item() == 0.1


def test_whole_grid_figures_are_against_the_whole_study_best(known_study):
    data = load_study(known_study)
    rules = Rules(maximize=True)
    scores = config_scores(data.trials, data.metric, rules)
    best = best_score(scores, maximize=True)
    assert best == pytest.approx(0.90)  # 0.90 (Lookahead); SGD's lr 1 diverged: not clean
    la, sgd = sorted(robustness_by_optimizer(annotate(scores, rules, best), True, rules.within),
                     key=lambda r: r.optimizer)
    assert la.best == pytest.approx(0.90) and la.best_range == pytest.approx((0.89, 0.91))
    assert la.good == {"0.01": 1, "0.05": 1} and sgd.good == {"0.01": 1, "0.05": 1}
    assert la.divergence_rate == pytest.approx(1 / 8) and sgd.divergence_rate == 0.5


def test_a_failed_run_stands_in_at_chance_or_the_worst_completed_run_or_the_start():
    acc = Rules(maximize=True)
    assert acc.stand_in(np.array([0.5, 0.9, np.nan])) == 0.5
    assert Rules(maximize=True, chance=0.1).stand_in(np.array([0.5, 0.9])) == 0.1
    loss = Rules(maximize=False)
    assert loss.stand_in(np.array([1.0, 1.04])) == 1.04
    assert Rules(maximize=False, initial=2.5).stand_in(np.array([1.0, 1.04])) == 2.5
    # Completed runs count as at most not training: a loss above its start at the start.
    assert Rules(maximize=False, initial=0.5).stand_in(np.array([1.0, 1.04])) == 0.5
    nqm = Rules(maximize=False, initial=52.59)
    assert nqm.cap(np.array([50.2, 1036.7])).tolist() == [50.2, 52.59]
    assert Rules(maximize=True, chance=0.1).cap(np.array([0.05, 0.9])).tolist() == [0.1, 0.9]
    assert Rules(maximize=True).cap(np.array([0.05])).tolist() == [0.05]


def test_runs_that_end_at_chance_or_above_their_start_did_not_train():
    digits = Rules(maximize=True, chance=0.1028)
    assert list(digits.trained(np.array([0.0972, 0.1028, 0.11, 0.2, np.nan]))) == [
        False, False, False, True, False]  # 0.11 is within 1% of the way to 100%
    nqm = Rules(maximize=False, initial=52.6)
    assert list(nqm.trained(np.array([53.3, 52.6, 50.2]))) == [False, False, True]
    assert Rules(maximize=False).trained(np.array([1e9])).all()  # nothing known: trained


def test_within_eps_for_accuracy_loss_with_a_start_loss_with_a_floor_and_absolute():
    acc = Rules(maximize=True)
    assert acc.good(np.array([0.891, 0.890]), 0.9, 0.01).tolist() == [True, False]
    # The noisy quadratic: floor 50, start 52.59, best 50.155. Within 5% of the improvement
    # (2.44 × 5% = 0.122): the neighbouring learning rates at 50.19 and 50.26 are both good,
    # which the excess rule (excess within 1.05× of 0.155) would never allow.
    nqm = Rules(maximize=False, initial=52.59, floor=50.0)
    assert nqm.good(np.array([50.19, 50.264, 50.30]), 50.155, 0.05).tolist() == [
        True, True, False]
    excess = Rules(maximize=False, floor=50.0)
    assert excess.good(np.array([50.16, 50.19]), 50.155, 0.05).tolist() == [True, False]
    plain = Rules(maximize=False)
    assert plain.good(np.array([1.009, 1.011]), 1.0, 0.01).tolist() == [True, False]
    absolute = Rules(maximize=False, absolute=True, within=(0.1,))
    assert absolute.good(np.array([1.09, 1.11]), 1.0, 0.1).tolist() == [True, False]
    # The gap is in units of the tolerance at ε = 1: exactly ε at the edge of ε-good.
    assert acc.gap(0.891, 0.9) == pytest.approx(0.01)
    assert nqm.gap(50.155 + 0.01 * (52.59 - 50.155), 50.155) == pytest.approx(0.01)


def test_within_is_parsed_as_tolerances():
    assert parse_within("0.005,0.02") == (0.005, 0.02)
    assert parse_within("0.05, 0.01") == (0.01, 0.05)
    assert parse_within(None) is None
    for bad in ("0", "-0.1", "x", "nan"):
        with pytest.raises(ValueError):
            parse_within(bad)


def test_expected_configurations_to_good_and_span():
    assert expected_configs_to_good(6, 2) == pytest.approx(7 / 3)
    assert expected_configs_to_good(6, 6) == pytest.approx(1.0)
    assert expected_configs_to_good(6, 0) is None
    flags = [1, 1, 0, 0, 0]
    firsts = [next(i for i, f in enumerate(p, 1) if f)
              for p in itertools.permutations(flags)]
    assert np.mean(firsts) == pytest.approx(expected_configs_to_good(5, 2))
    assert span_decades([0.01, 0.1, 1.0]) == pytest.approx(2.0)
    assert span_decades([0.3]) == 0.0 and span_decades([]) is None


def test_expected_best_after_n_random_configurations():
    s = np.array([0.2, 0.5, 0.9])
    curve = expected_best(s, 3, maximize=True)
    assert curve[0] == pytest.approx(s.mean())
    assert curve[1] == pytest.approx(0.2 / 9 + 0.5 * 3 / 9 + 0.9 * 5 / 9)
    assert np.all(np.diff(curve) > 0) and curve[-1] < 0.9
    losses = expected_best(np.array([3.0, 1.0, 2.0]), 2, maximize=False)
    assert losses[0] == pytest.approx(2.0) and losses[1] == pytest.approx(
        3.0 / 9 + 2.0 * 3 / 9 + 1.0 * 5 / 9)


def test_order_statistic_coverage_is_the_exact_binomial_sum():
    """P(x_(j) ≤ median ≤ x_(n−j+1)) by enumerating which values fall below the median."""
    for n in range(2, 12):
        for j in range(1, (n + 1) // 2 + 1):
            below = sum(math.comb(n, k) for k in range(j)) / 2 ** n  # fewer than j below
            assert stats.coverage(n, j) == pytest.approx(1 - 2 * below)
    assert stats.order_index(3) is None and stats.order_index(4) is None
    assert stats.order_index(5) == 1 and stats.coverage(5, 1) == pytest.approx(0.9375)
    assert stats.order_index(9) == 2 and stats.coverage(9, 2) >= 0.95
    assert stats.fewest() == 5


def test_the_median_interval_is_the_order_statistics_and_none_below_five():
    iv = stats.median_interval([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (iv.estimate, iv.low, iv.high, iv.n) == (3.0, 1.0, 5.0, 5)
    assert iv.coverage == pytest.approx(0.9375)
    three = stats.median_interval([1.0, 2.0, 3.0])
    assert three.estimate == 2.0 and not three.bracketed and three.coverage is None
    nine = stats.median_interval(np.arange(9.0))
    assert (nine.low, nine.high) == (1.0, 7.0)


def test_planned_seeds_reach_the_power_they_promise():
    """Under the planning model (normal values), the seeds :func:`seeds_to_detect` proposes
    bracket the difference away from zero about 80% of the time, and one seed fewer less."""
    rng = np.random.default_rng(11)
    for diff, sd in ((1.0, 1.0), (0.5, 1.0), (2.0, 1.0)):
        n = stats.seeds_to_detect(diff, sd)
        hits = 0
        for _ in range(2000):
            iv = stats.median_interval(rng.normal(diff, sd, n))
            hits += iv.bracketed and iv.low > 0
        assert hits / 2000 >= 0.76, (diff, n, hits)
    assert stats.seeds_to_detect(0.0, 1.0) is None
    assert stats.detectable(3, 1.0) is None  # 3 seeds bracket nothing
    assert stats.detectable(20, 1.0) < stats.detectable(5, 1.0)


def test_a_sequential_plan_shares_the_error_rate_over_its_looks():
    looks, level, minimum = stats.looks(3, 20)
    assert looks == [8, 12, 18, 20] and level == pytest.approx(1 - 0.05 / 4)
    # Every look can bracket at its level, and together they hold 95% (Bonferroni).
    assert all(stats.order_index(n, level, minimum) for n in looks)
    assert len(looks) * (1 - level) <= 0.05 + 1e-12
    assert stats.looks(5, 5) == ([5], 0.95, 0.93)
