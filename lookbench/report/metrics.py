"""Robustness metrics of a study, computed from its trials table alone.

Every number here is defined on *configurations* (a point of the grid, all its seeds): the
configuration's score is the mean over its seeds of the final metric. A seed that diverged
(or failed) counts as the worst outcome: accuracy 0, or the worst finite loss any run of the
study reached, because a setting that sometimes blows up is not a setting one can use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CONFIG_COLUMNS = ["optimizer", "inner", "lr", "momentum", "weight_decay", "k", "alpha",
                  "alpha_adaptive", "inner_state"]

# One sentence each, shown beside the table in the report.
EXPLANATIONS = {
    "best": "the best configuration's score (final metric, mean over seeds)",
    "median": "the median score over every configuration of the grid: what a random pick gets",
    "within_1": "the share of configurations scoring within 1% of the best score of the whole "
                "study (any optimizer) without diverging in any seed",
    "within_5": "the same share within 5%: how wide the good region is",
    "divergence_rate": "the share of runs (configuration × seed) that diverged",
}


def worst_value(trials: pd.DataFrame, metric: str, maximize: bool) -> float:
    """What a diverged or failed run scores: accuracy 0, else the worst finite loss seen."""
    if maximize:
        return 0.0
    finite = trials["final_" + metric].dropna()
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if len(finite) else float("nan")


def run_values(trials: pd.DataFrame, metric: str, maximize: bool) -> pd.Series:
    """Each run's final metric, with diverged/failed runs at the worst value."""
    values = trials["final_" + metric].astype(float)
    bad = (trials["state"] != "complete") | values.isna()
    return values.mask(bad, worst_value(trials, metric, maximize))


def config_scores(trials: pd.DataFrame, metric: str, maximize: bool) -> pd.DataFrame:
    """One row per configuration: score (mean over seeds), std, seeds, diverged seeds."""
    df = trials.copy()
    df["value"] = run_values(df, metric, maximize)
    df["is_diverged"] = df["state"] != "complete"
    keys = [c for c in CONFIG_COLUMNS if c in df.columns]
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped.agg(score=("value", "mean"), std=("value", "std"), seeds=("value", "size"),
                      diverged=("is_diverged", "sum")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _share_within(scores: np.ndarray, clean: np.ndarray, best: float, fraction: float,
                  maximize: bool) -> float:
    """Share of configurations within ``fraction`` of ``best``; one that diverged in any seed
    (``clean`` false) is never counted as good, whatever its worst-case score."""
    if len(scores) == 0:
        return float("nan")
    near = scores >= best * (1 - fraction) if maximize else scores <= best * (1 + fraction)
    return float(np.mean(near & clean))


@dataclass(frozen=True)
class Robustness:
    """The robustness metrics of one optimizer in one study."""

    optimizer: str
    configurations: int
    best: float
    median: float
    within_1: float
    within_5: float
    divergence_rate: float


def robustness(trials: pd.DataFrame, metric: str, maximize: bool) -> list[Robustness]:
    """The metrics per optimizer, against the best score of the whole study."""
    scores = config_scores(trials, metric, maximize)
    study_best = scores["score"].max() if maximize else scores["score"].min()
    out = []
    for opt, group in scores.groupby("optimizer", sort=False):
        s = group["score"].to_numpy(dtype=float)
        clean = (group["diverged"] == 0).to_numpy()
        runs = trials[trials["optimizer"] == opt]
        out.append(Robustness(
            optimizer=str(opt),
            configurations=len(group),
            best=float(s.max() if maximize else s.min()),
            median=float(np.median(s)),
            within_1=_share_within(s, clean, study_best, 0.01, maximize),
            within_5=_share_within(s, clean, study_best, 0.05, maximize),
            divergence_rate=float((runs["state"] == "diverged").mean()),
        ))
    return sorted(out, key=lambda r: (r.optimizer != "lookahead", r.optimizer))


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


def bootstrap_intervals(trials: pd.DataFrame, metric: str, maximize: bool, reps: int = 1000,
                        level: float = 0.95, seed: int = 0
                        ) -> dict[str, dict[str, tuple[float, float]]] | None:
    """Percentile intervals of every robustness metric, per optimizer, from resampling each
    configuration's seeds with replacement: ``{field: {optimizer: (low, high)}}``, or ``None``
    when no configuration has two seeds to resample."""
    df = trials.copy()
    df["value"] = run_values(df, metric, maximize)
    keys = [c for c in CONFIG_COLUMNS if c in df.columns]
    groups = list(df.groupby(keys, dropna=False, sort=True))
    if not any(len(g) > 1 for _, g in groups):
        return None
    rng = np.random.default_rng(seed)
    opt_index = keys.index("optimizer")
    opts = np.array([name[opt_index] for name, _ in groups])
    means = np.empty((reps, len(groups)))  # resampled score of every configuration
    divs = np.empty((reps, len(groups)))
    for j, (_, g) in enumerate(groups):
        v = g["value"].to_numpy(float)
        d = (g["state"] == "diverged").to_numpy(float)
        pick = rng.integers(0, len(v), (reps, len(v)))
        means[:, j] = v[pick].mean(axis=1)
        divs[:, j] = d[pick].mean(axis=1)
    best_all = means.max(axis=1) if maximize else means.min(axis=1)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for opt in dict.fromkeys(opts):
        s = means[:, opts == opt]
        clean = divs[:, opts == opt] == 0
        if maximize:
            w1 = ((s >= best_all[:, None] * 0.99) & clean).mean(axis=1)
            w5 = ((s >= best_all[:, None] * 0.95) & clean).mean(axis=1)
        else:
            w1 = ((s <= best_all[:, None] * 1.01) & clean).mean(axis=1)
            w5 = ((s <= best_all[:, None] * 1.05) & clean).mean(axis=1)
        fields = {
            "best": s.max(axis=1) if maximize else s.min(axis=1),
            "median": np.median(s, axis=1),
            "within_1": w1,
            "within_5": w5,
            "divergence_rate": divs[:, opts == opt].mean(axis=1),
        }
        for field, values in fields.items():
            out.setdefault(field, {})[str(opt)] = (float(np.quantile(values, lo)),
                                                   float(np.quantile(values, hi)))
    return out
