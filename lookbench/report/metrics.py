"""Robustness metrics of a study, computed from its trials table alone.

Definitions (the page shows the same words):

- A *run* is one (configuration, seed). Its value is the final metric on the evaluation weights.
  A diverged or failed run counts as the worst outcome (:func:`worst_value`): never better than
  the worst completed run (for a loss, nor than the loss at initialisation where the task knows
  it), so a run that blew up cannot stretch a colour scale, an axis or a mean.
- A *configuration*'s score is the mean of its runs' values over seeds, with a Student-t
  interval over seeds (:func:`t_interval`): with 2–5 seeds a percentile bootstrap covers far
  less than it says (about 74% at a nominal 95% with 3 seeds), the t-interval keeps 95%.
- The *reference best* is the best score of any clean configuration (no seed diverged or
  failed) of any optimizer in the study.
- A configuration's *gap* to the reference best (:meth:`Scoring.gap`): for a metric where higher
  is better, ``(best − score) / |best|``; for a loss whose floor the task knows (the noisy
  quadratic's ½Σaσ², a deterministic quadratic's 0), the excess over the floor relative to the
  best excess, ``(score − floor) / (best − floor) − 1``; for other losses
  ``(score − best) / |best|``.
- A configuration is *ε-good* when it is clean and its gap is at most ε (1% and 5% here).
- *Share within ε*: ε-good configurations ÷ configurations.
- *Expected configurations to ε-good*: drawing configurations at random without replacement,
  the expected number drawn until the first ε-good one, ``(N + 1) / (G + 1)`` for G good of N;
  none when G = 0.
- The *learning-rate range*: the inner learning rates at which an optimizer has an ε-good
  configuration, and their span in decades.

Where seeds give an interval, a count of ε-good configurations has a *plausible range*: from
the configurations that are ε-good at the pessimistic end of their t-interval to those that are
ε-good at its optimistic end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special  # (not scipy.stats, three times as long to import: see t_quantile)

from lookbench import hparams

# A configuration's key columns, from lookbench.hparams: what Lookahead and its baselines share
# (the inner optimizer's hyperparameters), and what is Lookahead's own (and an average's own).
CONFIG_COLUMNS = ["optimizer", "inner", *hparams.columns()]
SHARED = hparams.columns("inner")
LOOKAHEAD_OWN = hparams.columns("lookahead")
AVERAGING_OWN = hparams.columns("averaging")
EPSILONS = (0.01, 0.05)
LEVEL = 0.95
TOLERANCE = 1e-9  # a gap this small is zero: the best configuration is always within ε

# One sentence each, shown beside the tables in the report.
EXPLANATIONS = {
    "best": "the best configuration's score (final metric, mean over seeds) with its 95% "
            "t-interval over seeds",
    "median": "the median score over the configurations (diverged runs at the worst value)",
    "within_1": "the share of configurations that are 1%-good: no seed diverged and the score "
                "is within 1% of the best score of any optimizer in the study (for a loss with "
                "a known floor: the excess over the floor within 1.01× the best excess)",
    "within_5": "the same share within 5%: how wide the good region is",
    "divergence_rate": "the share of runs (configuration × seed) that diverged or failed",
}


def worst_value(trials: pd.DataFrame, metric: str, maximize: bool,
                initial: float | None = None) -> float:
    """What a diverged or failed run scores: never better than the worst completed run; for a
    higher-is-better metric never above 0 (an accuracy's floor), for a loss never below the
    loss at initialisation where the task knows it (``initial``)."""
    done = trials.loc[trials["state"] == "complete", "final_" + metric].astype(float)
    done = done[np.isfinite(done)]
    if maximize:
        return float(min(done.min(), 0.0)) if len(done) else 0.0
    candidates = [float(done.max())] if len(done) else []
    if initial is not None and math.isfinite(initial):
        candidates.append(float(initial))
    return max(candidates) if candidates else float("nan")


def run_values(trials: pd.DataFrame, metric: str, maximize: bool,
               worst: float | None = None) -> pd.Series:
    """Each run's final metric, with diverged/failed runs (or a missing value) at ``worst``."""
    if worst is None:
        worst = worst_value(trials, metric, maximize)
    values = trials["final_" + metric].astype(float)
    bad = (trials["state"] != "complete") | ~np.isfinite(values.fillna(np.nan))
    return values.mask(bad, worst)


def t_quantile(q: float, df: int | np.ndarray) -> float | np.ndarray:
    """Student's t quantile ``q`` with ``df`` degrees of freedom: ``scipy.stats.t.ppf(q, df)``
    for q in (0, 1) and df ≥ 1, which is this very function (``stdtrit``)."""
    return special.stdtrit(df, q)


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``values`` (``None`` for fewer than two)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return None
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(t_quantile(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def matching(frame: pd.DataFrame, values: Mapping[str, Any]) -> pd.Series:
    """Rows of ``frame`` whose columns equal ``values`` (a missing value matches a missing
    one): the runs of one configuration, or of one Lookahead setting."""
    mask = pd.Series(True, index=frame.index)
    for column, v in values.items():
        mask &= frame[column].isna() if v is None or pd.isna(v) else frame[column] == v
    return mask


def config_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_COLUMNS if c in df.columns]


def config_scores(trials: pd.DataFrame, metric: str, maximize: bool,
                  worst: float | None = None, level: float = LEVEL) -> pd.DataFrame:
    """One row per configuration: ``score`` (mean over seeds), ``std``, ``seeds``,
    ``diverged`` (seeds that diverged or failed), ``ci_low``/``ci_high`` (t-interval; NaN with
    one seed) and ``first_finished`` (when its first run ended: the order a sampler found it)."""
    df = trials.copy()
    df["value"] = run_values(df, metric, maximize, worst)
    df["is_diverged"] = df["state"] != "complete"
    keys = config_keys(df)
    if "finished_at" not in df.columns:
        df["finished_at"] = pd.NaT
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped.agg(score=("value", "mean"), std=("value", "std"), seeds=("value", "size"),
                      diverged=("is_diverged", "sum"),
                      first_finished=("finished_at", "min")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    seeds = out["seeds"].to_numpy()
    quantile = np.where(seeds > 1, t_quantile(0.5 + level / 2, np.maximum(seeds - 1, 1)),
                        np.nan)
    half = quantile * out["std"] / np.sqrt(out["seeds"])
    out["ci_low"], out["ci_high"] = out["score"] - half, out["score"] + half
    return out


@dataclass(frozen=True)
class Scoring:
    """How scores compare in one study: direction, the task's loss floor, the reference best."""

    maximize: bool
    best: float | None  # best clean configuration score of any optimizer; None if none is clean
    floor: float | None = None  # a loss's known lower bound (only used when not maximize)

    def gap(self, score: np.ndarray | pd.Series | float) -> np.ndarray:
        """Relative gap to the reference best (0 at the best; see the module docstring)."""
        s = np.asarray(score, dtype=float)
        if self.best is None:
            return np.full(s.shape, np.inf)
        if self.maximize:
            diff, scale = self.best - s, abs(self.best)
        elif self.floor is not None and self.best > self.floor:
            diff, scale = s - self.best, self.best - self.floor
        else:
            diff, scale = s - self.best, abs(self.best)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(scale > 0, diff / scale, np.where(diff <= 0, 0.0, np.inf))
        return np.where(np.abs(out) < TOLERANCE, 0.0, out)

    def label(self) -> str:
        if self.maximize:
            return "% below the best score"
        return "× the best excess loss" if self.floor is not None else "× the best loss"


def reference_best(scores: pd.DataFrame, maximize: bool) -> float | None:
    clean = scores.loc[scores["diverged"] == 0, "score"]
    if clean.empty:
        return None
    return float(clean.max() if maximize else clean.min())


def annotate(scores: pd.DataFrame, scoring: Scoring) -> pd.DataFrame:
    """Add ``gap``, ``clean`` and, per ε, ``good_<ε>`` (ε-good at the point estimate),
    ``sure_<ε>`` / ``maybe_<ε>`` (ε-good at the pessimistic / optimistic end of the interval;
    both equal ``good`` with one seed)."""
    out = scores.copy()
    out["gap"] = scoring.gap(out["score"])
    out["clean"] = out["diverged"] == 0
    one_seed = out["seeds"] < 2
    low, high = out["ci_low"].where(~one_seed, out["score"]), out["ci_high"].where(
        ~one_seed, out["score"])
    pessimistic, optimistic = (low, high) if scoring.maximize else (high, low)
    gap_pess, gap_opt = scoring.gap(pessimistic), scoring.gap(optimistic)
    for eps in EPSILONS:
        key = eps_key(eps)
        out[f"good_{key}"] = out["clean"] & (out["gap"] <= eps)
        out[f"sure_{key}"] = out["clean"] & (gap_pess <= eps)
        out[f"maybe_{key}"] = out["clean"] & (gap_opt <= eps)
    return out


def eps_key(eps: float) -> str:
    """``0.01`` → ``"0.01"``: the key used in column names and the JSON summary."""
    return f"{eps:g}"


def expected_configs_to_good(n: int, good: int) -> float | None:
    """Expected draws without replacement until the first good one: (N + 1)/(G + 1)."""
    if good <= 0 or n <= 0:
        return None
    return (n + 1) / (good + 1)


def span_decades(lrs: list[float]) -> float | None:
    """log10(largest / smallest) of ``lrs``; ``None`` when empty."""
    positive = [v for v in lrs if v > 0]
    if not positive:
        return None
    return math.log10(max(positive) / min(positive))


def good_learning_rates(annotated: pd.DataFrame, column: str) -> list[float]:
    """The inner learning rates with at least one configuration flagged in ``column``."""
    return sorted(float(v) for v in annotated.loc[annotated[column], "lr"].unique())


@dataclass(frozen=True)
class Robustness:
    """The robustness figures of one optimizer over a set of configurations."""

    optimizer: str
    configurations: int
    best: float
    best_interval: tuple[float, float] | None
    median: float
    good: dict[str, int]  # ε key -> ε-good configurations (point estimate)
    good_range: dict[str, tuple[int, int]] | None  # ε key -> plausible range (None: one seed)
    divergence_rate: float

    def share(self, eps: float) -> float:
        return self.good[eps_key(eps)] / self.configurations if self.configurations else 0.0

    @property
    def within_1(self) -> float:
        return self.share(0.01)

    @property
    def within_5(self) -> float:
        return self.share(0.05)


def robustness_of(optimizer: str, annotated: pd.DataFrame, runs: pd.DataFrame,
                  maximize: bool) -> Robustness:
    """The figures of one optimizer over the configurations in ``annotated`` (already
    restricted to that optimizer) and their ``runs``."""
    s = annotated["score"].to_numpy(float)
    best_i = int(np.argmax(s) if maximize else np.argmin(s))
    best_row = annotated.iloc[best_i]
    interval = None
    if best_row["seeds"] > 1:
        interval = (float(best_row["ci_low"]), float(best_row["ci_high"]))
    several_seeds = bool((annotated["seeds"] > 1).any())
    good = {eps_key(e): int(annotated[f"good_{eps_key(e)}"].sum()) for e in EPSILONS}
    rng = ({eps_key(e): (int(annotated[f"sure_{eps_key(e)}"].sum()),
                         int(annotated[f"maybe_{eps_key(e)}"].sum())) for e in EPSILONS}
           if several_seeds else None)
    return Robustness(
        optimizer=optimizer, configurations=len(annotated), best=float(s[best_i]),
        best_interval=interval, median=float(np.median(s)), good=good, good_range=rng,
        divergence_rate=float((runs["state"] != "complete").mean()) if len(runs) else 0.0,
    )


def robustness_by_optimizer(annotated: pd.DataFrame, trials: pd.DataFrame,
                            maximize: bool) -> list[Robustness]:
    """The figures of each optimizer over its own configurations in ``annotated``, Lookahead
    first."""
    out = [robustness_of(str(opt), group, trials[trials["optimizer"] == opt], maximize)
           for opt, group in annotated.groupby("optimizer", sort=False)]
    return sorted(out, key=lambda r: (r.optimizer != "lookahead", r.optimizer))


def robustness(trials: pd.DataFrame, metric: str, maximize: bool,
               floor: float | None = None, initial: float | None = None) -> list[Robustness]:
    """The figures per optimizer over its *whole* grid, against the study's reference best.
    Grids of different sizes make these shares incomparable: the verdict uses the matched
    comparison (:mod:`lookbench.report.matched`) instead."""
    worst = worst_value(trials, metric, maximize, initial)
    scores = config_scores(trials, metric, maximize, worst)
    annotated = annotate(scores, Scoring(maximize, reference_best(scores, maximize), floor))
    return robustness_by_optimizer(annotated, trials, maximize)


def expected_best(scores: np.ndarray, n_max: int, maximize: bool) -> np.ndarray:
    """Expected best score after n = 1..n_max configurations drawn at random (with
    replacement) from the grid: Dodge et al. (2019), "expected validation performance".

    With the N scores sorted from worst to best, the best of n draws is the i-th with
    probability (i/N)^n − ((i−1)/N)^n.
    """
    v = np.sort(np.asarray(scores, dtype=float))
    if not maximize:
        v = v[::-1]  # worst (largest loss) first
    n_cfg = len(v)
    if n_cfg == 0:
        return np.full(n_max, np.nan)
    i = np.arange(1, n_cfg + 1)
    out = np.empty(n_max)
    for n in range(1, n_max + 1):
        weights = (i / n_cfg) ** n - ((i - 1) / n_cfg) ** n
        out[n - 1] = float(weights @ v)
    return out


def best_so_far(scores: pd.DataFrame, maximize: bool) -> np.ndarray:
    """Best score among the first n configurations in the order a sampler found them (TPE:
    what the search actually reached after n proposals)."""
    ordered = scores.sort_values("first_finished", kind="stable")["score"].to_numpy(float)
    return (np.maximum.accumulate(ordered) if maximize
            else np.minimum.accumulate(ordered))


@dataclass(frozen=True)
class Difference:
    """A difference (Lookahead − baseline) with its interval; ``low``/``high`` are ``None``
    when there is nothing to put an interval on (one seed)."""

    estimate: float
    low: float | None
    high: float | None
    n: int  # seeds (paired) or runs behind the interval
    no_difference: float = 0.0  # what "no difference" is: 0 for a difference, 1 for a ratio

    @property
    def clear(self) -> bool:
        """True when the interval excludes "no difference"."""
        return (self.low is not None and self.high is not None
                and (self.low > self.no_difference or self.high < self.no_difference))


def seed_paired_difference(a_runs: pd.DataFrame, b_runs: pd.DataFrame) -> Difference | None:
    """``a`` − ``b`` over the seeds both ran (each one's mean run value per seed), paired;
    ``None`` when they share no seed."""
    a = a_runs.groupby("seed")["value"].mean()
    b = b_runs.groupby("seed")["value"].mean()
    both = a.index.intersection(b.index)
    return paired_difference((a[both] - b[both]).to_numpy()) if len(both) else None


def paired_difference(per_seed: np.ndarray, level: float = LEVEL) -> Difference:
    """Mean of per-seed differences with its t-interval: paired, because seed s gives both
    optimizers the same initialisation and data order, so their runs share that noise."""
    d = np.asarray(per_seed, dtype=float)
    ci = t_interval(d, level)
    return Difference(float(d.mean()), *(ci if ci else (None, None)), n=len(d))
