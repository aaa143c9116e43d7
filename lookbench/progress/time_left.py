"""How long a study has left, from its own finished trials: what an epoch of each optimizer
costs on the devices it ran on, times the epochs still to run, over the workers that run them.

Written here rather than left to Rich's ``TimeRemainingColumn``: Rich extrapolates the count of
finished trials, which populations finish in bursts and a study that adds seeds grows under
it; the trials' own ``wall_s`` per epoch does not move with either. The same estimate serves
``lookbench run``'s progress line and ``lookbench status`` (which, not being the run, also
estimates how many trials ran at once from when they finished).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

FINISHED = ("complete", "diverged")  # (a failed trial's time says little of a full one's)
MIN_TRIALS = 2  # fewer finished trials than this: no estimate ("after the first trials")


@dataclass(frozen=True)
class TimeLeft:
    """An estimate: ``seconds`` left at ``parallel`` trials at a time, from ``based_on``
    finished trials."""

    seconds: float
    parallel: float
    based_on: int

    def __str__(self) -> str:
        return f"about {format_duration(self.seconds)} left"


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 20 min``, ``2.5 days``: as precise as an estimate is."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{round(minutes)} min"
    hours, rest = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{seconds / 86400:.1f} days"


def epoch_costs(trials: pd.DataFrame, devices: set[str] | None = None) -> dict[str, float]:
    """Seconds per epoch of each optimizer (the median over its finished trials; on
    ``devices`` where some ran there: a GPU's epochs say nothing of a CPU's), with ``""``
    for all optimizers together."""
    if trials.empty:
        return {}
    done = trials[trials["state"].isin(FINISHED) & (trials["epochs_done"] > 0)]
    if devices and "device" in done and done["device"].isin(devices).any():
        done = done[done["device"].isin(devices)]
    if len(done) < MIN_TRIALS:
        return {}
    per_epoch = done["wall_s"].astype(float) / done["epochs_done"].astype(float)
    costs = {str(opt): float(v) for opt, v in per_epoch.groupby(done["optimizer"]).median().items()}
    costs[""] = float(per_epoch.median())
    return costs


def observed_parallel(trials: pd.DataFrame, window: int = 50) -> float | None:
    """How many trials ran at once, from the last ``window`` finished trials: the compute
    they took over the time in which they finished (``None``: too few, or all at one moment,
    as one population's members are)."""
    if trials.empty or "finished_at" not in trials:
        return None
    done = trials[trials["state"].isin(FINISHED)].sort_values("finished_at").tail(window)
    if len(done) < MIN_TRIALS + 1:
        return None
    times = pd.to_datetime(done["finished_at"], utc=True)
    span = (times.iloc[-1] - times.iloc[0]).total_seconds()
    if span <= 0:
        return None
    # The first trial's own time went before the span began: count what ended after it.
    work = float(done["wall_s"].iloc[1:].astype(float).sum())
    return max(1.0, work / span) if work > 0 else None


def estimate(trials: pd.DataFrame, remaining_epochs: Mapping[str, float],
             parallel: float | None, devices: set[str] | None = None) -> TimeLeft | None:
    """The time left to run ``remaining_epochs`` (per optimizer) at ``parallel`` trials at a
    time (``None``: as many as ran at once lately, else one), or ``None`` when too few trials
    have finished to say."""
    total = sum(remaining_epochs.values())
    costs = epoch_costs(trials, devices)
    if not costs:
        return None
    if total <= 0:
        return TimeLeft(0.0, parallel or 1.0, _based_on(trials))
    work = sum(epochs * costs.get(opt, costs[""]) for opt, epochs in remaining_epochs.items())
    at_once = parallel if parallel and parallel > 0 else (observed_parallel(trials) or 1.0)
    seconds = work / at_once
    if not math.isfinite(seconds):
        return None
    return TimeLeft(seconds, at_once, _based_on(trials))


def _based_on(trials: pd.DataFrame) -> int:
    return int(trials["state"].isin(FINISHED).sum())
