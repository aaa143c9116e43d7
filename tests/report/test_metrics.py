"""Robustness metrics on hand-made tables with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lookbench.report import load_study
from lookbench.report.metrics import (
    bootstrap_intervals,
    config_scores,
    expected_best,
    robustness,
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


def test_robustness_metrics(known_study):
    data = load_study(known_study)
    la, sgd = robustness(data.trials, data.metric, data.maximize)
    assert la.optimizer == "lookahead" and sgd.optimizer == "sgd"
    assert la.best == pytest.approx(0.90) and sgd.best == pytest.approx(0.895)
    assert la.median == pytest.approx(0.70)  # median of 0.90, 0.80, 0.60, 0.35
    assert sgd.median == pytest.approx(0.4475)
    # Study best 0.90: within 1% means ≥ 0.891; within 5% means ≥ 0.855.
    assert la.within_1 == pytest.approx(0.25) and sgd.within_1 == pytest.approx(0.5)
    assert la.within_5 == pytest.approx(0.25) and sgd.within_5 == pytest.approx(0.5)
    assert la.divergence_rate == pytest.approx(1 / 8) and sgd.divergence_rate == 0.5


def test_losses_rank_the_other_way():
    import pandas as pd

    trials = pd.DataFrame({
        "optimizer": ["sgd"] * 3, "inner": ["sgd"] * 3, "lr": [0.1, 0.2, 0.3],
        "momentum": [0.9] * 3, "weight_decay": [None] * 3, "k": [None] * 3,
        "alpha": [None] * 3, "alpha_adaptive": [False] * 3, "inner_state": [None] * 3,
        "state": ["complete", "complete", "diverged"], "final_test_loss": [1.0, 1.04, None],
    })
    (r,) = robustness(trials, "test_loss", maximize=False)
    assert r.best == 1.0 and r.median == pytest.approx(1.04)  # diverged = worst loss (1.04)
    assert r.within_1 == pytest.approx(1 / 3)
    assert r.within_5 == pytest.approx(2 / 3)  # the diverged one never counts as good


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


def test_bootstrap_intervals_bracket_the_estimates(known_study):
    data = load_study(known_study)
    ci = bootstrap_intervals(data.trials, data.metric, data.maximize, reps=400)
    la = robustness(data.trials, data.metric, data.maximize)[0]
    lo, hi = ci["best"]["lookahead"]
    assert lo <= la.best <= hi and lo >= 0.89 and hi <= 0.91
    lo, hi = ci["divergence_rate"]["sgd"]
    assert lo == hi == 0.5  # both seeds diverged at lr 1.0 whatever is resampled
    single = data.trials[data.trials.seed == 0]
    assert bootstrap_intervals(single, data.metric, data.maximize) is None
