"""Descriptive figures of a study's configurations, computed from its trials table alone.

These describe; they do not decide. The verdict's figures (the matched comparison, with its
intervals) are worked out per comparison in :mod:`lookbench.comparison.matched` and
:mod:`lookbench.comparison.sweeps`, from that comparison's own runs. What lives here:

- A *run* is one (configuration, seed); its value is the final metric on the evaluation
  weights. A diverged or failed run takes a stand-in value (:meth:`Rules.stand_in`): the
  task's chance level for an accuracy where the task knows it, else the worst completed run;
  for a loss the worse of its value at initialisation and the worst completed loss.
- A *configuration*'s score is the mean of its runs' values over seeds, shown with the range
  its seeds span (a range, not an interval: :mod:`lookbench.stats` says why few seeds cannot
  give a trustworthy interval of a mean).
- Over a *whole grid* (each optimizer's own configurations), scores are compared with the best
  configuration of the whole study (one none of whose seeds failed): a figure for exploring,
  labelled as the study's best, which never feeds a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lookbench import hparams
from lookbench.comparison.rules import Rules, eps_key

# A configuration's key columns, from lookbench.hparams: what Lookahead and its baselines share
# (the inner optimizer's hyperparameters), and what is Lookahead's own (and an average's own).
CONFIG_COLUMNS = ["optimizer", "inner", *hparams.columns()]
SHARED = hparams.columns("inner")
LOOKAHEAD_OWN = hparams.columns("lookahead")
AVERAGING_OWN = hparams.columns("averaging")

# One sentence each, shown beside the whole-grid table in the report.
EXPLANATIONS = {
    "best": "the best configuration's score (final metric, mean over seeds; the range its "
            "seeds span beside it)",
    "median": "the median score over the configurations (failed runs at the stand-in value)",
    "within_1": "the share of configurations none of whose seeds failed whose score is within "
                "the first ε of the whole study's best",
    "within_5": "the same share within the second ε: how wide the good region is",
    "divergence_rate": "the share of runs (configuration × seed) that diverged or failed",
    "untrained_rate": "the share of completed runs that ended no better than chance (or than "
                      "the loss at initialisation)",
}


def run_values(trials: pd.DataFrame, metric: str, stand_in: float,
               rules: Rules | None = None) -> pd.Series:
    """Each run's final metric (at most as bad as not training: :meth:`Rules.cap`), with
    diverged/failed runs (or a missing value) at ``stand_in``."""
    values = trials["final_" + metric].astype(float)
    if rules is not None:
        values = pd.Series(rules.cap(values.to_numpy()), index=values.index)
    bad = (trials["state"] != "complete") | ~np.isfinite(values.fillna(np.nan))
    return values.mask(bad, stand_in)


def completed_values(trials: pd.DataFrame, metric: str) -> np.ndarray:
    """The finite final metric of every completed run: what a stand-in is worked out from."""
    done = trials.loc[trials["state"] == "complete", "final_" + metric].astype(float)
    return done[np.isfinite(done)].to_numpy()


def matching(frame: pd.DataFrame, values: Mapping[str, Any]) -> pd.Series:
    """Rows of ``frame`` whose columns equal ``values`` (a missing value matches a missing
    one): the runs of one configuration, or of one Lookahead setting."""
    mask = pd.Series(True, index=frame.index)
    for column, v in values.items():
        mask &= frame[column].isna() if v is None or pd.isna(v) else frame[column] == v
    return mask


def config_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_COLUMNS if c in df.columns]


def config_scores(trials: pd.DataFrame, metric: str, rules: Rules,
                  stand_in: float | None = None) -> pd.DataFrame:
    """One row per configuration: ``score`` (mean over seeds), ``std``, ``seed_min`` /
    ``seed_max`` (the range its seeds span), ``seeds``, ``diverged`` (seeds that diverged or
    failed), ``untrained`` (completed seeds that did not train, :meth:`Rules.trained`) and
    ``first_finished`` (when its first run ended: the order a sampler found it)."""
    if stand_in is None:
        stand_in = rules.stand_in(completed_values(trials, metric))
    df = trials.copy()
    df["value"] = run_values(df, metric, stand_in, rules)
    complete = df["state"] == "complete"
    df["is_diverged"] = ~complete
    df["is_untrained"] = complete & ~rules.trained(df["final_" + metric].astype(float).to_numpy())
    keys = config_keys(df)
    if "finished_at" not in df.columns:
        df["finished_at"] = pd.NaT
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped.agg(score=("value", "mean"), std=("value", "std"),
                      seed_min=("value", "min"), seed_max=("value", "max"),
                      seeds=("value", "size"), diverged=("is_diverged", "sum"),
                      untrained=("is_untrained", "sum"),
                      first_finished=("finished_at", "min")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


UNSTABLE_FACTOR = 10.0  # a seed spread this many times the study's median is flagged


def unstable(scores: pd.DataFrame, factor: float = UNSTABLE_FACTOR) -> pd.Series:
    """Configurations whose seeds disagree far beyond the study's usual spread: the range
    their seeds span is more than ``factor`` times the median range of the study's
    configurations with two seeds or more. There training is chaotic (the edge of
    divergence): rounding differences grow into other outcomes, so one seed's value, a
    population's against a single run's, or two machines' runs may be far apart. Measured on
    the README's digits study: the 6 trials of 108 whose accuracy differs with and without
    populations are all at lr 1 (and one 0.3) with momentum 0.9, where the seeds alone span
    0.1-0.7. False where fewer than two seeds ran, or the study's median range is 0."""
    spread = (scores["seed_max"] - scores["seed_min"]).astype(float)
    several = scores["seeds"] > 1
    usual = float(spread[several].median()) if several.any() else 0.0
    if not usual > 0:
        return pd.Series(False, index=scores.index)
    return several & (spread > factor * usual)


def best_score(scores: pd.DataFrame, maximize: bool) -> float | None:
    """The best score among configurations none of whose seeds diverged or failed."""
    clean = scores.loc[scores["diverged"] == 0, "score"]
    if clean.empty:
        return None
    return float(clean.max() if maximize else clean.min())


def annotate(scores: pd.DataFrame, rules: Rules, best: float | None) -> pd.DataFrame:
    """Add ``gap`` (to ``best``, in units of :meth:`Rules.gap`), ``clean`` (no seed failed) and,
    per ε, ``good_<ε>`` (clean and within ε of ``best`` at the mean score)."""
    out = scores.copy()
    out["clean"] = out["diverged"] == 0
    if best is None:
        out["gap"] = np.inf
        for eps in rules.within:
            out[f"good_{eps_key(eps)}"] = False
        return out
    out["gap"] = rules.gap(out["score"].to_numpy(float), best)
    for eps in rules.within:
        out[f"good_{eps_key(eps)}"] = out["clean"] & rules.good(out["score"].to_numpy(float),
                                                                  best, eps)
    return out


def expected_configs_to_good(n: int, good: float) -> float | None:
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


@dataclass(frozen=True)
class Robustness:
    """One optimizer over its own whole grid, against the whole study's best (descriptive)."""

    optimizer: str
    configurations: int
    best: float
    best_range: tuple[float, float] | None  # the best configuration's seeds (None: one seed)
    median: float
    good: dict[str, int]  # ε key -> configurations within ε of the study's best
    divergence_rate: float
    untrained_rate: float

    def share(self, eps: float) -> float:
        return self.good[eps_key(eps)] / self.configurations if self.configurations else 0.0


def robustness_of(optimizer: str, annotated: pd.DataFrame, maximize: bool,
                  within: tuple[float, ...]) -> Robustness:
    """The figures of one optimizer over the configurations in ``annotated`` (already
    restricted to that optimizer)."""
    s = annotated["score"].to_numpy(float)
    best_i = int(np.argmax(s) if maximize else np.argmin(s))
    row = annotated.iloc[best_i]
    rng = (float(row["seed_min"]), float(row["seed_max"])) if row["seeds"] > 1 else None
    runs = float(annotated["seeds"].sum())
    done = runs - float(annotated["diverged"].sum())
    return Robustness(
        optimizer=optimizer, configurations=len(annotated), best=float(s[best_i]),
        best_range=rng, median=float(np.median(s)),
        good={eps_key(e): int(annotated[f"good_{eps_key(e)}"].sum()) for e in within},
        divergence_rate=float(annotated["diverged"].sum()) / runs if runs else 0.0,
        untrained_rate=float(annotated["untrained"].sum()) / done if done else 0.0,
    )


def robustness_by_optimizer(annotated: pd.DataFrame, maximize: bool,
                            within: tuple[float, ...]) -> list[Robustness]:
    """The figures of each optimizer over its own configurations in ``annotated``."""
    return [robustness_of(str(opt), group, maximize, within)
            for opt, group in annotated.groupby("optimizer", sort=False)]


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
