"""The verdict's intervals hold their coverage under realistic noise, and its directions are
right on studies whose answer is known.

Each simulated study is a digits-like comparison: 7 learning rates × 2 momenta per optimizer,
true mean accuracies taken from the real digits study, and six ways runs scatter around them
(normal; clipped at 100%; binomial test-set noise; skewed; settings that land in one of two
basins; 10% of runs that diverge or end at chance). Every figure the verdict states is a
per-sweep statistic summarised by its median over sweeps (``lookbench.comparison.sweeps``); its
true value is that median, found from 60,000 sweeps. The intervals come from the very functions
the report calls, on thousands of studies at once (each sweep is one column of the table).
"""

from __future__ import annotations

import numpy as np
import pytest

from lookbench import stats
from lookbench.comparison.metrics import completed_values  # noqa: F401 (the report's own path)
from lookbench.comparison.rules import Rules
from lookbench.comparison.sweeps import SweepTable, lines, statistics

LRS = np.array([0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0] * 2)
# True mean test accuracy per setting (momentum 0, then 0.9), as the digits study measures.
LA = np.array([0.49, 0.82, 0.90, 0.944, 0.963, 0.973, 0.10,
               0.90, 0.946, 0.965, 0.974, 0.976, 0.41, 0.10])
SGD = np.array([0.74, 0.88, 0.93, 0.957, 0.964, 0.974, 0.10,
                0.931, 0.956, 0.968, 0.974, 0.971, 0.16, 0.10])
CHANCE = 0.1028  # the digits test split's largest class
RULES = Rules(maximize=True, chance=CHANCE)
MODELS = ("normal", "clipped", "binomial", "skewed", "bimodal", "failing")
SD, SEED_SD = 0.004, 0.003  # run noise, and a seed's shift shared by all its runs (paired)


def simulate(model: str, sweeps: int, rng: np.random.Generator,
             la: np.ndarray = LA, sgd: np.ndarray = SGD) -> SweepTable:
    """``sweeps`` independent sweeps of both optimizers under one noise model."""
    shape = (len(la), sweeps)
    shift = rng.normal(0, SEED_SD, sweeps)[None, :]  # a seed moves both optimizers alike
    values, trained = {}, {}
    for side, mu in (("lookahead", la), ("baseline", sgd)):
        mu = np.repeat(mu[:, None], sweeps, axis=1)
        if model == "bimodal":  # two settings of each near the top, one near the edge
            for i, (a, b, p) in {4: (0.976, 0.955, 0.5), 11: (0.976, 0.955, 0.5),
                                 12: (0.55, 0.30, 0.5)}.items():
                mu[i] = np.where(rng.random(sweeps) < p, a, b)
        noise = rng.normal(0, SD, shape)
        if model == "skewed":  # mean zero, a long tail of bad runs
            noise = -(rng.exponential(0.006, shape) - 0.006)
        v = mu + shift + noise
        if model == "clipped":
            v = np.minimum(1.0, mu + 0.024 + shift + noise)
        if model == "binomial":
            v = rng.binomial(360, np.clip(mu + shift, 0, 1)) / 360
        complete = np.ones(shape, bool)
        if model == "failing":
            fail = rng.random(shape) < 0.1
            diverged = fail & (rng.random(shape) < 0.5)
            v = np.where(fail, CHANCE - 0.005, v)  # the others end at chance
            complete = ~diverged
        v = np.where(complete, v, RULES.stand_in(v[complete]) if complete.any() else CHANCE)
        values[side] = v
        trained[side] = complete & RULES.trained(v)
    return SweepTable(LRS, np.arange(sweeps), values, trained)


def _truth(model: str) -> dict[str, float]:
    """The median of every per-sweep figure, from 60,000 sweeps."""
    per = statistics(simulate(model, 60_000, np.random.default_rng(99)), RULES)
    return {k: float(np.quantile(v, 0.5, method="inverted_cdf")) for k, v in per.items()}


def _coverage(model: str, n: int, studies: int, seed: int) -> dict[str, float]:
    """The share of ``studies`` studies of n sweeps whose interval holds each figure's truth."""
    truth = _truth(model)
    per = statistics(simulate(model, studies * n, np.random.default_rng(seed)), RULES)
    j = stats.order_index(n)
    out = {}
    for key, values in per.items():
        if key == "best":
            continue
        v = np.sort(values.reshape(studies, n), axis=1)
        low, high = v[:, j - 1], v[:, n - j]
        out[key] = float(np.mean((low <= truth[key]) & (truth[key] <= high)))
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n", [5, 9])
def test_every_verdict_interval_covers_at_least_93_percent(model, n):
    """20,000 studies per case: the coverage of every figure's interval is at least 93% (the
    order statistics guarantee 93.75% with 5 sweeps, 96.1% with 9; ties only add to it)."""
    cover = _coverage(model, n, 20_000, seed=n * 100 + MODELS.index(model))
    worst = min(cover, key=cover.get)
    if model == "clipped":  # a bounded metric's intervals stay inside its bounds
        per = statistics(simulate(model, 2000, np.random.default_rng(7)), RULES)
        for side in ("lookahead", "baseline"):
            iv = stats.median_interval(per[f"{side}.best"][:n])
            assert iv.high <= 1.0 and iv.low >= 0.0
    assert cover[worst] >= 0.93, (model, n, worst, cover[worst])
    assert set(cover) >= {"diff.lrs@0.01", "diff.mean", "diff.best", "lookahead.lrs@0.05",
                          "baseline.good@0.01", "lookahead.best"}


def test_the_simulation_uses_the_reports_own_interval():
    """The vectorised order statistics above are exactly what ``median_interval`` returns."""
    per = statistics(simulate("skewed", 9, np.random.default_rng(3)), RULES)
    iv = stats.median_interval(per["diff.mean"])
    j = stats.order_index(9)
    v = np.sort(per["diff.mean"])
    assert (iv.low, iv.high) == (v[j - 1], v[9 - j])


def test_a_t_interval_would_not_hold_under_these_models():
    """Why the report does not use Student-t: over 3 seeds, a configuration's t-interval misses
    its true mean score about 72% of the time when a tenth of its runs fail, and about 25% of
    the time for a setting that lands in one of two basins. (Those are the intervals the report
    printed before; the test above is what would catch their return.)"""
    from scipy import stats as scipy_stats

    n = 3
    for model, setting, limit in (("failing", 4, 0.4), ("bimodal", 12, 0.85)):
        true_mean = float(simulate(model, 60_000, np.random.default_rng(5))
                          .values["lookahead"][setting].mean())
        runs = simulate(model, 5000 * n, np.random.default_rng(6)).values["lookahead"][
            setting].reshape(5000, n)
        half = scipy_stats.t.ppf(0.975, n - 1) * runs.std(axis=1, ddof=1) / np.sqrt(n)
        covered = np.mean(np.abs(runs.mean(axis=1) - true_mean) <= half)
        assert covered < limit, (model, covered)


def test_three_seeds_bracket_nothing_and_say_how_many_would():
    per = statistics(simulate("normal", 3, np.random.default_rng(1)), RULES)
    out = lines(per, RULES)
    for line in out.values():
        assert line.interval is not None and not line.interval.bracketed
        assert line.label == "undecided" and line.fewest == 5
        assert line.seeds_needed is None or line.seeds_needed >= 5


# -- directions on studies with a known answer --------------------------------------------------
def _labels(la: np.ndarray, sgd: np.ndarray, model: str, n: int, studies: int,
            rules: Rules = RULES, key: str = "lrs@0.01", seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(("lookahead_better", "baseline_better", "equivalent", "undecided"),
                           0)
    for _ in range(studies):
        out = lines(statistics(simulate(model, n, rng, la, sgd), rules), rules)
        counts[out[key].label] += 1
    return {k: v / studies for k, v in counts.items()}


# With momentum 0.9, Lookahead is at the best (97.7%) at lr 0.01–0.3 (4 rates), SGD at 0.1–0.3
# (2); every other setting is well below 1% of it.
WIDE = np.array([0.40, 0.60, 0.80, 0.90, 0.93, 0.95, 0.10,
                 0.90, 0.977, 0.977, 0.977, 0.977, 0.94, 0.10])
NARROW = np.array([0.40, 0.60, 0.80, 0.90, 0.93, 0.95, 0.10,
                   0.90, 0.93, 0.94, 0.977, 0.977, 0.94, 0.10])


@pytest.mark.parametrize(("model", "n"), [("normal", 9), ("failing", 15)])
def test_a_truly_more_robust_lookahead_is_found_and_never_reversed(model, n):
    """Lookahead truly trains well at two more learning rates: with enough seeds the verdict
    says so in most studies, and never says the opposite; mirrored, the same for SGD."""
    found = _labels(WIDE, NARROW, model, n, 200, seed=1)
    assert found["lookahead_better"] >= 0.8, found
    assert found["baseline_better"] == 0.0
    mirrored = _labels(NARROW, WIDE, model, n, 200, seed=2)
    assert mirrored["baseline_better"] >= 0.8, mirrored
    assert mirrored["lookahead_better"] == 0.0


def test_with_binomial_test_set_noise_more_seeds_decide_more_and_never_wrongly():
    """360 test images make each accuracy as noisy as the 1% band itself: 9 seeds rarely
    decide, 30 mostly do, and no study points the wrong way."""
    few = _labels(WIDE, NARROW, "binomial", 9, 200, seed=3)
    many = _labels(WIDE, NARROW, "binomial", 30, 200, seed=4)
    assert few["baseline_better"] == many["baseline_better"] == 0.0
    assert many["undecided"] < few["undecided"] and many["lookahead_better"] >= 0.5


@pytest.mark.parametrize("model", ["normal", "skewed", "bimodal"])
def test_equal_optimizers_are_rarely_given_a_direction(model):
    """The same optimizer twice: a direction is claimed in at most 5% of studies (each
    direction's error is at most 2.5% by construction), for every line."""
    for key in ("lrs@0.01", "mean", "best"):
        labels = _labels(LA, LA, model, 9, 300, key=key, seed=5)
        assert labels["lookahead_better"] + labels["baseline_better"] <= 0.05, (key, labels)


def test_a_loss_with_a_floor_and_divergence_gets_the_right_direction():
    """A noisy quadratic: floor 50, start 52.6. Lookahead's loss is lower at most learning
    rates and SGD diverges at the two largest (its runs stand in at the start loss): the mean
    score difference favours Lookahead, the counts of good learning rates are decided."""
    rules = Rules(maximize=False, initial=52.6, floor=50.0)
    lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 1.5])
    la_mu = np.array([52.0, 51.5, 50.9, 50.47, 50.17, 50.19, 50.66, 51.2])
    sgd_mu = np.array([51.7, 51.15, 50.62, 50.26, 50.16, 50.41, np.nan, np.nan])
    rng = np.random.default_rng(2)
    labels = {"mean": [], "lrs@0.05": []}
    for _ in range(200):
        n = 9
        la = la_mu[:, None] + rng.normal(0, 0.01, (8, n))
        sgd = sgd_mu[:, None] + rng.normal(0, 0.01, (8, n))
        done = np.isfinite(sgd)
        stand = rules.stand_in(np.concatenate([la.ravel(), sgd[done]]))
        assert stand == 52.6  # the start, not a completed run's loss
        sgd = np.where(done, sgd, stand)
        table = SweepTable(lrs, np.arange(n), {"lookahead": la, "baseline": sgd},
                           {"lookahead": rules.trained(la), "baseline": done & rules.trained(sgd)})
        out = lines(statistics(table, rules), rules)
        for key in labels:
            labels[key].append(out[key].label)
    assert labels["mean"].count("lookahead_better") >= 190
    assert "baseline_better" not in labels["lrs@0.05"]
