"""A comparison seed by seed: each seed is one complete sweep, and every figure of the verdict is
worked out within a sweep, then summarised over sweeps with a distribution-free interval.

Why per sweep: seed s gives Lookahead and its baseline the same initialisation and data order
at every setting, so one seed's runs are one experiment a user could have run (sweep the shared
grid once, see which settings come within ε of the best). Computing each figure inside a sweep
keeps everything a sweep shares (its best run included) on both sides of the comparison, and
the sweeps are independent repeats of the same experiment. The verdict reports each figure's
*median over sweeps* (what a typical sweep shows) with the order-statistic interval of
:mod:`lookbench.stats`, which covers that median whatever the runs' distribution (skewed,
bimodal, seeds that fail): ``tests/report/test_coverage.py`` measures it. Every array here is
(configurations × seeds), so the coverage simulation runs the very code the report runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lookbench import stats
from lookbench.comparison.rules import ZERO, Rules, eps_key

SIDES = ("lookahead", "baseline")
LABELS = ("lookahead_better", "baseline_better", "equivalent", "undecided")
COUNT_MARGIN = 1.0  # learning rates: within one grid point is "as many"
COUNT_SPREAD_FLOOR = 0.5  # planning: a count's spread is at least half a learning rate


@dataclass(frozen=True)
class SweepTable:
    """One comparison's runs: the same configurations, in the same order, on both sides."""

    lrs: np.ndarray  # (C,) the inner learning rate of each shared configuration
    seeds: np.ndarray  # (S,) the seeds every configuration of both sides ran
    values: dict[str, np.ndarray]  # side -> (C, S) final metric, failed runs at the stand-in
    trained: dict[str, np.ndarray]  # side -> (C, S) completed and trained


def sweep_best(table: SweepTable, rules: Rules) -> np.ndarray:
    """Each sweep's best run over both sides: of its runs that trained (of all its runs where
    none did)."""
    both = np.concatenate([table.values["lookahead"], table.values["baseline"]])
    ok = np.concatenate([table.trained["lookahead"], table.trained["baseline"]])
    masked = np.where(ok, both, -np.inf if rules.maximize else np.inf)
    best = masked.max(0) if rules.maximize else masked.min(0)
    fallback = both.max(0) if rules.maximize else both.min(0)
    return np.where(np.isfinite(best), best, fallback)


def good_runs(table: SweepTable, rules: Rules, side: str, eps: float,
              best: np.ndarray | None = None) -> np.ndarray:
    """(C, S): which of a side's runs trained and came within ε of their sweep's best."""
    if best is None:
        best = sweep_best(table, rules)
    return table.trained[side] & rules.good(table.values[side], best[None, :], eps)


def statistics(table: SweepTable, rules: Rules) -> dict[str, np.ndarray]:
    """Every per-sweep figure, one value per seed (arrays of length S).

    ``best``: the sweep's best run over both sides (its trained runs; all runs if none
    trained); per side, ``<side>.mean`` (its mean over the shared settings), ``<side>.best``
    (its best setting), and per ε ``<side>.good@ε`` (settings within ε of the sweep's best, of
    runs that trained) and ``<side>.lrs@ε`` (learning rates with such a setting); and the
    differences Lookahead − baseline as ``diff.mean``, ``diff.best``, ``diff.lrs@ε``,
    ``diff.good@ε``."""
    best = sweep_best(table, rules)
    lrs = np.asarray(table.lrs, dtype=float)
    unique = np.unique(lrs)
    member = (lrs[None, :] == unique[:, None]).astype(float)  # (U, C)
    out: dict[str, np.ndarray] = {"best": best}
    for side in SIDES:
        v = table.values[side]
        out[f"{side}.mean"] = v.mean(0)
        out[f"{side}.best"] = v.max(0) if rules.maximize else v.min(0)
        for eps in rules.within:
            good = good_runs(table, rules, side, eps, best)
            out[f"{side}.good@{eps_key(eps)}"] = good.sum(0).astype(float)
            out[f"{side}.lrs@{eps_key(eps)}"] = ((member @ good) > 0).sum(0).astype(float)
    for name in ("mean", "best", *(f"{k}@{eps_key(e)}" for e in rules.within
                                   for k in ("lrs", "good"))):
        out[f"diff.{name}"] = out[f"lookahead.{name}"] - out[f"baseline.{name}"]
    return out


@dataclass(frozen=True)
class Line:
    """One statement of the verdict: a per-sweep difference (Lookahead − baseline), its median
    over sweeps with its interval, and what it lets us say."""

    name: str  # "lrs@0.01", "mean", "best"
    estimate: float  # median over sweeps (or the exact value)
    interval: stats.Interval | None  # None for a deterministic task
    margin: float  # within ±margin (and including 0): equivalent
    favours: int  # +1: a positive difference favours Lookahead; −1: a negative one does
    label: str  # one of LABELS
    exact: bool
    detectable: float | None  # the smallest difference these sweeps would bracket (80% power)
    seeds_needed: int | None  # sweeps that would likely decide it (planning model)
    fewest: int  # the fewest sweeps that can bracket anything at this level

    @property
    def decided(self) -> bool:
        return self.label != "undecided"


def label_of(low: float, high: float, margin: float, favours: int, scale: float = 1.0) -> str:
    """The verdict of an interval [low, high] of a difference: a direction when it excludes 0,
    ``equivalent`` when it holds 0 and lies within ±margin, else ``undecided``."""
    zero = ZERO * max(scale, 1.0)
    if low > zero:
        return "lookahead_better" if favours > 0 else "baseline_better"
    if high < -zero:
        return "baseline_better" if favours > 0 else "lookahead_better"
    if -margin - zero <= low and high <= margin + zero:
        return "equivalent"
    return "undecided"


def line(name: str, values: np.ndarray, margin: float, favours: int, rules: Rules,
         level: float = stats.LEVEL, minimum: float = stats.MINIMUM,
         spread_floor: float = 0.0, scale: float = 1.0) -> Line:
    """The verdict line of one per-sweep difference."""
    fewest = stats.fewest(level, minimum)
    v = np.asarray(values, dtype=float)
    if rules.exact:
        est = float(v[0]) if len(v) else math.nan
        return Line(name, est, None, margin, favours, label_of(est, est, margin, favours, scale),
                    True, None, None, fewest)
    iv = stats.median_interval(v, level, minimum)
    if iv.bracketed:
        label = label_of(iv.low, iv.high, margin, favours, scale)
    else:
        label = "undecided"
    spread = max(iv.spread, spread_floor)
    detect = stats.detectable(iv.n, spread, level, minimum)
    needed = None
    if label == "undecided":
        options = [stats.seeds_to_detect(iv.estimate, spread, level, minimum, start=iv.n + 1),
                   stats.seeds_to_bound(iv.estimate, margin, spread, level, minimum,
                                        start=iv.n + 1)]
        options = [n for n in options if n is not None]
        needed = max(min(options), fewest) if options else None
    return Line(name, iv.estimate, iv, margin, favours, label, False, detect, needed, fewest)


def lines(per_sweep: dict[str, np.ndarray], rules: Rules, level: float = stats.LEVEL,
          minimum: float = stats.MINIMUM) -> dict[str, Line]:
    """The verdict lines of a comparison: learning rates within each ε, the mean score at the
    same settings, and each side's best, all as Lookahead − baseline."""
    favours = 1 if rules.maximize else -1
    best = float(np.median(per_sweep["best"])) if len(per_sweep["best"]) else math.nan
    margin = rules.margin(best) if math.isfinite(best) else 0.0
    scale = abs(best) if math.isfinite(best) else 1.0
    out = {}
    for eps in rules.within:
        key = f"lrs@{eps_key(eps)}"
        out[key] = line(key, per_sweep[f"diff.{key}"], COUNT_MARGIN, 1, rules, level, minimum,
                        spread_floor=COUNT_SPREAD_FLOOR)
    for key in ("mean", "best"):
        out[key] = line(key, per_sweep[f"diff.{key}"], margin, favours, rules, level, minimum,
                        scale=scale)
    return out


def side_interval(values: np.ndarray, rules: Rules, level: float = stats.LEVEL,
                  minimum: float = stats.MINIMUM) -> stats.Interval:
    """One side's per-sweep figure as its median with an interval (exact for a deterministic
    task: the first sweep's value, no interval)."""
    v = np.asarray(values, dtype=float)
    if rules.exact:
        return stats.Interval(float(v[0]) if len(v) else math.nan, None, None, min(len(v), 1),
                              None)
    return stats.median_interval(v, level, minimum)
